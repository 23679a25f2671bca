"""`ntkit.predict` under `jax.jit` and `jax.grad`.

Jitted calls (over the times, the train kernel, the test-train kernel or the test inputs) give the eager values; a
jitted predict_fn keeps no tracer between traces (`jax.checking_leaks`) and reuses the factorization of a concrete
kernel instead of putting one in every trace; derivatives in `t` and in the learning rate match closed forms
(docs/theory.md §3: `d/dt f_t(X) = −(η/nk) Θ e^{−τΘ} (f₀ − Y)`, and `f` depends on `t` and `η` through `τ = ηt/nk`
only) in both dtypes and central finite differences in float64 (also in the kernel, for `gradient_descent_mse`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ntkit
from ntkit.predict import (
    ODEState,
    gp_inference,
    gradient_descent,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
    max_learning_rate,
)
from tests.tolerance import assert_close, assert_normwise_close, cond_rtol

float64_only = pytest.mark.skipif(not jax.config.jax_enable_x64, reason="finite differences need float64")


def _mse(fx, y):
    return 0.5 * jnp.mean((fx - y) ** 2)


def _problem(dtype, n=6, n_test=3, k=2, seed=0):
    """A well-conditioned train-train kernel (cond ≈ 30-120), test-train kernel, targets, initial outputs."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n + 3))
    k_dd, k_td = a @ a.T / n, rng.normal(size=(n_test, n + 3)) @ a.T / n
    y, f0, g0 = rng.normal(size=(n, k)), 0.3 * rng.normal(size=(n, k)), 0.3 * rng.normal(size=(n_test, k))
    return [jnp.asarray(v, dtype) for v in (k_dd, k_td, y, f0, g0)]


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def _central_difference(fn, x, h):
    return (fn(x + h) - fn(x - h)) / (2 * h)


def _primitives(fn, *args):
    """The jaxpr of `fn(*args)` as text, nested jaxprs included: which primitives a trace of it runs."""
    return str(jax.make_jaxpr(fn)(*args))


# --- gradient_descent_mse ---------------------------------------------------------------------------------------


def test_mse_jit_over_t_and_kernels_equals_eager(dtype):
    k_dd, k_td, y, f0, g0 = _problem(dtype)
    lr, ts = 0.7, jnp.asarray([[0.0, 3.0], [30.0, 300.0]], dtype)
    predict_fn = gradient_descent_mse(k_dd, y, lr)
    eager = predict_fn(ts, f0, g0, k_td)
    rtol = cond_rtol(dtype, np.linalg.cond(np.asarray(k_dd, np.float64)))
    jitted = {
        "t": jax.jit(lambda t: predict_fn(t, f0, g0, k_td))(ts),
        "everything": jax.jit(predict_fn)(ts, f0, g0, k_td),
        "k_test_train": jax.jit(lambda kt: predict_fn(ts, f0, g0, kt))(k_td),
        "k_train_train": jax.jit(lambda k: gradient_descent_mse(k, y, lr)(ts, f0, g0, k_td))(k_dd),
        "learning_rate": jax.jit(lambda eta: gradient_descent_mse(k_dd, y, eta)(ts, f0, g0, k_td))(lr),
    }
    for what, out in jitted.items():
        for a, b in zip(out, eager, strict=True):
            assert_normwise_close(a, b, rtol, err_msg=f"jit over {what}")
    at_inf = jax.jit(lambda kt: predict_fn(None, f0, g0, kt))(k_td)
    for a, b in zip(at_inf, predict_fn(None, f0, g0, k_td), strict=True):
        assert_normwise_close(a, b, rtol, err_msg="t=None under jit")


