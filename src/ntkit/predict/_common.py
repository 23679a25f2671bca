"""Shared machinery of `ntkit.predict`: kernel/target layout, validation, ridge, cached factorizations.

A kernel over outputs of shape `(N, O_1, ..., O_d)` traced over `trace_axes` has the layout of `ntkit`'s empirical
kernels and of neural-tangents, `(N1, N2, O_a, O_a', O_b, O_b', ...)` over the *paired* (untraced) output axes, and
stands for `Θ ⊗ I` along the traced axes. Internally every kernel becomes a matrix `(N1·M, N2·M)`, `M` the product
of paired sizes, and every output array a matrix `(N·M, R)`, `R` the product of traced sizes, so the dynamics are
plain linear algebra.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_finite

GETS = ("nngp", "ntk")


def float_dtype(x):
    """The floating dtype computations run in: `x`'s if floating, else JAX's default float."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype
    return jnp.zeros((), float).dtype


def as_array(x, name: str, dtype=None):
    """`x` as a finite JAX array (cast to `dtype` if given); errors name the argument."""
    if x is None:
        raise TypeError(f"`{name}` must be an array, got None.")
    try:
        x = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.") from err
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    check_finite(x, name)
    return x if dtype is None else x.astype(dtype)


def check_scalar(value, name: str, positive: bool = False) -> float:
    """A finite, non-negative (or positive) Python float."""
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a real scalar, got {value!r}.") from err
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"`{name}` must be a finite {'positive' if positive else 'non-negative'} number, "
                         f"got {value}.")
    return value


