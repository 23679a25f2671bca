"""Benchmark of the analytic infinite-width kernels of `ntkit.nn`; writes JSON (median seconds, peak memory).

Cases (issue 3):
  a      depth-3 ReLU MLP, 4000 inputs x 784 features, full NNGP + NTK (4000 x 4000);
  b      Myrtle-5 (3x3 SAME convolutions, ReLU, 2x2 average pooling down to 1x1, Flatten, Dense) on 32x32x3,
         20 x 20 NNGP + NTK (full position x position covariances, tiled to fit `memory_limit`);
  c_gap  21-layer 3x3 ReLU CNN on 32x32x3 with GlobalAvgPool (full covariances), time per kernel entry;
  c_flat the same CNN with Flatten (diagonal covariances only), time per kernel entry.

Each case runs in its own process so its peak resident memory (`ru_maxrss`) is its own. The first call
(compilation included) is reported apart from the median of the repeats. `--quick` shrinks every case.

Usage: python benchmarks/analytic.py --out benchmarks/results [--quick] [--cases a,b,c_gap,c_flat] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CASES = ("a", "b", "c_gap", "c_flat")
MYRTLE_MEMORY_LIMIT = 1.6e9  # the kernel's working memory; the process adds ~0.25 GB (JAX itself), under 2 GB


def _myrtle5(stax):
    conv = lambda: stax.Conv(512, (3, 3), padding="SAME", W_std=2 ** 0.5)
    pool = lambda: stax.AvgPool((2, 2), (2, 2))
    return stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), pool(), conv(), stax.Relu(), pool(),
                       conv(), stax.Relu(), pool(), pool(), pool(), stax.Flatten(), stax.Dense(10, W_std=2 ** 0.5))


def _cnn21(stax, readout):
    layers = [stax.Conv(512, (3, 3), padding="SAME", W_std=2 ** 0.5, b_std=0.05), stax.Relu()] * 21
    head = stax.GlobalAvgPool() if readout == "gap" else stax.Flatten()
    return stax.serial(*layers, head, stax.Dense(10, W_std=2 ** 0.5))


def _setup(name: str, quick: bool):
    """Returns `(thunk, n_entries, description)`."""
    import jax
    import jax.numpy as jnp

    import ntkit.nn as stax

    key = jax.random.key(0)
    if name == "a":
        n = 500 if quick else 4000
        x = jax.random.normal(key, (n, 784))
        net = stax.serial(*[stax.Dense(1024, W_std=2 ** 0.5, b_std=0.05), stax.Relu()] * 3, stax.Dense(10))
        return (lambda: net.kernel(x, None, ("nngp", "ntk"))), n * n, f"depth-3 ReLU MLP, {n}x784, x2=None"
    size = 16 if quick else 32
    if name == "b":
        n = 6 if quick else 20
        x = jax.random.normal(key, (n, size, size, 3))
        net = _myrtle5(stax) if not quick else stax.serial(*_myrtle5(stax).layers[:-3], stax.Flatten(),
                                                           stax.Dense(10))
        return (lambda: net.kernel(x, None, ("nngp", "ntk"), memory_limit=MYRTLE_MEMORY_LIMIT)), n * n, \
            f"Myrtle-5, {n}x{size}x{size}x3, x2=None, memory_limit={MYRTLE_MEMORY_LIMIT:.2g} bytes"
    readout = "gap" if name == "c_gap" else "flat"
    n1, n2 = (2, 2) if (quick or readout == "gap") else (8, 8)
    x1 = jax.random.normal(key, (n1, size, size, 3))
    x2 = jax.random.normal(jax.random.key(1), (n2, size, size, 3))
    net = _cnn21(stax, readout)
    del jnp
    return (lambda: net.kernel(x1, x2, ("nngp", "ntk"))), n1 * n2, \
        f"21-layer 3x3 ReLU CNN + {readout}, {n1}x{n2} kernel on {size}x{size}x3"


def _run_case(name: str, quick: bool, repeats: int) -> dict:
    import jax

    thunk, n_entries, description = _setup(name, quick)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    jax.block_until_ready(thunk())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(thunk())
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {
        "case": name, "description": description, "quick": quick, "repeats": repeats,
        "first_call_s": first, "median_s": median, "times_s": times,
        "seconds_per_entry": median / n_entries, "kernel_entries": n_entries,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mb": baseline_kb / 1024,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for analytic.json")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, not the targets)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(_run_case(args.single, args.quick, args.repeats)))
        return
    results = []
    for name in args.cases.split(","):
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; choose from {CASES}")
        cmd = [sys.executable, __file__, "--out", args.out, "--single", name, "--repeats", str(args.repeats)]
        cmd += ["--quick"] if args.quick else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            result = {"case": name, "error": proc.stderr[-2000:]}
        else:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(result))
        results.append(result)
    os.makedirs(args.out, exist_ok=True)
    import jax

    meta = {"jax": jax.__version__, "platform": platform.platform(), "cpus": os.cpu_count(),
            "x64": bool(jax.config.jax_enable_x64)}
    with open(os.path.join(args.out, "analytic.json"), "w") as fh:
        json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
