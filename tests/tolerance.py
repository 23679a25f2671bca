"""The one place tolerances come from, keyed to dtype."""

import jax.numpy as jnp
import numpy as np

_TOLERANCES = {
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-5},
    np.dtype(np.float64): {"rtol": 1e-9, "atol": 1e-11},
}


def tol(dtype, scale: float = 1.0) -> dict:
    """`rtol`/`atol` for comparing results computed in `dtype`; `scale` loosens both (for longer computations)."""
    base = _TOLERANCES[np.dtype(jnp.dtype(dtype))]
    return {k: v * scale for k, v in base.items()}


def assert_close(actual, desired, dtype=None, scale: float = 1.0, err_msg: str = "") -> None:
    actual, desired = np.asarray(actual), np.asarray(desired)
    dtype = actual.dtype if dtype is None else dtype
    np.testing.assert_allclose(actual, desired, err_msg=err_msg, **tol(dtype, scale))


def eps(dtype) -> float:
    """Machine epsilon of `dtype`."""
    return float(np.finfo(np.dtype(jnp.dtype(dtype))).eps)


def cond_rtol(dtype, cond: float, factor: float = 10.0) -> float:
    """Normwise relative accuracy of a result computed in `dtype` through a solve or a symmetric eigendecomposition of
    a matrix with condition number `cond`: `factor · cond · eps` (backward-stable algorithms; `factor` covers the
    modest size-dependent constants and the rounding of the inputs to `dtype`)."""
    return factor * cond * eps(dtype)


def assert_normwise_close(actual, desired, rtol: float, scale: float | None = None, err_msg: str = "") -> None:
    """`‖actual − desired‖_F ≤ rtol · scale`, with `scale = ‖desired‖_F` unless given (e.g. the size of the terms a
    result is a difference of). Error bounds of solves and factorizations hold in this normwise form; elementwise
    relative errors of small entries are not bounded by them."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape, err_msg)
    err = float(np.linalg.norm((actual - desired).ravel()))
    ref = float(np.linalg.norm(desired.ravel())) if scale is None else float(scale)
    assert err <= rtol * ref, (f"{err_msg} normwise error {err:.3g} > {rtol:.3g} x {ref:.3g} "
                               f"(ratio {err / (rtol * ref):.3g})")
