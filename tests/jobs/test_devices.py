"""`ntkit.jobs.kernel_job` on a machine with several JAX devices: one thread per device, the same bits as one device.

The devices are two host (CPU) devices made by `--xla_force_host_platform_device_count`, which must be set before
JAX starts: the check runs in a fresh Python process.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import collections, sys
    import jax, numpy as np
    from ntkit import jobs
    from ntkit.jobs import _job
    from tests.jobs._common import inputs, network

    devices = jax.local_devices()
    assert len(devices) == 2, devices
    layer, x = network(), inputs(19, dtype=np.dtype(jax.numpy.zeros(0).dtype), seed=1)
    used = collections.Counter()
    run_tile = _job.run_tile

    def recording(*args, **kwargs):
        used[str(kwargs["device"])] += 1
        return run_tile(*args, **kwargs)

    _job.run_tile = recording
    folder = sys.argv[1]
    both = jobs.kernel_job(layer, x, store=folder + "/both.zarr", tile=3, progress=False)
    assert both.complete and sum(used.values()) == both.tiles_total == 28, (used, both)
    assert set(used) == {str(d) for d in devices}, used  # each device computed tiles
    one = jobs.kernel_job(layer, x, store=folder + "/one.zarr", tile=3, devices=devices[1:], progress=False)
    assert one.complete
    for g in ("nngp", "ntk"):
        np.testing.assert_array_equal(jobs.load(folder + "/both.zarr", g), jobs.load(folder + "/one.zarr", g))
    print("ok", dict(used))
""")


def test_tiles_spread_over_devices_bit_identical(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, cwd=root, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")