def test_mse_jitted_predict_fn_keeps_no_tracer_and_factorizes_once(dtype):
    k_dd, k_td, y, f0, _ = _problem(dtype)
    predict_fn = gradient_descent_mse(k_dd, y, 0.7)
    with jax.checking_leaks():
        at = jax.jit(lambda t: predict_fn(t, f0))
        first = at(jnp.asarray(2.0, dtype))  # the first call ever: it computes (and keeps) the eigendecomposition
        second = at(jnp.asarray([5.0, 50.0], dtype))  # another shape: a second trace reuses it
        third = jax.jit(lambda kt: predict_fn(None, None, None, kt))(k_td)  # the Cholesky factor, likewise
        again = jax.jit(lambda kt: predict_fn(None, None, None, kt))(2 * k_td)
    assert_close(first, predict_fn(2.0, f0), dtype)
    assert_close(second, predict_fn(jnp.asarray([5.0, 50.0], dtype), f0), dtype)
    assert_close(third, predict_fn(None, None, None, k_td), dtype)
    assert_close(again, predict_fn(None, None, None, 2 * k_td), dtype)
    # The factorizations of the closed-over concrete kernel are constants of the trace, not recomputed in it...
    assert "eigh" not in _primitives(lambda t: predict_fn(t, f0), 1.0)
    assert "cholesky" not in _primitives(lambda kt: predict_fn(None, None, None, kt), k_td)
    # ... while a traced kernel is factorized inside the trace.
    assert "eigh" in _primitives(lambda k: gradient_descent_mse(k, y)(1.0, f0), k_dd)


def test_mse_derivatives_in_t_and_learning_rate_are_the_closed_form(dtype):
    """`d/dt f_t(X) = −(η/nk) Θ e^{−τΘ}(f₀ − Y)`, `d/dt f_t(x) = −(η/nk) Θ(x,X) e^{−τΘ}(f₀ − Y)`;
    `d/dη = (t/η) d/dt`."""
    k_dd, k_td, y, f0, g0 = _problem(dtype, seed=1)
    lr, t = 0.7, 20.0
    kd, kt, yd, fd = _f64(k_dd, k_td, y, f0)
    size = y.size
    decayed = scipy.linalg.expm(-lr * t / size * kd) @ (fd - yd)
    d_train, d_test = -lr / size * kd @ decayed, -lr / size * kt @ decayed
    rtol = cond_rtol(dtype, np.linalg.cond(kd))
    # Errors scale with the undecayed sizes `(η/nk) ‖Θ‖ ‖f₀ − Y‖`, not with the decayed derivatives.
    scales = [lr / size * np.linalg.norm(m) * np.linalg.norm(fd - yd) for m in (kd, kt)]

    by_t = jax.jacfwd(lambda s: gradient_descent_mse(k_dd, y, lr)(s, f0, g0, k_td))(jnp.asarray(t, dtype))
    by_t_rev = jax.jit(jax.jacrev(lambda s: gradient_descent_mse(k_dd, y, lr)(s, f0, g0, k_td)))(jnp.asarray(t, dtype))
    by_lr = jax.jacrev(lambda eta: gradient_descent_mse(k_dd, y, eta)(t, f0, g0, k_td))(jnp.asarray(lr, dtype))
    for got, factor in ((by_t, 1.0), (by_t_rev, 1.0), (by_lr, t / lr)):
        assert_normwise_close(got[0], factor * d_train, rtol, scale=factor * scales[0])
        assert_normwise_close(got[1], factor * d_test, rtol, scale=factor * scales[1])


@float64_only
def test_mse_gradients_match_central_finite_differences():
    k_dd, k_td, y, f0, g0 = _problem(jnp.float64, seed=2)
    target = jnp.ones_like(g0)

    def loss(t, lr):
        train, test = gradient_descent_mse(k_dd, y, lr)(t, f0, g0, k_td)
        return jnp.sum(train**2) + jnp.sum((test - target) ** 2)

    t, lr = 15.0, 0.8
    g_t, g_lr = jax.grad(loss, argnums=(0, 1))(t, lr)
    loss = jax.jit(loss)
    # Step 1e-4 relative: truncation O(h²) ~ 1e-8, rounding O(eps/h) ~ 1e-12, both relative.
    np.testing.assert_allclose(g_t, _central_difference(lambda s: loss(s, lr), t, 1e-4 * t), rtol=1e-7)
    np.testing.assert_allclose(g_lr, _central_difference(lambda e: loss(t, e), lr, 1e-4 * lr), rtol=1e-7)
    # ... and in the kernel, through `eigh` (distinct eigenvalues here), along a symmetric direction.
    direction = np.random.default_rng(0).normal(size=k_dd.shape)
    direction = jnp.asarray(direction + direction.T)

    def along(k):
        train, test = gradient_descent_mse(k, y, lr)(t, f0, g0, k_td)
        return jnp.sum(train**2) + jnp.sum((test - target) ** 2)

    g_k = jnp.vdot(jax.grad(along)(k_dd), direction)
    np.testing.assert_allclose(g_k, _central_difference(lambda a: along(k_dd + a * direction), 0.0, 1e-5), rtol=1e-6)


