"""Gradient flow (with optional heavy-ball momentum) on any loss, by integrating the function-space ODE."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._checks import check_array, check_positive_int, check_scalar, is_concrete
from .._layout import KernelLayout
from ._common import (
    Factorizations,
    NegativeEigenvalues,
    TraceAxes,
    all_concrete,
    as_scalar,
    check_kernel,
    check_negative_eigenvalues,
    check_outputs,
    check_symmetric,
    check_test_inputs,
    concrete_eval,
    float_dtype,
    target_layout,
    times,
)
from ._integrate import integrate
from ._mse import MSEPredictor
from ._quadratic import quadratic_loss

Loss = Callable[[jax.Array, jax.Array], jax.Array]
"""`loss(fx_train, y_train) -> scalar`."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ODEState:
    """State of the function-space ODE: outputs and (with momentum) their velocities, train and test.

    Attributes:
      fx_train: train outputs `(N, O_1, ..., O_d)`.
      fx_test: test outputs `(N_test, O_1, ..., O_d)` or `None`.
      qx_train: train output velocity `df/ds` in the rescaled time `s = √η t` (momentum only; `√η qx_train` is the
        change of the outputs per step) or `None`.
      qx_test: test output velocity (momentum only) or `None`.
    """

    fx_train: jax.Array | None = None
    fx_test: jax.Array | None = None
    qx_train: jax.Array | None = None
    qx_test: jax.Array | None = None


def _default_tolerance(dtype: Any) -> float:
    return 1e-6 if jnp.finfo(dtype).bits <= 32 else 1e-10


