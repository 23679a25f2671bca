"""The computation of `ntkit analyze`: every analysis of `ntkit.analysis` on one data set and one architecture.

1. The architecture: the user's `ntkit.nn` layer or the default MLP; its analytic NTK and NNGP on the data.
2. Convergence: the NTK spectrum, the largest stable learning rate `2nk/λ_max` and the catapult window.
3. Initialization: the mean-field phase of the activation at the Dense layers' `σ_w, σ_b`, the trainable depth and
   the NTK's condition number against depth.
4. Generalization: the predicted learning curve (eigenlearning) against kernel regression on subsets of the data,
   the generalization complexity `√(2 yᵀΘ⁻¹y/n)` (also for shuffled labels) and the kernel-target alignment.
5. Lazy or rich: a short full-batch gradient-descent run of the finite network (the same definition's `init_fn` and
   `apply_fn`), its kernel tracked along the way, its loss curve against the one its NTK at initialization predicts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import nn as stax
from ._analyze_data import Dataset

LR_FRACTION = 0.5
"""The real run's default learning rate, as a fraction of the largest stable rate of its NTK at initialization."""
LAZY_KERNEL_CHANGE = 0.1
"""A run is lazy when its NTK moved by less than this (relative Frobenius distance) and its loss curve stayed within
`LAZY_LOSS_GAP` of its start of the curve its NTK at initialization predicts; borderline when only the loss did;
rich when the loss left the prediction."""
LAZY_LOSS_GAP = 0.1
DIVERGED_FACTOR = 1e8
"""A training loss this many times its initial value is divergence (catapult spikes are 10-100 times)."""
TRAINABLE_DEPTH_FACTOR = 6.0
"""Deep networks train up to about `6 ξ_c` layers (Schoenholz et al. 2017, "Deep information propagation")."""
RIDGE = 1e-6
"""Relative ridge `δ·tr(Θ)/n` of the kernel regressions and the generalization complexity (numerical only)."""
PROBE_SIZE = 128
"""Training rows the kernel tracker measures the NTK on."""
RELU_CATAPULT_FACTOR = 12.0
"""`η_max λ_max/(nk)` that Lewkowycz et al. 2020 measured for wide ReLU networks (an upper value)."""
SWEEP_FACTORS = (0.5, 0.9, 1.2, 1.6, 2.0, 3.0, 4.0, 6.0)
"""Learning rates of the sweep, in units of the finite network's `η_crit` (`--quick`: every other one)."""


def activation_layer(name: str) -> stax.Elementwise:
    """The `ntkit.nn` layer of an activation name of `ntkit analyze --activation`."""
    layers: dict[str, Callable[[], stax.Elementwise]] = {
        "relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu, "leaky_relu": lambda: stax.LeakyRelu(0.1),
        "abs": stax.Abs, "sigmoid_like": stax.Sigmoid_like}
    if name not in layers:
        raise ValueError(f"--activation must be one of {', '.join(layers)}, got {name!r}")
    return layers[name]()


def mlp(depth: int, width: int, n_outputs: int, activation: str, W_std: float, b_std: float) -> stax.serial:
    """`depth` × [`Dense(width, W_std, b_std)`, activation] and a `Dense(n_outputs, W_std, b_std)` readout (NTK
    parameterization: the analytic kernels do not depend on `width`)."""
    layers: list = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W_std, b_std=b_std), activation_layer(activation)]
    return stax.serial(*layers, stax.Dense(n_outputs, W_std=W_std, b_std=b_std))


def _leaves(layer) -> list:
    """The layers of a combinator tree, depth first (serial, parallel, repeat and any layer holding layers)."""
    children = []
    if isinstance(layer, stax.serial):  # `repeat` too: its copies (it also holds the layer it repeats)
        children = [v for v in layer.layers if isinstance(v, stax.Layer)]
    elif dataclasses.is_dataclass(layer):
        for field in dataclasses.fields(layer):
            value = getattr(layer, field.name)
            if isinstance(value, stax.Layer):
                children.append(value)
            elif isinstance(value, tuple | list):
                children += [v for v in value if isinstance(v, stax.Layer)]
    if not children:
        return [layer]
    return [leaf for child in children for leaf in _leaves(child)]