def test_mse_checks_on_concrete_values_still_raise_under_jit(dtype):
    rng = np.random.default_rng(6)
    feats = rng.normal(size=(6, 3))
    k_dd, y = jnp.asarray(feats @ feats.T, dtype), jnp.asarray(rng.normal(size=(6, 1)), dtype)
    predict_fn = gradient_descent_mse(k_dd, y)  # singular: rank 3
    with pytest.raises(ValueError, match="singular"):
        jax.jit(lambda kt: predict_fn(None, 0.0, None, kt))(k_dd[:2])
    with pytest.raises(ValueError, match="singular"):
        jax.jit(lambda f: predict_fn(jnp.inf, f, None, k_dd[:2]))(jnp.zeros_like(y))
    with pytest.raises(ValueError, match="`t`"):
        jax.jit(lambda f: predict_fn(-1.0, f))(jnp.zeros_like(y))


# --- gradient_descent (ODE) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [None, 0.6])
def test_ode_jit_over_t_and_kernel_equals_eager(dtype, momentum):
    k_dd, k_td, y, f0, g0 = _problem(dtype, seed=3)
    lr = 0.9
    ts = jnp.asarray([[3.0, 0.0], [3.0, 12.0]], dtype)  # unsorted, repeated, and t = 0
    predict_fn = gradient_descent(_mse, k_dd, y, lr, momentum=momentum, method="ode")
    eager = predict_fn(ts, f0, g0, k_td)
    with jax.checking_leaks():
        by_t = jax.jit(lambda t: predict_fn(t, f0, g0, k_td))(ts)
        by_k = jax.jit(lambda k, kt: gradient_descent(_mse, k, y, lr, momentum=momentum, method="ode")(
            ts, f0, g0, kt))(k_dd, k_td)
    for out in (by_t, by_k):
        for a, b in zip(out, eager, strict=True):
            assert_close(a, b, dtype)
    assert_close(eager[0][0, 1], f0, dtype)  # t = 0 gives the initial outputs
    assert_close(eager[0][0, 0], eager[0][1, 0], dtype)  # the repeated time gives the same outputs


@pytest.mark.parametrize("momentum", [None, 0.6])
def test_ode_time_derivative_is_the_right_hand_side(dtype, momentum):
    """`d f(tᵢ)/dtᵢ = −(η/nk) Θ (f(tᵢ) − Y)` for every entry of `t`, repeated and zero ones too; with momentum
    `df/dt = √η q`, `q` the velocity the `ODEState` returns. One reverse pass with the cotangent `wᵢ = i + 1` on
    the outputs at `tᵢ` gives `wᵢ d Σf(tᵢ)/dtᵢ`: a derivative credited to the wrong entry would show."""
    k_dd, _, y, f0, _ = _problem(dtype, seed=4)
    lr = 0.9
    ts = jnp.asarray([4.0, 0.0, 4.0, 10.0], dtype)
    predict_fn = gradient_descent(_mse, k_dd, y, lr, momentum=momentum, method="ode")
    out, vjp = jax.vjp(lambda t: predict_fn(t, ODEState(f0)), ts)
    w = jnp.arange(1, ts.size + 1, dtype=dtype)
    weights = jnp.broadcast_to(w[:, None, None], out.fx_train.shape)
    (grad,) = vjp(ODEState(weights, None, None if momentum is None else jnp.zeros_like(weights), None))
    if momentum is None:
        f = np.asarray(out.fx_train, np.float64)
        rhs = -lr / y.size * np.einsum("ij,tjk->tik", np.asarray(k_dd, np.float64), f - np.asarray(y, np.float64))
    else:
        rhs = np.sqrt(lr) * np.asarray(out.qx_train, np.float64)
        assert np.all(rhs[1] == 0) and np.abs(rhs[0]).sum() > 0.1  # starts at rest, then moves
    rtol = 100 * (1e-6 if dtype == jnp.float32 else 1e-10)  # see test_ode.py: the integrator's tolerance
    assert_normwise_close(grad / w, rhs.sum(axis=(1, 2)), rtol)


