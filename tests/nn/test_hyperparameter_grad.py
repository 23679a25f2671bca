"""Analytic kernels are differentiable in the layers' hyperparameters (`W_std`, `b_std`), eagerly and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from tests.tolerance import assert_close


def test_gradient_of_a_dense_kernel_is_the_closed_form(dtype):
    """One Dense layer: Σ = Θ = σ_w² x·x'/d + σ_b², so ∂/∂σ_w = 2σ_w x·x'/d and ∂/∂σ_b = 2σ_b, exactly."""
    x = jax.random.normal(jax.random.key(0), (4, 3), dtype)
    w, b = jnp.asarray(1.3, dtype), jnp.asarray(0.4, dtype)

    def ntk(w, b):
        return stax.Dense(2, W_std=w, b_std=b).kernel(x, None, "ntk")

    d_w, d_b = jax.jacrev(ntk, argnums=(0, 1))(w, b)
    gram = x @ x.T / 3
    assert_close(d_w, 2 * w * gram, scale=2)
    assert_close(d_b, jnp.full((4, 4), 2 * b), scale=2)
    assert_close(jax.jit(jax.jacrev(ntk))(w, b), 2 * w * gram, scale=2)


def test_gradient_of_a_deep_kernel_matches_finite_differences(dtype):
    if dtype != jnp.float64:
        pytest.skip("central differences need float64 to resolve the derivative")
    x = jax.random.normal(jax.random.key(1), (5, 3), dtype)

    def total(w, b):
        net = stax.serial(stax.Dense(8, W_std=w, b_std=b), stax.Erf(), stax.Dense(8, W_std=w, b_std=b), stax.Relu(),
                          stax.Dense(1, W_std=w, b_std=b))
        k = net.kernel(x, None, ("nngp", "ntk"))
        return jnp.sum(k.ntk) + jnp.sum(k.nngp ** 2)

    w, b, eps = 1.3, 0.2, 1e-4
    grad = jax.grad(total, argnums=(0, 1))(w, b)
    fd = ((total(w + eps, b) - total(w - eps, b)) / (2 * eps), (total(w, b + eps) - total(w, b - eps)) / (2 * eps))
    # central differences: truncation O(eps² f''') ~ 1e-8 relative, rounding ~ 1e-16/eps ~ 1e-12
    np.testing.assert_allclose(np.asarray(grad), np.asarray(fd), rtol=1e-6)


def test_forward_and_reverse_mode_agree_and_are_finite_on_the_diagonal(dtype):
    """Each input with itself has cos θ = 1 exactly, where arccos and √(1 − cos²) have infinite derivatives; the
    tangents reaching them are zero, and both modes must give finite, equal derivatives (scikit-learn's kernels use
    forward mode)."""
    x = jax.random.normal(jax.random.key(2), (4, 3), dtype)

    def ntk(w):
        net = stax.serial(stax.Dense(8, W_std=w, b_std=0.3), stax.Relu(), stax.Dense(8, W_std=w, b_std=0.3),
                          stax.LeakyRelu(0.2), stax.Dense(1, W_std=w, b_std=0.3))
        return net.kernel(x, None, "ntk")

    w = jnp.asarray(1.2, dtype)
    forward, reverse = jax.jacfwd(ntk)(w), jax.jacrev(ntk)(w)
    assert bool(jnp.all(jnp.isfinite(forward)))
    assert_close(forward, reverse, scale=10)
