"""Fan-in of correlated, non-Gaussian branches; spatial `FanInConcat`; kernel-only `Elementwise(fn=None)`.

`FanOut(2) → parallel(Relu(), Erf()) → FanInSum()` is the nonlinearity `relu + erf` of one Gaussian input: its kernel
has cross terms `E[relu(u) erf(v)]` that a sum of independent branches' kernels misses (36% low). References are
Monte Carlo averages of wide finite networks (bound from the Monte Carlo standard error) and SciPy quadrature.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

import ntkit
import ntkit.nn as stax
from ntkit.nn._elementwise import cross_expectations
from tests.tolerance import assert_close

WIDTH = 256
GROUPS, PER_GROUP = 4, 8  # Monte Carlo: 4 groups of 8 networks, the spread of the group means gives the error


def _mc_mean_and_error(net, x, gets=("nngp", "ntk")):
    """Monte Carlo mean over `GROUPS * PER_GROUP` networks and its standard error, entrywise."""
    init_fn, apply_fn, _ = net
    counts = [PER_GROUP * (g + 1) for g in range(GROUPS)]
    averages = list(ntkit.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(7), counts)(x, None, gets))
    out = {}
    for g in gets:
        cum = [np.asarray(getattr(a, g), np.float64) * n for a, n in zip(averages, counts, strict=True)]
        means = np.stack([(cum[i] - (cum[i - 1] if i else 0)) / PER_GROUP for i in range(GROUPS)])
        out[g] = (cum[-1] / counts[-1], means.std(axis=0, ddof=1) / math.sqrt(GROUPS))
    return out


def _within(analytic, mean, error, factor=5.0):
    """`‖analytic − mean‖ ≤ factor · ‖standard error‖ + 1%`: a 4-group error estimate is itself noisy (3 degrees
    of freedom), hence the factor; the 1% covers the finite-width bias, O(1/width)."""
    analytic = np.asarray(analytic, np.float64)
    bound = factor * np.linalg.norm(error) + 0.01 * np.linalg.norm(mean)
    return float(np.linalg.norm(analytic - mean)), float(bound)


def test_relu_plus_erf_matches_monte_carlo(dtype):
    x = jax.random.normal(jax.random.key(0), (4, 5), dtype)
    branches = stax.parallel(stax.Relu(), stax.Erf())
    net = stax.serial(stax.Dense(WIDTH, b_std=0.2), stax.FanOut(2), branches, stax.FanInSum(), stax.Dense(WIDTH))
    analytic = net.kernel(x, None, ("nngp", "ntk"))
    mc = _mc_mean_and_error(net, x)
    for g in ("nngp", "ntk"):
        dist, bound = _within(getattr(analytic, g), *mc[g])
        assert dist <= bound, (g, dist, bound)
    # the same bound rejects the old answer, the independent-branch sum Σ_relu + Σ_erf
    pre = stax.Dense(WIDTH, b_std=0.2)
    naive = stax.serial(pre, stax.Relu()).kernel(x, None, "nngp") + stax.serial(pre, stax.Erf()).kernel(x, None,
                                                                                                         "nngp")
    dist, bound = _within(naive, *mc["nngp"])
    assert dist > bound


@pytest.mark.slow
def test_identity_plus_relu_matches_monte_carlo(dtype):
    """`u + relu(u)`: a Gaussian branch correlated with a nonlinear one (cross term `E[u relu(v)] = Σ₁₂/2`)."""
    x = jax.random.normal(jax.random.key(1), (4, 5), dtype)
    net = stax.serial(stax.Dense(WIDTH), stax.FanOut(2), stax.parallel(stax.Identity(), stax.LeakyRelu(0.3)),
                      stax.FanInSum(), stax.Dense(WIDTH))
    analytic = net.kernel(x, None, ("nngp", "ntk"))
    mc = _mc_mean_and_error(net, x)
    for g in ("nngp", "ntk"):
        dist, bound = _within(getattr(analytic, g), *mc[g])
        assert dist <= bound, (g, dist, bound)


def _scipy_cross(f, g, cov12, var1, var2):
    """`E[f(u) g(v)]` by SciPy's adaptive quadrature over `u = √Σ₁₁ z₁`, `v = a z₁ + b z₂`."""
    s1 = math.sqrt(var1)
    a = cov12 / s1
    b = math.sqrt(var2 - a * a)
    dens = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731

    def inner(z1):
        return integrate.quad(lambda z2: g(a * z1 + b * z2) * dens(z2), -12, 12, epsabs=1e-13, epsrel=1e-12)[0]

    lo = integrate.quad(lambda z1: f(s1 * z1) * inner(z1) * dens(z1), -12, 0, epsabs=1e-13, epsrel=1e-12)[0]
    hi = integrate.quad(lambda z1: f(s1 * z1) * inner(z1) * dens(z1), 0, 12, epsabs=1e-13, epsrel=1e-12)[0]
    return lo + hi


