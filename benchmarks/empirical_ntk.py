"""Benchmark of the empirical NTK implementations; writes JSON (median seconds over repeats, peak memory).

Cases (issue 2):
  a  MLP 784-1024-1024-10, 32 x 32 inputs, trace_axes=()
  b  the same MLP, 256 x 256 inputs, trace_axes=(-1,)
  c  CNN: three 3x3 convolutions with 64 channels on 32x32x3 images, global average pooling, 10 outputs,
     64 x 64 inputs, trace_axes=(-1,)

Every (case, implementation) runs in its own process, so its peak resident memory (`ru_maxrss`) is its own; the
baseline (JAX imported, data and parameters made) is reported beside it. Compilation is timed separately from
the median of the repeated runs. Methods whose cost model predicts more than `--max-seconds` are skipped and
reported as such with the estimate, never silently dropped.

Usage: python benchmarks/empirical_ntk.py --out benchmarks/results [--cases a,b,c] [--repeats 3]
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

IMPLEMENTATIONS = ("jacobian", "ntvp", "structured", "auto")


def _case(name):
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), 8)
    if name in ("a", "b"):
        sizes = [784, 1024, 1024, 10]
        params = [{"w": jax.random.normal(keys[i], (m, n)), "b": jax.random.normal(keys[i + 4], (n,))}
                  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=False))]

        def f(p, x):
            for i, layer in enumerate(p):
                x = x @ layer["w"] * (1.0 / jnp.sqrt(layer["w"].shape[0])) + layer["b"]
                if i < len(p) - 1:
                    x = jax.nn.relu(x)
            return x

        n = 32 if name == "a" else 256
        x1 = jax.random.normal(keys[6], (n, 784))
        x2 = jax.random.normal(keys[7], (n, 784))
        trace_axes = () if name == "a" else (-1,)
        return f, params, x1, x2, trace_axes, None if name == "a" else 32
    dn = ("NHWC", "HWIO", "NHWC")
    params = {"k1": jax.random.normal(keys[0], (3, 3, 3, 64)), "k2": jax.random.normal(keys[1], (3, 3, 64, 64)),
              "k3": jax.random.normal(keys[2], (3, 3, 64, 64)), "w": jax.random.normal(keys[3], (64, 10))}

    def cnn(p, x):
        for k in ("k1", "k2", "k3"):
            fan_in = p[k].shape[0] * p[k].shape[1] * p[k].shape[2]
            x = jax.nn.relu(jax.lax.conv_general_dilated(x, p[k], (1, 1), "SAME", dimension_numbers=dn)
                            / jnp.sqrt(fan_in))
        return jnp.mean(x, axis=(1, 2)) @ p["w"] / 8.0

    x1 = jax.random.normal(keys[4], (64, 32, 32, 3))
    x2 = jax.random.normal(keys[5], (64, 32, 32, 3))
    return cnn, params, x1, x2, (-1,), None


def _worker(case: str, implementation: str, repeats: int, max_seconds: float) -> dict:
    import jax

    import ntkit
    from ntkit._layout import KernelLayout
    from ntkit.empirical._cost import estimate_costs
    from ntkit.empirical._model import Model

    f, params, x1, x2, trace_axes, jacobian_batch = _case(case)
    jax.block_until_ready((x1, x2, params))
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = Model(f, True)
    out = jax.eval_shape(f, params, x1[:1]).shape[1:]
    costs = estimate_costs(model, KernelLayout.build(out, trace_axes, ()), x1, x2, params)
    ntk_fn = ntkit.empirical_ntk_fn(f, trace_axes=trace_axes, vmap_axes=0, implementation=implementation)
    chosen = ntk_fn.implementation_for(x1, x2, params)
    # ~20 GFLOP/s is what this kind of 2-core machine sustains on these kernels; a conservative guess.
    estimate_s = costs[chosen][0] / 2e10 if chosen in costs else None
    record = {"case": case, "implementation": implementation, "resolved": chosen,
              "estimated_flops": costs.get(chosen, (None,))[0], "estimated_bytes": costs.get(chosen, (0, None))[1],
              "baseline_rss_mb": round(baseline_mb, 1)}
    if estimate_s is not None and estimate_s > max_seconds:
        record.update(skipped=f"cost model estimates {estimate_s:.0f} s > --max-seconds {max_seconds:.0f}")
        return record
    batch_size = jacobian_batch if chosen == "jacobian" else None
    record["batch_size"] = batch_size
    start = time.perf_counter()
    jax.block_until_ready(ntk_fn(x1, x2, params, batch_size=batch_size))
    record["first_call_s"] = time.perf_counter() - start
    times = []
    for _ in range(repeats if record["first_call_s"] < 60 else 1):
        start = time.perf_counter()
        jax.block_until_ready(ntk_fn(x1, x2, params, batch_size=batch_size))
        times.append(time.perf_counter() - start)
    record["median_s"] = statistics.median(times)
    record["times_s"] = times
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--cases", default="a,b,c")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPLEMENTATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker, args.repeats, args.max_seconds)))
        return
    records = []
    for case in args.cases.split(","):
        for implementation in args.implementations.split(","):
            cmd = [sys.executable, __file__, "--worker", case, implementation, "--repeats", str(args.repeats),
                   "--max-seconds", str(args.max_seconds)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                record = {"case": case, "implementation": implementation, "error": proc.stderr.strip()[-2000:]}
            else:
                record = json.loads(proc.stdout.strip().splitlines()[-1])
            records.append(record)
            print(json.dumps({k: v for k, v in record.items() if k not in ("times_s", "error")}), flush=True)
    ratios = {}
    for case in args.cases.split(","):
        by_impl = {r["implementation"]: r.get("median_s") for r in records if r["case"] == case}
        if by_impl.get("structured") and by_impl.get("jacobian"):
            ratios[f"{case}: jacobian / structured"] = by_impl["jacobian"] / by_impl["structured"]
        if by_impl.get("structured") and by_impl.get("ntvp"):
            ratios[f"{case}: ntvp / structured"] = by_impl["ntvp"] / by_impl["structured"]
        timed = {k: v for k, v in by_impl.items() if v and k != "auto"}
        if by_impl.get("auto") and timed:
            ratios[f"{case}: auto / fastest"] = by_impl["auto"] / min(timed.values())
    os.makedirs(args.out, exist_ok=True)
    result = {"benchmark": "empirical_ntk", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "records": records, "ratios": ratios}
    path = os.path.join(args.out, "empirical_ntk.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
