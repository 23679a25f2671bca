"""Shared machinery of `ntkit.predict`: kernel/target layout, validation, ridge, cached factorizations.

A kernel over outputs of shape `(N, O_1, ..., O_d)` traced over `trace_axes` has the layout of `ntkit`'s empirical
kernels and of neural-tangents, `(N1, N2, O_a, O_a', O_b, O_b', ...)` over the *paired* (untraced) output axes, and
stands for `Θ ⊗ I` along the traced axes. Internally every kernel becomes a matrix `(N1·M, N2·M)`, `M` the product
of paired sizes, and every output array a matrix `(N·M, R)`, `R` the product of traced sizes, so the dynamics are
plain linear algebra.

Everything here is pure under `jax.jit`, `jax.grad` and `jax.vmap`: checks that need values run only on concrete
inputs (`ntkit._checks.is_concrete`), and a factorization is stored only when it holds values, never a tracer.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import sys
import warnings
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._checks import check_array, is_concrete
from .._layout import KernelLayout
from ..solve import SolverOptions, kernel_ridge

TraceAxes: TypeAlias = int | Sequence[int]
"""Output axes the kernels are traced over (contracted and averaged), counting the batch axis as 0."""

NegativeEigenvalues: TypeAlias = Literal["warn", "raise", "clip"]
"""What to do with eigenvalues of a train-train kernel below `−N·eps·λ_max` (beyond rounding): clip them to 0 with a
`UserWarning` (`"warn"`), raise a `ValueError` (`"raise"`), or clip them silently (`"clip"`)."""

_NEGATIVE_EIGENVALUES = ("warn", "raise", "clip")
_OWN_DIRS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(jax.__file__))


def float_dtype(x: jax.Array) -> Any:
    """The floating dtype computations run in: `x`'s if float32 or wider, float32 for half precision (no
    eigendecomposition or Cholesky factorization exists in it), else JAX's default float."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype if jnp.finfo(x.dtype).bits >= 32 else jnp.dtype(jnp.float32)
    return jnp.zeros((), float).dtype


def warn(message: str) -> None:
    """A `UserWarning` attributed to the first caller outside ntkit and JAX (the user's line)."""
    frame: Any = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_DIRS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def check_negative_eigenvalues(value: Any) -> NegativeEigenvalues:
    """The `negative_eigenvalues` option, checked."""
    if value not in _NEGATIVE_EIGENVALUES:
        raise ValueError(f"`negative_eigenvalues` must be one of {_NEGATIVE_EIGENVALUES}, got {value!r}.")
    return value  # type: ignore[no-any-return]


def rounding_level(evals: Any, dtype: Any) -> float:
    """`N·eps·max|λ|` for the `N` eigenvalues `evals` (concrete) of a matrix stored in `dtype`: the size below which
    an eigenvalue is rounding noise of a zero (the eigenvalues of a symmetric matrix are computed to within a few
    `eps·‖Θ‖`, and the entries of a kernel computed in `dtype` carry `eps`-relative errors of their own)."""
    evals = np.asarray(evals, np.float64)
    if evals.size == 0:
        return 0.0
    return float(evals.size * np.finfo(dtype).eps * np.max(np.abs(evals)))


def check_spectrum(evals: Any, dtype: Any, name: str, policy: NegativeEigenvalues) -> bool:
    """Applies `policy` to the concrete eigenvalues `evals` of the train-train kernel `name`: whether some are
    negative beyond rounding (`< −N·eps·max|λ|`), after raising (`"raise"`) or warning (`"warn"`) about them."""
    evals = np.asarray(evals, np.float64)
    tol = rounding_level(evals, dtype)
    bad = evals < -tol
    if not np.any(bad):
        return False
    scale = float(np.max(np.abs(evals)))
    lam_min = float(evals.min())
    message = (f"`{name}` has {int(bad.sum())} negative eigenvalue(s) of {evals.size} beyond rounding (below "
               f"-N·eps·max|λ| = {-tol:.3g}); the smallest is {lam_min:.3g}, {lam_min / scale:.3g} times the largest "
               "|eigenvalue|. A kernel (a covariance) is positive semi-definite: this one is not an NTK/NNGP of any "
               "network, or was computed inaccurately.")
    if policy == "raise":
        raise ValueError(message + " Pass `negative_eigenvalues='clip'` (or 'warn') to clip them to 0.")
    if policy == "warn":
        warn(message + " They are clipped to 0 (pass `negative_eigenvalues='clip'` to do so silently, or 'raise' to "
                       "stop).")
    return True


