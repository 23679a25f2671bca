"""`signal_propagation` against closed forms (ReLU family, Williams' erf kernel), SciPy quadrature, and Monte Carlo
deep finite networks written in NumPy."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.special

import ntkit.nn as stax
from ntkit.analysis import signal_propagation
from tests.tolerance import assert_close, eps


def _gauss(g, q):
    """`E[g(√q z)]` by SciPy adaptive quadrature."""
    s = math.sqrt(q)
    return scipy.integrate.quad(lambda z: g(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12,
                                epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def _fixed_point(phi, w, b):
    """The stable `q*` of `q ↦ w² E[φ(√q z)²] + b²` by SciPy's brentq on a bracket (φ bounded)."""
    return scipy.optimize.brentq(lambda q: w * w * _gauss(lambda x: phi(x) ** 2, q) + b * b - q, 1e-12, 1e3,
                                 xtol=1e-14, rtol=1e-13)


@pytest.mark.parametrize(("w", "b"), [(0.5, 0.0), (1.0, 0.2), (1.3, 0.5), (1.3, 1.0)])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_relu_family_closed_form(w, b, alpha, dtype):
    # LeakyReLU(α): E[φ(√q z)²] = q(1 + α²)/2, E[φ'²] = (1 + α²)/2, so q* = b²/(1 − w²(1 + α²)/2) and χ₁ = w²(1 + α²)/2.
    act = stax.Relu() if alpha == 0 else stax.LeakyRelu(alpha)
    slope = w * w * (1 + alpha * alpha) / 2
    sp = signal_propagation(act, w, b)
    assert sp.phase == "ordered"
    assert_close(sp.q_star, b * b / (1 - slope), dtype, scale=10)
    assert_close(sp.chi_1, slope, dtype)
    assert sp.c_star == 1.0 and sp.chi_c == sp.chi_1
    assert_close(sp.xi_c, -1 / math.log(slope), dtype, scale=10)


def test_relu_critical_point_and_explosion():
    crit = signal_propagation(stax.Relu(), math.sqrt(2), 0.0, q_init=3.0)
    assert crit.phase == "critical" and crit.xi_c == math.inf
    assert abs(crit.q_star - 3.0) < 1e-5 and abs(crit.chi_1 - 1) < 1e-6  # every q is a fixed point: q_init stays
    for w, b in [(1.5, 0.0), (2.0, 0.3), (math.sqrt(2), 0.1)]:  # σ_w² > 2, or = 2 with a bias: q grows forever
        sp = signal_propagation(stax.Relu(), w, b)
        assert sp.q_star == math.inf and sp.phase == "unbounded", (w, b, sp)
        assert math.isnan(sp.xi_c) and math.isnan(sp.c_star)
        np.testing.assert_allclose(sp.chi_1, w * w / 2, rtol=1e-5)  # ReLU's χ₁ does not depend on q
    assert signal_propagation(stax.Relu(), 1.2, 0.0).q_star == 0.0  # σ_w² < 2 without bias: the signal dies


@pytest.mark.parametrize(("w", "b"), [(1.0, 0.3), (1.3, 0.3), (2.5, 0.1), (0.6, 0.05)])
def test_erf_against_scipy(w, b, dtype):
    erf = scipy.special.erf
    q = _fixed_point(erf, w, b)
    chi_1 = w * w * _gauss(lambda x: 4 / math.pi * math.exp(-2 * x * x), q)
    sp = signal_propagation(stax.Erf(), w, b)
    rtol = 100 * eps(dtype) / max(1 - w * w * 4 / math.pi / (1 + 2 * q) ** 1.5, 1e-3)  # rounding over 1 − slope
    np.testing.assert_allclose(sp.q_star, q, rtol=rtol)
    np.testing.assert_allclose(sp.chi_1, chi_1, rtol=100 * eps(dtype))
    if chi_1 < 1:
        assert sp.phase == "ordered" and sp.c_star == 1.0
        np.testing.assert_allclose(sp.xi_c, -1 / math.log(chi_1), rtol=1e3 * eps(dtype))
        return
    # Chaotic: c* solves c q* = w² (2/π) asin(2cq*/(1 + 2q*)) + b² (Williams 1997) below 1; χ_c from the same paper.
    assert sp.phase == "chaotic"
    c_star = scipy.optimize.brentq(lambda c: w * w * 2 / math.pi * math.asin(2 * c * q / (1 + 2 * q)) + b * b - c * q,
                                   -0.999, 0.999 - 1e-9, xtol=1e-15)
    chi_c = w * w * 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - 4 * c_star ** 2 * q ** 2)
    np.testing.assert_allclose(sp.c_star, c_star, rtol=1e3 * eps(dtype) / (1 - chi_c), atol=1e3 * eps(dtype))
    np.testing.assert_allclose(sp.chi_c, chi_c, rtol=1e3 * eps(dtype))
    np.testing.assert_allclose(sp.xi_c, -1 / math.log(chi_c), rtol=1e4 * eps(dtype))