@float64_only
@pytest.mark.parametrize("momentum", [None, 0.6])
def test_ode_gradients_match_central_finite_differences(momentum):
    """Reverse mode through `odeint`'s adjoint ODE against central differences of the forward solution (both with
    integrator tolerance 1e-12, so the differences' noise, ~1e-12/h, stays near 1e-8)."""
    k_dd, k_td, y, f0, g0 = _problem(jnp.float64, seed=5)

    def loss(t, lr):
        predict_fn = gradient_descent(_mse, k_dd, y, lr, momentum=momentum, rtol=1e-12, atol=1e-12, method="ode")
        train, test = predict_fn(t, f0, g0, k_td)
        return jnp.sum((train - 0.5) ** 2) + jnp.sum(test**2)

    t, lr = 8.0, 0.9
    g_t, g_lr = jax.grad(loss, argnums=(0, 1))(t, lr)
    loss = jax.jit(loss)  # one compilation for the four evaluations
    np.testing.assert_allclose(g_t, _central_difference(lambda s: loss(s, lr), t, 1e-4 * t), rtol=1e-6)
    np.testing.assert_allclose(g_lr, _central_difference(lambda e: loss(t, e), lr, 1e-4 * lr), rtol=1e-6)
    if momentum is None:  # the same derivatives as the closed form's
        def closed(t, lr):
            train, test = gradient_descent_mse(k_dd, y, lr)(t, f0, g0, k_td)
            return jnp.sum((train - 0.5) ** 2) + jnp.sum(test**2)

        np.testing.assert_allclose((g_t, g_lr), jax.grad(closed, argnums=(0, 1))(t, lr), rtol=1e-8)


# --- gradient_descent_mse_ensemble --------------------------------------------------------------------------------


def _counting_kernel_fn(calls):
    """NNGP `exp(−|x − x'|²/2)` and NTK `NNGP + x·x'/d` in JAX; records `(N1, x2 is None)` of every call."""

    def kernel_fn(x1, x2, get):
        calls.append((x1.shape[0], x2 is None))
        x2 = x1 if x2 is None else x2
        sq = jnp.sum(x1**2, 1)[:, None] + jnp.sum(x2**2, 1)[None, :] - 2 * x1 @ x2.T
        nngp = jnp.exp(-sq / 2)
        return ntkit.Kernel(nngp=nngp, ntk=nngp + x1 @ x2.T / x1.shape[1])

    return kernel_fn


def test_ensemble_under_jit_and_grad(dtype):
    rng = np.random.default_rng(7)
    x, xt = jnp.asarray(rng.normal(size=(6, 3)), dtype), jnp.asarray(rng.normal(size=(4, 3)), dtype)
    y = jnp.asarray(np.sin(rng.normal(size=(6, 2))), dtype)
    lr, t, ridge = 1.5, 10.0, 0.01
    calls = []
    predict_fn = gradient_descent_mse_ensemble(_counting_kernel_fn(calls), x, y, lr, diag_reg=ridge)
    # Its very first call is traced, yet kernels and eigendecomposition are computed outside the trace, and kept.
    assert "eigh" not in _primitives(lambda s: predict_fn(s, xt, "ntk", compute_cov=True), t)
    with jax.checking_leaks():  # what the traced calls keep must not be tracers
        by_t = jax.jit(lambda s: predict_fn(s, xt, "ntk", compute_cov=True))(t)
        by_x = jax.jit(lambda z: predict_fn(t, z, "ntk", compute_cov=True))(xt)
        on_train = jax.jit(lambda s: predict_fn(s, None, "ntk", compute_cov=True))(jnp.asarray([t, 2 * t], dtype))
    eager = predict_fn(t, xt, "ntk", compute_cov=True)
    assert calls.count((6, True)) == 1, "the train-train kernels are computed once (in the first trace), then kept"
    k = _counting_kernel_fn([])(x, None, None)
    rtol = cond_rtol(dtype, np.linalg.cond(np.asarray(k.ntk, np.float64)))
    for out in (by_t, by_x):
        assert_normwise_close(out.mean, eager.mean, rtol)
        assert_normwise_close(out.covariance, eager.covariance, rtol)
    assert_normwise_close(on_train.mean[0], predict_fn(t, None, "ntk"), rtol)
    def fresh(train_inputs, eta):
        return gradient_descent_mse_ensemble(_counting_kernel_fn([]), train_inputs, y, eta, diag_reg=ridge)

    by_train = jax.jit(lambda z: fresh(z, lr)(t, xt, "ntk"))(x)
    assert_normwise_close(by_train, eager.mean, rtol)
    # d/dt of the mean A_t(x) Y: (η/nk) Θ(x,X) e^{−τΘ̃} Y (Θ̃ = Θ + ridge); d/dη = (t/η) d/dt.
    kd, kt, yd = _f64(k.ntk, _counting_kernel_fn([])(xt, x, None).ntk, y)
    kd = kd + ridge * np.mean(np.diag(kd)) * np.eye(len(kd))
    d_mean = lr / y.size * kt @ scipy.linalg.expm(-lr * t / y.size * kd) @ yd
    size = lr / y.size * np.linalg.norm(kt) * np.linalg.norm(yd)  # undecayed: what rounding errors scale with
    by_t = jax.jacrev(lambda s: predict_fn(s, xt, "ntk"))(jnp.asarray(t, dtype))
    assert_normwise_close(by_t, d_mean, rtol, scale=size)
    by_lr = jax.jacrev(lambda eta: fresh(x, eta)(t, xt, "ntk"))
    assert_normwise_close(by_lr(jnp.asarray(lr, dtype)), t / lr * d_mean, rtol, scale=t / lr * size)


