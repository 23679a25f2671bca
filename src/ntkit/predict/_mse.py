"""Closed-form gradient flow on the mean squared loss (`gradient_descent_mse`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._checks import check_array, check_scalar
from .._layout import KernelLayout
from ._common import (
    Factorizations,
    NegativeEigenvalues,
    TraceAxes,
    as_scalar,
    check_kernel,
    check_negative_eigenvalues,
    check_outputs,
    check_symmetric,
    check_test_inputs,
    concrete_eval,
    decay_factors,
    float_dtype,
    lead,
    regularize,
    target_layout,
    times,
)


class MSEPredictor:
    """The `predict_fn` that `gradient_descent_mse` returns: call it as
    `predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None)`.

    It holds the (regularized) train-train kernel matrix, its factorizations (computed on first use and kept only
    when the kernel is concrete), the targets and the learning rate; calling it has no side effect visible to JAX, so
    it can be called under `jax.jit`, `jax.grad` or `jax.vmap`, with `t`, the initial outputs or `k_test_train`
    traced.
    """

    def __init__(self, layout: KernelLayout, fac: Factorizations, y_train: jax.Array, learning_rate: Any) -> None:
        self.layout = layout
        self.fac = fac
        self.y_train = y_train
        self.learning_rate = learning_rate
        self.dtype = y_train.dtype
        self._y_mat = layout.to_matrix(y_train)

    def __call__(self, t: ArrayLike | None = None, fx_train_0: ArrayLike | None = 0.0,
                 fx_test_0: ArrayLike | None = None,
                 k_test_train: ArrayLike | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Train outputs, test outputs, or both, at times `t` (see `gradient_descent_mse`)."""
        layout, fac, dtype = self.layout, self.fac, self.dtype
        n = self.y_train.shape[0]
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("`fx_test_0` was given without `k_test_train`; test outputs need the test-train NTK.")
        want_train = fx_train_0 is not None
        f0 = check_outputs(layout, 0.0 if fx_train_0 is None else fx_train_0, n, "fx_train_0", dtype)
        resid = layout.to_matrix(f0) - self._y_mat  # (N·M, R)
        want_test = k_test_train is not None
        if want_test:
            kxt, g0, n_test = check_test_inputs(layout, k_test_train, fx_test_0, n, dtype)

        if t is None:
            fac.cho  # noqa: B018  (factorizes; a singular concrete kernel has no infinite-time limit equal to Y)
            train = jnp.broadcast_to(self.y_train, f0.shape)
            if want_test:
                test = g0 - layout.from_matrix(kxt @ fac.solve(resid), n_test)
        else:
            t_arr, infinite = times(t, dtype)
            evals, evecs = fac.eigh
            if infinite:
                fac.check_invertible_eigh()
            tau = t_arr * (as_scalar(self.learning_rate, dtype) / self.y_train.size)
            expm1, inv = decay_factors(evals, tau)  # (*t.shape, P)
            coef = lead(evecs.T @ resid, expm1.ndim + 1)  # (..., P, R)
            moved = layout.from_matrix(evecs @ (expm1[..., :, None] * coef), n)
            train = lead(f0, moved.ndim) + moved
            if want_test:
                moved = layout.from_matrix(kxt @ (evecs @ (inv[..., :, None] * coef)), n_test)
                test = lead(g0, moved.ndim) - moved

        if want_train and want_test:
            return train, test
        return test if want_test else train


