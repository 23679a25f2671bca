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