def _increasing_grid(s: jax.Array) -> jax.Array:
    """`[0, s']` for sorted times `s ≥ 0`, with `s'` strictly increasing and positive, as `odeint` (and its reverse
    pass) needs: a time equal to 0 becomes the smallest normal number, a repeated time moves up by one ulp. Each `s'ᵢ`
    has derivative 1 in `sᵢ` alone."""
    tiny = jnp.asarray(jnp.finfo(s.dtype).tiny, s.dtype)
    up = jnp.asarray(jnp.inf, s.dtype)

    def step(prev: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        cur = jnp.maximum(x, jnp.where(prev == 0, tiny, jnp.nextafter(prev, up)))
        return cur, cur

    _, moved = jax.lax.scan(step, jnp.zeros((), s.dtype), jax.lax.stop_gradient(s))
    return jnp.concatenate([jnp.zeros((1,), s.dtype), s + jax.lax.stop_gradient(moved - s)])


def _vector_field(loss: Loss, layout: KernelLayout, n: int, heavy: bool) -> Callable[..., dict]:
    """The right-hand side `rhs(state, s, Θ, Θ(x, X), coef, Y)` of the ODE on output matrices `(N·M, R)`; `coef` is
    `η` (plain) or the friction `(1 − μ)/√η` (heavy ball).

    The same function object for the same loss and layout (arrays come in as arguments), so `odeint` compiles once
    for all predictors of one problem's shapes; a loss that cannot be hashed gets a fresh one.
    """
    try:
        return _cached_vector_field(loss, layout, n, heavy)
    except TypeError:  # an unhashable callable
        return _make_vector_field(loss, layout, n, heavy)


def _make_vector_field(loss: Loss, layout: KernelLayout, n: int, heavy: bool) -> Callable[..., dict]:
    """`_vector_field`, uncached."""

    def neg_grad(f_mat: jax.Array, y: jax.Array) -> jax.Array:
        g = jax.grad(lambda fx: loss(fx, y))(layout.from_matrix(f_mat, n))
        return -layout.to_matrix(g)

    def plain(state: dict, _s: jax.Array, k_dd: jax.Array, k_td: jax.Array, lr: jax.Array, y: jax.Array) -> dict:
        g = lr * neg_grad(state["fx_train"], y)
        out = {"fx_train": k_dd @ g}
        if "fx_test" in state:
            out["fx_test"] = k_td @ g
        return out

    def momentum(state: dict, _s: jax.Array, k_dd: jax.Array, k_td: jax.Array, friction: jax.Array,
                 y: jax.Array) -> dict:
        g = neg_grad(state["fx_train"], y)
        out = {"fx_train": state["qx_train"], "qx_train": k_dd @ g - friction * state["qx_train"]}
        if "fx_test" in state:
            out["fx_test"] = state["qx_test"]
            out["qx_test"] = k_td @ g - friction * state["qx_test"]
        return out

    return momentum if heavy else plain


_cached_vector_field = functools.lru_cache(maxsize=32)(_make_vector_field)

class ODEPredictor:
    """The `predict_fn` that `gradient_descent` returns: call it as
    `predict_fn(t, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None)`.

    It holds the train-train kernel matrix, the targets, the loss and the optimizer settings (or, for a squared loss,
    the closed-form predictor); calling it has no side effect visible to JAX, so it can be called under `jax.jit`,
    `jax.grad` or `jax.vmap` with traced times, initial outputs or test-train kernel.
    """

    def __init__(self, layout: KernelLayout, k: jax.Array, y_train: jax.Array, loss: Loss, learning_rate: Any,
                 momentum: Any, rtol: float, atol: float, max_steps: int = 10_000,
                 closed_form: MSEPredictor | None = None) -> None:
        self.layout = layout
        self.k = k
        self.y_train = y_train
        self.loss = loss
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.rtol = rtol
        self.atol = atol
        self.max_steps = max_steps
        self.closed_form = closed_form
        self.dtype = y_train.dtype

    def __call__(self, t: ArrayLike | None = None, fx_train_or_state_0: ArrayLike | ODEState | None = 0.0,
                 fx_test_0: ArrayLike | None = None,
                 k_test_train: ArrayLike | None = None) -> jax.Array | tuple[jax.Array, jax.Array] | ODEState:
        """Train outputs, `(train, test)` outputs, or an `ODEState`, at times `t` (see `gradient_descent`)."""
        layout, dtype, momentum = self.layout, self.dtype, self.momentum
        n = self.y_train.shape[0]
        if t is None:
            raise ValueError("`gradient_descent` integrates to finite times only; pass `t` (for the mean squared "
                             "loss, `gradient_descent_mse` gives infinite time in closed form).")
        t_arr, _ = times(t, dtype, finite=True)
        as_state = isinstance(fx_train_or_state_0, ODEState)
        fx_train_0: Any
        q_train_0: Any = None
        q_test_0: Any = None
        if isinstance(fx_train_or_state_0, ODEState):
            s0 = fx_train_or_state_0
            if fx_test_0 is not None:
                raise ValueError("Pass the test outputs inside the `ODEState`, not as `fx_test_0`.")
            fx_train_0, fx_test_0, q_train_0, q_test_0 = s0.fx_train, s0.fx_test, s0.qx_train, s0.qx_test
            if momentum is None and (q_train_0 is not None or q_test_0 is not None):
                raise ValueError("The `ODEState` holds velocities `qx_*`, but `momentum` is None.")
        else:
            fx_train_0 = fx_train_or_state_0
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("Test outputs were given without `k_test_train`; test dynamics need the test-train NTK.")
        want_train = fx_train_0 is not None or as_state
        if self.closed_form is not None:
            out = self.closed_form(t_arr, 0.0 if fx_train_0 is None else fx_train_0, fx_test_0, k_test_train)
            train, test = out if isinstance(out, tuple) else (out, None)
            if as_state:
                return ODEState(train, test)
            if want_train and test is not None:
                return train, test
            return test if test is not None else train

        f0 = check_outputs(layout, 0.0 if fx_train_0 is None else fx_train_0, n, "fx_train_0", dtype)
        state = {"fx_train": layout.to_matrix(f0)}
        k_td = jnp.zeros((0, n * layout.paired_size), dtype)
        want_test = k_test_train is not None
        n_test = 0
        if want_test:
            k_td, g0, n_test = check_test_inputs(layout, k_test_train, fx_test_0, n, dtype)
            state["fx_test"] = layout.to_matrix(g0)
        lr = as_scalar(self.learning_rate, dtype)
        if momentum is None:
            coef, scale = lr, jnp.ones((), dtype)
        else:
            scale = jnp.sqrt(lr)  # the ODE runs in s = √η t
            coef = (1 - as_scalar(momentum, dtype)) / scale
            state["qx_train"] = layout.to_matrix(check_outputs(
                layout, 0.0 if q_train_0 is None else q_train_0, n, "qx_train", dtype))
            if want_test:
                state["qx_test"] = layout.to_matrix(check_outputs(
                    layout, 0.0 if q_test_0 is None else q_test_0, n_test, "qx_test", dtype))

        flat = t_arr.reshape(-1)
        order = jnp.argsort(flat)
        grid = _increasing_grid(flat[order] * scale)
        rhs = _vector_field(self.loss, layout, n, momentum is not None)
        path, reached, s_end = integrate(rhs, state, grid, self.k, k_td, coef, self.y_train, rtol=self.rtol,
                                         atol=self.atol, max_steps=self.max_steps)
        if all_concrete(reached, s_end):
            if not bool(jnp.all(reached)):
                raise ValueError(
                    f"Integrating to `t` = {float(jnp.max(flat)):.4g} takes more than `max_steps` = {self.max_steps} "
                    f"steps (it stopped at t = {float(s_end / scale):.4g}). The integrator's steps stay short "
                    "where the ODE is stiff, as near a minimum of the loss with positive curvature, where the outputs "
                    "barely move (for the mean squared loss without momentum, `method='auto'` or "
                    "`gradient_descent_mse` give the closed form at any time), or where the loss gradient is rounding "
                    "noise (cross-entropy in float32 once `1 − p` falls below eps: use float64). Pass smaller times "
                    "or a larger `max_steps`.")
        else:  # traced: the outputs at times not reached are NaN, never an extrapolation
            path = {key: jnp.where(reached.reshape(-1, *([1] * (v.ndim - 1))), v, jnp.full_like(v, jnp.nan))
                    for key, v in path.items()}
        index = jnp.argsort(order).reshape(t_arr.shape)
        path = {key: value[1:][index] for key, value in path.items()}
        if all_concrete(path) and not all(bool(jnp.all(jnp.isfinite(v))) for v in path.values()):
            raise ValueError("The ODE solution is not finite: the loss gradient or the kernel blow up at these times.")

        def back(key: str, rows: int) -> jax.Array | None:
            return layout.from_matrix(path[key], rows) if key in path else None

        train = layout.from_matrix(path["fx_train"], n)
        test = back("fx_test", n_test)
        if as_state:
            return ODEState(train, test, back("qx_train", n), back("qx_test", n_test))
        if want_train and test is not None:
            return train, test
        return test if test is not None else train


def gradient_descent(loss: Loss, k_train_train: ArrayLike, y_train: ArrayLike,
                     learning_rate: float | jax.Array = 1.0, momentum: float | jax.Array | None = None,
                     trace_axes: TraceAxes = (-1,), *, rtol: float | None = None,
                     atol: float | None = None, max_steps: int = 10_000, method: Literal["auto", "ode"] = "auto",
                     negative_eigenvalues: NegativeEigenvalues = "warn") -> ODEPredictor:
    r"""Outputs of a constant-NTK model trained by gradient flow on any loss, by solving the ODE in function space.

    A model whose NTK `Θ` stays constant (linearized or infinitely wide; Lee et al. 2019, "Wide neural networks of
    any depth evolve as linear models under gradient descent") trained on `loss(f(X), Y)` with learning rate `η`
    follows, with `t` counted in steps (docs/theory.md §3),

    * `df(X)/dt = −η Θ ∇_f L`, `df(x)/dt = −η Θ(x, X) ∇_f L`.

    With heavy-ball momentum `μ` the discrete update is `v ← μ v − η ∇_θ L`, `θ ← θ + v` from `v = 0` (the
    convention of `optax.sgd(η, momentum=μ)` and of neural-tangents); for a linear model the outputs follow
    `u ← μ u − η Θ ∇_f L`, `f ← f + u`, whose continuous limit is second order. It is solved in the rescaled time
    `s = √η t`, where it reads

    * `df/ds = q`, `dq/ds = −(1 − μ)/√η · q − Θ ∇_f L` (and likewise with `Θ(x, X)` on the test set),

    with `q = df/ds` (so `u ≈ √η q` per step) starting at 0. The heavy-ball iteration is a first-order
    discretization of it with step `√η` in `s`: it follows the ODE when `1 − μ ≪ 1` and `√(η λ_max/(nk)) ≪ 1` (for
    the mean squared loss; in general `η λ_max` times the curvature of the loss in `f`), with a gap shrinking like
    `√η` at fixed friction `(1 − μ)/√η`.

    No closed form exists beyond the mean squared loss, so the ODE is integrated (adaptive Dormand–Prince 5(4), as
    `jax.experimental.ode.odeint`) to the requested times. Where the outputs move on a time scale that grows with `t`
    (cross-entropy, whose outputs grow like `log t`) the adaptive steps grow with it, and `t = 1e12` costs about
    1,300 steps in float64. The work is bounded: more than `max_steps` steps in all raise a `ValueError` naming `t`
    (NaN outputs at the times not reached, when values are traced; `odeint` returned an extrapolation of its last
    step there). This happens when the outputs converge to a minimum of the loss with positive curvature (a finite
    minimizer: soft labels, the squared loss), where the explicit integrator's step stays bounded by that curvature
    while time grows, so the steps needed grow like `t`; and when the loss gradient is rounding noise. The integrator
    trusts the gradient it is given: in float32, that of cross-entropy, `softmax(f) − y`, rounds `1 − p` to 0 once
    the margins pass about 16, after which the outputs drift (1% off at `t = 1e8` on a 6-point, 3-class problem,
    whose float64 outputs agree with a float64 SciPy integration to 1e-8 up to `t = 1e12`); use float64 for such
    times.

    For a loss whose gradient in `f` is `a (f − b)` everywhere (the mean squared loss `0.5 * jnp.mean((fx - y)**2)`
    and its multiples; recognized from the jaxpr of its Hessian, which must not depend on `f`, and checked on
    values), `method="auto"` uses the closed form of `gradient_descent_mse` instead, at any `t` and for the cost of
    one eigendecomposition (without momentum; `method="ode"` integrates anyway).

    Under JAX transformations: `predict_fn` may be called under `jax.jit`, `jax.grad` and `jax.vmap`, with `t`, the
    initial state or `k_test_train` traced; the constructor accepts a traced kernel, targets, `learning_rate` or
    `momentum`. Derivatives are reverse mode only (`jax.grad`, `jax.vjp`, `jax.jacrev`, through the adjoint ODE of
    `odeint`); `odeint` has no forward mode. Checks that need values (NaN/Inf, symmetry, negative or infinite times,
    `momentum < 1`, a solution that blows up, the step bound) run only on concrete inputs. Predictors for the same
    `loss` and shapes share one compilation of the integrator.

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
      max_steps: the most steps the integrator may take for one call (all times together).
      method: `"auto"` (the closed form for a squared loss without momentum, else the integrator) or `"ode"`
        (always the integrator).
      negative_eigenvalues: eigenvalues of the train-train kernel below `−N·eps·λ_max` (not rounding): `"warn"`
        (default) clips them to 0 with a `UserWarning`, `"raise"` raises a `ValueError`, `"clip"` clips them
        silently (the kernel is replaced by `V max(λ, 0) Vᵀ`; concrete kernels only).

    Returns:
      An `ODEPredictor` `predict_fn(t, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None)`: `t` a finite
      time or array of times of any shape (leading axes of the result); `fx_train_or_state_0` the train outputs at
      `t = 0` (`None` means 0) or an `ODEState` (then an `ODEState` comes back, with velocities when `momentum` is
      set); `k_test_train` `(N_test, N, ...)` the test-train NTK, with `fx_test_0` (default 0). Returns
      `fx_train_t`, or `(fx_train_t, fx_test_t)` when `k_test_train` is given.

    Raises:
      ValueError: bad shapes, no training example or output, NaN/Inf, a non-symmetric kernel, negative or infinite
        times, `momentum ≥ 1`, more than `max_steps` steps, a solution that is not finite (value checks on
        concrete inputs only).
      TypeError: a `loss` that is not callable or does not return a real scalar.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.predict
      >>> k = jnp.array([[1.0, 0.2], [0.2, 1.0]]); y = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> xent = lambda fx, y: -jnp.mean(jnp.sum(jax.nn.log_softmax(fx) * y, -1))
      >>> predict_fn = ntkit.predict.gradient_descent(xent, k, y, learning_rate=1.0)
      >>> predict_fn(jnp.array([1.0, 100.0])).shape
      (2, 2, 2)
      >>> bool(jnp.allclose(jax.jit(predict_fn)(jnp.array([1.0, 100.0])), predict_fn(jnp.array([1.0, 100.0]))))
      True
    """
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(fx_train, y_train), got {type(loss).__name__}.")
    if method not in ("auto", "ode"):
        raise ValueError(f"`method` must be 'auto' or 'ode', got {method!r}.")
    max_steps = check_positive_int(max_steps, "max_steps")
    negative_eigenvalues = check_negative_eigenvalues(negative_eigenvalues)
    with concrete_eval(k_train_train):
        k_train_train = check_array(k_train_train, "k_train_train")
    dtype = float_dtype(k_train_train)
    with concrete_eval(y_train):
        y_train = check_array(y_train, "y_train", dtype=dtype)
    learning_rate = check_scalar(learning_rate, "learning_rate", positive=True)
    if momentum is not None:
        momentum = check_scalar(momentum, "momentum")
        if is_concrete(momentum) and momentum >= 1:
            raise ValueError(f"`momentum` must be in [0, 1) or None, got {momentum}.")
    rtol = _default_tolerance(dtype) if rtol is None else check_scalar(rtol, "rtol", positive=True)
    atol = _default_tolerance(dtype) if atol is None else check_scalar(atol, "atol", positive=True)
    layout = target_layout(y_train.shape, trace_axes)
    out = jax.eval_shape(loss, y_train, y_train)
    if not (hasattr(out, "shape") and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)):
        raise TypeError(f"`loss(fx_train, y_train)` must return a real floating scalar, got {out}.")
    n = y_train.shape[0]
    with concrete_eval(k_train_train):
        k = check_kernel(layout, k_train_train, n, n, "k_train_train", dtype)
        k = check_symmetric(layout.kernel_matrix(k), "k_train_train")
    fac = Factorizations(k, "k_train_train", negative_eigenvalues)
    if fac.concrete:
        with concrete_eval(k):
            evals, evecs = fac.eigh  # checks the spectrum
            if fac.clipped:  # integrate with the kernel's positive semi-definite part
                k = (evecs * evals[None, :]) @ evecs.T
    closed_form = None
    quadratic = quadratic_loss(loss, y_train) if method == "auto" and momentum is None else None
    if quadratic is not None:  # ∇L = a (f − b): the closed form of gradient_descent_mse, with τ = η a t
        a, b = quadratic
        closed_form = MSEPredictor(layout, fac, b, learning_rate * (a * b.size))
    return ODEPredictor(layout, k, y_train, loss, learning_rate, momentum, rtol, atol, max_steps, closed_form)