def describe(layer) -> dict:
    """What the phase analysis can read from an architecture.

    Returns a dict with `plain_mlp` (Dense and one activation alternating, every Dense with the same `σ_w, σ_b`,
    NTK parameterization), `hidden_layers`, `activation` (the first activation layer, or None), `activation_name`,
    `W_std`, `b_std` (those of the first Dense layer, or None), and `layers` (the names of the leaves).
    """
    leaves = _leaves(layer)
    dense = [leaf for leaf in leaves if isinstance(leaf, stax.Dense)]
    acts = [leaf for leaf in leaves if isinstance(leaf, stax.Elementwise)]
    expected = [stax.Dense, stax.Elementwise] * len(acts) + [stax.Dense]
    plain = (bool(acts) and [type(leaf) for leaf in leaves] == expected and len({a for a in acts}) == 1
             and len({(d.W_std, d.b_std, d.parameterization) for d in dense}) == 1)
    first_dense = dense[0] if dense else None
    return {"plain_mlp": plain, "hidden_layers": len(acts) if plain else None,
            "activation": acts[0] if acts else None, "activation_name": acts[0].name if acts else None,
            "W_std": None if first_dense is None else float(first_dense.W_std),
            "b_std": None if first_dense is None or first_dense.b_std is None else float(first_dense.b_std),
            "layers": [getattr(leaf, "name", type(leaf).__name__) for leaf in leaves]}


def run_analysis(data: Dataset, layer=None, arch: str | None = None, depth: int = 2, width: int = 512,
                 activation: str = "relu", W_std: float = 2.0 ** 0.5, b_std: float = 0.05, steps: int = 300,
                 learning_rate: float | None = None, seed: int = 0, quick: bool = False,
                 progress: bool = False) -> dict:
    """Runs every analysis and returns the metrics (JSON-ready; `write_analysis_report` renders them).

    Args:
      data: from `_analyze_data.prepare`.
      layer: the user's `ntkit.nn` layer, or None for the default MLP of `depth`, `width`, `activation`, `W_std`,
        `b_std`.
      arch: the `--arch` reference the layer came from (for messages).
      steps: gradient-descent steps of the real run.
      learning_rate: its learning rate; default `LR_FRACTION` of the largest stable rate of its NTK at init.
      seed: seeds the initializations and the learning-curve subsets.
      quick: smaller grids (depths, phase diagram, learning-curve sizes).
      progress: tqdm progress bars on stderr.
    """
    start = time.perf_counter()
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    x_train, y_train, x_test, y_test = (jnp.asarray(a, dtype) for a in data[:4])
    n, n_outputs = y_train.shape
    user = layer is not None
    if layer is None:
        layer = mlp(depth, width, n_outputs, activation, W_std, b_std)
        description = (f"{depth} × [Dense({width}, W_std={W_std:.4g}, b_std={b_std:.4g}), {activation}] + "
                       f"Dense({n_outputs}), NTK parameterization")
    else:
        description = f"{arch} ({' → '.join(describe(layer)['layers'])})"
    info = describe(layer)
    metrics: dict = {"config": {
        "source": data.source, "task": data.task, "classes": list(data.classes), "n_rows": data.n_rows,
        "n_train": int(n), "n_test": int(len(x_test)), "n_features": int(np.prod(x_train.shape[1:])),
        "input_shape": list(x_train.shape[1:]), "constant_features": data.constant_features,
        "n_outputs": int(n_outputs),
        "targets": ("one-hot minus 1/k over the classes " + ", ".join(data.classes) if data.task == "classification"
                    else "standardised with the training split's mean and standard deviation"),
        "architecture": description, "arch": arch, "plain_mlp": info["plain_mlp"],
        "depth": None if user else depth, "width": None if user else width,
        "activation": info["activation_name"] if user else activation, "W_std": info["W_std"],
        "b_std": info["b_std"], "steps": steps, "seed": seed, "quick": quick, "dtype": str(np.dtype(dtype)),
        "loss": "1/(2nk) Σ‖f − y‖² (n examples, k outputs)"}}

    with _bar(progress, total=7, desc="analyses") as bar:
        bar.set_postfix_str("analytic NTK")
        k = _kernels(layer, arch, x_train, x_test, n_outputs, seed)
        bar.update()
        bar.set_postfix_str("spectrum and learning rate")
        metrics["convergence"] = _convergence(k, y_train, y_test)
        bar.update()
        bar.set_postfix_str("signal propagation")
        init = _phase(info, info["plain_mlp"], None if user else activation)
        if init["available"]:
            act, w, b = info["activation"], init["W_std"], init["b_std"]
            init["phase_diagram"] = _phase_grid(act, w, b, quick)
            sub = x_train[: 32 if quick else 64]
            depths = (1, 4, 16) if quick else (1, 3, 10, 30)
            init["depth_conditioning"] = _depth_conditioning(
                lambda d: stax.serial(*[stax.Dense(64, W_std=w, b_std=b), act] * d, stax.Dense(1, W_std=w,
                                                                                                      b_std=b)),
                sub, depths)
        metrics["initialization"] = init
        bar.update()
        bar.set_postfix_str("generalization")
        metrics["generalization"] = _generalization(k, y_train, y_test, seed, quick)
        bar.update(2)
        bar.set_postfix_str("finite network")
        finite = _finite_run(layer, arch, description, k, x_train, y_train, x_test, y_test, steps, learning_rate,
                             seed, progress)
        finite["width"] = None if user else width
        metrics["finite"] = finite
        bar.update()
        bar.set_postfix_str("learning-rate sweep")
        metrics["catapult"] = _catapult(layer, x_train, y_train, steps, seed, quick, progress)
        bar.update()
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return finite_or_none(metrics)


