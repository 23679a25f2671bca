"""`gradient_descent` (ODE) against the MSE closed form and the exact solution of the linear momentum ODE.

The integrator controls its local error to `rtol = atol = 1e-6` (float32) or `1e-10` (float64); over these horizons the
global error measured against exact solutions stays within 0.2-4 times that, relative to the size of the state, so
`100 ×` bounds it; the closed-form reference computed in the same dtype adds its own `cond_rtol`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.special

from ntkit.predict import ODEState, gradient_descent, gradient_descent_mse
from tests.tolerance import assert_normwise_close, cond_rtol, eps


def _mse(fx, y):
    return 0.5 * jnp.mean((fx - y) ** 2)


def _ode_rtol(dtype, cond: float = 1.0) -> float:
    """100 times the integrator's default tolerance, plus what a reference in `dtype` with condition `cond` adds."""
    return 100 * (1e-6 if dtype == jnp.float32 else 1e-10) + cond_rtol(dtype, cond)


def _problem(dtype, n=6, n_test=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n + 2))
    k_dd, k_td = a @ a.T / n, rng.normal(size=(n_test, n + 2)) @ a.T / n
    y, f0, g0 = rng.normal(size=(n, k)), 0.2 * rng.normal(size=(n, k)), 0.2 * rng.normal(size=(n_test, k))
    return [jnp.asarray(v, dtype) for v in (k_dd, k_td, y, f0, g0)]


def test_mse_loss_reproduces_the_closed_form(dtype):
    k_dd, k_td, y, f0, g0 = _problem(dtype)
    ts = jnp.asarray([[5.0, 0.0], [40.0, 2.0]], dtype)  # any shape and order
    ode = gradient_descent(_mse, k_dd, y, learning_rate=1.5, method="ode")(ts, f0, g0, k_td)
    exact = gradient_descent_mse(k_dd, y, learning_rate=1.5)(ts, f0, g0, k_td)
    rtol = _ode_rtol(dtype, np.linalg.cond(np.asarray(k_dd, np.float64)))
    for a, b in zip(ode, exact, strict=True):
        assert a.shape == (2, 2, *b.shape[2:]) and a.dtype == dtype
        assert_normwise_close(a, b, rtol)


def test_momentum_matches_the_exact_linear_second_order_solution(dtype):
    """MSE with momentum μ: d/ds [F−Y; Q] = [[0, I], [−Θ/(nk), −(1−μ)/√η I]] [F−Y; Q], s = √η t; solved by expm."""
    k_dd, _, y, f0, _ = _problem(dtype, seed=1)
    lr, mu, t = 0.5, 0.8, 30.0
    n = k_dd.shape[0]
    kd = np.asarray(k_dd, np.float64)
    gen = np.block([[np.zeros((n, n)), np.eye(n)], [-kd / y.size, -(1 - mu) / np.sqrt(lr) * np.eye(n)]])
    state0 = np.concatenate([np.asarray(f0 - y, np.float64), np.zeros(y.shape)])
    ref = scipy.linalg.expm(np.sqrt(lr) * t * gen) @ state0
    out = gradient_descent(_mse, k_dd, y, learning_rate=lr, momentum=mu)(t, ODEState(f0))
    assert isinstance(out, ODEState) and out.qx_train is not None and out.fx_test is None
    rtol, size = _ode_rtol(dtype, np.linalg.cond(kd)), np.linalg.norm(state0)
    assert_normwise_close(out.fx_train, ref[:n] + np.asarray(y, np.float64), rtol)
    assert_normwise_close(out.qx_train, ref[n:], rtol, scale=size)  # q has decayed to 2% of the state's size


def test_cross_entropy_conserves_what_it_should(dtype):
    """Softmax cross-entropy: ∇_f L sums to 0 over classes, so with Θ ⊗ I the class-sum of f never moves, and the
    loss decreases monotonically."""
    k_dd, k_td, _, f0, g0 = _problem(dtype, k=3, seed=2)
    labels = jax.nn.one_hot(jnp.arange(k_dd.shape[0]) % 3, 3, dtype=dtype)

    def xent(fx, y):
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(fx) * y, axis=-1))

    ts = jnp.asarray([0.0, 10.0, 100.0, 1000.0], dtype)
    train, test = gradient_descent(xent, k_dd, labels, learning_rate=1.0)(ts, f0, g0, k_td)
    # Each Runge-Kutta step moves the class-sums by rounding only, about eps · |f| (measured: 4-5 eps · max |f| in all).
    for out, start in ((train, f0), (test, g0)):
        drift = np.asarray(out.sum(-1), np.float64) - np.asarray(start.sum(-1), np.float64)
        assert np.max(np.abs(drift)) < 100 * eps(dtype) * float(jnp.max(jnp.abs(out))), drift
    losses = np.array([xent(f, labels) for f in train])
    assert np.all(np.diff(losses) < 0), losses