def gradient_descent_mse(k_train_train: ArrayLike, y_train: ArrayLike, learning_rate: float | jax.Array = 1.0,
                         diag_reg: float | jax.Array = 0.0, diag_reg_absolute_scale: bool = False,
                         trace_axes: TraceAxes = (-1,), *,
                         negative_eigenvalues: NegativeEigenvalues = "warn") -> MSEPredictor:
    r"""Outputs of a model trained by gradient flow on the mean squared loss, in closed form from its NTK.

    With the loss `L = 1/(2nk) Σᵢ ‖f(xᵢ) − yᵢ‖²` over `n` training points of `k` outputs (`nk = y_train.size`),
    learning rate `η` and time `t` counted in steps, `τ = η t/(nk)`, a model whose NTK `Θ` stays constant (a
    linearized or infinitely wide network; Lee et al. 2019, "Wide neural networks of any depth evolve as linear
    models under gradient descent") evolves as (docs/theory.md §3)

    * train: `f_t(X) = Y + e^{−τΘ} (f₀(X) − Y)`,
    * test: `f_t(x) = f₀(x) + Θ(x, X) Θ⁻¹ (I − e^{−τΘ}) (Y − f₀(X))`.

    One symmetric eigendecomposition `Θ = V diag(λ) Vᵀ` (computed on first use) serves every `t`: `e^{−τλ} − 1`
    through `expm1`, and `(1 − e^{−τλ})/λ`. `t=None` (infinite time) uses a Cholesky solve instead: train outputs are
    `Y`, test outputs kernel regression `f₀(x) + Θ(x, X) Θ⁻¹ (Y − f₀(X))`. A ridge `diag_reg` replaces `Θ` by
    `Θ + εI` in the training dynamics (so train outputs still reach `Y`; for the ridge regressor's fit on the
    training inputs pass `k_test_train=k_train_train`).

    A singular kernel (an input repeated, a low-rank empirical NTK) has a null space, along which the outputs never
    move. Eigenvalues within rounding of zero, `|λ| ≤ N·eps·λ_max` (`N` the side of `Θ` as a matrix, `eps` that of
    the dtype), are rounding noise of such a zero, so they are set to exactly 0: along their eigenvectors the train
    outputs keep their initial values at every `t` (two copies of one input with targets `a` and `b`, from equal
    initial outputs, stay equal, and tend to `(a + b)/2`), and the test outputs get nothing (`Θ⁺`, the
    pseudo-inverse, in place of `Θ⁻¹`; exact when the kernel over train and test points together is positive
    semi-definite, where `Θ(x, X) v = 0` for `Θ v = 0`). Taking the limit `τ` of `(1 − e^{−τλ})/λ` instead would
    multiply the rounding noise of `Θ(x, X) v` by `τ`, and keeping the noise `λ` would fit the null direction as if
    it were a real one. The infinite-time limit needs `Θ` invertible: a singular kernel raises there.

    Under JAX transformations: `predict_fn` may be called under `jax.jit`, `jax.grad` and `jax.vmap`, with `t`,
    `fx_train_0`, `fx_test_0` and `k_test_train` traced, and `gradient_descent_mse` itself may be called inside them
    with a traced `k_train_train`, `y_train`, `learning_rate` or `diag_reg`. The factorizations of a concrete kernel
    are computed once (eagerly, even when the first call is traced) and reused by every later call and trace; those
    of a traced kernel are recomputed at every call and never kept. Checks that need values (NaN/Inf, symmetry,
    negative times, a singular kernel at infinite time) run only on concrete inputs: with a traced kernel or traced
    `t` nothing stops a singular kernel at `t = inf` (test outputs then come out inf or NaN). The derivatives in `t`
    and `learning_rate` are those of the formulas above; derivatives in the kernel go through `eigh` and are
    undefined where eigenvalues repeat.

    Args:
      k_train_train: train-train NTK, `(N, N)` when every output axis is traced, in general `(N, N, O_a, O_a', ...)`
        over the output axes not in `trace_axes` (the layout of `ntkit.empirical_ntk_fn`); it stands for `Θ ⊗ I`
        along the traced axes.
      y_train: targets `(N, O_1, ..., O_d)`.
      learning_rate: `η`, the step size; `t` is counted in steps of it.
      diag_reg: ridge `ε ≥ 0` added to the diagonal of `Θ`, times the mean diagonal of `Θ` unless
        `diag_reg_absolute_scale`.
      diag_reg_absolute_scale: take `diag_reg` in absolute units.
      trace_axes: output axes of `y_train` the kernels were traced over (default the last).
      negative_eigenvalues: eigenvalues of the (regularized) train-train kernel below `−N·eps·λ_max` are not
        rounding: `"warn"` (default) clips them to 0 with a `UserWarning` saying how large they are, `"raise"`
        raises a `ValueError`, `"clip"` clips them silently. Checked on a concrete kernel only (a traced one is
        clipped silently).

    Returns:
      An `MSEPredictor` `predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None)`. `t` is a scalar or
      an array of times of any shape (leading axes of the result), `None` for infinite time. `fx_train_0` and
      `fx_test_0` are the outputs at `t = 0` (broadcast to `(N, ...)` and `(N_test, ...)`; `fx_train_0=None` means 0
      and the train outputs are not returned). `k_test_train` is the test-train NTK `(N_test, N, ...)`; when given,
      test outputs are computed (with `fx_test_0=None` taken as 0). Returns `fx_train_t`, `fx_test_t` or
      `(fx_train_t, fx_test_t)`, each of shape `t.shape + (N, O_1, ..., O_d)`.

    Raises:
      ValueError: for shapes that do not match, no training example or output, NaN/Inf, a non-symmetric kernel,
        negative eigenvalues with `negative_eigenvalues="raise"`, negative times, or a singular kernel (without
        ridge) at infinite time; the value checks on concrete inputs only.
      TypeError: for complex or boolean arrays.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.predict
      >>> k = jnp.array([[2.0, 0.5], [0.5, 1.0]]); y = jnp.array([[1.0], [-1.0]])
      >>> predict_fn = ntkit.predict.gradient_descent_mse(k, y, learning_rate=0.5)
      >>> predict_fn(t=jnp.array([0.0, 10.0])).shape  # from f₀ = 0
      (2, 2, 1)
      >>> bool(jnp.allclose(predict_fn(None), y))
      True
      >>> bool(jnp.allclose(jax.jit(predict_fn)(3.0), predict_fn(3.0)))  # jit over t
      True
      >>> round(float(jax.grad(lambda t: predict_fn(t).sum())(0.0)), 5)  # at t = 0: Σ (η/nk) Θ Y
      0.25
    """
    with concrete_eval(k_train_train):  # a concrete kernel stays concrete even when this call is traced
        k_train_train = check_array(k_train_train, "k_train_train")
        dtype = float_dtype(k_train_train)
    with concrete_eval(y_train):
        y_train = check_array(y_train, "y_train", dtype=dtype)
    learning_rate = check_scalar(learning_rate, "learning_rate", positive=True)
    diag_reg = check_scalar(diag_reg, "diag_reg")
    negative_eigenvalues = check_negative_eigenvalues(negative_eigenvalues)
    layout = target_layout(y_train.shape, trace_axes)
    n = y_train.shape[0]
    with concrete_eval(k_train_train, diag_reg):
        k = check_kernel(layout, k_train_train, n, n, "k_train_train", dtype)
        k = check_symmetric(layout.kernel_matrix(k), "k_train_train")
        k = regularize(k, diag_reg, diag_reg_absolute_scale)
    return MSEPredictor(layout, Factorizations(k, "k_train_train", negative_eigenvalues), y_train, learning_rate)
