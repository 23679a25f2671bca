"""The analytic kernel state that flows through `ntkit.nn` layers.

For inputs `x1` (`N1` examples) and `x2` (`N2`) with `S` spatial axes, the state carries the pre-activation
covariance (NNGP) `Σ`, the NTK `Θ` and each input's own covariance, in one of two spatial layouts:

* diagonal: only positions `i = i'` are kept; `nngp` has shape `(N1, N2, S_1, ..., S_k)`, `cov1` `(N1, S_1, ...)`;
* full: every pair of positions, axes interleaved as neural-tangents and `ntkit.empirical_kernel_fn` lay them out;
  `nngp` has shape `(N1, N2, S_1, S_1', ..., S_k, S_k')`, `cov1` `(N1, S_1, S_1', ...)`.

A network ending in `Flatten` only ever needs the diagonal (THEORY.md §2); pooling and attention need the full one.
"""

from __future__ import annotations

import dataclasses
import string

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class KernelState:
    """Immutable pytree of the analytic NNGP/NTK after some layers.

    Attributes:
      nngp: covariance `Σ(x1, x2)`, `(N1, N2, *spatial)` (layout above).
      ntk: NTK `Θ(x1, x2)`, same shape, or `None` when only the NNGP is requested.
      cov1: `Σ(x1, x1)` per example, `(N1, *spatial)`.
      cov2: `Σ(x2, x2)` per example, `(N2, *spatial)`, or `None` when `x2` is `x1`.
      shape1: shape of the finite network's activations on `x1`, `(N1, *S, C)`: `C` is the width a finite
        network would have (needed by the standard parameterization and by channel concatenation).
      shape2: the same for `x2`.
      diagonal_spatial: whether only diagonal spatial entries are carried.
      is_gaussian: whether the activations are Gaussian (after an affine layer) so a nonlinearity may follow.
      is_input: whether no layer has been applied yet.
      x1_is_x2: whether `x2` is `x1` (then `Σ(x1, x2)` has the per-example variances on its diagonal).
    """

    nngp: jax.Array
    ntk: jax.Array | None
    cov1: jax.Array
    cov2: jax.Array | None
    shape1: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    shape2: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    diagonal_spatial: bool = dataclasses.field(metadata={"static": True})
    is_gaussian: bool = dataclasses.field(default=False, metadata={"static": True})
    is_input: bool = dataclasses.field(default=False, metadata={"static": True})
    x1_is_x2: bool = dataclasses.field(default=False, metadata={"static": True})

    def replace(self, **changes) -> KernelState:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes `S` of the activations (0 for flat `(N, C)` activations)."""
        return len(self.shape1) - 2

    @property
    def cov2_or_cov1(self) -> jax.Array:
        return self.cov1 if self.cov2 is None else self.cov2

    def map(self, fn, ntk_fn=None) -> KernelState:
        """Applies the same linear map to `nngp`, `cov1`, `cov2` (with batch axes 2, 1, 1) and `ntk_fn` to `ntk`.

        `fn(array, n_batch)` gets the number of leading batch axes.
        """
        ntk_fn = fn if ntk_fn is None else ntk_fn
        return self.replace(
            nngp=fn(self.nngp, 2),
            ntk=None if self.ntk is None else ntk_fn(self.ntk, 2),
            cov1=fn(self.cov1, 1),
            cov2=None if self.cov2 is None else fn(self.cov2, 1),
        )


jax.tree_util.register_dataclass(
    KernelState,
    data_fields=["nngp", "ntk", "cov1", "cov2"],
    meta_fields=["shape1", "shape2", "diagonal_spatial", "is_gaussian", "is_input", "x1_is_x2"],
)


def spatial_letters(n: int) -> tuple[str, str]:
    """Einsum letters for `n` spatial axes of the two sides."""
    return string.ascii_lowercase[:n], string.ascii_lowercase[10:10 + n]


def interleave(a: str, b: str) -> str:
    return "".join(x + y for x, y in zip(a, b, strict=True))


def input_state(x1: jax.Array, x2: jax.Array | None, diagonal_spatial: bool, compute_ntk: bool) -> KernelState:
    """Kernel of the inputs: `Σ⁰(x, x')[i, i'] = Σ_c x[i, c] x'[i', c] / C`, `Θ⁰ = 0` (THEORY.md §2).

    Args:
      x1: `(N1, *S, C)`; flat inputs are `(N1, C)`.
      x2: `(N2, *S, C)` or `None` for `x1`.
      diagonal_spatial: carry positions `i = i'` only.
      compute_ntk: also carry the NTK (else `ntk` is `None`).
    """
    n = x1.ndim - 2
    c = x1.shape[-1]
    s1, s2 = spatial_letters(n)
    if diagonal_spatial:
        out_cross, out_self = "XY" + s1, "X" + s1
        side2 = "Y" + s1 + "z"
        self2 = "X" + s1 + "z"
    else:
        out_cross, out_self = "XY" + interleave(s1, s2), "X" + interleave(s1, s2)
        side2 = "Y" + s2 + "z"
        self2 = "X" + s2 + "z"
    side1 = "X" + s1 + "z"
    other = x1 if x2 is None else x2
    nngp = jnp.einsum(f"{side1},{side2}->{out_cross}", x1, other) / c
    cov1 = jnp.einsum(f"{side1},{self2}->{out_self}", x1, x1) / c
    cov2 = None if x2 is None else jnp.einsum(f"{side1},{self2}->{out_self}", x2, x2) / c
    return KernelState(
        nngp=nngp, ntk=jnp.zeros_like(nngp) if compute_ntk else None, cov1=cov1, cov2=cov2,
        shape1=tuple(x1.shape), shape2=tuple(other.shape), diagonal_spatial=diagonal_spatial,
        is_gaussian=False, is_input=True, x1_is_x2=x2 is None)


def spatial_diagonal(cov: jax.Array, n_batch: int, n_spatial: int) -> jax.Array:
    """`(B..., S_1, S_1', ..., S_k, S_k') -> (B..., S_1, ..., S_k)`: the entries with `i = i'`."""
    for d in range(n_spatial):
        axis = n_batch + d
        cov = jnp.diagonal(cov, axis1=axis, axis2=axis + 1)
        cov = jnp.moveaxis(cov, -1, axis)
    return cov


def diagonal_variances(k: KernelState) -> tuple[jax.Array, jax.Array]:
    """Per-position variances of each example, `(N1, *S)` and `(N2, *S)` (`Σ(x, x)[i, i]`)."""
    if k.diagonal_spatial:
        return k.cov1, k.cov2_or_cov1
    return spatial_diagonal(k.cov1, 1, k.n_spatial), spatial_diagonal(k.cov2_or_cov1, 1, k.n_spatial)


def cross_variances(d1: jax.Array, d2: jax.Array, k: KernelState) -> tuple[jax.Array, jax.Array]:
    """`d1`, `d2` from `diagonal_variances` broadcast against `nngp` `(N1, N2, ...)`: `Σ₁₁` and `Σ₂₂` per entry."""
    if k.diagonal_spatial:
        return d1[:, None], d2[None, :]
    n = k.n_spatial
    return _spread(d1, 1, n, first=True)[:, None], _spread(d2, 1, n, first=False)[None, :]


def self_variances(d: jax.Array, k: KernelState) -> tuple[jax.Array, jax.Array]:
    """`d` `(N, *S)` broadcast against one example's own covariance `(N, ...)`: `Σ₁₁` and `Σ₂₂` per entry."""
    if k.diagonal_spatial:
        return d, d
    n = k.n_spatial
    return _spread(d, 1, n, first=True), _spread(d, 1, n, first=False)


def _spread(d: jax.Array, n_batch: int, n_spatial: int, first: bool) -> jax.Array:
    """`(B, S_1, ..., S_k) -> (B, S_1, 1, S_2, 1, ...)` (first) or `(B, 1, S_1, 1, S_2, ...)`."""
    for a in range(n_spatial):
        d = jnp.expand_dims(d, n_batch + 2 * a + (1 if first else 0))
    return d
