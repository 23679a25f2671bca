"""Benchmark of `ntkit.jobs`: tile throughput of one kernel job on a two-worker local Dask cluster vs one process.

The job: the analytic NNGP and NTK of a small convolutional network (two 3x3 SAME convolutions with ReLU, global
average pooling, a dense readout) on random 8x8x3 images, `K(x, x)` in tiles of `--tile` examples (only tiles on
and above the diagonal are computed). The same job runs twice into fresh Zarr stores: in this process
(`client=None`), then on a `LocalCluster` of two worker processes (one thread each) on 127.0.0.1. Times are of
the whole `kernel_job` call (identity, computing and writing every tile), each after a warm-up job on the first
`3 * tile` images (same tile shapes) that imports and compiles in every process; the warm-up and the cluster's
start-up are reported apart, not counted. The two stores are checked to be bit-identical.

Usage: python benchmarks/jobs_throughput.py --out benchmarks/results [--quick] [--n 256] [--tile 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from _report import machine, write


def _architecture():
    import ntkit.nn as stax

    return stax.serial(stax.Conv(64, (3, 3), padding="SAME"), stax.Relu(),
                       stax.Conv(64, (3, 3), padding="SAME"), stax.Relu(),
                       stax.GlobalAvgPool(), stax.Dense(1))


def _timed_job(layer, x, store, tile, client) -> tuple[float, float, object]:
    from ntkit import jobs

    start = time.perf_counter()
    jobs.kernel_job(layer, x[:3 * tile], store=store + ".warm-up", tile=tile, client=client, progress=False)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    state = jobs.kernel_job(layer, x, store=store, tile=tile, client=client, progress=False)
    return warm_up, time.perf_counter() - start, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="64 images instead of --n")
    parser.add_argument("--n", type=int, default=256, help="images (default 256)")
    parser.add_argument("--tile", type=int, default=16, help="examples per tile side (default 16)")
    args = parser.parse_args()

    import jax
    import numpy as np
    from distributed import Client, LocalCluster

    from ntkit import jobs

    n = 64 if args.quick else args.n
    x = np.asarray(jax.random.normal(jax.random.key(0), (n, 8, 8, 3)))
    layer = _architecture()
    folder = tempfile.mkdtemp(prefix="ntkit-jobs-bench-")
    try:
        local_warm_s, local_s, state = _timed_job(layer, x, os.path.join(folder, "local.zarr"), args.tile, None)
        print(f"one process: {state.tiles_total} tiles in {local_s:.2f} s", flush=True)
        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            cluster_s = time.perf_counter() - start
            dask_warm_s, dask_s, _ = _timed_job(layer, x, os.path.join(folder, "dask.zarr"), args.tile, client)
        print(f"two Dask workers: {state.tiles_total} tiles in {dask_s:.2f} s", flush=True)
        identical = all(np.array_equal(jobs.load(os.path.join(folder, "local.zarr"), g),
                                       jobs.load(os.path.join(folder, "dask.zarr"), g)) for g in ("nngp", "ntk"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    tiles = state.tiles_total
    results = {
        "machine": machine(load_average_1min=os.getloadavg()[0]),
        "quick": args.quick,
        "job": {"architecture": "Conv64-Relu-Conv64-Relu-GlobalAvgPool-Dense", "n": n, "image": [8, 8, 3],
                "tile": args.tile, "tiles": tiles, "get": ["nngp", "ntk"], "dtype": str(x.dtype)},
        "one_process": {"seconds": round(local_s, 3), "tiles_per_s": round(tiles / local_s, 3),
                        "warm_up_s": round(local_warm_s, 3)},
        "dask_two_workers": {"seconds": round(dask_s, 3), "tiles_per_s": round(tiles / dask_s, 3),
                             "warm_up_s": round(dask_warm_s, 3), "cluster_start_s": round(cluster_s, 3)},
        "throughput_ratio_dask_over_one_process": round(local_s / dask_s, 3),
        "bit_identical": identical,
    }
    print(json.dumps(results, indent=1))
    write(args.out, "jobs_throughput", results)


if __name__ == "__main__":
    main()
