"""The main job, `ntkit demo`: infinitely wide and finite ReLU networks on a bundled data set, side by side.

1. Analytic NTK and NNGP of the default network (`ntkit.nn`, NTK parameterization), and the test accuracy of one
   infinitely wide network trained to `t = ∞` (`predict.gradient_descent_mse`, from a draw of its GP outputs at
   initialization), of the infinite ensemble's mean (`predict.gradient_descent_mse_ensemble`) and of the Bayesian
   NNGP posterior (`predict.gp_inference`).
2. Finite networks of several widths, the same definition's `init_fn`/`apply_fn`, trained by full-batch gradient
   descent on `1/(2nk) Σ ‖f − y‖²`; their real training curves next to the ones predicted from their own empirical
   NTK at initialization and from the analytic NTK; the kernel's relative change during training against width
   (docs/theory.md §4: slope about −1/2 on a log-log plot).
3. The spectrum of the empirical NTK and the largest stable learning rate `2nk/λ_max`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import predict
from .._kernel import Kernel
from ..empirical import empirical_ntk_fn
from ._datasets import load_dataset
from ._training import accuracy, checkpoints, mse_loss, predicted_curves, relative_change, relu_network, train

DEFAULTS: dict[str, Any] = {"dataset": "digits", "n_train": 256, "n_test": 256, "widths": (64, 256, 1024, 4096),
                             "depth": 1, "steps": 1000, "learning_rate": None, "seed": 0}
QUICK: dict[str, Any] = {"n_train": 48, "n_test": 48, "widths": (32, 512), "steps": 200}
LR_FRACTION = 0.5
DIAG_REG = 1e-4


def spectrum_summary(ntk: np.ndarray, n_outputs: int) -> dict:
    """Eigen-summary of a traced train-train NTK and the largest stable learning rate `2nk/λ_max`."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(ntk, np.float64))[::-1]
    n = ntk.shape[0]
    positive = np.clip(eigenvalues, 0.0, None)
    return {
        "n_train": n,
        "lambda_max": float(eigenvalues[0]),
        "lambda_min": float(eigenvalues[-1]),
        "condition_number": float(eigenvalues[0] / eigenvalues[-1]) if eigenvalues[-1] > 0 else math.inf,
        "effective_rank": float(positive.sum() ** 2 / (positive ** 2).sum()),
        "top10_trace_fraction": float(positive[:10].sum() / positive.sum()),
        "max_learning_rate": float(2.0 * n * n_outputs / eigenvalues[0]),
        "top_eigenvalues": [float(v) for v in eigenvalues[:5]],
    }


def _check(widths, depth, steps, learning_rate) -> None:
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"`widths` must be positive integers, got {widths!r}.")
    if len(set(widths)) != len(widths):
        raise ValueError(f"`widths` repeats a width: {widths!r}.")
    if depth < 1 or steps < 1:
        raise ValueError(f"`depth` and `steps` must be positive, got {depth} and {steps}.")
    if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be a finite positive number, got {learning_rate}.")


def _bar(progress: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=not progress, dynamic_ncols=True, **kwargs)


def _analytic_kernels(kernel_fn, x_train, x_test) -> dict:
    """Analytic NNGP and NTK blocks: train-train `_dd`, test-train `_td`, and the NNGP over both sets `nngp_all`."""
    n = x_train.shape[0]
    kernels = kernel_fn(jnp.concatenate([x_train, x_test]), None, ("nngp", "ntk"))
    nngp, ntk = kernels.nngp, kernels.ntk
    return {"nngp_dd": nngp[:n, :n], "nngp_td": nngp[n:, :n], "ntk_dd": ntk[:n, :n], "ntk_td": ntk[n:, :n],
            "nngp_all": nngp}