def _kernels(layer, arch, x_train, x_test, n_outputs: int, seed: int) -> dict:
    """The analytic NTK/NNGP blocks over train and test inputs, after checking the network's output shape."""
    n = x_train.shape[0]
    try:
        out_shape, _ = layer.init(jax.random.key(seed), x_train.shape)
    except Exception as err:  # the user's layer on the user's data: report, do not crash
        raise _user_error(arch, f"initializing it on inputs of shape {tuple(x_train.shape)}", err) from err
    if tuple(out_shape) != (n, n_outputs):
        raise ValueError(f"{'--arch ' + repr(arch) if arch else 'the network'} maps inputs of shape "
                         f"{tuple(x_train.shape)} to outputs of shape {tuple(out_shape)}; the targets need "
                         f"({n}, {n_outputs}): one output per class or target column")
    try:
        kernels = layer.kernel(jnp.concatenate([x_train, x_test]), None, ("nngp", "ntk"))
    except Exception as err:
        raise _user_error(arch, "computing its analytic NTK", err) from err
    nngp, ntk = np.asarray(kernels.nngp), np.asarray(kernels.ntk)  # their dtype: rounding is judged in it
    if not (np.all(np.isfinite(ntk)) and np.all(np.isfinite(nngp))):
        raise ValueError("the analytic NTK has NaN or infinite entries: the initialization's variance explodes "
                         "(lower --W-std or the depth)")
    return {"ntk_all": ntk, "ntk_dd": ntk[:n, :n], "ntk_td": ntk[n:, :n], "nngp_dd": nngp[:n, :n]}


def _convergence(k: dict, y_train, y_test) -> dict:
    """Spectrum of the analytic train-train NTK, the largest stable learning rate and the predicted convergence."""
    from ..analysis import convergence, spectrum
    from ..predict import max_learning_rate

    s = spectrum(k["ntk_dd"], y_train)
    nk = int(y_train.size)
    eta_crit = float(max_learning_rate(k["ntk_dd"], nk, negative_eigenvalues="clip"))
    eta = LR_FRACTION * eta_crit
    initial = float(np.sum(np.asarray(y_train, np.float64) ** 2) / (2 * nk))
    c = convergence(k["ntk_dd"], y_train, eta, k_test_train=k["ntk_td"], y_test=y_test, target_loss=0.01 * initial)
    positive = s.eigenvalues > 0
    assert s.target_fraction is not None and c.test_loss is not None  # y and the test kernel were given
    return {
        "lambda_max": float(s.eigenvalues[0]), "lambda_min": float(s.eigenvalues[-1]),
        "condition_number": s.condition_number, "effective_rank": s.effective_rank,
        "entropy_effective_rank": s.entropy_effective_rank,
        "max_learning_rate": eta_crit, "n_targets": nk,
        "target_fraction_top10": float(np.sum(s.target_fraction[:10])),
        "eigenvalues": s.eigenvalues.tolist(),
        "target_fraction": s.target_fraction.tolist(),
        "slowest_time_constant": float(np.max(c.time_constants[positive])) if positive.any() else None,
        "predicted": {"learning_rate": eta, "steps_to_1_percent": c.steps_to_target, "t": c.t.tolist(),
                      "train_loss": c.train_loss.tolist(), "test_loss": c.test_loss.tolist()},
    }