def test_errors(dtype):
    k_dd, k_td, y, f0, g0 = _problem(dtype)
    predict_fn = gradient_descent(_mse, k_dd, y)
    with pytest.raises(ValueError, match="finite times"):
        predict_fn(None, f0)
    with pytest.raises(ValueError, match="`t`"):
        predict_fn(-1.0, f0)
    with pytest.raises(ValueError, match="k_test_train"):
        predict_fn(1.0, f0, g0)
    with pytest.raises(ValueError, match="momentum"):
        predict_fn(1.0, ODEState(f0, qx_train=f0))
    with pytest.raises(ValueError, match="momentum"):
        gradient_descent(_mse, k_dd, y, momentum=1.0)
    with pytest.raises(TypeError, match="loss"):
        gradient_descent(None, k_dd, y)
    with pytest.raises(ValueError, match="k_train_train.*shape"):
        gradient_descent(_mse, k_dd[:, :-1], y)


def _xent(fx, y):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(fx) * y, axis=-1))


def _xent_reference(k_dd, k_td, labels, t_end, lr=1.0):
    """Cross-entropy gradient flow in float64 SciPy (DOP853, tolerance 1e-13) in the time u = log(1 + t), with the
    gradient `softmax(f) − y` of the true class written as minus the other classes' probabilities (no cancellation
    in `1 − p`). Returns the train and test outputs at `t_end`."""
    n, k = labels.shape
    true = labels.astype(bool)

    def grad(f):
        p = scipy.special.softmax(f, axis=-1)
        g = np.where(true, 0.0, p)
        return (g - true * g.sum(-1, keepdims=True)) / n

    def rhs(u, z):
        g = grad(z[: n * k].reshape(n, k))
        return -np.exp(u) * lr * np.concatenate([(k_dd @ g).ravel(), (k_td @ g).ravel()])

    sol = scipy.integrate.solve_ivp(rhs, (0.0, np.log1p(t_end)), np.zeros((n + len(k_td)) * k), method="DOP853",
                                    rtol=1e-13, atol=1e-13)
    assert sol.success
    return sol.y[: n * k, -1].reshape(n, k), sol.y[n * k:, -1].reshape(len(k_td), k)


def test_cross_entropy_to_huge_times_takes_bounded_work(dtype):
    """Cross-entropy's outputs grow like log t, so the adaptive steps grow with t: t = 1e12 takes about 1,300 steps in
    float64, within the default bound of 10,000, and matches SciPy. In float32 the gradient of the true class,
    `p − 1`, is rounding noise once the margins pass ~16, and the steps shrink: the default bound stops the
    integration with an error naming `t`, where `odeint` returned (−103, −164, −126) for (35, −46, 11) and class
    sums of 393 for 0 (with a bound of 1e6 steps the integrator returns the same: it cannot tell a noisy gradient
    from a true one, as the docstring says).

    Beyond the integrator's error, the outputs carry that of the loss gradient: its true-class entry `p − 1` has an
    absolute rounding error of about eps (p ≈ 1), which the ODE integrates to at most `η t ‖Θ‖ eps / n` (measured:
    1% of that at t = 1e12 in float64)."""
    k_dd, k_td, _, _, _ = _problem(dtype, k=3, seed=2)
    labels = jax.nn.one_hot(jnp.arange(k_dd.shape[0]) % 3, 3, dtype=dtype)
    predict_fn = gradient_descent(_xent, k_dd, labels)
    kd, kt, lab = (np.asarray(v, np.float64) for v in (k_dd, k_td, labels))
    for t in (1e3, 1e12) if dtype == jnp.float64 else (1e3,):
        train, test = predict_fn(t, 0.0, None, k_td)
        ref_train, ref_test = _xent_reference(kd, kt, lab, t)
        gradient_rounding = t * np.linalg.norm(kd, 2) * eps(dtype) / len(kd) / np.linalg.norm(ref_train)
        rtol = _ode_rtol(dtype, np.linalg.cond(kd)) + gradient_rounding
        assert_normwise_close(train, ref_train, rtol, err_msg=f"train at t={t}")
        assert_normwise_close(test, ref_test, rtol, err_msg=f"test at t={t}")
    if dtype == jnp.float32:
        with pytest.raises(ValueError, match=r"`t` = 1e\+12 takes more than `max_steps` = 10000 steps"):
            predict_fn(1e12, 0.0, None, k_td)