def _infinite_width(kernel_fn, k, x_train, y_train, x_test, y_test, lr, steps, seed) -> dict:
    """Test accuracy and loss of one infinitely wide network at `t = ∞`, the infinite ensemble and the NNGP."""
    n = x_train.shape[0]
    # One infinitely wide network: its outputs at initialization are a draw of the NNGP Gaussian process.
    nngp = np.asarray(k["nngp_all"], np.float64)
    chol = np.linalg.cholesky(nngp + 1e-6 * np.mean(np.diag(nngp)) * np.eye(len(nngp)))
    f0 = jnp.asarray(chol @ np.random.default_rng(seed).normal(size=(len(nngp), y_train.shape[1])), x_train.dtype)
    net = predict.gradient_descent_mse(k["ntk_dd"], y_train, learning_rate=lr, diag_reg=DIAG_REG)
    one_net = net(None, fx_train_0=f0[:n], fx_test_0=f0[n:], k_test_train=k["ntk_td"])[1]

    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=lr, diag_reg=DIAG_REG)
    gp = predict.gp_inference(Kernel(nngp=k["nngp_dd"], ntk=k["ntk_dd"]), y_train, diag_reg=DIAG_REG)
    outputs = {
        "ntk_network_t_inf": one_net,
        "ntk_ensemble_t_inf": ens(None, x_test, "ntk"),
        "ntk_ensemble_t_steps": ens(float(steps), x_test, "ntk"),
        "nngp_posterior": gp("nngp", k_test_train=Kernel(nngp=k["nngp_td"], ntk=k["ntk_td"])),
    }
    return {name: {"test_accuracy": accuracy(f, y_test), "test_loss": float(mse_loss(f, y_test))}
            for name, f in outputs.items()}


