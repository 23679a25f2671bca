"""Benchmark of `ntkit.analysis.KernelTracker`: the time it adds to a training run with its default settings.

Case: a 2-layer ReLU MLP (`Dense(1024)`, `Relu`, `Dense(10)`, NTK parameterization) trained on the 1,797 sklearn
digits (standardized 8x8 images, centred one-hot targets) by Optax SGD with momentum, mini-batches of 128, on the
mean squared loss. The same run is timed without and with a `KernelTracker` (default `every` and `probe_size`, probe
targets given) called after every step, alternately `--repeats` times after a compilation run; the ratio of the
medians is reported (the tracker's construction, which compiles its kernel and computes Θ₀, is counted: about a
second on a CPU, so runs shorter than ~10^4 steps of this model see more than 10%), and also the ratio without it.

Runs in float32. Usage:
  python benchmarks/tracker_overhead.py --out benchmarks/results [--quick] [--steps 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time

from _report import machine, write


def _setup(steps: int):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    import ntkit.nn as stax

    X, labels = load_digits(return_X_y=True)
    x = jnp.asarray(StandardScaler().fit_transform(X), jnp.float32)
    y = jnp.asarray(np.eye(10)[labels] - 0.1, jnp.float32)
    init_fn, apply_fn, _ = stax.serial(stax.Dense(1024), stax.Relu(), stax.Dense(10))
    params0 = init_fn(jax.random.key(0), x.shape)[1]
    opt = optax.sgd(0.5, momentum=0.9)
    batches = np.random.default_rng(0).integers(0, x.shape[0], size=(steps, 128))

    @jax.jit
    def step(params, state, idx):
        loss, grads = jax.value_and_grad(lambda p: 0.5 * jnp.mean((apply_fn(p, x[idx]) - y[idx]) ** 2))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return apply_fn, params0, opt, step, x, y, batches


def _run(setup, tracked: bool) -> tuple[float, dict | None]:
    import jax

    from ntkit.analysis import KernelTracker

    apply_fn, params0, opt, step, x, y, batches = setup
    start = time.perf_counter()
    params, state = params0, opt.init(params0)
    tracker = KernelTracker(apply_fn, x, params0, probe_y=y) if tracked else None
    constructed = time.perf_counter()
    for i, idx in enumerate(batches, start=1):
        params, state, loss = step(params, state, idx)
        if tracker is not None:
            tracker.update(i, params)
    jax.block_until_ready((params, loss))
    elapsed = time.perf_counter() - start
    if tracker is None:
        return elapsed, None
    h = tracker.history
    return elapsed, {"construct_s": round(constructed - start, 3), "records": int(h.step.size),
                     "final_kernel_distance": float(h.kernel_distance[-1]),
                     "final_weight_change": float(h.weight_change[-1]), "final_alignment": float(h.alignment[-1]),
                     "final_loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="2000 steps, 2 repeats")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import jax

    from ntkit.analysis import KernelTracker

    defaults = inspect.signature(KernelTracker).parameters

    steps, repeats = (2000, 2) if args.quick else (args.steps, args.repeats)
    setup = _setup(steps)
    _run(setup, False)  # compile the training step
    plain, tracked, info = [], [], None
    for _ in range(repeats):
        plain.append(_run(setup, False)[0])
        t, info = _run(setup, True)
        tracked.append(t)
    ratio = statistics.median(tracked) / statistics.median(plain)
    results = {"machine": machine(backend=jax.default_backend()),
               "case": {"model": "Dense(1024)-Relu-Dense(10)", "data": "sklearn digits, 1797 x 64", "steps": steps,
                        "batch": 128, "every": defaults["every"].default,
                        "probe_size": defaults["probe_size"].default, "repeats": repeats},
               "untracked_s": [round(t, 3) for t in plain], "tracked_s": [round(t, 3) for t in tracked],
               "ratio_of_medians": round(ratio, 4),
               # the tracker's cost without its one-off construction (compilation and Θ₀): what each record adds
               "ratio_without_construction": round((statistics.median(tracked) - info["construct_s"])
                                                   / statistics.median(plain), 4),
               "tracker": info}
    print(json.dumps(results, indent=1), flush=True)
    write(args.out, "tracker_overhead", results)


if __name__ == "__main__":
    main()