@pytest.mark.parametrize("cov12, var1, var2", [(0.3, 1.0, 0.7), (-0.9, 1.5, 0.6), (0.0, 0.4, 2.0)])
def test_cross_expectations_against_scipy(dtype, cov12, var1, var2):
    relu, erf, leaky = stax.Relu(), stax.Erf(), stax.LeakyRelu(0.2)
    args = [jnp.asarray(v, dtype) for v in (cov12, var1, var2)]
    rtol = 1e-9 if dtype == jnp.float64 else 1e-4
    step = lambda t: float(t > 0)  # noqa: E731
    d_erf = lambda t: 2 / math.sqrt(math.pi) * math.exp(-t * t)  # noqa: E731
    cases = [  # (f, g, kinked one first?, φ_f, φ_g, φ_f', φ_g')
        (relu, erf, True, lambda t: max(t, 0.0), special.erf, step, d_erf),
        (erf, relu, False, special.erf, lambda t: max(t, 0.0), d_erf, step),
        (None, leaky, False, lambda t: t, lambda t: max(t, 0.2 * t), lambda t: 1.0, lambda t: 1.0 if t > 0 else 0.2),
    ]

    def reference(kinked_first, f, g):  # SciPy's inner integral is only accurate for a smooth integrand
        return _scipy_cross(f, g, cov12, var1, var2) if kinked_first else _scipy_cross(g, f, cov12, var2, var1)

    for f, g, kinked_first, fn_f, fn_g, df, dg in cases:
        nngp, d_nngp = cross_expectations(f, g, *args, with_derivative=True)
        np.testing.assert_allclose(float(nngp), reference(kinked_first, fn_f, fn_g), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(float(d_nngp), reference(kinked_first, df, dg), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("cov12, var1, var2", [(0.3, 1.0, 0.7), (-0.9, 1.5, 0.6), (0.0, 0.4, 2.0)])
def test_sign_with_relu_family_against_scipy(dtype, cov12, var1, var2):
    """`E[sign(u) φ(v)]` for φ in the ReLU family is closed-form (it was integrated numerically, ~3e-3 off): SciPy
    with the sign outside (split at its jump) and the inner integral split at φ's kink."""
    s1 = math.sqrt(var1)
    a = cov12 / s1
    b = math.sqrt(var2 - a * a)
    dens = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    args = [jnp.asarray(v, dtype) for v in (cov12, var1, var2)]
    rtol = 1e-9 if dtype == jnp.float64 else 1e-5
    for layer, phi in ((stax.Relu(), lambda t: max(t, 0.0)), (stax.LeakyRelu(0.2), lambda t: max(t, 0.2 * t)),
                       (stax.Abs(), abs), (None, lambda t: t)):
        def inner(z1, phi=phi):
            kink = -a * z1 / b
            f = lambda z2: phi(a * z1 + b * z2) * dens(z2)  # noqa: E731
            return sum(integrate.quad(f, lo, hi, epsabs=1e-13, epsrel=1e-12)[0]
                       for lo, hi in ((-12 + min(kink, 0), kink), (kink, 12 + max(kink, 0))))

        want = (integrate.quad(lambda z1: inner(z1) * dens(z1), 0, 12, epsabs=1e-13, epsrel=1e-12)[0]
                - integrate.quad(lambda z1: inner(z1) * dens(z1), -12, 0, epsabs=1e-13, epsrel=1e-12)[0])
        for f, g, swap in ((stax.Sign(), layer, False), (layer, stax.Sign(), True)):
            nngp, d_nngp = cross_expectations(f, g, *(args if not swap else [args[0], args[2], args[1]]),
                                              with_derivative=True)
            np.testing.assert_allclose(float(nngp), want, rtol=rtol, atol=rtol)
            assert float(d_nngp) == 0.0  # sign' = 0 almost everywhere, as autodiff of the finite network


def test_two_nonlinear_branches_outside_the_pattern_raise():
    net = stax.serial(stax.Dense(4), stax.FanOut(2), stax.parallel(stax.serial(stax.Dense(4), stax.Relu()),
                                                                   stax.Erf()), stax.FanInSum())
    with pytest.raises(ValueError, match="FanInSum: branches \\[0, 1\\] are not Gaussian"):
        net.kernel(jnp.ones((2, 3)), None, "nngp")


@pytest.mark.parametrize("branches", [
    (stax.Identity(), stax.Identity()),  # 2u: the kernel is 4K, adding the branches' kernels gives 2K
    (stax.Identity(), stax.AvgPool((2,), padding="SAME")),
    (stax.serial(stax.Relu(), stax.Flatten()), stax.serial(stax.Erf(), stax.GlobalAvgPool())),
])
def test_weight_free_branches_of_one_input_raise(branches):
    """Branches without weights of their own are correlated functions of the shared input: refused, not summed."""
    net = stax.serial(stax.Conv(4, (2,)), stax.FanOut(2), stax.parallel(*branches), stax.FanInSum())
    x = jnp.ones((2, 5, 3))
    if isinstance(branches[0], stax.serial):  # Flatten/GlobalAvgPool give different shapes: FanInSum says so first
        with pytest.raises(ValueError, match="FanInSum"):
            net.kernel(x, None, "nngp")
        return
    with pytest.raises(ValueError, match=r"FanInSum: branches \[0, 1\] draw no random weights"):
        net.kernel(x, None, "nngp")
    init_fn, apply_fn, _ = net  # the finite network is unaffected
    _, params = init_fn(jax.random.key(0), x.shape)
    assert apply_fn(params, x).shape == (2, 4, 4)


@pytest.mark.parametrize("fan_in, shape", [(stax.FanInProd(), (2, 4, 8)), (stax.FanInConcat(axis=1), (2, 8, 8))])
def test_weight_free_branches_refused_by_every_fan_in_that_needs_cross_terms(fan_in, shape):
    """A product, and a concatenation along a spatial axis, read covariances between branches: refused for
    weight-free branches of one input; along channels the concatenation's kernel needs none and is computed."""
    net = stax.serial(stax.Conv(8, (1,)), stax.FanOut(2), stax.parallel(stax.Identity(), stax.Identity()), fan_in)
    x = jax.random.normal(jax.random.key(6), (2, 4, 3))
    with pytest.raises(ValueError, match=rf"{type(fan_in).__name__}: branches \[0, 1\] draw no random weights"):
        net.kernel(x, None, "nngp")
    init_fn, apply_fn, _ = net
    assert apply_fn(init_fn(jax.random.key(0), x.shape)[1], x).shape == shape
    channels = stax.serial(stax.Conv(8, (1,)), stax.FanOut(2), stax.parallel(stax.Identity(), stax.Identity()),
                           stax.FanInConcat())
    single = stax.Conv(8, (1,))
    assert_close(channels.kernel(x, None, "nngp"), single.kernel(x, None, "nngp"), x.dtype)


def test_raw_input_branch_with_a_nonlinear_branch_raises():
    """The network's inputs are not mean-zero: `x + relu(Wx)` has cross terms `E[relu(u)] mean(x)`."""
    net = stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Dense(8), stax.Relu()), stax.Identity()),
                      stax.FanInSum(), stax.Dense(1))
    with pytest.raises(ValueError, match=r"FanInSum: branches \[0, 1\] are not Gaussian"):
        net.kernel(jnp.ones((2, 8)), None, "nngp")