def _phase(info: dict, plain: bool, activation_name: str | None) -> dict:
    """The mean-field phase of the activation at the first Dense layer's `σ_w, σ_b`, and the trainable depth."""
    from ..analysis import signal_propagation

    if info["activation"] is None or info["W_std"] is None:
        return {"available": False, "reason": "the architecture has no Dense layer followed by an activation layer "
                                              "(ntkit.nn Elementwise): the mean-field phase is not defined for it"}
    sp = signal_propagation(info["activation"], info["W_std"], info["b_std"] or 0.0)
    depth_scale = sp.xi_c
    trainable = (math.inf if sp.phase == "critical" or depth_scale == math.inf
                 else TRAINABLE_DEPTH_FACTOR * depth_scale if math.isfinite(depth_scale) else None)
    return {"available": True, "plain_mlp": plain, "activation": activation_name or info["activation_name"],
            "W_std": info["W_std"], "b_std": info["b_std"] or 0.0, "hidden_layers": info["hidden_layers"],
            "q_star": sp.q_star, "chi_1": sp.chi_1, "c_star": sp.c_star, "chi_c": sp.chi_c, "xi_c": depth_scale,
            "phase": sp.phase, "trainable_depth": trainable, "trainable_depth_factor": TRAINABLE_DEPTH_FACTOR}


def _phase_grid(activation, W_std: float, b_std: float, quick: bool) -> dict:
    """A `phase_diagram` grid around (and including) the network's `σ_w, σ_b`."""
    from ..analysis import phase_diagram

    closed = activation.nngp_fn is not None
    n_w, n_b = (40, 24) if closed and not quick else (20, 12)
    w = np.linspace(0.1, max(3.0, 1.25 * W_std), n_w)
    b = np.linspace(0.0, max(1.0, 1.25 * b_std), n_b)
    pd = phase_diagram(activation, w, b)
    return {"W_std": pd.W_std.tolist(), "b_std": pd.b_std.tolist(), "phase": pd.phase.tolist(),
            "chi_1": pd.chi_1.tolist(), "trainable_depth": pd.trainable_depth.tolist(),
            "q_star": pd.q_star.tolist(), "xi_c": pd.xi_c.tolist(), "c_star": pd.c_star.tolist(),
            "chi_c": pd.chi_c.tolist()}


def _depth_conditioning(plain_layer_factory, x, depths) -> dict:
    """The analytic NTK's condition number on `x` against depth, for MLPs of the phase's activation and `σ`s."""
    from ..analysis import ntk_condition_vs_depth

    out = ntk_condition_vs_depth(plain_layer_factory, depths, x)
    return {"depths": out.depths.tolist(), "condition_number": out.condition.tolist(),
            "lambda_max": out.lambda_max.tolist(), "lambda_min": out.lambda_min.tolist(), "n_inputs": int(len(x))}


def _generalization(k: dict, y_train, y_test, seed: int, quick: bool) -> dict:
    """Generalization complexity (true and shuffled labels), kernel-target alignment and the learning curve."""
    from ..analysis import generalization_bound, kernel_alignment

    ridge = _ridge(k["ntk_dd"])
    y = np.asarray(y_train, np.float64)
    shuffled = y[np.random.default_rng(seed).permutation(len(y))]
    out: dict[str, Any] = {"ridge": ridge, "complexity": generalization_bound(k["ntk_dd"], y, ridge=ridge),
           "complexity_shuffled": generalization_bound(k["ntk_dd"], shuffled, ridge=ridge),
           "alignment_centered": kernel_alignment(k["ntk_dd"], y).mean,
           "alignment": kernel_alignment(k["ntk_dd"], y, centered=False).mean}
    out["learning_curve"] = _learning_curve(k, y_train, y_test, seed, quick, ridge)
    out["units"] = out["learning_curve"]["units"]
    return out


def _ridge(k_dd) -> float:
    """The absolute ridge `RIDGE · tr(Θ)/n`."""
    k_dd = np.asarray(k_dd, np.float64)
    return float(RIDGE * np.trace(k_dd) / len(k_dd))