def test_mean_squared_loss_at_huge_times_is_the_closed_form(dtype):
    """A loss whose gradient is `a (f − b)` is recognized and solved in closed form at any t: at t = 1e12 the train
    outputs are Y and the test outputs kernel regression (float64 NumPy). Integrating instead (`method="ode"`, or with
    momentum) is bounded by `max_steps` and raises naming `t` (it used to run for hours)."""
    k_dd, k_td, y, f0, g0 = _problem(dtype, seed=3)
    kd, kt, yd, fd, gd = (np.asarray(v, np.float64) for v in (k_dd, k_td, y, f0, g0))
    rtol = cond_rtol(dtype, np.linalg.cond(kd))
    for loss, lr in ((_mse, 0.7), (lambda fx, y: jnp.sum((fx - y) ** 2), 0.01)):  # the mean, and a multiple
        train, test = gradient_descent(loss, k_dd, y, learning_rate=lr)(1e12, f0, g0, k_td)
        assert_normwise_close(train, yd, rtol)
        assert_normwise_close(test, gd + kt @ np.linalg.solve(kd, yd - fd), rtol)
    # ... at finite times too: `sum` has a = 2, so τ = 2 η t (the mean's is η t / nk).
    at_5 = gradient_descent(lambda fx, y: jnp.sum((fx - y) ** 2), k_dd, y, learning_rate=0.01)(5.0, f0)
    assert_normwise_close(at_5, yd + scipy.linalg.expm(-2 * 0.01 * 5.0 * kd) @ (fd - yd), rtol)
    for kwargs in ({"method": "ode"}, {"momentum": 0.5}):
        with pytest.raises(ValueError, match=r"`t` = 1e\+12 takes more than `max_steps`"):
            gradient_descent(_mse, k_dd, y, **kwargs)(1e12, f0)


def test_only_exactly_quadratic_losses_get_the_closed_form(dtype):
    """A weighted squared loss (a constant Hessian that is not a multiple of I: caught by values) and Huber's loss
    (quadratic wherever its values are checked, but selecting on f: caught by its jaxpr) are integrated, not taken for
    the mean squared loss: they match float64 references (the matrix exponential per class; SciPy's integrator) at
    t = 30, and at t = 1e12 they hit the step bound."""
    k_dd, _, y, f0, _ = _problem(dtype, seed=4)
    kd, yd, fd = (np.asarray(v, np.float64) for v in (k_dd, y, f0))
    w = jnp.asarray([1.0, 3.0], dtype)
    weighted = gradient_descent(lambda fx, y: 0.5 * jnp.mean(w[None] * (fx - y) ** 2), k_dd, y)
    out = weighted(30.0, f0)
    ref = np.stack([yd[:, j] + scipy.linalg.expm(-30.0 * float(w[j]) / y.size * kd) @ (fd - yd)[:, j]
                    for j in range(2)], axis=1)
    assert_normwise_close(out, ref, _ode_rtol(dtype, np.linalg.cond(kd)))

    # Huber's loss with δ above every |y|: quadratic at f = 0 and f = Y, the two points the values are checked at,
    # but not along the flow from f₀ = −2Y, whose residuals −3Y reach past δ.
    delta = 1.2 * float(np.max(np.abs(yd)))
    f0, fd = -2 * y, -2 * yd

    def huber(fx, y):
        r = jnp.abs(fx - y)
        return jnp.mean(jnp.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta)))

    def huber_rhs(_, f):
        r = f.reshape(y.shape) - yd
        return -(kd @ (np.clip(r, -delta, delta) / y.size)).ravel()

    sol = scipy.integrate.solve_ivp(huber_rhs, (0.0, 30.0), fd.ravel(), method="DOP853", rtol=1e-13, atol=1e-13)
    robust = gradient_descent(huber, k_dd, y)
    # The gradient of Huber's loss has kinks (|r| = δ), across which the integrator's error estimate fails: measured
    # up to 55 times its tolerance in float64, so 10 x 100 times.
    assert_normwise_close(robust(30.0, f0), sol.y[:, -1].reshape(y.shape), 10 * _ode_rtol(dtype, np.linalg.cond(kd)))
    for predict_fn in (weighted, robust):
        with pytest.raises(ValueError, match="max_steps"):
            predict_fn(1e12, f0)