# --- gp_inference and max_learning_rate ---------------------------------------------------------------------------


def test_gp_inference_under_jit_and_grad(dtype):
    k_dd, k_td, y, _, _ = _problem(dtype, seed=8)
    k_tt = k_td @ k_td.T + jnp.eye(3, dtype=dtype)
    eps = 0.3
    predict_fn = gp_inference(k_dd, y, diag_reg=eps, diag_reg_absolute_scale=True)
    # Its very first call is traced, yet the Cholesky factor is computed outside the trace, and kept.
    assert "cholesky" not in _primitives(lambda a: predict_fn("nngp", a), k_td)
    with jax.checking_leaks():  # what the traced calls keep must not be tracers
        by_test = jax.jit(lambda a, b: predict_fn("nngp", a, b))(k_td, k_tt)
        by_train = jax.jit(lambda k: gp_inference(k, y, eps, True)("nngp", k_td, k_tt))(k_dd)
        again = jax.jit(lambda a: predict_fn("nngp", a))(2 * k_td)
    eager = predict_fn("nngp", k_td, k_tt)
    kd, kt, yd = _f64(k_dd, k_td, y)
    reg = kd + eps * np.eye(len(kd))
    rtol = cond_rtol(dtype, np.linalg.cond(reg))
    for out in (by_test, by_train):
        assert_normwise_close(out.mean, eager.mean, rtol)
        assert_normwise_close(out.covariance, eager.covariance, rtol, scale=np.linalg.norm(k_tt))
    assert_normwise_close(again, 2 * eager.mean, rtol)
    # d/dε of K(x,X) (K + εI)⁻¹ Y is −K(x,X) (K + εI)⁻² Y.
    d_mean = jax.jacrev(lambda e: gp_inference(k_dd, y, e, True)("nngp", k_td))(jnp.asarray(eps, dtype))
    assert_normwise_close(d_mean, -kt @ np.linalg.solve(reg, np.linalg.solve(reg, yd)), rtol * np.linalg.cond(reg))


def test_max_learning_rate_under_jit_and_grad(dtype):
    k_dd, *_ = _problem(dtype, seed=9)
    eta = max_learning_rate(k_dd, 12, momentum=0.5)
    assert isinstance(eta, float)
    assert_close(jax.jit(max_learning_rate, static_argnums=1)(k_dd, 12, 0.5), eta, dtype)
    # η = 2(1 + μ) nk / λ_max: dη/dK = −(η/λ_max) v vᵀ (v the top eigenvector); dη/dμ = η / (1 + μ).
    lam, vecs = np.linalg.eigh(np.asarray(k_dd, np.float64))
    grad_k, grad_mu = jax.grad(max_learning_rate, argnums=(0, 2))(k_dd, 12, jnp.asarray(0.5, dtype))
    rtol = cond_rtol(dtype, lam[-1] / (lam[-1] - lam[-2]))  # the top eigenvector's sensitivity
    assert_normwise_close(grad_k, -eta / lam[-1] * np.outer(vecs[:, -1], vecs[:, -1]), rtol)
    assert_close(grad_mu, eta / 1.5, dtype)