@dataclass(frozen=True)
class Layout:
    """Targets `(N, *out_shape)` with `trace` output axes (numbered with the batch axis as 0) traced."""

    out_shape: tuple[int, ...]
    trace: tuple[int, ...]

    @classmethod
    def build(cls, y_shape, trace_axes) -> Layout:
        ndim = len(y_shape)
        if isinstance(trace_axes, int):
            trace_axes = (trace_axes,)
        axes = []
        for a in trace_axes:
            if not isinstance(a, int) or not -ndim <= a < ndim:
                raise ValueError(f"`trace_axes` holds {a!r}, not an axis of `y_train` with shape {tuple(y_shape)}.")
            axes.append(a % ndim)
        if 0 in axes:
            raise ValueError(f"`trace_axes` {tuple(trace_axes)} contains the batch axis 0 of `y_train` with shape "
                             f"{tuple(y_shape)}; targets need a batch axis first and the outputs after it.")
        if len(set(axes)) != len(axes):
            raise ValueError(f"`trace_axes` repeats an axis: {tuple(trace_axes)}.")
        return cls(tuple(int(s) for s in y_shape[1:]), tuple(sorted(axes)))

    @property
    def paired(self) -> tuple[int, ...]:
        return tuple(a for a in range(1, len(self.out_shape) + 1) if a not in self.trace)

    @property
    def m(self) -> int:
        return math.prod(self.out_shape[a - 1] for a in self.paired)

    @property
    def r(self) -> int:
        return math.prod(self.out_shape[a - 1] for a in self.trace)

    def kernel_shape(self, n1: int, n2: int) -> tuple[int, ...]:
        shape = [n1, n2]
        for a in self.paired:
            shape += [self.out_shape[a - 1]] * 2
        return tuple(shape)

    def check_kernel(self, k, n1: int, n2: int, name: str, dtype) -> jax.Array:
        k = as_array(k, name, dtype)
        want = self.kernel_shape(n1, n2)
        if k.shape != want:
            raise ValueError(
                f"`{name}` must have shape {want} (examples {n1} x {n2}, then a pair of axes for every output axis "
                f"not in `trace_axes`), got {k.shape}."
            )
        return k

    def check_outputs(self, f, n: int, name: str, dtype) -> jax.Array:
        f = as_array(f, name, dtype)
        shape = (n, *self.out_shape)
        try:
            return jnp.broadcast_to(f, shape)
        except ValueError as err:
            raise ValueError(f"`{name}` must broadcast to shape {shape}, got {f.shape}.") from err

    def kernel_matrix(self, k) -> jax.Array:
        """`(N1, N2, a, a', ...)` -> `(N1·M, N2·M)`."""
        p = len(self.paired)
        n1, n2 = k.shape[:2]
        perm = (0, *(2 + 2 * i for i in range(p)), 1, *(3 + 2 * i for i in range(p)))
        return jnp.transpose(k, perm).reshape(n1 * self.m, n2 * self.m)

    def kernel_from_matrix(self, mat, n1: int, n2: int) -> jax.Array:
        """`(*lead, N1·M, N2·M)` -> `(*lead, N1, N2, a, a', ...)`."""
        lead = mat.shape[:-2]
        sizes = [self.out_shape[a - 1] for a in self.paired]
        x = mat.reshape(*lead, n1, *sizes, n2, *sizes)
        p, q = len(sizes), len(lead)
        perm = [q, q + 1 + p]
        for i in range(p):
            perm += [q + 1 + i, q + 2 + p + i]
        return jnp.transpose(x, (*range(q), *perm))

    def to_matrix(self, f) -> jax.Array:
        """`(N, *out)` -> `(N·M, R)`."""
        order = (0, *self.paired, *self.trace)
        return jnp.transpose(f, order).reshape(f.shape[0] * self.m, self.r)

    def from_matrix(self, mat, n: int) -> jax.Array:
        """`(*lead, N·M, R)` -> `(*lead, N, *out)`."""
        lead = mat.shape[:-2]
        order = (0, *self.paired, *self.trace)
        x = mat.reshape(*lead, n, *(self.out_shape[a - 1] for a in order[1:]))
        q = len(lead)
        return jnp.transpose(x, (*range(q), *(q + i for i in np.argsort(order))))

    def test_inputs(self, k_test_train, fx_test_0, n: int, dtype):
        """`(Θ(x, X) as a matrix, f₀(x) of shape (N_test, ...), N_test)` from the test arguments of a predict_fn."""
        k_test_train = as_array(k_test_train, "k_test_train")
        if k_test_train.ndim < 1:
            raise ValueError("`k_test_train` must have shape (N_test, N, ...), got a scalar.")
        n_test = k_test_train.shape[0]
        kxt = self.kernel_matrix(self.check_kernel(k_test_train, n_test, n, "k_test_train", dtype))
        g0 = self.check_outputs(0.0 if fx_test_0 is None else fx_test_0, n_test, "fx_test_0", dtype)
        return kxt, g0, n_test


def check_symmetric(k, name: str) -> jax.Array:
    """Symmetrizes a square matrix after checking it is symmetric up to rounding (`√eps` of its largest entry)."""
    if not isinstance(k, jax.core.Tracer):
        kn = np.asarray(k)
        scale = float(np.max(np.abs(kn))) if kn.size else 0.0
        gap = float(np.max(np.abs(kn - kn.T))) if kn.size else 0.0
        if gap > np.sqrt(np.finfo(kn.dtype).eps) * scale:
            raise ValueError(f"`{name}` must be symmetric (a train-train kernel); its largest asymmetry "
                             f"|K - Kᵀ| is {gap:.3g} for entries up to {scale:.3g}.")
    return (k + k.T) / 2


def regularize(k, diag_reg: float, absolute: bool) -> jax.Array:
    """`K + ε I` with `ε = diag_reg` (absolute) or `diag_reg · mean(diag K)`."""
    if diag_reg == 0:
        return k
    scale = diag_reg if absolute else diag_reg * jnp.mean(jnp.diagonal(k))
    return k + scale * jnp.eye(k.shape[0], dtype=k.dtype)


def _singular_error(name: str) -> ValueError:
    return ValueError(
        f"`{name}` is singular (numerically, at this dtype), so infinite-time / posterior predictions that need its "
        "inverse are undefined. Pass a positive `diag_reg` (a ridge, relative to the mean diagonal), or use finite "
        "times `t`."
    )


