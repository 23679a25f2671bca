"""Gradient flow (with optional heavy-ball momentum) on any loss, by integrating the function-space ODE."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.ode import odeint

from .._checks import check_array, check_scalar
from ._common import check_kernel, check_outputs, check_symmetric, float_dtype, target_layout, test_inputs


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ODEState:
    """State of the function-space ODE: outputs and (with momentum) their velocities, train and test.

    Attributes:
      fx_train: train outputs `(N, O_1, ..., O_d)`.
      fx_test: test outputs `(N_test, O_1, ..., O_d)` or `None`.
      qx_train: train output velocity (momentum only) or `None`.
      qx_test: test output velocity (momentum only) or `None`.
    """

    fx_train: jax.Array | None = None
    fx_test: jax.Array | None = None
    qx_train: jax.Array | None = None
    qx_test: jax.Array | None = None


def _default_tolerance(dtype) -> float:
    return 1e-6 if jnp.finfo(dtype).bits <= 32 else 1e-10


def gradient_descent(loss, k_train_train, y_train, learning_rate: float = 1.0, momentum: float | None = None,
                     trace_axes=(-1,), *, rtol: float | None = None, atol: float | None = None):
    r"""Outputs of a constant-NTK model trained by gradient flow on any loss, by solving the ODE in function space.

    A model whose NTK `Θ` stays constant (linearized or infinitely wide; Lee et al. 2019, "Wide neural networks of
    any depth evolve as linear models under gradient descent") trained on `loss(f(X), Y)` with learning rate `η`
    follows, with `t` counted in steps,

    * `df(X)/dt = −η Θ ∇_f L`, `df(x)/dt = −η Θ(x, X) ∇_f L` (docs/theory.md §3).

    With heavy-ball momentum `μ` (`v ← μ v − η ∇L`, `θ ← θ + v`) the continuous limit is second order, solved in
    the time `s = √η t`: `df/ds = q`, `dq/ds = −(1 − μ)/√η · q − Θ ∇_f L` (and likewise on the test set).

    No closed form exists beyond the mean squared loss (for which `gradient_descent_mse` is exact and cheaper),
    so the ODE is integrated by `jax.experimental.ode.odeint` (adaptive Dormand–Prince 5(4)) to the requested
    times. For `loss(fx, y) = 0.5 * jnp.mean((fx - y) ** 2)` this reproduces `gradient_descent_mse`.

    Args:
      loss: `loss(fx_train, y_train) -> scalar`, e.g. cross-entropy
        `lambda fx, y: -jnp.mean(jnp.sum(jax.nn.log_softmax(fx) * y, -1))`.
      k_train_train: train-train NTK `(N, N, O_a, O_a', ...)` over the untraced output axes (`Θ ⊗ I` along
        `trace_axes`). For a specific finite network, `trace_axes=()` is exact.
      y_train: targets `(N, O_1, ..., O_d)`.
      learning_rate: `η > 0`.
      momentum: heavy-ball momentum `μ ∈ [0, 1)`, or `None` for plain gradient descent.
      trace_axes: output axes the kernels were traced over.
      rtol: relative tolerance of the integrator (default `1e-6` in float32, `1e-10` in float64).
      atol: absolute tolerance of the integrator (same defaults).

    Returns:
      `predict_fn(t, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None)`: `t` a finite time or array of
      times of any shape (leading axes of the result); `fx_train_or_state_0` the train outputs at `t = 0` (`None`
      means 0) or an `ODEState` (then an `ODEState` comes back, with velocities when `momentum` is set);
      `k_test_train` `(N_test, N, ...)` the test-train NTK, with `fx_test_0` (default 0). Returns `fx_train_t`, or
      `(fx_train_t, fx_test_t)` when `k_test_train` is given.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.predict
      >>> k = jnp.array([[1.0, 0.2], [0.2, 1.0]]); y = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> xent = lambda fx, y: -jnp.mean(jnp.sum(jax.nn.log_softmax(fx) * y, -1))
      >>> predict_fn = ntkit.predict.gradient_descent(xent, k, y, learning_rate=1.0)
      >>> predict_fn(jnp.array([1.0, 100.0])).shape
      (2, 2, 2)
    """
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(fx_train, y_train), got {type(loss).__name__}.")
    k_train_train = check_array(k_train_train, "k_train_train")
    dtype = float_dtype(k_train_train)
    y_train = check_array(y_train, "y_train", dtype=dtype)
    learning_rate = check_scalar(learning_rate, "learning_rate", positive=True)
    if momentum is not None:
        momentum = check_scalar(momentum, "momentum")
        if momentum >= 1:
            raise ValueError(f"`momentum` must be in [0, 1) or None, got {momentum}.")
    rtol = _default_tolerance(dtype) if rtol is None else check_scalar(rtol, "rtol", positive=True)
    atol = _default_tolerance(dtype) if atol is None else check_scalar(atol, "atol", positive=True)
    layout = target_layout(y_train.shape, trace_axes)
    n = y_train.shape[0]
    k = check_kernel(layout, k_train_train, n, n, "k_train_train", dtype)
    k = check_symmetric(layout.kernel_matrix(k), "k_train_train")
    grad_loss = jax.grad(lambda fx: loss(fx, y_train))

    def grad_matrix(f_mat):
        return layout.to_matrix(grad_loss(layout.from_matrix(f_mat, n)))

    def rhs_plain(state, _t, k_dd, k_td):
        g = -learning_rate * grad_matrix(state["fx_train"])
        out = {"fx_train": k_dd @ g}
        if "fx_test" in state:
            out["fx_test"] = k_td @ g
        return out

    def rhs_momentum(state, _t, k_dd, k_td):
        g = -grad_matrix(state["fx_train"])
        friction = (1.0 - momentum) / np.sqrt(learning_rate)
        out = {"fx_train": state["qx_train"], "qx_train": k_dd @ g - friction * state["qx_train"]}
        if "fx_test" in state:
            out["fx_test"] = state["qx_test"]
            out["qx_test"] = k_td @ g - friction * state["qx_test"]
        return out

    def predict_fn(t=None, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None):
        if t is None:
            raise ValueError("`gradient_descent` integrates to finite times only; pass `t` (for the mean squared "
                             "loss, `gradient_descent_mse` gives infinite time in closed form).")
        t_np = np.asarray(t, dtype=np.float64)
        if not np.all(np.isfinite(t_np)) or np.any(t_np < 0):
            raise ValueError(f"`t` must hold finite non-negative times, got {t_np}.")
        as_state = isinstance(fx_train_or_state_0, ODEState)
        if as_state:
            s0 = fx_train_or_state_0
            if fx_test_0 is not None:
                raise ValueError("Pass the test outputs inside the `ODEState`, not as `fx_test_0`.")
            fx_train_0, fx_test_0, q_train_0, q_test_0 = s0.fx_train, s0.fx_test, s0.qx_train, s0.qx_test
            if momentum is None and (q_train_0 is not None or q_test_0 is not None):
                raise ValueError("The `ODEState` holds velocities `qx_*`, but `momentum` is None.")
        else:
            fx_train_0, q_train_0, q_test_0 = fx_train_or_state_0, None, None
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("Test outputs were given without `k_test_train`; test dynamics need the test-train NTK.")
        want_train = fx_train_0 is not None or as_state
        f0 = check_outputs(layout, 0.0 if fx_train_0 is None else fx_train_0, n, "fx_train_0", dtype)
        state = {"fx_train": layout.to_matrix(f0)}
        k_td = jnp.zeros((0, n * layout.paired_size), dtype)
        want_test = k_test_train is not None
        if want_test:
            k_td, g0, n_test = test_inputs(layout, k_test_train, fx_test_0, n, dtype)
            state["fx_test"] = layout.to_matrix(g0)
        if momentum is not None:
            state["qx_train"] = layout.to_matrix(check_outputs(layout,
                0.0 if q_train_0 is None else q_train_0, n, "qx_train", dtype))
            if want_test:
                state["qx_test"] = layout.to_matrix(check_outputs(layout,
                    0.0 if q_test_0 is None else q_test_0, n_test, "qx_test", dtype))

        grid, index = np.unique(np.concatenate([[0.0], t_np.ravel()]), return_inverse=True)
        scale = 1.0 if momentum is None else np.sqrt(learning_rate)
        rhs = rhs_plain if momentum is None else rhs_momentum
        path = odeint(rhs, state, jnp.asarray(grid * scale, dtype), k, k_td, rtol=rtol, atol=atol)
        index = jnp.asarray(index[1:].reshape(t_np.shape))
        path = {key: value[index] for key, value in path.items()}
        if not all(bool(jnp.all(jnp.isfinite(v))) for v in path.values()):
            raise ValueError("The ODE solution is not finite: the loss gradient or the kernel blow up at these times.")

        def back(key, rows):
            return layout.from_matrix(path[key], rows) if key in path else None

        train = back("fx_train", n)
        test = back("fx_test", n_test) if want_test else None
        if as_state:
            return ODEState(train, test, back("qx_train", n), back("qx_test", n_test) if want_test else None)
        if want_train and want_test:
            return train, test
        return test if want_test else train

    return predict_fn