def _learning_curve(k: dict, y_train, y_test, seed: int, quick: bool, ridge: float) -> dict:
    """Eigenlearning's predicted learning curve from the NTK on all rows, and NTK regression measured on subsets."""
    from ..analysis import learning_curve

    n = int(y_train.shape[0])
    y_all = np.concatenate([np.asarray(y_train, np.float64), np.asarray(y_test, np.float64)])
    measured_n = np.unique(np.round(np.geomspace(max(4, n // 16), n, 4 if quick else 6)).astype(int))
    sizes = np.unique(np.concatenate([np.round(np.geomspace(2, n, 30)).astype(int), measured_n]))
    lc = learning_curve(k["ntk_all"], y_all, [int(m) for m in sizes], ridge=ridge)
    repeats = 3 if quick else 5
    measured = kernel_regression_mse(k["ntk_all"], y_train, y_test, measured_n, repeats, seed, ridge)
    at = np.searchsorted(sizes, measured_n)
    # Eigenlearning's test point is drawn from the pool, so it is a training point with probability n/N, where the
    # error is the training residual: the error on the other pool points is what the held-out test rows measure.
    inside = sizes / len(y_all)
    held_out = (np.asarray(lc.test_mse) - inside * np.asarray(lc.train_mse)) / (1 - inside)
    return {"n": sizes.tolist(), "predicted_test_mse": held_out.tolist(),
            "predicted_pool_mse": np.asarray(lc.test_mse).tolist(),
            "predicted_train_mse": np.asarray(lc.train_mse).tolist(), "kappa": np.asarray(lc.kappa).tolist(),
            "measured_n": measured_n.tolist(), "measured_test_mse": measured, "repeats": repeats,
            "predicted_at_measured": held_out[at].tolist(), "n_pool": int(len(y_all)),
            "units": "mean over examples and outputs of (f − y)², targets as encoded"}


def kernel_regression_mse(k_all, y_train, y_test, sizes, repeats: int, seed: int, ridge: float) -> list[float]:
    """Test MSE `mean((f − y)²)` of NTK regression (`f = Θ(x, X_m)(Θ(X_m, X_m) + δI)⁻¹ Y_m`, the `t = ∞` limit of
    gradient descent from `f₀ = 0`) trained on `repeats` random subsets of `m` training rows, for `m` in `sizes`.

    `k_all` is the kernel over the training rows followed by the test rows.
    """
    k_all, y_train, y_test = (np.asarray(a, np.float64) for a in (k_all, y_train, y_test))
    n = len(y_train)
    rng = np.random.default_rng(seed)
    out = []
    for m in sizes:
        errors = []
        for _ in range(repeats if m < n else 1):
            rows = rng.choice(n, size=m, replace=False) if m < n else np.arange(n)
            k_mm = k_all[np.ix_(rows, rows)]
            alpha = np.linalg.solve(k_mm + ridge * np.eye(m), y_train[rows])
            f = k_all[n:, rows] @ alpha
            errors.append(float(np.mean((f - y_test) ** 2)))
        out.append(float(np.mean(errors)))
    return out


def _finite_run(layer, arch, description: str, k: dict, x_train, y_train, x_test, y_test, steps: int,
                learning_rate: float | None, seed: int, progress: bool) -> dict:
    """A short real run of the finite network: loss curves against the NTK predictions, and its kernel tracked."""
    from ..analysis import convergence
    from ..empirical import empirical_ntk_fn
    from ..predict import max_learning_rate

    init_fn, apply_fn, _ = layer
    _, params = init_fn(jax.random.fold_in(jax.random.key(seed), 1), x_train.shape)
    ntk_fn = empirical_ntk_fn(apply_fn, vmap_axes=0)
    try:
        theta_0 = ntk_fn(x_train, None, params)
        theta_td = ntk_fn(x_test, x_train, params)
    except Exception as err:
        raise _user_error(arch, "computing the finite network's empirical NTK", err) from err
    nk = int(y_train.size)
    critical = float(max_learning_rate(theta_0, nk, negative_eigenvalues="clip"))
    lr = LR_FRACTION * critical if learning_rate is None else float(learning_rate)
    at = checkpoints(steps, 40)
    tracker = _Tracked(apply_fn, x_train, y_train, params, checkpoints(steps, 8))

    with _bar(progress, total=steps, desc="training", unit="step") as bar:
        _, real = train(apply_fn, params, x_train, y_train, x_test, y_test, lr, at, tracker.update, bar)
    f0_train, f0_test = real.pop("fx_train_0"), real.pop("fx_test_0")
    predicted = {}
    kernels = {"empirical_ntk": (theta_0, theta_td), "analytic_ntk": (k["ntk_dd"], k["ntk_td"])}
    for name, (k_dd, k_td) in kernels.items():
        c = convergence(k_dd, y_train, lr, t=[int(s) for s in at], k_test_train=k_td, y_test=y_test,
                        fx_train_0=f0_train, fx_test_0=f0_test)
        assert c.test_loss is not None
        predicted[name] = {"train_loss": c.train_loss.tolist(), "test_loss": c.test_loss.tolist()}
    diverged = real.pop("diverged")
    curve = real["train_loss"]
    gap = (None if diverged else
           float(np.max(np.abs(np.subtract(curve, predicted["empirical_ntk"]["train_loss"]))) / curve[0]))
    tracked = tracker.result()
    change = None if diverged or not tracked["relative_change"] else tracked["relative_change"][-1]
    if diverged or change is None or gap is None:
        regime = "diverged"
    elif gap >= LAZY_LOSS_GAP:
        regime = "rich"
    else:
        regime = "lazy" if change < LAZY_KERNEL_CHANGE else "borderline"
    return {"description": description, "learning_rate": lr, "learning_rate_default": learning_rate is None,
            "learning_rate_fraction": LR_FRACTION, "critical_empirical": critical, "steps": steps,
            "n_params": int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params))),
            "checkpoints": [int(s) for s in at], "real": real,
            "predicted_empirical_ntk": predicted["empirical_ntk"], "predicted_analytic_ntk": predicted["analytic_ntk"],
            "train_loss_gap": gap, "kernel_change": change, "tracker": tracked, "diverged": diverged,
            "regime": regime, "lazy": regime == "lazy", "lazy_thresholds": [LAZY_KERNEL_CHANGE, LAZY_LOSS_GAP],
            "init_deviation_from_analytic": _relative(theta_0, k["ntk_dd"])}


class _Tracked:
    """`ntkit.analysis.KernelTracker` on the first `PROBE_SIZE` training rows at the steps `record`, and the
    relative Frobenius change `‖Θ_t − Θ_0‖_F/‖Θ_0‖_F` of its kernel at each record (docs/theory.md §4)."""

    def __init__(self, apply_fn, x, y, params0, record):
        from ..analysis import KernelTracker

        self.tracker = KernelTracker(apply_fn, x, params0, probe_y=y, every=[int(s) for s in record],
                                     probe_size=min(PROBE_SIZE, len(x)), ntk_kwargs={"vmap_axes": 0})
        self.relative_change = [0.0]

    def update(self, step: int, params) -> None:
        if self.tracker.update(step, params):
            self.relative_change.append(_relative(self.tracker.kernel, self.tracker.kernel0))

    def result(self) -> dict:
        history = self.tracker.history
        out = {name: np.asarray(getattr(history, name)).tolist() for name in history._fields}
        out["steps"] = out.pop("step")
        out["relative_change"] = list(self.relative_change)
        out["probe_size"] = int(self.tracker.kernel0.shape[0])
        return out


def _catapult(layer, x_train, y_train, steps: int, seed: int, quick: bool, progress: bool) -> dict:
    """The predicted catapult window of the finite network's NTK at initialization, and a learning-rate sweep of
    short real runs from that initialization measuring it."""
    from ..analysis import catapult_window, learning_rate_sweep
    from ..empirical import empirical_ntk_fn
    from ..predict import max_learning_rate

    init_fn, apply_fn, _ = layer
    key = jax.random.fold_in(jax.random.key(seed), 1)  # the finite run's initialization
    _, params = init_fn(key, x_train.shape)
    nk = int(y_train.size)
    theta_0 = empirical_ntk_fn(apply_fn, vmap_axes=0)(x_train, None, params)
    eta_crit = float(max_learning_rate(theta_0, nk, negative_eigenvalues="clip"))
    factors = SWEEP_FACTORS[1::2] if quick else SWEEP_FACTORS
    sweep = learning_rate_sweep(init_fn, apply_fn, x_train, y_train, [f * eta_crit for f in factors], steps, key,
                                ntk_kwargs={"vmap_axes": 0})
    window = sweep.predicted
    relu_like = catapult_window(theta_0, nk, max_factor=RELU_CATAPULT_FACTOR, negative_eigenvalues="clip")
    return {"lower": window.eta_crit, "upper": window.eta_max, "max_factor": window.max_factor,
            "upper_relu_measured": relu_like.eta_max, "relu_max_factor": RELU_CATAPULT_FACTOR,
            "lambda_max_init": window.lambda_max,
            "reference": f"Lewkowycz et al. 2020: {window.max_factor:g}nk/λ_max exactly in a two-layer linear "
                         f"model, up to about {RELU_CATAPULT_FACTOR:g}nk/λ_max measured for ReLU networks",
            "advice": window.advice,
            "sweep": {"factors": list(factors), "learning_rates": sweep.learning_rates.tolist(), "steps": steps,
                      "losses": sweep.losses.tolist(), "final_loss": sweep.final_loss.tolist(),
                      "max_loss": sweep.max_loss.tolist(), "spiked": sweep.spiked.tolist(),
                      "diverged": sweep.diverged.tolist(), "lambda_max_final": sweep.lambda_max_final.tolist(),
                      "regime": [window.regime(float(r)) for r in sweep.learning_rates]},
            "measured": list(sweep.measured_window)}


def checkpoints(steps: int, count: int) -> np.ndarray:
    """`0` and about `count` log-spaced steps up to `steps` (integers, increasing, `steps` included)."""
    return np.unique(np.concatenate([[0], np.round(np.geomspace(1, steps, count)).astype(int)]))


def mse(f, y) -> float:
    """`1/(2nk) Σ ‖f − y‖²`, the loss every learning rate here is normalised to."""
    return float(0.5 * jnp.mean((f - y) ** 2))


def train(apply_fn, params, x_train, y_train, x_test, y_test, learning_rate: float, at: np.ndarray,
          on_checkpoint=None, bar=None) -> tuple[Any, dict]:
    """Full-batch gradient descent on `1/(2nk) Σ ‖f − y‖²`, recording losses at the steps `at`.

    `on_checkpoint(step, params)` is called at each recorded step (the kernel tracker), `bar` advanced per step.
    Stops early (the rest of the curves None) when the loss is no longer finite or above `DIVERGED_FACTOR` times
    its initial value (in float64 a diverging loss can take long to overflow). `at` must start at 0.
    """
    def loss(p):
        return 0.5 * jnp.mean((apply_fn(p, x_train) - y_train) ** 2)

    grad = jax.grad(loss)

    @jax.jit
    def advance(p, n):
        return jax.lax.fori_loop(0, n, lambda _, q: jax.tree.map(lambda a, g: a - learning_rate * g, q, grad(q)), p)

    outputs = jax.jit(lambda p: (apply_fn(p, x_train), apply_fn(p, x_test)))
    curves: dict = {"train_loss": [], "test_loss": []}
    done, diverged, initial = 0, False, math.inf
    for step in (int(s) for s in at):
        if not diverged:
            if step > done:
                params = advance(params, step - done)
            f_train, f_test = outputs(params)
            if step == 0:
                curves["fx_train_0"], curves["fx_test_0"] = f_train, f_test
            train_loss, test_loss = mse(f_train, y_train), mse(f_test, y_test)
            if step == 0:
                initial = train_loss
            diverged = not (math.isfinite(train_loss) and math.isfinite(test_loss)
                            and train_loss <= DIVERGED_FACTOR * initial)
            if not diverged and on_checkpoint is not None:
                on_checkpoint(step, params)
        curves["train_loss"].append(None if diverged else train_loss)
        curves["test_loss"].append(None if diverged else test_loss)
        if bar is not None:
            bar.update(step - done)
        done = step
    curves["diverged"] = diverged
    return params, curves


def finite_or_none(value):
    """NaN/Inf become None and NumPy scalars Python numbers, so that `metrics.json` is strict JSON."""
    if isinstance(value, dict):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.ndarray | jax.Array):
        return finite_or_none(np.asarray(value).tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _user_error(arch: str | None, what: str, err: Exception) -> ValueError:
    who = f"--arch {arch!r}" if arch else "the network"
    return ValueError(f"{who}: {what} failed: {type(err).__name__}: {err}")


def _bar(progress: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=not progress, dynamic_ncols=True, **kwargs)
