"""`catapult_window` against closed forms and `learning_rate_sweep` against real training of a wide 2-layer ReLU
network (Lewkowycz et al. 2020): lazy below η_crit, catapult inside the window, divergence far above."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from ntkit.analysis import catapult_window, learning_rate_sweep


def test_window_closed_form():
    theta = np.array([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 1.0]])  # λ_max = 4
    w = catapult_window(theta, y_train_size=6)
    assert w.lambda_max == pytest.approx(4.0, rel=1e-6)
    assert w.eta_crit == pytest.approx(2 * 6 / 4, rel=1e-6) and w.eta_max == pytest.approx(4 * 6 / 4, rel=1e-6)
    assert [w.regime(r) for r in (2.9, 3.1, 6.1)] == ["lazy", "catapult", "divergent"]
    relu = catapult_window(theta, y_train_size=6, max_factor=12.0)
    assert relu.eta_max == pytest.approx(12 * 6 / 4, rel=1e-6) and "catapult" in relu.advice
    with pytest.raises(ValueError, match="max_factor"):
        catapult_window(theta, max_factor=1.5)


def _problem(width):
    init_fn, apply_fn, _ = stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(1))
    x = jax.random.normal(jax.random.key(0), (8, 4))
    x = 2 * x / jnp.linalg.norm(x, axis=1, keepdims=True)
    return init_fn, apply_fn, x, jnp.sign(x[:, :1])


def _brute_force_lambda_max(apply_fn, params, x, full=False):
    """Top eigenvalue of J Jᵀ (or J Jᵀ itself), J the explicit Jacobian of the outputs in all parameters (float64
    NumPy)."""
    jac = jax.jacobian(lambda p: apply_fn(p, x)[:, 0])(params)
    j = np.concatenate([np.asarray(leaf, np.float64).reshape(x.shape[0], -1)
                        for leaf in jax.tree_util.tree_leaves(jac)], axis=1)
    return j @ j.T if full else np.linalg.eigvalsh(j @ j.T)[-1]


def test_sweep_lazy_catapult_divergent():
    # Width 256, 8 points on a sphere of radius 2, 200 full-batch steps; rates in units of η_crit = 2nk/λ_max.
    init_fn, apply_fn, x, y = _problem(256)
    key = jax.random.key(1)
    params0 = init_fn(key, x.shape)[1]
    lam0 = _brute_force_lambda_max(apply_fn, params0, x)
    eta_crit = 2 * y.size / lam0
    factors = np.array([0.5, 1.5, 10.0])
    r = learning_rate_sweep(init_fn, apply_fn, x, y, factors * eta_crit, 200, key)
    np.testing.assert_allclose(r.lambda_max_init, lam0, rtol=1e-4)
    np.testing.assert_allclose(r.predicted.eta_crit, eta_crit, rtol=1e-4)
    initial = 0.5 * float(np.mean((np.asarray(apply_fn(params0, x)) - np.asarray(y)) ** 2))
    np.testing.assert_allclose(r.losses[:, 0], initial, rtol=1e-5)
    lazy, cat, div = range(3)
    # Below η_crit: the loss decreases at every step to below 1% of its start, the kernel moves little (width 256).
    assert not r.spiked[lazy] and not r.diverged[lazy] and r.final_loss[lazy] < 1e-2 * initial
    assert np.all(np.diff(r.losses[lazy]) <= 1e-6 * initial)
    assert abs(r.lambda_max_final[lazy] / lam0 - 1) < 0.25  # measured 3% and 13% on the two dtypes' draws
    # Inside the window: the loss spikes, λ_max drops below 2nk/η (stable again), then training converges.
    assert r.spiked[cat] and r.max_loss[cat] > 2 * initial and not r.diverged[cat]
    assert r.final_loss[cat] < 1e-2 * initial
    assert r.lambda_max_final[cat] < 2 * y.size / r.learning_rates[cat] < lam0
    # Far above (10 η_crit = 20nk/λ_max, beyond even the ReLU estimate 12nk/λ_max): divergence.
    assert r.diverged[div] and math.isnan(r.lambda_max_final[div])
    assert r.measured_window == (r.learning_rates[cat], r.learning_rates[cat])


def test_sweep_follows_plain_gradient_descent():
    # The recorded losses are those of a hand-written gradient-descent loop.
    init_fn, apply_fn, x, y = _problem(16)
    key = jax.random.key(2)
    r = learning_rate_sweep(init_fn, apply_fn, x, y, [0.3], 5, key)
    params = init_fn(key, x.shape)[1]
    loss_fn = jax.value_and_grad(lambda p: 0.5 * jnp.mean((apply_fn(p, x) - y) ** 2))
    losses = []
    for _ in range(5):
        loss, g = loss_fn(params)
        losses.append(float(loss))
        params = jax.tree_util.tree_map(lambda a, b: a - 0.3 * b, params, g)
    losses.append(float(loss_fn(params)[0]))
    np.testing.assert_allclose(r.losses[0], losses, rtol=1e-4)


def test_sweep_bad_inputs():
    init_fn, apply_fn, x, y = _problem(4)
    with pytest.raises(ValueError, match="learning_rates"):
        learning_rate_sweep(init_fn, apply_fn, x, y, [-1.0], 3, jax.random.key(0))
    with pytest.raises(ValueError, match="steps"):
        learning_rate_sweep(init_fn, apply_fn, x, y, [0.1], 0, jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        learning_rate_sweep(init_fn, apply_fn, x, y[:, 0], [0.1], 3, jax.random.key(0))


@pytest.mark.slow
def test_sweep_window_edges_wide_relu():
    # Width 2048, 16 points, 400 steps: the catapult starts at η_crit and the measured upper edge lies between the
    # two-layer linear model's 4nk/λ_max and the ReLU estimate 12nk/λ_max of Lewkowycz et al. 2020.
    init_fn, apply_fn, _, _ = _problem(2048)
    x = jax.random.normal(jax.random.key(3), (16, 4))
    x = 2 * x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.sign(x[:, :1])
    key = jax.random.key(4)
    probe = learning_rate_sweep(init_fn, apply_fn, x, y, [1e-3], 1, key)
    eta_crit = probe.predicted.eta_crit
    factors = np.array([0.9, 1.1, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0])
    r = learning_rate_sweep(init_fn, apply_fn, x, y, factors * eta_crit, 400, key)
    assert not r.spiked[0] and r.spiked[1] and not r.diverged[1]
    upper = r.measured_window[1] / eta_crit * 2  # in units of nk/λ_max
    assert 4 <= upper <= 12, upper
    assert np.all(r.lambda_max_final[~r.diverged & r.spiked] < 2 * y.size / r.learning_rates[~r.diverged & r.spiked])
