"""Benchmark of neural-tangents' idiom `jax.jit(kernel_fn, static_argnames="get")` against the plain call.

Cases (issue 10):
  cnn21    21-layer 3x3 ReLU CNN with GlobalAvgPool (full covariances), a 2x2 kernel on 32x32x3;
  myrtle5  Myrtle-5 (3x3 SAME convolutions, ReLU, 2x2 average pooling down to 1x1, Flatten, Dense), 4x4 on 32x32x3;
  fc       depth-3 ReLU MLP, 1000 inputs x 784 features, x2=None;
  depth    `repeat(serial(Conv, Relu), d)` + GlobalAvgPool for several depths d: the jitted first call (compile
           included), to show it does not grow with depth.

Each (case, mode) runs in its own process so its peak resident memory (`ru_maxrss`) is its own; the first call
(compilation included) is reported apart from the median of the repeats. The JSON holds the ratios jit/plain of
the median time and of the peak memory. `--quick` uses 8x8 inputs and small sizes.

Usage: python benchmarks/jit_idiom.py --out benchmarks/results [--quick] [--cases cnn21,myrtle5,fc,depth]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CASES = ("cnn21", "myrtle5", "fc", "depth")
MODES = ("plain", "jit")
DEPTHS = (5, 20, 100)


def _myrtle5(stax, size: int):
    conv = lambda: stax.Conv(512, (3, 3), padding="SAME", W_std=2 ** 0.5)  # noqa: E731
    pool = lambda: stax.AvgPool((2, 2), (2, 2))  # noqa: E731
    pools = int(math.log2(size))  # down to 1x1: one after each of blocks 2-4, the rest at the end
    body = [conv(), stax.Relu(), conv(), stax.Relu(), pool(), conv(), stax.Relu(), pool(), conv(), stax.Relu()]
    return stax.serial(*body, *[pool() for _ in range(pools - 2)], stax.Flatten(), stax.Dense(10, W_std=2 ** 0.5))


def _setup(name: str, quick: bool, depth: int = 0):
    """`(kernel_fn, args, description)` of a case."""
    import jax

    import ntkit.nn as stax

    key = jax.random.key(0)
    size = 8 if quick else 32
    if name == "fc":
        n = 200 if quick else 1000
        net = stax.serial(*[stax.Dense(1024, W_std=2 ** 0.5, b_std=0.05), stax.Relu()] * 3, stax.Dense(10))
        return net.kernel, (jax.random.normal(key, (n, 784)), None), f"depth-3 ReLU MLP, {n}x784, x2=None"
    conv = stax.Conv(512, (3, 3), padding="SAME", W_std=2 ** 0.5, b_std=0.05)
    if name == "myrtle5":
        n = 2 if quick else 4
        x = jax.random.normal(key, (n, size, size, 3))
        return _myrtle5(stax, size).kernel, (x, None), f"Myrtle-5, {n}x{size}x{size}x3, x2=None"
    if name == "cnn21":
        depth = 21
    net = stax.serial(conv, stax.Relu(), stax.repeat(stax.serial(conv, stax.Relu()), depth - 1), stax.GlobalAvgPool(),
                      stax.Dense(10, W_std=2 ** 0.5))
    x1 = jax.random.normal(key, (2, size, size, 3))
    x2 = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    return net.kernel, (x1, x2), f"{depth}-layer 3x3 ReLU CNN + GlobalAvgPool, 2x2 kernel on {size}x{size}x3"


def _run(name: str, mode: str, quick: bool, repeats: int, depth: int) -> dict:
    import jax

    kernel_fn, (x1, x2), description = _setup(name, quick, depth)
    get = ("nngp", "ntk")
    if mode == "jit":
        jitted = jax.jit(kernel_fn, static_argnames="get")
        thunk = lambda: jitted(x1, x2, get=get)  # noqa: E731
    else:
        thunk = lambda: kernel_fn(x1, x2, get)  # noqa: E731
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    jax.block_until_ready(thunk())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(thunk())
        times.append(time.perf_counter() - t)
    return {"case": name, "mode": mode, "depth": depth or None, "description": description, "quick": quick,
            "first_call_s": first, "median_s": statistics.median(times), "times_s": times,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "baseline_rss_mb": baseline_kb / 1024}


def _subprocess(args, name: str, mode: str, depth: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--out", args.out, "--single", f"{name}:{mode}:{depth}", "--repeats",
           str(args.repeats)] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        return {"case": name, "mode": mode, "depth": depth or None, "error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for jit_idiom.json")
    parser.add_argument("--quick", action="store_true", help="8x8 inputs and small sizes")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        name, mode, depth = args.single.split(":")
        print(json.dumps(_run(name, mode, args.quick, args.repeats, int(depth))))
        return
    results = []
    load_before = _load()
    for name in args.cases.split(","):
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; choose from {CASES}")
        if name == "depth":
            for depth in DEPTHS:
                result = _subprocess(args, name, "jit", depth)
                print(json.dumps(result))
                results.append(result)
            continue
        pair = {mode: _subprocess(args, name, mode) for mode in MODES}
        summary = {"case": name, **{f"{m}_{k}": pair[m].get(k) for m in MODES
                                    for k in ("first_call_s", "median_s", "peak_rss_mb", "error")}}
        if not any(summary[f"{m}_error"] for m in MODES):
            summary["time_ratio_jit_over_plain"] = pair["jit"]["median_s"] / pair["plain"]["median_s"]
            summary["memory_ratio_jit_over_plain"] = pair["jit"]["peak_rss_mb"] / pair["plain"]["peak_rss_mb"]
        print(json.dumps(summary))
        results += [pair["plain"], pair["jit"], summary]
    os.makedirs(args.out, exist_ok=True)
    import jax

    meta = {"jax": jax.__version__, "platform": platform.platform(), "cpus": os.cpu_count(),
            "x64": bool(jax.config.jax_enable_x64), "load_average_before": load_before,
            "load_average_after": _load()}
    with open(os.path.join(args.out, "jit_idiom.json"), "w") as fh:
        json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