def all_concrete(*trees: Any) -> bool:
    """Whether every leaf of `trees` holds values (none is a tracer of `jit`/`grad`/`vmap`)."""
    return all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(trees))


def concrete_eval(*trees: Any) -> contextlib.AbstractContextManager:
    """`jax.ensure_compile_time_eval()` when every leaf of `trees` is concrete, else a no-op context.

    Inside it, work on concrete values is done now, even while `jit` traces, so its result can be kept and reused
    by later traces as a constant; work on tracers is staged as usual.
    """
    return jax.ensure_compile_time_eval() if all_concrete(*trees) else contextlib.nullcontext()


def as_scalar(value: Any, dtype: Any) -> jax.Array:
    """A (possibly traced) real scalar as a 0-d array of `dtype`, so strict dtype promotion accepts it."""
    return jnp.asarray(value, dtype)


def target_layout(y_shape: tuple[int, ...], trace_axes: TraceAxes, name: str = "y_train") -> KernelLayout:
    """The kernel layout of targets `(N, O_1, ..., O_d)` traced over `trace_axes`; `ValueError` for targets with no
    example or no output."""
    if len(y_shape) < 1:
        raise ValueError(f"`{name}` must have a batch axis first, got a scalar.")
    if y_shape[0] == 0:
        raise ValueError(f"`{name}` holds no examples (shape {tuple(y_shape)}); training needs at least one.")
    if math.prod(y_shape[1:]) == 0:
        raise ValueError(f"`{name}` has an output axis of size 0 (shape {tuple(y_shape)}); there is nothing to fit.")
    if len(y_shape) == 1 and (isinstance(trace_axes, int) or len(trace_axes) > 0):
        raise ValueError(f"`{name}` has shape {tuple(y_shape)}, with no output axis for `trace_axes` "
                         f"{trace_axes!r} to trace over: pass targets of shape (N, 1) (`y[:, None]`) or "
                         "`trace_axes=()`.")
    return KernelLayout.build(y_shape[1:], trace_axes, (), what=f"`{name}` with shape {tuple(y_shape)}")


def check_kernel(layout: KernelLayout, k: Any, n1: int, n2: int, name: str, dtype: Any) -> jax.Array:
    """`k` as an array of `dtype` after checking it has the shape of an `(n1, n2)` kernel of this layout."""
    k = check_array(k, name, dtype=dtype)
    want = layout.kernel_shape(n1, n2)
    if k.shape != want:
        raise ValueError(
            f"`{name}` must have shape {want} (examples {n1} x {n2}, then a pair of axes for every output axis "
            f"not in `trace_axes`), got {k.shape}."
        )
    return k


def check_outputs(layout: KernelLayout, f: Any, n: int, name: str, dtype: Any) -> jax.Array:
    """`f` broadcast to outputs `(n, *out_shape)` of `dtype`."""
    f = check_array(f, name, dtype=dtype)
    shape = (n, *layout.out_shape)
    try:
        return jnp.broadcast_to(f, shape)
    except ValueError as err:
        raise ValueError(f"`{name}` must broadcast to shape {shape}, got {f.shape}.") from err