@pytest.mark.parametrize(("w", "b"), [(1.5, 0.1), (0.9, 0.3)])
def test_tanh_quadrature_against_scipy(w, b, dtype):
    # tanh has no closed form: the layer's Gauss–Hermite quadrature against SciPy's adaptive quadrature.
    q = _fixed_point(math.tanh, w, b)
    chi_1 = w * w * _gauss(lambda x: math.cosh(x) ** -4, q)
    # The default 25 nodes are accurate to ~3e-5 on tanh (poles at ±iπ/2 slow Gauss–Hermite's convergence); 100
    # nodes to rounding.
    sp = signal_propagation(stax.Elementwise(jnp.tanh, quadrature_degree=100), w, b)
    np.testing.assert_allclose(sp.q_star, q, rtol=max(1e3 * eps(dtype), 1e-9))
    np.testing.assert_allclose(sp.chi_1, chi_1, rtol=max(1e3 * eps(dtype), 1e-9))
    coarse = signal_propagation(stax.Elementwise(jnp.tanh), w, b)
    np.testing.assert_allclose(coarse.q_star, q, rtol=1e-4)
    assert sp.phase == ("chaotic" if chi_1 > 1 else "ordered")


@pytest.mark.parametrize("b", [0.0, 0.3])
def test_erf_critical_line(b, dtype):
    # σ_b = 0: q* = 0 and χ₁ = σ_w² φ'(0)² = 4σ_w²/π, critical at σ_w = √π/2. σ_b > 0: solve χ₁(σ_w) = 1 with SciPy.
    if b == 0:
        w_crit = math.sqrt(math.pi) / 2
    else:
        def chi(w):
            return w * w * _gauss(lambda x: 4 / math.pi * math.exp(-2 * x * x), _fixed_point(scipy.special.erf, w, b))
        w_crit = scipy.optimize.brentq(lambda w: chi(w) - 1, 0.5, 3.0, xtol=1e-12)
    assert signal_propagation(stax.Erf(), w_crit, b).phase == "critical"
    # Without bias χ₁ leaves 1 slowly on the chaotic side (q* grows from 0): 1 + 5e-4 at 1.02 σ_crit, 1 + 1e-2 at 1.1.
    assert signal_propagation(stax.Erf(), w_crit * 0.95, b).phase == "ordered"
    assert signal_propagation(stax.Erf(), w_crit * 1.1, b).phase == "chaotic"
    assert signal_propagation(stax.Erf(), w_crit * 0.95, b, critical_tol=0.2).phase == "critical"


def _deep_network_correlations(phi, w, b, q, c0, width, depth, rng):
    """Correlation of two inputs' pre-activations at each layer of a finite NumPy network (float64)."""
    cov = q * np.array([[1.0, c0], [c0, 1.0]])
    h = rng.multivariate_normal(np.zeros(2), cov, size=width).T  # (2, width): first layer at its fixed point
    out = []
    for _ in range(depth):
        h = phi(h) @ (rng.normal(size=(width, width)) * w / math.sqrt(width)) + b * rng.normal(size=width)
        n0, n1 = np.linalg.norm(h[0]), np.linalg.norm(h[1])
        # 1 − c = (‖h₀ − h₁‖² − (‖h₀‖ − ‖h₁‖)²)/(2‖h₀‖‖h₁‖), without cancellation when c is near 1
        out.append(1 - (np.sum((h[0] - h[1]) ** 2) - (n0 - n1) ** 2) / (2 * n0 * n1))
    return np.array(out)


def test_monte_carlo_ordered_depth_scale():
    # Ordered phase: 1 − c_l shrinks by χ₁ per layer near c = 1; fitted over 12 layers of 8 NumPy networks of
    # width 1000 from c₀ = 0.99. ξ_c ≈ 1.95 here, so log(1 − c) falls by ~6 over the fit; the standard error of the
    # mean slope measured 1.3% (and the measured ξ 1.1% off): 5% is about 4 standard errors.
    w, b = 0.8, 0.3
    sp = signal_propagation(stax.Erf(), w, b)
    assert sp.phase == "ordered"
    rng = np.random.default_rng(0)
    slopes = []
    for _ in range(8):
        c = _deep_network_correlations(scipy.special.erf, w, b, sp.q_star, 0.99, 1000, 12, rng)
        slopes.append(np.polyfit(np.arange(c.size), np.log(1 - c), 1)[0])
    xi_measured = -1 / np.mean(slopes)
    np.testing.assert_allclose(xi_measured, sp.xi_c, rtol=0.05)


def test_monte_carlo_chaotic_fixed_point():
    # Chaotic phase: correlations of deep finite networks settle at c* < 1 (8 networks, width 500, depth 20 ≈ 4ξ_c
    # from c₀ = 0.5; the spread of a correlation of 500 units is ~1/√500: 4 standard errors of the mean of 8).
    w, b = 2.0, 0.5
    sp = signal_propagation(stax.Erf(), w, b)
    assert sp.phase == "chaotic" and 0.2 < sp.c_star < 0.9
    rng = np.random.default_rng(1)
    final = [_deep_network_correlations(scipy.special.erf, w, b, sp.q_star, 0.5, 500, 20, rng)[-1]
             for _ in range(8)]
    assert abs(np.mean(final) - sp.c_star) < 4 / math.sqrt(500 * 8)


def test_bad_inputs():
    with pytest.raises(TypeError, match="activation"):
        signal_propagation(stax.Dense(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="W_std"):
        signal_propagation(stax.Relu(), -1.0, 0.0)
    with pytest.raises(ValueError, match="q_init"):
        signal_propagation(stax.Relu(), 1.0, 0.0, q_init=0.0)
    with pytest.raises(TypeError, match="phase_diagram"):
        signal_propagation(stax.Relu(), np.ones(3), 0.0)