def test_residual_branch_with_weights_still_adds(dtype):
    """`u + W φ(u)`: one branch draws its own weights, so the cross term vanishes and the kernels add; checked
    against the closed form `K_u + σ_w² E[relu(u) relu(v)] + σ_b²` of the arc-cosine kernel."""
    x = jax.random.normal(jax.random.key(3), (3, 4), dtype)
    net = stax.serial(stax.Dense(8, W_std=1.2, b_std=0.3), stax.FanOut(2),
                      stax.parallel(stax.Identity(), stax.serial(stax.Relu(), stax.Dense(8, W_std=1.5, b_std=0.1))),
                      stax.FanInSum())
    nngp = np.asarray(net.kernel(x, None, "nngp"), np.float64)
    xs = np.asarray(x, np.float64)
    k = 1.2 ** 2 * xs @ xs.T / 4 + 0.3 ** 2
    norm = np.sqrt(np.outer(np.diag(k), np.diag(k)))
    theta = np.arccos(np.clip(k / norm, -1, 1))
    relu = norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    want = k + 1.5 ** 2 * relu + 0.1 ** 2
    np.testing.assert_allclose(nngp, want, rtol=1e-4 if dtype == jnp.float32 else 1e-9, atol=1e-6)


def test_kernel_only_elementwise(dtype):
    """`Elementwise(fn=None, nngp_fn=...)`: the kernel from `nngp_fn` (NTK by Price's theorem), no finite net."""
    x = jax.random.normal(jax.random.key(2), (3, 4), dtype)

    def relu_nngp(cov12, var1, var2):  # arc-cosine kernel, written independently of ntkit's
        norm = jnp.sqrt(var1 * var2)
        theta = jnp.arccos(jnp.clip(cov12 / norm, -1, 1))
        return norm * (jnp.sin(theta) + (math.pi - theta) * jnp.cos(theta)) / (2 * math.pi)

    def relu_d_nngp(cov12, var1, var2):
        theta = jnp.arccos(jnp.clip(cov12 / jnp.sqrt(var1 * var2), -1, 1))
        return (math.pi - theta) / (2 * math.pi)

    custom = stax.serial(stax.Dense(1), stax.Elementwise(nngp_fn=relu_nngp, d_nngp_fn=relu_d_nngp), stax.Dense(1))
    reference = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))
    y = jax.random.normal(jax.random.key(3), (2, 4), dtype)  # off the diagonal: arccos is accurate there
    for get in ("nngp", "ntk"):
        np.testing.assert_allclose(custom.kernel(x, y, get), reference.kernel(x, y, get),
                                   rtol=1e-10 if dtype == jnp.float64 else 1e-5)
    with pytest.raises(NotImplementedError, match="without `fn`"):
        custom.init(jax.random.key(0), (3, 4))
    with pytest.raises(NotImplementedError, match="without `fn`"):
        stax.Elementwise(nngp_fn=relu_nngp).apply((), x)
    with pytest.raises(ValueError, match="give `fn`"):
        stax.Elementwise()