def check_test_inputs(layout: KernelLayout, k_test_train: Any, fx_test_0: Any, n: int,
                dtype: Any) -> tuple[jax.Array, jax.Array, int]:
    """`(Θ(x, X) as a matrix, f₀(x) of shape (N_test, ...), N_test)` from the test arguments of a predict_fn."""
    k_test_train = check_array(k_test_train, "k_test_train")
    if k_test_train.ndim < 1:
        raise ValueError("`k_test_train` must have shape (N_test, N, ...), got a scalar.")
    n_test = k_test_train.shape[0]
    kxt = layout.kernel_matrix(check_kernel(layout, k_test_train, n_test, n, "k_test_train", dtype))
    g0 = check_outputs(layout, 0.0 if fx_test_0 is None else fx_test_0, n_test, "fx_test_0", dtype)
    return kxt, g0, n_test


def check_symmetric(k: jax.Array, name: str) -> jax.Array:
    """Symmetrizes a square matrix after checking, if concrete, that it is symmetric up to rounding (`√eps` of its
    largest entry)."""
    if is_concrete(k):
        kn = np.asarray(k)
        scale = float(np.max(np.abs(kn))) if kn.size else 0.0
        gap = float(np.max(np.abs(kn - kn.T))) if kn.size else 0.0
        if gap > np.sqrt(np.finfo(kn.dtype).eps) * scale:
            raise ValueError(f"`{name}` must be symmetric (a train-train kernel); its largest asymmetry "
                             f"|K - Kᵀ| is {gap:.3g} for entries up to {scale:.3g}.")
    return (k + k.T) / 2


def regularize(k: jax.Array, diag_reg: Any, absolute: bool) -> jax.Array:
    """`K + ε I` with `ε = diag_reg` (absolute) or `diag_reg · mean(diag K)`; `diag_reg` may be traced."""
    if is_concrete(diag_reg) and diag_reg == 0:
        return k
    eps = as_scalar(diag_reg, k.dtype)
    scale = eps if absolute else eps * jnp.mean(jnp.diagonal(k))
    return k + scale * jnp.eye(k.shape[0], dtype=k.dtype)


def ridge_scale(k: jax.Array, diag_reg: Any, absolute: bool) -> jax.Array:
    """The ridge `ε` that `regularize` adds: `diag_reg` (absolute) or `diag_reg · mean(diag K)`."""
    eps = as_scalar(diag_reg, k.dtype)
    return eps if absolute else eps * jnp.mean(jnp.diagonal(k))


Solver: TypeAlias = Any
"""How `t = ∞` predictions solve `K̃ x = b`: `"cholesky"` (default; one factorization, pure under `jit`/`grad`),
`"cg"` or `"auto"` (`ntkit.solve.kernel_ridge` with that method), or an `ntkit.solve.SolverOptions`."""

_SOLVERS = ("cholesky", "cg", "auto")


def check_solver(solver: Any) -> Any:
    """`None` for the Cholesky path, else the `ntkit.solve.SolverOptions` to solve with."""
    if isinstance(solver, SolverOptions):
        return solver
    if solver not in _SOLVERS:
        raise ValueError(f"`solver` must be one of {_SOLVERS} or an `ntkit.solve.SolverOptions`, got {solver!r}.")
    return None if solver == "cholesky" else SolverOptions(method=solver)


def iterative_solve(k: jax.Array, ridge: Any, b: jax.Array, options: Any, name: str) -> jax.Array:
    """`(K + ε I)⁻¹ b` by `ntkit.solve.kernel_ridge` with `options`, for concrete `K`, `ε` and `b` only (the solver
    runs on the host, outside any trace); `ValueError` otherwise."""
    if not all_concrete(k, ridge, b):
        raise ValueError(f"`solver={options.method!r}` solves on concrete values only: the kernel `{name}`, the ridge "
                         "and the right-hand side must not be traced by `jit`/`grad`/`vmap` (use "
                         "`solver='cholesky'`, which is pure under transformations).")
    kwargs = dataclasses.asdict(options) | {"name": name}
    return jnp.asarray(kernel_ridge(np.asarray(k), np.asarray(b), float(ridge), **kwargs).weights, k.dtype)


def _singular_error(name: str, detail: str = "") -> ValueError:
    return ValueError(
        f"`{name}` is singular (numerically, at this dtype){detail}, so infinite-time / posterior predictions that "
        "need its inverse are undefined. Pass a positive `diag_reg` (a ridge, relative to the mean diagonal), or use "
        "finite times `t`."
    )


