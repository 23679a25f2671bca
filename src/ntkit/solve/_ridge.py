"""`kernel_ridge`: `(K + ridge·I) α = y` by a Cholesky factorization or by Nyström-preconditioned CG."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeAlias

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from .._memory import memory_budget_bytes
from ._cg import pcg
from ._nystrom import Preconditioner, rp_cholesky
from ._operator import as_operator, fits_in_memory

Method: TypeAlias = Literal["auto", "cholesky", "cg"]
"""How to solve: `"cholesky"` (direct, the whole matrix in memory, `O(N³)`), `"cg"` (preconditioned conjugate
gradients, matrix-free, `O(N²)` per iteration), or `"auto"` (Cholesky when three dense copies of the matrix fit in
half the memory this process may use, `ntkit._memory`; CG otherwise)."""

PreconditionerKind: TypeAlias = Literal["nystrom", "none"]
NotConverged: TypeAlias = Literal["warn", "raise", "ignore"]

_METHODS = ("auto", "cholesky", "cg")
_PRECONDITIONERS = ("nystrom", "none")
_NOT_CONVERGED = ("warn", "raise", "ignore")
DEFAULT_RANK = 1000


class SolverInfo(NamedTuple):
    """How a solve went.

    Attributes:
      method: `"cholesky"` or `"cg"` (what `"auto"` chose).
      iterations: CG iterations (0 for Cholesky).
      residuals: the largest relative residual `‖y − (K + ridge·I) α‖ / ‖y‖` over the columns of `y`, before the
        first iteration and after each (CG); empty for Cholesky.
      residual: the final largest relative residual (CG: by the recurrence; Cholesky: computed).
      converged: whether `residual ≤ tol` (always True for a Cholesky solve that succeeded).
      tol: the tolerance used.
      rank: rank of the Nyström preconditioner (0 without one, or for Cholesky).
    """

    method: str
    iterations: int
    residuals: tuple[float, ...]
    residual: float
    converged: bool
    tol: float
    rank: int


class KernelRidgeResult(NamedTuple):
    """`weights` α `(N,)` or `(N, k)` like `y`, a NumPy array (predict with `K(x, X) α`), and the `SolverInfo`."""

    weights: Any
    info: SolverInfo


@dataclass(frozen=True)
class SolverOptions:
    """The options of `kernel_ridge` as one value, e.g. for `ntkit.predict`'s `solver=` argument (see
    `kernel_ridge` for their meaning)."""

    method: Method = "auto"
    preconditioner: PreconditionerKind = "nystrom"
    rank: int | None = None
    tol: float | None = None
    maxiter: int | None = None
    not_converged: NotConverged = "warn"
    seed: int = 0
    block_bytes: float | None = None

    def __post_init__(self) -> None:
        _check_options(self)


def _check_options(o: SolverOptions) -> None:
    if o.method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {o.method!r}.")
    if o.preconditioner not in _PRECONDITIONERS:
        raise ValueError(f"`preconditioner` must be one of {_PRECONDITIONERS}, got {o.preconditioner!r}.")
    if o.not_converged not in _NOT_CONVERGED:
        raise ValueError(f"`not_converged` must be one of {_NOT_CONVERGED}, got {o.not_converged!r}.")
    for name in ("rank", "maxiter"):
        v = getattr(o, name)
        if v is not None and (not isinstance(v, int | np.integer) or isinstance(v, bool) or v < (name == "maxiter")):
            raise ValueError(f"`{name}` must be a {'positive' if name == 'maxiter' else 'non-negative'} integer or "
                             f"None, got {v!r}.")
    if o.tol is not None and not (isinstance(o.tol, int | float) and 0 < o.tol < 1):
        raise ValueError(f"`tol` must be a number in (0, 1) or None, got {o.tol!r}.")


def default_tol(dtype: Any) -> float:
    """`max(1e-6, 1000·eps)`: 1e-6 in float64, about 1.2e-4 in float32."""
    return max(1e-6, 1000 * float(np.finfo(dtype).eps))


def _check_ridge(ridge: Any) -> float:
    try:
        value = float(ridge)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`ridge` must be a real scalar, got {ridge!r}.") from err
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`ridge` must be a finite non-negative number, got {value}.")
    return value


def _check_targets(y: Any, n: int, dtype: Any) -> np.ndarray:
    if y is None:
        raise TypeError("`y` must be an array, got None.")
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer) or y.dtype.name == "bfloat16"):
        raise TypeError(f"`y` must hold real numbers, got dtype {y.dtype}.")
    if y.ndim not in (1, 2) or y.shape[0] != n or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(f"`y` must have shape ({n},) or ({n}, k) with k ≥ 1 for a kernel of shape ({n}, {n}), got "
                         f"{y.shape}.")
    y = y.astype(dtype)
    if not np.all(np.isfinite(y)):
        raise ValueError("`y` contains NaN or Inf.")
    return y


def _check_symmetric_dense(a: np.ndarray, name: str) -> None:
    """Whether a dense matrix is symmetric to `√eps` of its largest entry, in row blocks (no `N²` temporary)."""
    n = a.shape[0]
    scale = float(np.max(np.abs(a))) if n else 0.0
    step = max(1, (2**24) // max(n, 1))
    gap = 0.0
    for i in range(0, n, step):
        gap = max(gap, float(np.max(np.abs(a[i:i + step] - a[:, i:i + step].T))))
    if gap > np.sqrt(np.finfo(a.dtype).eps) * scale:
        raise ValueError(f"`{name}` must be symmetric; its largest asymmetry |K - Kᵀ| is {gap:.3g} for entries up "
                         f"to {scale:.3g}.")


def _cholesky(op: Any, y: np.ndarray, ridge: float, name: str) -> tuple[np.ndarray, float]:
    a = op.dense()
    _check_symmetric_dense(a, name)
    n = a.shape[0]
    a[np.diag_indices(n)] += np.asarray(ridge, a.dtype)
    try:
        factor = scipy.linalg.cho_factor(a, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise ValueError(f"`{name} + ridge·I` is not positive definite (its Cholesky factorization failed; ridge = "
                         f"{ridge:g}). A kernel is positive semi-definite: check how it was computed, or pass a larger "
                         "`ridge`.") from None
    w = scipy.linalg.cho_solve(factor, y, check_finite=False)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"`{name} + ridge·I` is numerically singular at {a.dtype}: pass a larger `ridge`.")
    # residual with the original matrix: (L Lᵀ) was overwritten, so use the operator again
    r = y - op.matmul(w) - np.asarray(ridge, y.dtype) * w
    rel = _relative(r, y)
    return w, rel


def _relative(r: np.ndarray, y: np.ndarray) -> float:
    r2, y2 = r.reshape(r.shape[0], -1), y.reshape(y.shape[0], -1)
    ynorm = np.linalg.norm(y2, axis=0)
    return float(np.max(np.linalg.norm(r2, axis=0) / np.where(ynorm > 0, ynorm, 1.0)))


def _disabled(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None hides the bar where the output is not a terminal."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None, got {progress!r}.")
    return None if progress is None else not progress


def kernel_ridge(k: Any, y: Any, ridge: float, method: Method = "auto", preconditioner: PreconditionerKind = "nystrom",
                 rank: int | None = None, tol: float | None = None, maxiter: int | None = None, *,
                 not_converged: NotConverged = "warn", seed: int = 0, block_bytes: float | None = None,
                 progress: bool | None = None, name: str = "k") -> KernelRidgeResult:
    r"""Kernel ridge regression weights: solves `(K + ridge·I) α = y`, for kernels too large to factorize.

    Predictions are then `f(x) = K(x, X) α` (`ntkit.solve.matmul` streams them from a large test-train kernel).
    With `method="cg"` the system is solved by preconditioned conjugate gradients, each iteration one pass over `K`
    (`O(N²)`, streamed); the preconditioner is a rank-`r` Nyström approximation `K ≈ F Fᵀ` from randomly pivoted
    Cholesky (Chen, Epperly, Tropp, Webber 2023), which reads only `r` rows of `K`, used as in Nyström PCG
    (Frangella, Tropp, Udell 2023): `P⁻¹ = (λ_r + μ) U (Λ + μI)⁻¹ Uᵀ + (I − U Uᵀ)` for `F Fᵀ = U Λ Uᵀ`, `μ` the
    ridge. This is the approach of Falkon (Rudi, Carratino, Rosasco 2017, "FALKON: an optimal large scale kernel
    method") and EigenPro (Ma, Belkin 2017, "Diving into the shallows"): the top of the spectrum is handled by the
    low-rank part, so the iterations depend on the spectrum's tail against the ridge, not on `λ_max / μ`. The
    pivoting stops before `rank` once the residual trace `tr(K − F Fᵀ)` is below the ridge, where the
    preconditioned condition number is at most about 2.

    Args:
      k: the `(N, N)` train-train kernel `K`, symmetric positive semi-definite, as (a) a NumPy or JAX array; (b) a
        lazy 2-D array-like with `.shape`, `.dtype` and `k[i0:i1, j0:j1]` (a Zarr array, `ntkit.jobs.open(...)`),
        read in row blocks of `block_bytes` and never loaded whole by CG (Cholesky assembles it); or (c) a kernel
        function, as a `KernelOperator(kernel_fn, x, get=...)` or a tuple `(kernel_fn, x)` / `(kernel_fn, x, get)`,
        computed tile by tile at every product (matrix-free).
      y: targets `(N,)` or `(N, k)` (each column solved; CG stops when all have converged).
      ridge: `μ ≥ 0`, added to the diagonal in absolute units.
      method: `"auto"`, `"cholesky"` or `"cg"` (see `Method`).
      preconditioner: `"nystrom"` (default) or `"none"` (plain CG), for `"cg"`.
      rank: the largest Nyström rank (default `min(N, 1000)`; reduced, with a warning when it was given, to what
        fits in half the memory budget: `N × rank` float64 numbers for the factor and as many of the kernel's
        dtype for the preconditioner).
      tol: CG stops when every column's relative residual `‖y − (K + μI) α‖ / ‖y‖` is below it (default
        `max(1e-6, 1000·eps)` of the kernel's dtype). The error of α is at most `cond(K + μI) · tol` relative.
      maxiter: largest number of CG iterations (default 1000).
      not_converged: CG did not reach `tol` in `maxiter` iterations: `"warn"` (a `UserWarning`, the default),
        `"raise"` (a `RuntimeError`), or `"ignore"`; `info.converged` says so in every case.
      seed: seed of the random pivots.
      block_bytes: size of one row block read from a lazy array (default 256 MiB).
      progress: progress bars for CG (the Nyström pivots, then the iterations with the residual): True, False, or
        None (the default) for a bar only on a terminal.
      name: how errors name `k`.

    Returns:
      `KernelRidgeResult(weights, info)`: `weights` α, a NumPy array shaped like `y` in the kernel's precision
      (float64 for a float64 kernel, float32 otherwise: the solve runs on the host, whatever `jax_enable_x64`
      says), and `info` a `SolverInfo`.

    Raises:
      ValueError: bad shapes, NaN/Inf (in `k` as it is read), a negative `ridge`, a non-square or (as far as cheaply
        seen: the whole matrix for Cholesky and in-memory arrays, the pivot rows otherwise) non-symmetric kernel, a
        negative diagonal, or an indefinite `K + μI` (Cholesky fails, or CG meets negative curvature).
      RuntimeError: CG did not converge and `not_converged="raise"`.

    Example:
      >>> import numpy as np
      >>> from ntkit.solve import kernel_ridge
      >>> x = np.linspace(0, 1, 200)
      >>> k = np.exp(-(x[:, None] - x[None, :]) ** 2 / 0.1)   # an RBF kernel, 200 x 200
      >>> y = np.sin(6 * x)
      >>> cg = kernel_ridge(k, y, ridge=1e-3, method="cg", tol=1e-8)
      >>> exact = np.linalg.solve(k + 1e-3 * np.eye(200), y)
      >>> cg.info.converged, cg.info.iterations < 20, bool(np.allclose(cg.weights, exact, rtol=1e-3, atol=1e-3))
      (True, True, True)
    """
    options = SolverOptions(method, preconditioner, rank, tol, maxiter, not_converged, seed, block_bytes)
    disable = _disabled(progress)
    ridge = _check_ridge(ridge)
    op = as_operator(k, name, block_bytes)
    if len(op.shape) != 2 or op.shape[0] != op.shape[1]:
        raise ValueError(f"`{name}` must be a square (N, N) kernel, got shape {tuple(op.shape)}.")
    n = op.shape[0]
    if n == 0:
        raise ValueError(f"`{name}` holds no examples (shape {tuple(op.shape)}).")
    dtype = op.dtype
    y = _check_targets(y, n, dtype)
    chosen = options.method
    if chosen == "auto":
        chosen = "cholesky" if fits_in_memory(n, dtype) else "cg"
    tol_value = default_tol(dtype) if options.tol is None else float(options.tol)
    if chosen == "cholesky":
        w, rel = _cholesky(op, y, ridge, name)
        info = SolverInfo("cholesky", 0, (), rel, True, tol_value, 0)
        return KernelRidgeResult(w, info)

    y2 = y.reshape(n, -1)
    if options.preconditioner == "nystrom":
        # the factor F (float64) and the preconditioner's basis U (kernel dtype) held together in half the budget
        budget = memory_budget_bytes()
        room = max(int(budget / 2 / ((8 + dtype.itemsize) * n)), 1)
        wanted = min(n, DEFAULT_RANK if options.rank is None else options.rank)
        if options.rank is not None and wanted > room:
            warnings.warn(f"kernel_ridge: Nyström rank {wanted} reduced to {room}, the largest whose factor "
                          f"({n} × rank float64) and basis fit in half the memory budget "
                          f"({budget / 2**30:.1f} GiB).", UserWarning, stacklevel=2)
        rng = np.random.default_rng(options.seed)
        r = min(wanted, room)
        with tqdm(total=r, desc="Nyström pivots", unit="col", disable=disable, leave=False) as bar:
            factor = rp_cholesky(op, r, ridge, rng, block=getattr(op, "pivot_block", None), name=name,
                                 on_columns=bar.update).factor
        precond = Preconditioner(factor, ridge, dtype)
        del factor  # only U is used from here on
    else:
        if hasattr(op, "k") and isinstance(op.k, np.ndarray):
            _check_symmetric_dense(op.k, name)
        precond = Preconditioner(np.zeros((n, 0)), ridge, dtype)
    ridge_d = np.asarray(ridge, dtype)

    def matvec(v: np.ndarray) -> np.ndarray:
        return op.matmul(v) + ridge_d * v

    its = 1000 if options.maxiter is None else options.maxiter
    with tqdm(total=its, desc="conjugate gradients", unit="it", disable=disable) as bar:
        def show(it: int, residual: float) -> None:
            bar.update(1)
            bar.set_postfix(residual=f"{residual:.2e}", tol=f"{tol_value:.1e}", refresh=False)

        state = pcg(matvec, precond, y2, tol_value, its, name, callback=show)
    info = SolverInfo("cg", state.iterations, state.history, state.history[-1], state.converged, tol_value,
                      precond.rank)
    if not state.converged and options.not_converged != "ignore":
        message = (f"kernel_ridge: conjugate gradients did not converge in {state.iterations} iterations: relative "
                   f"residual {state.history[-1]:.3g} > tol {tol_value:.3g} (Nyström rank {precond.rank}). Increase "
                   "`maxiter` or `rank`, use a larger `ridge`, or solve by `method='cholesky'` if the matrix fits "
                   "in memory.")
        if options.not_converged == "raise":
            raise RuntimeError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    return KernelRidgeResult(state.x.reshape(y.shape), info)
