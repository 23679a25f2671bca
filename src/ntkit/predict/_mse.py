"""Closed-form gradient flow on the mean squared loss (`gradient_descent_mse`)."""

from __future__ import annotations

import jax.numpy as jnp

from .._checks import check_array, check_scalar
from ._common import (
    Factorizations,
    check_kernel,
    check_outputs,
    check_symmetric,
    decay_factors,
    float_dtype,
    regularize,
    target_layout,
    test_inputs,
    times,
)


def gradient_descent_mse(k_train_train, y_train, learning_rate: float = 1.0, diag_reg: float = 0.0,
                         diag_reg_absolute_scale: bool = False, trace_axes=(-1,)):
    r"""Outputs of a model trained by gradient flow on the mean squared loss, in closed form from its NTK.

    With the loss `L = 1/(2nk) Σᵢ ‖f(xᵢ) − yᵢ‖²` over `n` training points of `k` outputs (`nk = y_train.size`),
    learning rate `η` and time `t` counted in steps, `τ = η t/(nk)`, a model whose NTK `Θ` stays constant (a
    linearized or infinitely wide network; Lee et al. 2019, "Wide neural networks of any depth evolve as linear
    models under gradient descent") evolves as

    * train: `f_t(X) = Y + e^{−τΘ} (f₀(X) − Y)`,
    * test: `f_t(x) = f₀(x) + Θ(x, X) Θ⁻¹ (I − e^{−τΘ}) (Y − f₀(X))`.

    One symmetric eigendecomposition `Θ = V diag(λ) Vᵀ` (computed on first use, cached, negative eigenvalues from
    rounding clipped to 0) serves every `t`: `e^{−τλ} − 1` through `expm1`, and `(1 − e^{−τλ})/λ`, which tends to
    `τ` as `λ → 0`. `t=None` (infinite time) uses a Cholesky solve instead: train outputs are `Y`, test outputs
    kernel regression `f₀(x) + Θ(x, X) Θ⁻¹ (Y − f₀(X))`. A ridge `diag_reg` replaces `Θ` by `Θ + εI` in the
    training dynamics (so train outputs still reach `Y`; for the ridge regressor's fit on the training inputs pass
    `k_test_train=k_train_train`).

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

    Returns:
      `predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None)`. `t` is a scalar or an array of
      times of any shape (leading axes of the result), `None` for infinite time. `fx_train_0` and `fx_test_0` are the
      outputs at `t = 0` (broadcast to `(N, ...)` and `(N_test, ...)`; `fx_train_0=None` means 0 and the train
      outputs are not returned). `k_test_train` is the test-train NTK `(N_test, N, ...)`; when given, test outputs
      are computed (with `fx_test_0=None` taken as 0). Returns `fx_train_t`, `fx_test_t` or
      `(fx_train_t, fx_test_t)`, each of shape `t.shape + (N, O_1, ..., O_d)`.

    Raises:
      ValueError: for shapes that do not match, NaN/Inf, a non-symmetric kernel, negative times, or a singular
        kernel (without ridge) at infinite time.

    Example:
      >>> import jax.numpy as jnp, ntkit.predict
      >>> k = jnp.array([[2.0, 0.5], [0.5, 1.0]]); y = jnp.array([[1.0], [-1.0]])
      >>> predict_fn = ntkit.predict.gradient_descent_mse(k, y, learning_rate=0.5)
      >>> predict_fn(t=jnp.array([0.0, 10.0])).shape  # from f₀ = 0
      (2, 2, 1)
      >>> bool(jnp.allclose(predict_fn(None), y))
      True
    """
    k_train_train = check_array(k_train_train, "k_train_train")
    dtype = float_dtype(k_train_train)
    y_train = check_array(y_train, "y_train", dtype=dtype)
    learning_rate = check_scalar(learning_rate, "learning_rate", positive=True)
    diag_reg = check_scalar(diag_reg, "diag_reg")
    layout = target_layout(y_train.shape, trace_axes)
    n = y_train.shape[0]
    k = check_kernel(layout, k_train_train, n, n, "k_train_train", dtype)
    k = check_symmetric(layout.kernel_matrix(k), "k_train_train")
    fac = Factorizations(regularize(k, diag_reg, diag_reg_absolute_scale), "k_train_train")
    y_mat = layout.to_matrix(y_train)
    size = y_train.size

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("`fx_test_0` was given without `k_test_train`; test outputs need the test-train NTK.")
        want_train = fx_train_0 is not None
        f0 = check_outputs(layout, 0.0 if fx_train_0 is None else fx_train_0, n, "fx_train_0", dtype)
        resid = layout.to_matrix(f0) - y_mat  # (N·M, R)
        want_test = k_test_train is not None
        if want_test:
            kxt, g0, n_test = test_inputs(layout, k_test_train, fx_test_0, n, dtype)

        if t is None:
            fac.cho  # noqa: B018  (factorizes once; a singular kernel has no infinite-time limit equal to Y)
            train = jnp.broadcast_to(y_train, f0.shape)
            if want_test:
                test = g0 - layout.from_matrix(kxt @ fac.solve(resid), n_test)
        else:
            tau = times(t, dtype) * (learning_rate / size)
            evals, evecs = fac.eigh
            if bool(jnp.any(jnp.isinf(tau))):
                fac.check_invertible_eigh()
            expm1, inv = decay_factors(evals, tau)  # (*t.shape, P)
            coef = evecs.T @ resid  # (P, R)
            train = f0 + layout.from_matrix(evecs @ (expm1[..., :, None] * coef), n)
            if want_test:
                test = g0 - layout.from_matrix(kxt @ (evecs @ (inv[..., :, None] * coef)), n_test)

        if want_train and want_test:
            return train, test
        return test if want_test else train

    return predict_fn
