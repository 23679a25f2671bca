"""THEORY.md §2 exact checks: closed forms against hand computations and against quadrature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from tests.tolerance import assert_close


def _unit_inputs(key, n, d, dtype):
    x = jax.random.normal(key, (n, d), dtype)
    return x / jnp.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(d)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_ntk_diagonal_is_depth_plus_one(depth, dtype):
    layers = [stax.Dense(8, W_std=1.0), stax.Relu()]
    for _ in range(depth - 1):
        layers += [stax.Dense(8, W_std=math.sqrt(2)), stax.Relu()]
    net = stax.serial(*layers, stax.Dense(1, W_std=math.sqrt(2)))
    x = _unit_inputs(jax.random.key(0), 5, 7, dtype)
    ntk = net.kernel(x, None, "ntk")
    assert ntk.dtype == dtype
    # arccos near correlation 1 loses half the digits: θ ≈ √(2ε).
    assert_close(jnp.diag(ntk), np.full(5, depth + 1.0), dtype, scale=100)


def test_one_hidden_layer_angle_formula(dtype):
    theta = np.linspace(0.05, math.pi - 0.05, 9)
    d = 2
    x1 = np.stack([np.full_like(theta, math.sqrt(d)), np.zeros_like(theta)], 1)
    x2 = np.stack([np.cos(theta), np.sin(theta)], 1) * math.sqrt(d)
    net = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1, W_std=math.sqrt(2)))
    ntk = net.kernel(jnp.asarray(x1, dtype), jnp.asarray(x2, dtype), "ntk")
    expected = np.cos(theta) * (math.pi - theta) / math.pi + (np.sin(theta) + (math.pi - theta) * np.cos(theta)) / \
        math.pi
    assert_close(jnp.diag(ntk), expected, dtype, scale=20)


def _covariances(dtype):
    """A grid of valid 2x2 covariances `(Σ₁₂, Σ₁₁, Σ₂₂)` including correlations near ±1."""
    rho = jnp.asarray([-0.99, -0.7, -0.2, 0.0, 0.3, 0.8, 0.999], dtype)
    var1 = jnp.asarray([0.3, 1.0, 2.5], dtype)[:, None]
    var2 = jnp.asarray([0.5, 1.7, 0.9], dtype)[:, None]
    return rho[None, :] * jnp.sqrt(var1 * var2), var1, var2


def test_erf_closed_form_matches_quadrature(dtype):
    c, v1, v2 = _covariances(dtype)
    closed = stax.Erf(a=1.3, b=0.7, c=0.2)
    quad = stax.Elementwise(lambda x: 1.3 * jax.scipy.special.erf(0.7 * x) + 0.2, quadrature_degree=40)
    assert_close(closed._nngp(c, v1, v2), quad._nngp(c, v1, v2), dtype, scale=50)
    assert_close(closed._d_nngp(c, v1, v2), quad._d_nngp(c, v1, v2), dtype, scale=50)


def test_williams_erf_is_theory_formula(dtype):
    c, v1, v2 = _covariances(dtype)
    expected = (2 / math.pi) * np.arcsin(2 * c / np.sqrt((1 + 2 * v1) * (1 + 2 * v2)))
    d_expected = (4 / math.pi) / np.sqrt((1 + 2 * v1) * (1 + 2 * v2) - 4 * c ** 2)
    assert_close(stax.Erf()._nngp(c, v1, v2), expected, dtype, scale=10)
    assert_close(stax.Erf()._d_nngp(c, v1, v2), d_expected, dtype, scale=10)


def test_relu_arccos_matches_quadrature(dtype):
    """ReLU is not smooth: quadrature converges slowly, so the check uses many nodes and a loose bound."""
    c, v1, v2 = _covariances(dtype)
    relu = stax.Relu()
    quad = stax.Elementwise(lambda x: jnp.maximum(x, 0), quadrature_degree=150)
    np.testing.assert_allclose(relu._nngp(c, v1, v2), quad._nngp(c, v1, v2), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(relu._d_nngp(c, v1, v2), quad._d_nngp(c, v1, v2), rtol=3e-2, atol=3e-2)
    theta = np.arccos(np.clip(c / np.sqrt(v1 * v2), -1, 1))
    expected = np.sqrt(v1 * v2) * (np.sin(theta) + (math.pi - theta) * np.cos(theta)) / (2 * math.pi)
    assert_close(relu._nngp(c, v1, v2), expected, dtype, scale=10)
    assert_close(relu._d_nngp(c, v1, v2), (math.pi - theta) / (2 * math.pi), dtype, scale=10)


@pytest.mark.parametrize("make", [
    lambda: (stax.Sin(1.2, 0.8, 0.3), lambda x: 1.2 * jnp.sin(0.8 * x + 0.3)),
    lambda: (stax.Cos(0.7, 1.1, -0.4), lambda x: 0.7 * jnp.cos(1.1 * x - 0.4)),
    lambda: (stax.Exp(0.9, 0.4), lambda x: 0.9 * jnp.exp(0.4 * x)),
    lambda: (stax.Gaussian(1.1, -0.6), lambda x: 1.1 * jnp.exp(-0.6 * x * x)),
    lambda: (stax.Rbf(0.5), lambda x: math.sqrt(2) * jnp.sin(x + math.pi / 4)),
    lambda: (stax.Monomial(3), lambda x: x ** 3),
    lambda: (stax.Polynomial([0.5, -1.0, 0.3, 0.2]), lambda x: 0.5 - x + 0.3 * x ** 2 + 0.2 * x ** 3),
    lambda: (stax.Sigmoid_like(), lambda x: 0.5 + 0.5 * jax.scipy.special.erf(x / 2.4020563531719796)),
    lambda: (stax.Gelu(), lambda x: x * jax.scipy.stats.norm.cdf(x)),
], ids=["sin", "cos", "exp", "gaussian", "rbf", "monomial3", "polynomial", "sigmoid_like", "gelu"])
def test_smooth_closed_forms_match_quadrature(make, dtype):
    layer, fn = make()
    c, v1, v2 = _covariances(dtype)
    quad = stax.Elementwise(fn, quadrature_degree=80)
    assert_close(layer._nngp(c, v1, v2), quad._nngp(c, v1, v2), dtype, scale=100)
    assert_close(layer._d_nngp(c, v1, v2), quad._d_nngp(c, v1, v2), dtype, scale=100)
    assert_close(layer.apply((), jnp.linspace(-2, 2, 7, dtype=dtype)), fn(jnp.linspace(-2, 2, 7, dtype=dtype)),
                 dtype, scale=10)


def test_rbf_nngp_is_rbf_kernel(dtype):
    c, v1, v2 = _covariances(dtype)
    assert_close(stax.Rbf(0.7)._nngp(c, v1, v2), np.exp(-0.7 * (v1 + v2 - 2 * c)), dtype, scale=10)


def test_step_function_is_orthant_probability(dtype):
    c, v1, v2 = _covariances(dtype)
    expected = 0.25 + np.arcsin(c / np.sqrt(v1 * v2)) / (2 * math.pi)
    assert_close(stax.RectifiedMonomial(0)._nngp(c, v1, v2), expected, dtype, scale=10)


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4, 5])
def test_rectified_monomial_exact_values(degree, dtype):
    """At θ = 0, `E[relu(u)^{2n}] = σ^{2n} (2n−1)!!/2`; at θ = π/2 (independent), `(E[relu(u)^n])²` with
    `E[relu(u)^n] = σⁿ (n−1)!!/2 · (√(2/π) for odd n)`: moments of the half-normal, independent of `J_n`."""
    var = 1.7
    layer = stax.RectifiedMonomial(degree)
    v = jnp.asarray([var, var], dtype)
    c = jnp.asarray([var, 0.0], dtype)  # θ = 0, θ = π/2

    def double_factorial(k):
        return math.prod(range(k, 0, -2)) if k > 0 else 1

    same = var ** degree * double_factorial(2 * degree - 1) / 2
    half_moment = var ** (degree / 2) * double_factorial(degree - 1) / 2 * (math.sqrt(2 / math.pi) if degree % 2 else 1)
    assert_close(layer._nngp(c, v, v), np.array([same, half_moment ** 2]), dtype, scale=10)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_rectified_monomial_matches_quadrature(degree, dtype):
    c, v1, v2 = _covariances(dtype)
    layer = stax.RectifiedMonomial(degree)
    quad = stax.Elementwise(lambda x: jnp.where(x > 0, x ** degree, 0), quadrature_degree=150)
    np.testing.assert_allclose(layer._nngp(c, v1, v2), quad._nngp(c, v1, v2), rtol=1e-2, atol=1e-2)


def test_price_theorem_derivative(dtype):
    """Without `d_nngp_fn`, `E[φ'φ']` is `∂E[φφ]/∂Σ₁₂`; for erf that is the Williams closed form."""
    c, v1, v2 = _covariances(dtype)
    layer = stax.Elementwise(jax.scipy.special.erf, nngp_fn=stax.Erf()._nngp)
    assert_close(layer._d_nngp(c, v1, v2), stax.Erf()._d_nngp(c, v1, v2), dtype, scale=20)


def test_gelu_tanh_approximation_is_close_to_exact(dtype):
    """The `tanh` GELU is within ~1e-3 of the exact one, so their kernels (quadrature vs closed form) are close."""
    c, v1, v2 = _covariances(dtype)
    exact, approx = stax.Gelu(), stax.Gelu(approximate=True)
    assert approx.nngp_fn is None and exact.nngp_fn is not None
    np.testing.assert_allclose(approx._nngp(c, v1, v2), exact._nngp(c, v1, v2), atol=3e-3)
    assert float(jnp.max(jnp.abs(approx._nngp(c, v1, v2) - exact._nngp(c, v1, v2)))) > 1e-6


def test_elementwise_numerical_is_quadrature(dtype):
    """neural-tangents' `ElementwiseNumerical(fn, deg, df)` equals the closed form for a smooth `φ`."""
    c, v1, v2 = _covariances(dtype)
    erf = stax.Erf(b=0.7)
    fn = lambda x: jax.scipy.special.erf(0.7 * x)  # noqa: E731
    df = lambda x: 1.4 / math.sqrt(math.pi) * jnp.exp(-0.49 * x * x)  # noqa: E731
    for layer in (stax.ElementwiseNumerical(fn, 40), stax.ElementwiseNumerical(fn, 40, df=df)):
        assert_close(layer._nngp(c, v1, v2), erf._nngp(c, v1, v2), dtype, scale=100)
        assert_close(layer._d_nngp(c, v1, v2), erf._d_nngp(c, v1, v2), dtype, scale=100)


def test_relu_is_exact_on_perfect_correlation(dtype):
    """Each input with itself has cos θ = 1 exactly, so `E[φ'φ'] = 1/2` and `E[φφ] = Σ/2` without rounding drift
    (an angle of √ulp there compounds through the NTK of deep networks)."""
    v = jnp.exp(jnp.linspace(-3, 3, 1001, dtype=dtype))
    relu = stax.Relu()
    np.testing.assert_array_equal(relu._d_nngp(v, v, v), jnp.full_like(v, 0.5))
    assert_close(relu._nngp(v, v, v), v / 2, dtype)
    assert_close(relu._nngp(-v, v, v), jnp.zeros_like(v), dtype)