def run_demo(dataset: str = "digits", n_train: int = 256, n_test: int = 256, widths=(64, 256, 1024, 4096),
             depth: int = 1, steps: int = 1000, learning_rate: float | None = None, seed: int = 0,
             progress: bool = False) -> dict:
    """Runs the demo and returns its metrics (JSON-ready; `write_report` turns them into plots and Markdown).

    Args:
      dataset: a scikit-learn bundled data set (`ntkit._datasets`).
      n_train, n_test: examples in the training and test sets.
      widths: hidden widths of the finite networks.
      depth: hidden layers.
      steps: full-batch gradient-descent steps.
      learning_rate: `η`; default `LR_FRACTION` of the smallest critical rate `2nk/λ_max` among the analytic NTK
        and every finite network's empirical NTK at initialization.
      seed: seeds the data split, the initializations and the infinitely wide network's draw.
      progress: show tqdm progress bars (on stderr).
    """
    widths = tuple(widths)
    _check(widths, depth, steps, learning_rate)
    start = time.perf_counter()
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    x_train, y_train, x_test, y_test, n_classes = load_dataset(dataset, n_train, n_test, seed)
    x_train, y_train, x_test, y_test = (jnp.asarray(a, dtype) for a in (x_train, y_train, x_test, y_test))
    at = checkpoints(steps)
    metrics: dict = {"config": {"dataset": dataset, "n_train": n_train, "n_test": n_test, "n_classes": n_classes,
                                "widths": list(widths), "depth": depth, "steps": steps, "seed": seed,
                                "dtype": str(np.dtype(dtype)), "diag_reg": DIAG_REG,
                                "network": f"{depth} × [Dense(width, W_std=√2, b_std=0.05), Relu] + "
                                           f"Dense({n_classes}, W_std=1, b_std=0.05), NTK parameterization"},
                     "checkpoints": [int(s) for s in at]}

    with _bar(progress, total=2 + len(widths), desc="kernels") as bar:
        _, _, kernel_fn = relu_network(depth, widths[-1], n_classes)
        bar.set_postfix_str("analytic NTK/NNGP")
        k = _analytic_kernels(kernel_fn, x_train, x_test)
        bar.update()
        metrics["analytic_spectrum"] = spectrum_summary(k["ntk_dd"], n_classes)
        metrics["analytic_eigenvalues"] = np.linalg.eigvalsh(np.asarray(k["ntk_dd"], np.float64))[::-1].tolist()
        bar.update()
        nets = {}
        for i, width in enumerate(widths):
            bar.set_postfix_str(f"empirical NTK, width {width}")
            init_fn, apply_fn, _ = relu_network(depth, width, n_classes)
            _, params = init_fn(jax.random.fold_in(jax.random.key(seed), i), x_train.shape)
            ntk_fn = empirical_ntk_fn(apply_fn, vmap_axes=0)
            theta_dd = ntk_fn(x_train, None, params)
            nets[width] = {"apply_fn": apply_fn, "params": params, "ntk_fn": ntk_fn, "theta_dd": theta_dd,
                           "theta_td": ntk_fn(x_test, x_train, params)}
            bar.update()

    critical = {w: predict.max_learning_rate(net["theta_dd"], y_train.size) for w, net in nets.items()}
    critical_analytic = metrics["analytic_spectrum"]["max_learning_rate"]
    chosen = LR_FRACTION * min(critical_analytic, *critical.values())
    lr = chosen if learning_rate is None else float(learning_rate)
    metrics["learning_rate"] = {"value": lr, "default": learning_rate is None, "fraction": LR_FRACTION,
                                "critical_analytic": critical_analytic,
                                "critical_empirical": {str(w): c for w, c in critical.items()},
                                "above_critical": [w for w, c in critical.items() if lr >= c]}
    with _bar(progress, total=1, desc="infinite width") as bar:
        metrics["infinite_width"] = _infinite_width(kernel_fn, k, x_train, y_train, x_test, y_test, lr, steps, seed)
        bar.update()

    finite = {}
    total = steps * len(widths)
    with _bar(progress, total=total, desc="training", unit="step") as bar:
        for width, net in nets.items():
            bar.set_postfix_str(f"width {width}")
            params_t, real = train(net["apply_fn"], net["params"], x_train, y_train, x_test, y_test, lr, at, bar)
            f0_train, f0_test = real.pop("fx_train_0"), real.pop("fx_test_0")
            empirical = predicted_curves(net["theta_dd"], net["theta_td"], y_train, y_test, f0_train, f0_test, lr, at)
            analytic = predicted_curves(k["ntk_dd"], k["ntk_td"], y_train, y_test, f0_train, f0_test, lr, at)
            diverged = not all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(params_t))
            theta_t = None if diverged else net["ntk_fn"](x_train, None, params_t)
            finite[str(width)] = {
                "real": real, "predicted_empirical_ntk": empirical, "predicted_analytic_ntk": analytic,
                "kernel_change": None if diverged else relative_change(theta_t, net["theta_dd"]),
                "diverged": diverged,
                "init_deviation_from_analytic": relative_change(net["theta_dd"], k["ntk_dd"]),
                "empirical_spectrum": spectrum_summary(net["theta_dd"], n_classes),
                "empirical_eigenvalues": np.linalg.eigvalsh(np.asarray(net["theta_dd"], np.float64))[::-1].tolist(),
                "n_params": int(sum(p.size for p in jax.tree_util.tree_leaves(net["params"]))),
            }
    metrics["finite_width"] = finite
    metrics["kernel_change_slope"] = _slope(widths, [finite[str(w)]["kernel_change"] for w in widths])
    metrics["init_deviation_slope"] = _slope(widths, [finite[str(w)]["init_deviation_from_analytic"] for w in widths])
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return _finite_or_none(metrics)


def _slope(widths, values) -> float | None:
    """Least-squares slope of `log values` against `log widths` (None with fewer than two usable points)."""
    pairs = [(w, v) for w, v in zip(widths, values, strict=True) if v is not None and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return None
    w, v = np.log(np.asarray(pairs, np.float64)).T
    return float(np.polyfit(w, v, 1)[0])


def _finite_or_none(value):
    """NaN/Inf (a diverged run) become None, so that `metrics.json` is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