def test_fan_in_concat_axis_errors():
    with pytest.raises(ValueError, match="batch axis"):
        stax.FanInConcat(0).init(jax.random.key(0), [(2, 3), (2, 3)])
    with pytest.raises(ValueError, match="out of range"):
        stax.FanInConcat(3).init(jax.random.key(0), [(2, 3), (2, 3)])
    net = stax.serial(stax.FanOut(2), stax.parallel(stax.Conv(2, (2,)), stax.serial(stax.Conv(2, (2,)), stax.Relu())),
                      stax.FanInConcat(1))
    with pytest.raises(ValueError, match="needs independent Gaussian branches"):
        net.kernel(jnp.ones((2, 5, 3)), None, "nngp")


@pytest.mark.slow
@pytest.mark.parametrize("axis, pool", [(1, False), (2, True), (-1, False)])
def test_fan_in_concat_matches_monte_carlo(dtype, axis, pool):
    x = jax.random.normal(jax.random.key(0), (3, 4, 3, 2), dtype)
    conv = lambda shape: stax.Conv(WIDTH, shape, padding="SAME")  # noqa: E731
    net = stax.serial(stax.FanOut(2), stax.parallel(conv((2, 2)), stax.serial(conv((1, 2)), stax.Relu(), conv((2, 1)))),
                      stax.FanInConcat(axis), stax.Relu(), conv((2, 2)),
                      stax.GlobalAvgPool() if pool else stax.Flatten(), stax.Dense(WIDTH))
    analytic = net.kernel(x, None, ("nngp", "ntk"))
    mc = _mc_mean_and_error(net, x)
    for g in ("nngp", "ntk"):
        dist, bound = _within(getattr(analytic, g), *mc[g])
        assert dist <= bound, (g, dist, bound)