def test_negative_eigenvalue_is_reported_and_clipped(dtype):
    """A train kernel with an eigenvalue of −0.3 λ_max: a warning, then the dynamics of its positive part (float64
    matrix exponential); `negative_eigenvalues="raise"` stops at construction."""
    rng = np.random.default_rng(5)
    vecs, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    evals = np.array([-0.6, 0.4, 0.8, 1.2, 1.6, 2.0])
    k_dd = jnp.asarray((vecs * evals) @ vecs.T, dtype)
    y, f0 = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    with pytest.warns(UserWarning, match=r"`k_train_train` has 1 negative eigenvalue.*-0\.3 times"):
        predict_fn = gradient_descent(_mse, k_dd, jnp.asarray(y, dtype), method="ode")
    out = predict_fn(5.0, jnp.asarray(f0, dtype))
    clipped = (vecs * np.maximum(evals, 0)) @ vecs.T
    ref = y + scipy.linalg.expm(-5.0 / y.size * clipped) @ (f0 - y)
    assert_normwise_close(out, ref, _ode_rtol(dtype, 5.0))
    with pytest.raises(ValueError, match="negative eigenvalue"):
        gradient_descent(_mse, k_dd, jnp.asarray(y, dtype), negative_eigenvalues="raise")


def test_step_bound_under_jit_gives_nan_not_an_extrapolation(dtype):
    """With traced times nothing can raise: the times the integrator did not reach come back NaN (`odeint` returned
    a polynomial extrapolation of its last step), the others exact (float64 matrix exponential)."""
    k_dd, _, y, f0, _ = _problem(dtype, seed=6)
    predict_fn = gradient_descent(_mse, k_dd, y, method="ode", max_steps=500)
    out = jax.jit(lambda t: predict_fn(t, f0))(jnp.asarray([1e7, 3.0], dtype))
    assert np.all(np.isnan(np.asarray(out[0])))
    kd, yd, fd = (np.asarray(v, np.float64) for v in (k_dd, y, f0))
    assert_normwise_close(out[1], yd + scipy.linalg.expm(-3.0 / y.size * kd) @ (fd - yd),
                          _ode_rtol(dtype, np.linalg.cond(kd)))


def test_closed_form_path_under_jit_and_grad(dtype):
    """`method="auto"` with the mean squared loss, under `jit` (over t, over the kernel) and `jacrev` in t:
    `d/dt f_t(X) = −(η/nk) Θ e^{−τΘ} (f₀ − Y)` (float64 matrix exponential)."""
    k_dd, k_td, y, f0, g0 = _problem(dtype, seed=7)
    lr, t = 0.8, 6.0
    predict_fn = gradient_descent(_mse, k_dd, y, learning_rate=lr)
    kd, kt, yd, fd = (np.asarray(v, np.float64) for v in (k_dd, k_td, y, f0))
    decayed = scipy.linalg.expm(-lr * t / y.size * kd) @ (fd - yd)
    rtol = cond_rtol(dtype, np.linalg.cond(kd))
    with jax.checking_leaks():
        by_t = jax.jit(lambda s: predict_fn(s, f0))(jnp.asarray(t, dtype))
        by_k = jax.jit(lambda k: gradient_descent(_mse, k, y, learning_rate=lr)(t, f0))(k_dd)
    for out in (by_t, by_k):
        assert_normwise_close(out, yd + decayed, rtol)
    d_train, d_test = jax.jacrev(lambda s: predict_fn(s, f0, g0, k_td))(jnp.asarray(t, dtype))
    scale = lr / y.size * np.linalg.norm(fd - yd)
    assert_normwise_close(d_train, -lr / y.size * kd @ decayed, rtol, scale=scale * np.linalg.norm(kd))
    assert_normwise_close(d_test, -lr / y.size * kt @ decayed, rtol, scale=scale * np.linalg.norm(kt))
    state = predict_fn(t, ODEState(f0))
    assert isinstance(state, ODEState) and state.qx_train is None
