"""`ntkit.jobs` on a Dask cluster: two worker processes, one killed mid-job; the result is bit-identical."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from ntkit import jobs
from tests.tolerance import assert_close

from ._common import inputs, network

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
def test_worker_killed_mid_job_bit_identical(tmp_path, dtype):
    x, tile = inputs(40, dtype=np.dtype(dtype)), 2
    store = tmp_path / "dask.zarr"
    total = sum(range(40 // tile + 1))
    killed = {}

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        victim = next(iter(pids.values()))

        def kill_one_worker():
            while True:  # a third of the tiles done: kill a worker (its tasks in flight are lost and rerun)
                try:
                    done = jobs.status(store).tiles_done
                except ValueError:
                    done = 0
                if done >= total // 3:
                    os.kill(victim, signal.SIGKILL)
                    killed["at"] = done
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        state = jobs.kernel_job(network(), x, store=store, tile=tile, client=client, progress=False)
        killer.join(timeout=60)
    assert state.complete and state.tiles_total == total
    assert total // 3 <= killed["at"] < total  # the worker died mid-job
    local = jobs.kernel_job(network(), x, store=tmp_path / "local.zarr", tile=tile, progress=False)
    assert local.identity == state.identity
    for g in ("nngp", "ntk"):
        k = jobs.load(store, g)
        np.testing.assert_array_equal(k, jobs.load(tmp_path / "local.zarr", g))
        assert_close(k, network().kernel(x, None, g), dtype)