class Factorizations:
    """Eigendecomposition and Cholesky factor of one regularized kernel matrix, computed on first use.

    A factorization of a concrete matrix is computed under `jax.ensure_compile_time_eval()` and kept, so every later
    call, traced by `jit` or not, reuses it (as a constant of the trace) instead of redoing it. A traced matrix (the
    kernel is a `jit` argument, or differentiated) is factorized afresh at every call and never kept: no tracer
    outlives its trace. The checks that need values (singularity, negative eigenvalues) run on a concrete matrix only.

    Eigenvalues within rounding of zero, `|λ| ≤ N·eps·max|λ|`, are set to exactly 0 (they are rounding noise of a
    zero: the kernel is singular along their eigenvectors), and so are negative ones, after `negative_eigenvalues`
    decided what to say about those beyond rounding.
    """

    def __init__(self, k: jax.Array, name: str, negative_eigenvalues: NegativeEigenvalues = "warn") -> None:
        self.k = k
        self.name = name
        self.negative_eigenvalues = negative_eigenvalues
        self.clipped = False
        """Whether negative eigenvalues beyond rounding were clipped (known once `eigh` ran on a concrete matrix)."""
        self._eigh: tuple[jax.Array, jax.Array] | None = None
        self._cho: jax.Array | None = None

    @property
    def concrete(self) -> bool:
        """Whether the matrix holds values (its factorizations are then computed once and kept)."""
        return is_concrete(self.k)

    @property
    def eigh(self) -> tuple[jax.Array, jax.Array]:
        """`(λ, V)`, with `λ` set to 0 where `λ ≤ N·eps·max|λ|` (rounding noise of a zero, or negative)."""
        if self._eigh is not None:
            return self._eigh
        with concrete_eval(self.k):
            evals, evecs = jnp.linalg.eigh(self.k)
        if self.concrete:
            self.clipped = check_spectrum(evals, evals.dtype, self.name, self.negative_eigenvalues)
        with concrete_eval(self.k):
            eps = jnp.asarray(jnp.finfo(evals.dtype).eps, evals.dtype)
            tol = evals.shape[0] * eps * jnp.max(jnp.abs(evals))
            out = (jnp.where(evals > tol, evals, jnp.zeros_like(evals)), evecs)
        if self.concrete:
            self._eigh = out
        return out

    def check_invertible_eigh(self) -> None:
        """`ValueError` if the (concrete) matrix is numerically singular; nothing for a traced one."""
        if not self.concrete:
            return
        evals = np.asarray(self.eigh[0])
        if evals.size and evals.min() <= 0:
            raise _singular_error(self.name, " (negative eigenvalues clipped to 0)" if self.clipped else "")

    @property
    def cho(self) -> jax.Array:
        """Lower Cholesky factor; `ValueError` if the (concrete) matrix is numerically singular or indefinite."""
        if self._cho is not None:
            return self._cho
        with concrete_eval(self.k):
            chol = jnp.linalg.cholesky(self.k)
        if self.concrete:
            diag = np.abs(np.diagonal(np.asarray(chol, np.float64)))
            n = diag.shape[0]
            # A pivot d_i² bounds λ_min from above: (d_min/d_max)² ≤ N·eps flags a matrix singular to rounding (as a
            # ratio, so that no square underflows for kernels of tiny scale).
            if n and (not np.all(np.isfinite(diag)) or not diag.min() > np.sqrt(n * np.finfo(chol.dtype).eps)
                      * diag.max()):
                self._diagnose()
            self._cho = chol
        return chol

    def _diagnose(self) -> None:
        """Raises the error that fits a (concrete) matrix whose Cholesky factorization failed: negative eigenvalues
        beyond rounding (an indefinite kernel), else singular."""
        evals = np.linalg.eigvalsh(np.asarray(self.k, np.float64))
        tol = rounding_level(evals, self.k.dtype)
        if evals.size and evals.min() < -tol:
            scale = float(np.max(np.abs(evals)))
            raise ValueError(
                f"`{self.name}` is not positive semi-definite: its smallest eigenvalue is {evals.min():.3g}, "
                f"{evals.min() / scale:.3g} times the largest |eigenvalue| (beyond rounding, -N·eps·max|λ| = "
                f"{-tol:.3g}), so infinite-time / posterior predictions, which invert it, are undefined. A kernel "
                "(a covariance) is positive semi-definite: check how it was computed, or pass a `diag_reg` larger "
                "than the negative eigenvalues.")
        raise _singular_error(self.name)

    def solve(self, b: jax.Array) -> jax.Array:
        """`K⁻¹ b` by the Cholesky factor."""
        return jax.scipy.linalg.cho_solve((self.cho, True), b)


