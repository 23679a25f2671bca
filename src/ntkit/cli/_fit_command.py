"""`ntkit fit`: kernel ridge regression on a stored kernel (a Zarr store of `ntkit kernel`, or a `.npy` file).

Solves `(K + ridge·I) α = y` with `ntkit.solve.kernel_ridge` (Cholesky, or conjugate gradients with a Nyström
preconditioner, reading the kernel by row blocks), then predicts on a test-train kernel if one is given and writes
the predictions, the weights and the metrics. Top level kept light: NumPy, JAX and zarr are imported in `run`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._args import non_negative_float, positive_int

_GETS = ("ntk", "nngp")


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text}")
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fit", help="kernel ridge regression on a stored kernel (Zarr store or .npy); writes predictions, metrics",
        description="Solves (K + ridge·I) α = y for the train-train kernel --kernel (a Zarr store written by "
                    "`ntkit kernel` / ntkit.jobs.kernel_job, read lazily by row blocks, or a .npy file) by Cholesky "
                    "or by conjugate gradients with a Nyström preconditioner (--method). With --test-kernel "
                    "(the (N_test, N) test-train kernel) predicts K(x_test, X) α; otherwise the fit on the training "
                    "set. Targets: (N,) or (N, k) floats, or integer class labels (fitted as one-hot, accuracy "
                    "reported). Writes predictions.npy, weights.npy and metrics.json into --out.")
    parser.add_argument("--kernel", required=True, metavar="STORE", help="train-train kernel: Zarr store or .npy")
    parser.add_argument("--y", required=True, metavar="Y.npy", help="training targets (N,), (N, k) or class labels")
    parser.add_argument("--test-kernel", metavar="STORE", help="test-train kernel (N_test, N): Zarr store or .npy")
    parser.add_argument("--y-test", metavar="Y.npy", help="test targets, for the test metrics (needs --test-kernel)")
    parser.add_argument("--ridge", required=True, type=non_negative_float,
                        help="ridge added to the diagonal (absolute)")
    parser.add_argument("--get", choices=_GETS, default="ntk", help="the stored kernel to use (default ntk)")
    parser.add_argument("--method", choices=("auto", "cholesky", "cg"), default="auto",
                        help="solver (default auto: Cholesky when the matrix fits in memory, else CG)")
    parser.add_argument("--tol", type=_tolerance, help="CG relative residual tolerance (default 1e-6 in float64)")
    parser.add_argument("--rank", type=positive_int, help="largest Nyström preconditioner rank (default 1000)")
    parser.add_argument("--maxiter", type=positive_int, help="largest number of CG iterations (default 1000)")
    parser.add_argument("--out", default="ntkit-fit", help="output folder (default ntkit-fit)")


class _Error(Exception):
    """A user error: printed as `ntkit fit: error: ...`, exit status 2."""


def _open_kernel(path: str, get: str, what: str) -> Any:
    import numpy as np

    if not os.path.exists(path):
        raise _Error(f"{what} {path!r} does not exist.")
    if path.endswith(".npy"):
        try:
            k = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise _Error(f"cannot read {what} {path!r}: {err}") from None
    else:
        try:
            import ntkit.jobs
        except ImportError as err:
            raise _Error(f"reading the Zarr store {path!r} needs zarr: `pip install 'ntkit[dask]'` ({err}).") from None
        try:
            k = ntkit.jobs.open(path, get)
        except (ValueError, OSError, KeyError) as err:
            raise _Error(f"cannot open {what} {path!r}: {err}") from None
    if len(k.shape) != 2:
        raise _Error(f"{what} {path!r} must be a 2-D kernel, got shape {tuple(k.shape)}.")
    return k


def _targets(path: str, what: str) -> tuple[Any, Any]:
    """`(targets as floats (N,) or (N, k), class labels or None)`."""
    import numpy as np

    try:
        y = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise _Error(f"cannot read {what} {path!r}: {err}") from None
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise _Error(f"{what} {path!r} must have shape (N,) or (N, k) with N ≥ 1, got {y.shape}.")
    if y.ndim == 1 and (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        return None, y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number):
        raise _Error(f"{what} {path!r} must hold numbers, got dtype {y.dtype}.")
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise _Error(f"{what} {path!r} contains NaN or Inf.")
    return y, None


def _metrics(pred: Any, y: Any, labels: Any, classes: Any) -> dict[str, float]:
    import numpy as np

    out: dict[str, float] = {}
    if labels is not None:
        assert classes is not None
        onehot = (labels[:, None] == classes[None, :]).astype(np.float64)
        out["mse"] = float(np.mean((pred - onehot) ** 2))
        out["accuracy"] = float(np.mean(classes[np.argmax(pred, axis=1)] == labels))
        return out
    out["mse"] = float(np.mean((pred - y.reshape(pred.shape)) ** 2))
    if y.ndim == 2 and y.shape[1] > 1 and np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1):  # one-hot
        out["accuracy"] = float(np.mean(np.argmax(pred, 1) == np.argmax(y, 1)))
    return out


def _fit(args: Any) -> dict[str, Any]:
    import numpy as np

    from ntkit.solve import kernel_ridge, matmul

    if args.y_test is not None and args.test_kernel is None:
        raise _Error("--y-test needs --test-kernel (the test-train kernel to predict with).")
    k = _open_kernel(args.kernel, args.get, "--kernel")
    y, labels = _targets(args.y, "--y")
    n = (y if y is not None else labels).shape[0]
    if tuple(k.shape) != (n, n):
        raise _Error(f"--kernel has shape {tuple(k.shape)}, but --y has {n} examples: it must be ({n}, {n}).")
    classes = None
    if labels is not None:
        classes = np.unique(labels)
        y = (labels[:, None] == classes[None, :]).astype(np.float64)
    k_test = y_test = labels_test = None
    if args.test_kernel is not None:
        k_test = _open_kernel(args.test_kernel, args.get, "--test-kernel")
        if k_test.shape[1] != n:
            raise _Error(f"--test-kernel has shape {tuple(k_test.shape)}: it must be (N_test, {n}).")
        if args.y_test is not None:
            y_test, labels_test = _targets(args.y_test, "--y-test")
            got = (y_test if y_test is not None else labels_test).shape
            if got[0] != k_test.shape[0]:
                raise _Error(f"--y-test has {got[0]} examples, --test-kernel {k_test.shape[0]}.")
            if (labels is None) != (labels_test is None):
                raise _Error("--y and --y-test must both be class labels or both be real targets.")
            if y_test is not None and y_test.shape[1:] != y.shape[1:]:
                raise _Error(f"--y-test has shape {y_test.shape}, --y {y.shape}: the outputs must match.")
    result = kernel_ridge(k, y, args.ridge, method=args.method, rank=args.rank, tol=args.tol, maxiter=args.maxiter,
                          name="--kernel")
    alpha = np.asarray(result.weights)
    info = result.info
    metrics: dict[str, Any] = {"n_train": n, "ridge": args.ridge, "get": args.get,
                               "solver": {"method": info.method, "iterations": info.iterations,
                                          "residual": info.residual, "converged": info.converged,
                                          "tol": info.tol, "rank": info.rank}}
    # K α = y − ridge·α, exactly up to the solver's residual: the training fit without another pass over K
    train_pred = y - args.ridge * alpha
    metrics["train"] = _metrics(train_pred, y, labels, classes)
    pred = train_pred
    if k_test is not None:
        pred = np.asarray(matmul(k_test, alpha))
        metrics["n_test"] = int(k_test.shape[0])
        if y_test is not None or labels_test is not None:
            metrics["test"] = _metrics(pred, y_test, labels_test, classes)
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "predictions.npy"), pred)
    np.save(os.path.join(args.out, "weights.npy"), alpha)
    if classes is not None:
        np.save(os.path.join(args.out, "classes.npy"), classes)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    return metrics


def run(args: Any) -> int:
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            metrics = _fit(args)
        for w in caught:
            print(f"ntkit fit: warning: {w.message}", file=sys.stderr)
    except (_Error, ValueError, TypeError, RuntimeError) as err:
        print(f"ntkit fit: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"ntkit fit: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=1))
    print(f"wrote {os.path.join(args.out, 'predictions.npy')}, weights.npy and metrics.json")
    return 0
