"""Shared machinery of `ntkit.predict`: kernel/target layout, validation, ridge, cached factorizations.

A kernel over outputs of shape `(N, O_1, ..., O_d)` traced over `trace_axes` has the layout of `ntkit`'s empirical
kernels and of neural-tangents, `(N1, N2, O_a, O_a', O_b, O_b', ...)` over the *paired* (untraced) output axes, and
stands for `Θ ⊗ I` along the traced axes. Internally every kernel becomes a matrix `(N1·M, N2·M)`, `M` the product
of paired sizes, and every output array a matrix `(N·M, R)`, `R` the product of traced sizes, so the dynamics are
plain linear algebra.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_array
from .._layout import KernelLayout


def float_dtype(x):
    """The floating dtype computations run in: `x`'s if floating, else JAX's default float."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype
    return jnp.zeros((), float).dtype


def target_layout(y_shape: tuple[int, ...], trace_axes: int | Sequence[int]) -> KernelLayout:
    """The kernel layout of targets `(N, O_1, ..., O_d)` traced over `trace_axes`."""
    if len(y_shape) < 1:
        raise ValueError("`y_train` must have a batch axis first, got a scalar.")
    return KernelLayout.build(y_shape[1:], trace_axes, (), what=f"`y_train` with shape {tuple(y_shape)}")


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


def test_inputs(layout: KernelLayout, k_test_train: Any, fx_test_0: Any, n: int,
                dtype: Any) -> tuple[jax.Array, jax.Array, int]:
    """`(Θ(x, X) as a matrix, f₀(x) of shape (N_test, ...), N_test)` from the test arguments of a predict_fn."""
    k_test_train = check_array(k_test_train, "k_test_train")
    if k_test_train.ndim < 1:
        raise ValueError("`k_test_train` must have shape (N_test, N, ...), got a scalar.")
    n_test = k_test_train.shape[0]
    kxt = layout.kernel_matrix(check_kernel(layout, k_test_train, n_test, n, "k_test_train", dtype))
    g0 = check_outputs(layout, 0.0 if fx_test_0 is None else fx_test_0, n_test, "fx_test_0", dtype)
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


def pick(kernels, name: str, what: str):
    """The `name` ('nngp'/'ntk') kernel of `kernels`: an array is taken as is, a named tuple by attribute."""
    if hasattr(kernels, "shape"):
        return kernels
    value = getattr(kernels, name, None)
    if value is None:
        raise ValueError(f"`{what}` must provide the `{name}` kernel (an array, or a named tuple with a "
                         f"`{name}` field that is not None).")
    return value