def times(t: ArrayLike, dtype: Any, name: str = "t", finite: bool = False) -> tuple[jax.Array, bool]:
    """`(t as an array of dtype, whether some time is inf)`.

    Concrete times must be non-negative and not NaN (and finite if `finite`); traced times cannot be checked, and
    for them the flag is False.
    """
    concrete = is_concrete(t)
    kind = np.asarray(t).dtype if concrete else jnp.result_type(t)
    if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {kind}.")
    infinite = False
    if concrete:
        tn = np.asarray(t, dtype=np.float64)
        bad = np.isnan(tn) | (tn < 0) | (np.isinf(tn) if finite else False)
        if np.any(bad):
            want = "finite non-negative times" if finite else "non-negative times (or inf)"
            raise ValueError(f"`{name}` must hold {want}, got {tn}.")
        infinite = bool(np.any(np.isinf(tn)))
    return jnp.asarray(t).astype(dtype), infinite


def lead(a: jax.Array, ndim: int) -> jax.Array:
    """`a` with leading axes of size 1 up to `ndim` axes: explicit broadcasting against arrays with leading time
    axes (implicit rank promotion may be off, `jax_numpy_rank_promotion="raise"`)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape) if a.ndim < ndim else a


def decay_factors(evals: jax.Array, tau: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For every time `τ` (any shape) and eigenvalue `λ`: `e^{−τλ} − 1` and `(1 − e^{−τλ})/λ` for `λ > 0`, both 0 at
    `λ = 0`.

    At `λ = 0` (a null direction of the kernel, or an eigenvalue within rounding of zero that `Factorizations.eigh`
    set to 0) the second factor is that of the pseudo-inverse, `Θ⁺ (I − e^{−τΘ}) = 0`, not the limit `τ` of
    `(1 − e^{−τλ})/λ`: both give the same predictions when the joint kernel over train and test points is positive
    semi-definite (then `Θ(x, X) v = 0` for `Θ v = 0`), and `0` does not multiply the rounding noise of `Θ(x, X) v`
    by `τ`. Written with `jnp.where` on safe operands, so derivatives in `τ` and `λ` stay finite.
    """
    tau = tau[..., None]
    evals = lead(evals, tau.ndim)
    pos = evals > 0
    x = jnp.where(pos, tau * evals, jnp.zeros_like(tau * evals))
    expm1 = jnp.expm1(-x)
    safe = jnp.where(pos, evals, jnp.ones_like(evals))
    inv = jnp.where(pos, -expm1 / safe, jnp.zeros_like(expm1))
    return expm1, inv


@cache
def outputs_type(fields: tuple[str, ...]) -> Any:
    """A named tuple type with these fields, one per requested `get`."""
    return collections.namedtuple("Predictions", fields)  # type: ignore[misc]


def pick(kernels: Any, name: str, what: str) -> Any:
    """The `name` ('nngp'/'ntk') kernel of `kernels`: an array is taken as is, a named tuple by attribute."""
    if hasattr(kernels, "shape"):
        return kernels
    value = getattr(kernels, name, None)
    if value is None:
        raise ValueError(f"`{what}` must provide the `{name}` kernel (an array, or a named tuple with a "
                         f"`{name}` field that is not None).")
    return value