class Factorizations:
    """Lazily computed, cached eigendecomposition and Cholesky factor of one regularized kernel matrix."""

    def __init__(self, k, name: str):
        self.k = k
        self.name = name
        self._eigh = None
        self._cho = None

    @property
    def eigh(self):
        """`(λ, V)` with negative eigenvalues (rounding) clipped to 0."""
        if self._eigh is None:
            evals, evecs = jnp.linalg.eigh(self.k)
            self._eigh = (jnp.maximum(evals, 0), evecs)
        return self._eigh

    def check_invertible_eigh(self) -> None:
        evals = np.asarray(self.eigh[0])
        n = evals.shape[0]
        if n and evals.min() <= n * np.finfo(evals.dtype).eps * max(evals.max(), np.finfo(evals.dtype).tiny):
            raise _singular_error(self.name)

    @property
    def cho(self):
        """Lower Cholesky factor; `ValueError` if the matrix is numerically singular."""
        if self._cho is None:
            chol = jnp.linalg.cholesky(self.k)
            diag = np.asarray(jnp.diagonal(chol))
            n = diag.shape[0]
            if n and (not np.all(np.isfinite(diag))
                      or diag.min() ** 2 <= n * np.finfo(diag.dtype).eps * diag.max() ** 2):
                raise _singular_error(self.name)
            self._cho = chol
        return self._cho

    def solve(self, b) -> jax.Array:
        """`K⁻¹ b` by the Cholesky factor."""
        return jax.scipy.linalg.cho_solve((self.cho, True), b)


def times(t, dtype, name: str = "t") -> jax.Array:
    """Times as an array of `dtype`; each must be non-negative (`inf` allowed), none NaN."""
    t = jnp.asarray(t)
    if not (jnp.issubdtype(t.dtype, jnp.floating) or jnp.issubdtype(t.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {t.dtype}.")
    if not isinstance(t, jax.core.Tracer):
        tn = np.asarray(t, dtype=np.float64)
        if np.any(np.isnan(tn)) or np.any(tn < 0):
            raise ValueError(f"`{name}` must hold non-negative times (or inf), got {tn}.")
    return t.astype(dtype)


def decay_factors(evals, tau):
    """For every time `τ` (any shape) and eigenvalue `λ`: `e^{−τλ} − 1` and `(1 − e^{−τλ})/λ` (→ `τ` at `λ = 0`)."""
    tau = tau[..., None]
    pos = evals > 0
    x = jnp.where(pos, tau * evals, jnp.zeros_like(tau * evals))
    expm1 = jnp.expm1(-x)
    safe = jnp.where(pos, evals, jnp.ones_like(evals))
    inv = jnp.where(pos, -expm1 / safe, jnp.broadcast_to(tau, expm1.shape))
    return expm1, inv


@cache
def outputs_type(fields: tuple[str, ...]):
    """A named tuple type with these fields, one per requested `get`."""
    return collections.namedtuple("Predictions", fields)


def canonical_get(get, allowed=GETS) -> tuple[tuple[str, ...], bool]:
    """`(gets, single)`: the requested kernels as a tuple, and whether one string was given."""
    if get is None:
        return GETS, False
    single = isinstance(get, str)
    gets = (get,) if single else tuple(get)
    if not gets or any(g not in allowed for g in gets) or len(set(gets)) != len(gets):
        raise ValueError(f"`get` must be one of {allowed}, a tuple of them, or None; got {get!r}.")
    return gets, single


def pick(kernels, name: str, what: str):
    """The `name` ('nngp'/'ntk') kernel of `kernels`: an array is taken as is, a named tuple by attribute."""
    if hasattr(kernels, "shape"):
        return kernels
    value = getattr(kernels, name, None)
    if value is None:
        raise ValueError(f"`{what}` must provide the `{name}` kernel (an array, or a named tuple with a "
                         f"`{name}` field that is not None).")
    return value
