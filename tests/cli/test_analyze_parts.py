"""The pieces of `ntkit analyze`'s computation, each against an independent reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from ntkit.cli._analyze import checkpoints, describe, finite_or_none, kernel_regression_mse, mlp, train


def test_describe_plain_mlp():
    info = describe(mlp(3, 16, 2, "erf", 1.3, 0.2))
    assert info["plain_mlp"] and info["hidden_layers"] == 3 and info["activation_name"] == "Erf"
    assert info["W_std"] == pytest.approx(1.3) and info["b_std"] == pytest.approx(0.2)
    assert info["layers"] == ["Dense", "Erf"] * 3 + ["Dense"]


@pytest.mark.parametrize("net", [
    stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(8), stax.Erf(), stax.Dense(1)),  # two activations
    stax.serial(stax.Dense(8, W_std=1.0), stax.Relu(), stax.Dense(1, W_std=2.0)),  # different σ_w
    stax.serial(stax.Dense(8), stax.Relu(), stax.LayerNorm(), stax.Dense(1)),  # a normalization layer
    stax.serial(stax.Dense(8), stax.Relu(), stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Identity()),
                stax.FanInSum(), stax.Dense(1)),  # a skip connection
    stax.serial(stax.Dense(8, parameterization="standard"), stax.Relu(), stax.Dense(8)),  # ends in an activation
])
def test_describe_other_architectures(net):
    info = describe(net)
    assert not info["plain_mlp"] and info["hidden_layers"] is None
    assert info["activation"] is not None and info["W_std"] is not None  # the phase still has its inputs


def test_describe_nested_and_repeated():
    block = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.Gelu())
    info = describe(stax.serial(stax.repeat(block, 3), stax.Dense(2, W_std=1.5, b_std=0.1)))
    assert info["plain_mlp"] and info["hidden_layers"] == 3 and info["activation_name"] == "Gelu"
    none = describe(stax.serial(stax.Dense(4), stax.Dense(1)))
    assert not none["plain_mlp"] and none["activation"] is None


def test_kernel_regression_is_primal_ridge_for_a_linear_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = x @ rng.normal(size=(4, 2)) + 0.1 * rng.normal(size=(30, 2))
    n, ridge = 20, 0.3
    k_all = x @ x.T  # train rows then test rows
    w = np.linalg.solve(x[:n].T @ x[:n] + ridge * np.eye(4), x[:n].T @ y[:n])  # primal ridge regression
    expected = np.mean((x[n:] @ w - y[n:]) ** 2)
    assert kernel_regression_mse(k_all, y[:n], y[n:], [n], 1, 0, ridge) == [pytest.approx(expected, rel=1e-10)]
    # subsets: the mean over the draws, each a primal ridge fit on its rows
    got = kernel_regression_mse(k_all, y[:n], y[n:], [8], 4, 1, ridge)[0]
    draws = np.random.default_rng(1)
    errors = []
    for _ in range(4):
        rows = draws.choice(n, size=8, replace=False)
        w = np.linalg.solve(x[rows].T @ x[rows] + ridge * np.eye(4), x[rows].T @ y[rows])
        errors.append(np.mean((x[n:] @ w - y[n:]) ** 2))
    assert got == pytest.approx(np.mean(errors), rel=1e-10)


def test_train_is_gradient_descent(dtype):
    # a linear model f = x w: gradient descent on 1/(2nk)‖xw − y‖² has the closed form
    # w_t − w* = (I − η xᵀx/(nk))^t (w_0 − w*)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    w0 = rng.normal(size=(3, 2))
    eta = 0.5
    at = checkpoints(20, 6)
    _, curves = train(lambda p, a: a @ p, jnp.asarray(w0, dtype), jnp.asarray(x, dtype), jnp.asarray(y, dtype),
                      jnp.asarray(x[:4], dtype), jnp.asarray(y[:4], dtype), eta, at)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    step = np.eye(3) - eta * x.T @ x / y.size
    for s, loss, test in zip(at, curves["train_loss"], curves["test_loss"], strict=True):
        w = w_star + np.linalg.matrix_power(step, int(s)) @ (w0 - w_star)
        rtol = 1e-4 if dtype == jnp.float32 else 1e-10
        assert loss == pytest.approx(0.5 * np.mean((x @ w - y) ** 2), rel=rtol)
        assert test == pytest.approx(0.5 * np.mean((x[:4] @ w - y[:4]) ** 2), rel=rtol)
    assert not curves["diverged"]


def test_train_stops_on_divergence(dtype):
    x, y = jnp.ones((4, 1), dtype), jnp.ones((4, 1), dtype)
    seen = []
    _, curves = train(lambda p, a: a * p, jnp.full((), 2.0, dtype), x, y, x, y, 1e3, checkpoints(500, 10),
                      on_checkpoint=lambda s, p: seen.append(s))
    # the residual is multiplied by 1 − η = −999 per step: it overflows within a few checkpoints
    assert curves["diverged"] and curves["train_loss"][-1] is None and curves["train_loss"][0] == 0.5
    assert seen and all(v is not None for v in curves["train_loss"][:len(seen)])


def test_checkpoints_and_strict_json():
    at = checkpoints(300, 8)
    assert at[0] == 0 and at[-1] == 300 and np.all(np.diff(at) > 0) and len(at) <= 9
    assert finite_or_none({"a": [np.float32(1.5), np.inf], "b": np.array([np.nan, 2.0]), 3: jax.numpy.ones(2)}) == {
        "a": [1.5, None], "b": [None, 2.0], "3": [1.0, 1.0]}
