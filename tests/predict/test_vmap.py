"""`predict` under `jax.vmap`: over times, learning rates, targets and kernels, each batch element equal to the
closed form of its own problem (`scipy.linalg.expm`, a NumPy solve, NumPy eigenvalues)."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ntkit.predict import gp_inference, gradient_descent, gradient_descent_mse, max_learning_rate
from tests.tolerance import assert_close

N, N_TEST, K = 5, 3, 2


def _problem(dtype):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, 7))
    k = a @ a.T / 7 + 0.1 * np.eye(N)
    k_test = rng.normal(size=(N_TEST, 7)) @ a.T / 7
    y = rng.normal(size=(N, K))
    return k, k_test, y, (jnp.asarray(v, dtype) for v in (k, k_test, y))


def _flow(k, k_test, y, t, learning_rate=1.0):
    """Gradient flow on `1/(2nk)‖f − y‖²` from f = 0: `f(t) = (I − e^{−ηtK/(nk)}) y` (docs/theory.md §3)."""
    decay = scipy.linalg.expm(-learning_rate * t * k / (N * K))
    fx = (np.eye(N) - decay) @ y
    return fx, k_test @ np.linalg.solve(k, fx)


def test_mse_over_times_and_learning_rates(dtype):
    k, k_test, y, (k_j, k_test_j, y_j) = _problem(dtype)
    times = np.array([0.5, 2.0, 40.0])
    fx, ft = jax.vmap(lambda t: gradient_descent_mse(k_j, y_j)(t, jnp.zeros_like(y_j), jnp.zeros((N_TEST, K), dtype),
                                                                 k_test_j))(jnp.asarray(times, dtype))
    for i, t in enumerate(times):
        want_fx, want_ft = _flow(k, k_test, y, t)
        assert_close(fx[i], want_fx, dtype, scale=10)
        assert_close(ft[i], want_ft, dtype, scale=10)
    rates = np.array([0.3, 1.5])
    fx = jax.vmap(lambda lr: gradient_descent_mse(k_j, y_j, learning_rate=lr)(3.0, jnp.zeros_like(y_j)))(
        jnp.asarray(rates, dtype))
    for i, lr in enumerate(rates):
        assert_close(fx[i], _flow(k, k_test, y, 3.0, lr)[0], dtype, scale=10)


def test_ode_over_times(dtype):
    k, k_test, y, (k_j, _, y_j) = _problem(dtype)
    times = np.array([0.5, 4.0])

    def mse(f, targets):
        return 0.5 * jnp.mean((f - targets) ** 2)

    fx = jax.vmap(lambda t: gradient_descent(mse, k_j, y_j)(t, jnp.zeros_like(y_j)))(jnp.asarray(times, dtype))
    for i, t in enumerate(times):
        assert_close(fx[i], _flow(k, k_test, y, t)[0], dtype, scale=10)


def test_gp_posterior_over_targets(dtype):
    k, k_test, y, (k_j, k_test_j, _) = _problem(dtype)
    targets = np.stack([y, -2.0 * y + 1.0])
    means = jax.vmap(lambda t: gp_inference(k_j, t, diag_reg=0.0)("nngp", k_test_train=k_test_j))(
        jnp.asarray(targets, dtype))
    for i in range(2):
        assert_close(means[i], k_test @ np.linalg.solve(k, targets[i]), dtype, scale=10)


def test_max_learning_rate_over_kernels(dtype):
    k, _, _, (k_j, _, _) = _problem(dtype)
    scales = np.array([1.0, 3.0])
    rates = jax.vmap(max_learning_rate)(jnp.stack([s * k_j for s in jnp.asarray(scales, dtype)]))
    # the largest stable rate of full-batch GD on 1/(2n)‖f − y‖²: 2n/λ_max (one output, trace_axes layout)
    want = [2 * N / np.linalg.eigvalsh(s * k).max() for s in scales]
    assert_close(rates, want, dtype)
