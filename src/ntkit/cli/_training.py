"""The demo's finite networks: the default ReLU network and full-batch gradient descent on the mean squared loss."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import nn as stax

W_STD = 2.0 ** 0.5
B_STD = 0.05
READOUT_W_STD = 1.0


def relu_network(depth: int, width: int, n_outputs: int) -> stax.serial:
    """`depth` hidden `Dense(width, W_std=√2, b_std=0.05)` + ReLU layers and a `Dense(n_outputs, W_std=1)` readout.

    NTK parameterization, so the analytic kernels do not depend on `width` and one definition serves the
    infinitely wide network (`kernel_fn`) and every finite one (`init_fn`, `apply_fn`).
    """
    layers: list = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W_STD, b_std=B_STD), stax.Relu()]
    return stax.serial(*layers, stax.Dense(n_outputs, W_std=READOUT_W_STD, b_std=B_STD))


def mse_loss(f, y):
    """`1/(2nk) Σ ‖f − y‖²` (docs/theory.md §3)."""
    return 0.5 * jnp.mean((f - y) ** 2)


def accuracy(f, y) -> float:
    """Fraction of rows whose largest output is the one-hot target's class."""
    return float(np.mean(np.argmax(np.asarray(f), -1) == np.argmax(np.asarray(y), -1)))


def checkpoints(steps: int, count: int = 40) -> np.ndarray:
    """`0` and about `count` log-spaced steps up to `steps` (integers, increasing, `steps` included)."""
    return np.unique(np.concatenate([[0], np.round(np.geomspace(1, steps, count)).astype(int)]))


def train(apply_fn: Callable, params, x_train, y_train, x_test, y_test, learning_rate: float,
          at: np.ndarray, progress=None) -> tuple:
    """Full-batch gradient descent `p ← p − η ∇L(p)` on `L = 1/(2nk) Σ ‖f(xᵢ) − yᵢ‖²`.

    Args:
      apply_fn: the network `apply_fn(params, x)`.
      params: initial parameters.
      x_train, y_train, x_test, y_test: data, targets one-hot `(N, k)`.
      learning_rate: `η`.
      at: increasing steps (from `checkpoints`) at which losses and accuracies are recorded.
      progress: a `tqdm` bar advanced by the number of steps taken, or None.

    Returns:
      `(params_T, curves)` with `curves` a dict of lists `train_loss`, `test_loss`, `test_accuracy` (one entry per
      step in `at`) and `fx_train_0`, `fx_test_0` (the outputs at initialization).
    """
    def loss(p):
        return mse_loss(apply_fn(p, x_train), y_train)

    grad = jax.grad(loss)

    @jax.jit
    def advance(p, n):
        return jax.lax.fori_loop(0, n, lambda _, q: jax.tree.map(lambda a, g: a - learning_rate * g, q, grad(q)), p)

    @jax.jit
    def outputs(p):
        return apply_fn(p, x_train), apply_fn(p, x_test)

    curves: dict = {"train_loss": [], "test_loss": [], "test_accuracy": []}
    done = 0
    for step in at:
        if step > done:
            params = advance(params, int(step - done))
            if progress is not None:
                progress.update(int(step - done))
            done = int(step)
        f_train, f_test = outputs(params)
        if step == 0:
            curves["fx_train_0"], curves["fx_test_0"] = f_train, f_test
        curves["train_loss"].append(float(mse_loss(f_train, y_train)))
        curves["test_loss"].append(float(mse_loss(f_test, y_test)))
        curves["test_accuracy"].append(accuracy(f_test, y_test))
    return params, curves


def predicted_curves(k_train_train, k_test_train, y_train, y_test, fx_train_0, fx_test_0, learning_rate: float,
                     at: np.ndarray) -> dict:
    """Losses and test accuracy of a model that trains with the constant NTK given (`predict.gradient_descent_mse`).

    Gradient flow at time `t` in steps stands in for `t` steps of gradient descent (close below the critical rate).
    """
    from ..predict import gradient_descent_mse

    predict_fn = gradient_descent_mse(k_train_train, y_train, learning_rate=learning_rate)
    t = jnp.asarray(at, k_train_train.dtype)
    f_train, f_test = predict_fn(t, fx_train_0=fx_train_0, fx_test_0=fx_test_0, k_test_train=k_test_train)
    return {
        "train_loss": [float(mse_loss(f, y_train)) for f in f_train],
        "test_loss": [float(mse_loss(f, y_test)) for f in f_test],
        "test_accuracy": [accuracy(f, y_test) for f in f_test],
    }


def relative_change(a, b) -> float:
    """`‖a − b‖_F / ‖b‖_F`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
