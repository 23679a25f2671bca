"""The eigenlearning prediction of kernel (ridge) regression's test and train error against the sample size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.optimize

from .._checks import check_array, check_scalar
from ._spectrum import input_eps, rounding_level, symmetric_matrix


class LearningCurve(NamedTuple):
    """Eigenlearning predictions (NumPy float64), one entry per sample size.

    Attributes:
      n: `(T,)` numbers of training examples.
      test_mse: `(T,)` predicted test MSE on the pool distribution, observation noise included, mean over outputs.
      train_mse: `(T,)` predicted mean squared training residual (against the noisy training targets).
      kappa: `(T,)` the effective regularization `κ`.
      learnability: `(T, N)` `ℒ_i = λ_i/(λ_i + κ)` of each eigenmode.
      e0: `(T,)` the overfitting coefficient `E₀ = n/(n − Σ_i ℒ_i²)`.
      eigenvalues: `(N,)` operator eigenvalues `λ_i` (of `K/N`), descending, rounding noise set to 0.
      target_power: `(N,)` `v_i²`, the target's squared coefficient on each eigenfunction (mean over outputs); they
        sum to the target's mean square over the pool.
    """

    n: np.ndarray
    test_mse: np.ndarray
    train_mse: np.ndarray
    kappa: np.ndarray
    learnability: np.ndarray
    e0: np.ndarray
    eigenvalues: np.ndarray
    target_power: np.ndarray


def _kappa(lam: np.ndarray, n: int, ridge: float) -> float:
    """The root `κ > 0` of `Σ_i λ_i/(λ_i + κ) + δ/κ = n` (decreasing in `κ`)."""
    positive = lam[lam > 0]

    def excess(log_kappa: float) -> float:
        kappa = np.exp(log_kappa)
        return float(np.sum(positive / (positive + kappa)) + ridge / kappa - n)

    # At κ_hi = (Σλ + δ)/n the left side is at most n; below κ_lo it exceeds n (δ/κ alone, or all modes learned).
    hi = np.log((positive.sum() + ridge) / n)
    lo = np.log(ridge / (2 * n)) if ridge > 0 else np.log(positive.min()) - 1.0
    while excess(lo) <= 0:
        lo -= 5.0
        if lo < hi - 1500:
            raise ValueError(f"No κ > 0 solves the eigenlearning equation for n = {n}.")
    return float(np.exp(scipy.optimize.brentq(excess, lo, hi, xtol=1e-14, rtol=1e-14, maxiter=500)))


def learning_curve(k: Any, y: Any, n: int | Sequence[int], ridge: float = 0.0,
                   noise_var: float = 0.0) -> LearningCurve:
    r"""Eigenlearning prediction of kernel regression's test and train MSE after `n` training examples.

    Bordelon, Canatar & Pehlevan 2020, "Spectrum dependent learning curves in kernel regression and wide neural
    networks" (ICML); Canatar, Bordelon & Pehlevan 2021 (Nature Communications 12); Simon, Dickens, Karkada &
    DeWeese 2021, "The eigenlearning framework: a conservation law perspective on kernel regression and wide neural
    networks" (their notation is used). The data distribution is the uniform one over the `N` points of a pool on
    which `k` is given; its kernel operator has eigenvalues `λ_i` = those of `K/N`, and eigenfunctions `φ_i` with
    `E[φ_i²] = 1` (`√N` times the unit eigenvectors `u_i`), so the target has coefficients `v_i = u_iᵀy/√N`.
    Kernel ridge regression on `n` i.i.d. samples, `f̂(x) = K(x, X)(K(X, X) + δI)⁻¹ y` with the ridge `δ` added to
    the raw kernel matrix (not to `K/N`), is predicted by the effective regularization `κ > 0` solving
    `n = Σ_i λ_i/(λ_i + κ) + δ/κ`: mode `i` has learnability `ℒ_i = λ_i/(λ_i + κ)`, `E₀ = n/(n − Σ_i ℒ_i²)`, and

    - test MSE `= E₀ (Σ_i (1 − ℒ_i)² v_i² + ε²)`, the expected `(f̂(x) − y)²` on a fresh test point whose target
      carries the noise `ε²` (against the noiseless target it is `ε²` less);
    - train MSE `= (δ/(nκ))² · test MSE`, the mean squared residual on the (noisy) training targets; 0 at `δ = 0`.

    The prediction is asymptotic (exact as `n` and the number of modes grow together, Gaussian-equivalent
    eigenfunctions); at moderate `n` on a smooth kernel it is typically within 10-20% of the average over training
    sets, and it describes that average, not one draw. With `δ = 0` a positive `κ` needs `n` below the number of
    nonzero eigenvalues (else regression interpolates every mode, and the i.i.d. theory's `E₀` diverges).

    Args:
      k: kernel `(N, N)` on the pool, symmetric positive semi-definite.
      y: targets `(N,)` or `(N, O_1, ...)` on the pool (several outputs: the MSE is averaged over them).
      n: a number of training examples or a sequence of them (positive integers).
      ridge: `δ ≥ 0`.
      noise_var: `ε² ≥ 0`, the variance of the noise on each target.

    Returns:
      A `LearningCurve`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import learning_curve
      >>> k = 4 * jnp.eye(4)                     # operator eigenvalues all 1: κ solves 4/(1 + κ) = n
      >>> lc = learning_curve(k, jnp.array([1.0, -1.0, 1.0, -1.0]), n=[1, 2])
      >>> lc.kappa.round(6).tolist(), lc.learnability[:, 0].round(6).tolist()
      ([3.0, 1.0], [0.25, 0.5])
      >>> lc.test_mse.round(6).tolist()          # E₀ (1 − ℒ)² Σv², Σv² = 1
      [0.75, 0.5]
    """
    mat, n_pool, paired = symmetric_matrix(k, "k")
    if paired:
        raise ValueError(f"`k` must be a kernel (N, N) on the pool (traced over outputs), got shape {np.shape(k)}.")
    y = check_array(y, "y", min_ndim=1)
    if y.shape[0] != n_pool:
        raise ValueError(f"`y` must have one row per pool point ({n_pool}), got shape {y.shape}.")
    ymat = np.asarray(y, np.float64).reshape(n_pool, -1)
    if ymat.shape[1] == 0:
        raise ValueError(f"`y` has no outputs (shape {y.shape}).")
    ridge = check_scalar(ridge, "ridge")
    noise_var = check_scalar(noise_var, "noise_var")
    ns = np.atleast_1d(np.asarray(n))
    if ns.ndim != 1 or ns.size == 0 or not np.issubdtype(ns.dtype, np.integer) or np.any(ns < 1):
        raise ValueError(f"`n` must be a positive integer or a non-empty sequence of them, got {n!r}.")
    evals, evecs = np.linalg.eigh(mat / n_pool)
    evals, evecs = evals[::-1].copy(), evecs[:, ::-1].copy()
    level = rounding_level(evals, input_eps(k))
    if evals[-1] < -level:
        raise ValueError(f"`k` is not positive semi-definite: its smallest eigenvalue is {n_pool * evals[-1]:.3g} "
                         f"({evals[-1] / evals[0]:.3g} times the largest).")
    lam = np.where(evals > level, evals, 0.0)
    rank = int(np.sum(lam > 0))
    if rank == 0:
        raise ValueError("`k` is zero: it learns nothing.")
    power = np.mean((evecs.T @ ymat) ** 2, axis=1) / n_pool  # v_i², mean over outputs
    if ridge == 0 and np.any(ns >= rank):
        raise ValueError(f"With `ridge=0`, eigenlearning needs `n` below the number of nonzero eigenvalues of `k` "
                         f"({rank}), got n = {int(ns.max())}: pass `ridge` > 0.")
    kappa = np.array([_kappa(lam, int(m), ridge) for m in ns])
    learn = lam[None, :] / (lam[None, :] + kappa[:, None])
    e0 = ns / (ns - np.sum(learn**2, axis=1))
    test = e0 * (np.sum((1 - learn) ** 2 * power[None, :], axis=1) + noise_var)
    train = (ridge / (ns * kappa)) ** 2 * test
    return LearningCurve(ns.astype(np.int64), test, train, kappa, learn, e0, lam, power)
