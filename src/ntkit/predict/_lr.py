"""The largest stable learning rate of full-batch gradient descent on the mean squared loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._checks import check_array, check_scalar, is_concrete
from ._common import (
    NegativeEigenvalues,
    check_negative_eigenvalues,
    check_spectrum,
    check_symmetric,
    concrete_eval,
    float_dtype,
)


def max_learning_rate(k_train_train: ArrayLike, y_train_size: int | None = None,
                      momentum: float | jax.Array = 0.0, *,
                      negative_eigenvalues: NegativeEigenvalues = "warn") -> float | jax.Array:
    r"""Critical learning rate `η_crit = 2 (1 + μ) n k / λ_max(Θ)` of (heavy-ball) gradient descent on MSE.

    With the loss `1/(2nk) Σ ‖f − y‖²`, a model with constant NTK `Θ` follows
    `f_{s+1} − Y = (I − η Θ/(nk)) (f_s − Y)` (docs/theory.md §3): the error along the top eigenvector is multiplied by
    `1 − η λ_max/(nk)` each step, so gradient descent converges iff `η < 2nk/λ_max`. With heavy-ball momentum `μ`
    the bound is `2 (1 + μ) nk/λ_max`. Wide networks in NTK parameterization train below it and diverge (or leave
    the lazy regime) above it (Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under
    gradient descent").

    A negative eigenvalue `λ < 0` would make the error along its eigenvector grow by `1 + η|λ|/(nk)` per step at any
    `η`: no learning rate is stable. Those below `−N·eps·λ_max` (beyond rounding) are reported as
    `negative_eigenvalues` says, and the rate returned is that of the kernel with them clipped to 0.

    Under JAX transformations: with a traced kernel or `momentum` (inside `jax.jit`, `jax.grad`, `jax.vmap`) the
    result is a traced scalar (`λ_max` by `jnp.linalg.eigvalsh`, differentiable where the top eigenvalue is simple)
    and the value checks (NaN/Inf, `momentum < 1`, a positive `λ_max`) are skipped; `y_train_size` stays a Python
    integer.

    Args:
      k_train_train: train-train NTK, `(N, N)` or `(N, N, O_a, O_a', ...)` (pairs over untraced output axes).
      y_train_size: `nk`, the number of training targets (`y_train.size`); `None` means the side of the kernel
        seen as a matrix, `N·O_a·...` (right when no output axis is traced, or for one output).
      momentum: heavy-ball momentum `μ ∈ [0, 1)`.
      negative_eigenvalues: `"warn"` (default: a `UserWarning` giving the smallest eigenvalue relative to the
        largest), `"raise"` (a `ValueError`) or `"clip"` (silent), for eigenvalues beyond rounding below 0.

    Returns:
      `η_crit` as a Python float for concrete inputs, else as a traced 0-d array.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.predict
      >>> ntkit.predict.max_learning_rate(jnp.eye(3) * 2.0, y_train_size=6)
      6.0
      >>> float(jax.jit(ntkit.predict.max_learning_rate, static_argnums=1)(jnp.eye(3) * 2.0, 6))
      6.0
    """
    with concrete_eval(k_train_train):
        k = check_array(k_train_train, "k_train_train")
    if k.ndim < 2 or k.ndim % 2 or k.shape[0] != k.shape[1] or k.shape[2::2] != k.shape[3::2]:
        raise ValueError(f"`k_train_train` must have shape (N, N, O_a, O_a', ...), got {k.shape}.")
    if k.size == 0:
        raise ValueError(f"`k_train_train` is empty (shape {k.shape}): it needs at least one training example and "
                         "output.")
    momentum = check_scalar(momentum, "momentum")
    negative_eigenvalues = check_negative_eigenvalues(negative_eigenvalues)
    if is_concrete(momentum) and momentum >= 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
    side = int(np.prod(k.shape[::2]))
    perm = (*range(0, k.ndim, 2), *range(1, k.ndim, 2))
    if y_train_size is None:
        y_train_size = side
    if isinstance(y_train_size, bool) or not isinstance(y_train_size, int | np.integer) or y_train_size < 1:
        raise ValueError(f"`y_train_size` must be a positive integer (y_train.size), got {y_train_size!r}.")
    lam_max: float | jax.Array
    if is_concrete(k):
        mat = np.transpose(np.asarray(k, dtype=np.float64), perm).reshape(side, side)
        with concrete_eval(k):
            check_symmetric(jnp.transpose(k.astype(float_dtype(k)), perm).reshape(side, side), "k_train_train")
        evals = np.linalg.eigvalsh((mat + mat.T) / 2)
        lam_max = float(evals[-1])
        if not lam_max > 0:
            if evals[0] < 0:
                raise ValueError(f"`k_train_train` has no positive eigenvalue (smallest {evals[0]:.3g}): gradient "
                                 "descent diverges along the negative ones at any learning rate.")
            raise ValueError("`k_train_train` is zero: any learning rate is stable, there is no critical one.")
        check_spectrum(evals, float_dtype(k), "k_train_train", negative_eigenvalues)
    else:
        k_mat = jnp.transpose(k.astype(float_dtype(k)), perm).reshape(side, side)
        lam_max = jnp.linalg.eigvalsh((k_mat + k_mat.T) / 2)[-1]
    return 2.0 * (1.0 + momentum) * int(y_train_size) / lam_max
