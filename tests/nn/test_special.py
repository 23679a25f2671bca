"""The vectorised arcsin/arccos against NumPy, values and derivatives, in the run's dtype."""

import jax
import jax.numpy as jnp
import numpy as np

from ntkit.nn._special import arccos, arcsin

# float32: ~1.5 ulp of π; float64: a few ulp.
_ATOL = {np.dtype(np.float32): 5e-7, np.dtype(np.float64): 5e-15}


def test_values_match_numpy(dtype):
    x = np.concatenate([np.linspace(-1, 1, 40001), [-0.5, 0.5, 1 - 1e-7, -1 + 1e-7, 0.0]]).astype(dtype)
    exact = x.astype(np.float64)
    atol = _ATOL[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(arccos(jnp.asarray(x))), np.arccos(exact), rtol=0, atol=atol)
    np.testing.assert_allclose(np.asarray(arcsin(jnp.asarray(x))), np.arcsin(exact), rtol=0, atol=atol)
    assert arccos(jnp.asarray(x)).dtype == dtype


def test_derivatives_match_closed_forms(dtype):
    x = jnp.asarray(np.linspace(-0.95, 0.95, 39), dtype)
    d_acos = jax.vmap(jax.grad(arccos))(x)
    d_asin = jax.vmap(jax.grad(arcsin))(x)
    exact = 1.0 / np.sqrt(1.0 - np.asarray(x, np.float64) ** 2)
    rtol = 1e-5 if dtype == jnp.float32 else 1e-11  # derivatives of the interpolant lose ~2 digits
    np.testing.assert_allclose(np.asarray(d_asin), exact, rtol=rtol)
    np.testing.assert_allclose(np.asarray(d_acos), -exact, rtol=rtol)
