"""`gradient_descent` (ODE) against the MSE closed form and the exact solution of the linear momentum ODE.

The integrator controls its local error to `rtol = atol = 1e-6` (float32) or `1e-10` (float64); over these horizons the
global error measured against exact solutions stays within 0.2-4 times that, relative to the size of the state, so
`100 ×` bounds it; the closed-form reference computed in the same dtype adds its own `cond_rtol`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

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
    ode = gradient_descent(_mse, k_dd, y, learning_rate=1.5)(ts, f0, g0, k_td)
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
