"""The analytic kernel state that flows through `ntkit.nn` layers.

For inputs `x1` (`N1` examples) and `x2` (`N2`) with `S` spatial axes, the state carries the pre-activation
covariance (NNGP) `Σ`, the NTK `Θ` and each input's own covariance, in one of two spatial layouts:

* diagonal: only positions `i = i'` are kept; `nngp` has shape `(N1, N2, S_1, ..., S_k)`, `cov1` `(N1, S_1, ...)`;
* full: every pair of positions, axes interleaved as neural-tangents and `ntkit.empirical_kernel_fn` lay them out;
  `nngp` has shape `(N1, N2, S_1, S_1', ..., S_k, S_k')`, `cov1` `(N1, S_1, S_1', ...)`.

A network ending in `Flatten` only ever needs the diagonal (docs/theory.md §2); pooling and attention need the full one.

The per-example covariances `cov1`, `cov2` are carried at one of three levels, the least that later layers read:
`COV_FULL` (the layout of `nngp`), `COV_DIAGONAL` (positions `i = i'` only, `cov_diagonal=True`: nonlinearities
read just the variances, so a network whose pooling output feeds no nonlinearity skips the rest) or `COV_NONE`
(`cov1 = None`: nothing reads them, e.g. after the last nonlinearity before global pooling and the readout).
"""

from __future__ import annotations

import dataclasses
import enum
import string
from typing import Any

import jax
import jax.numpy as jnp


class CovLevel(enum.IntEnum):
    """How much of the per-example covariances a kernel state carries (ordered: more is larger)."""

    NONE = 0
    DIAGONAL = 1
    FULL = 2


COV_NONE, COV_DIAGONAL, COV_FULL = CovLevel.NONE, CovLevel.DIAGONAL, CovLevel.FULL


@dataclasses.dataclass(frozen=True)
class KernelState:
    """Immutable pytree of the analytic NNGP/NTK after some layers.

    Attributes:
      nngp: covariance `Σ(x1, x2)`, `(N1, N2, *spatial)` (layout above).
      ntk: NTK `Θ(x1, x2)`, same shape, or `None` when only the NNGP is requested.
      cov1: `Σ(x1, x1)` per example, `(N1, *spatial)`, or `None` when no later layer reads it.
      cov2: `Σ(x2, x2)` per example, `(N2, *spatial)`, or `None` when `x2` is `x1` (or `cov1` is `None`).
      shape1: shape of the finite network's activations on `x1`, `(N1, *S, C)`: `C` is the width a finite
        network would have (needed by the standard parameterization and by channel concatenation).
      shape2: the same for `x2`.
      diagonal_spatial: whether only diagonal spatial entries are carried.
      is_gaussian: whether the activations are Gaussian (after an affine layer) so a nonlinearity may follow.
      is_input: whether no layer has been applied yet.
      x1_is_x2: whether `x2` is `x1` (then `Σ(x1, x2)` has the per-example variances on its diagonal).
      cov_diagonal: whether `cov1`/`cov2` hold positions `i = i'` only while `nngp` holds all pairs.

      mask1: masked entries of the activations on `x1` (`kernel_fn(..., mask_constant=c)`), booleans of shape
        `(N1, *S, C)` or `(N1, *S, 1)` (a whole position), or `None` without masks (see `ntkit.nn.MaskedArray`).
      mask2: the same for `x2` (`None` when `x2` is `x1`).

    neural-tangents' `Kernel` also had `is_reversed`, `diagonal_batch`, `batch_axis` and `channel_axis`; they are
    read-only properties here with the only values ntkit uses (not reversed, per-example covariances, batch axis 0,
    channels last), so custom layers reading them port.
    """

    nngp: jax.Array
    ntk: jax.Array | None
    cov1: jax.Array | None
    cov2: jax.Array | None
    shape1: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    shape2: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    diagonal_spatial: bool = dataclasses.field(metadata={"static": True})
    is_gaussian: bool = dataclasses.field(default=False, metadata={"static": True})
    is_input: bool = dataclasses.field(default=False, metadata={"static": True})
    x1_is_x2: bool = dataclasses.field(default=False, metadata={"static": True})
    cov_diagonal: bool = dataclasses.field(default=False, metadata={"static": True})
    mask1: jax.Array | None = None
    mask2: jax.Array | None = None

    def replace(self, **changes) -> KernelState:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    @property
    def is_reversed(self) -> bool:
        """Never: ntkit does not swap `x1` and `x2` between layers."""
        return False

    @property
    def diagonal_batch(self) -> bool:
        """Always: `cov1`/`cov2` hold each example's own covariance, not the `(N1, N1)` batch matrix."""
        return True

    @property
    def batch_axis(self) -> int:
        """The batch axis of the activations: always 0."""
        return 0

    @property
    def channel_axis(self) -> int:
        """The channel axis of the activations: always the last."""
        return len(self.shape1) - 1

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes `S` of the activations (0 for flat `(N, C)` activations)."""
        return len(self.shape1) - 2

    @property
    def cov2_or_cov1(self) -> jax.Array | None:
        return self.cov1 if self.cov2 is None else self.cov2

    @property
    def cov_is_diagonal(self) -> bool:
        """Whether `cov1`/`cov2` hold only positions `i = i'` (always so in the diagonal layout)."""
        return self.diagonal_spatial or self.cov_diagonal

    @property
    def cov_level(self) -> CovLevel:
        if self.cov1 is None:
            return COV_NONE
        return COV_DIAGONAL if self.cov_is_diagonal and self.n_spatial else COV_FULL

    def covariances(self, layer: str) -> tuple[jax.Array, jax.Array | None]:
        """`(cov1, cov2)` for a layer that reads them (an error names `layer` if they were not carried)."""
        if self.cov1 is None:
            raise ValueError(f"{layer} reads the per-example covariances, which were not carried (a layer reading "
                             "them must declare it in `cov_needs`).")
        return self.cov1, self.cov2

    def map(self, fn, ntk_fn=None) -> KernelState:
        """Applies the same linear map to `nngp`, `cov1`, `cov2` (with batch axes 2, 1, 1) and `ntk_fn` to `ntk`.

        `fn(array, n_batch, diagonal)` gets the number of leading batch axes and whether the array holds only
        positions `i = i'`. Covariances not carried stay `None`.
        """
        ntk_fn = fn if ntk_fn is None else ntk_fn
        diagonal = self.cov_is_diagonal
        return self.replace(
            nngp=fn(self.nngp, 2, self.diagonal_spatial),
            ntk=None if self.ntk is None else ntk_fn(self.ntk, 2, self.diagonal_spatial),
            cov1=None if self.cov1 is None else fn(self.cov1, 1, diagonal),
            cov2=None if self.cov2 is None else fn(self.cov2, 1, diagonal),
        )


jax.tree_util.register_dataclass(
    KernelState,
    data_fields=["nngp", "ntk", "cov1", "cov2", "mask1", "mask2"],
    meta_fields=["shape1", "shape2", "diagonal_spatial", "is_gaussian", "is_input", "x1_is_x2", "cov_diagonal"],
)


def spatial_letters(n: int) -> tuple[str, str]:
    """Einsum letters for `n` spatial axes of the two sides."""
    return string.ascii_lowercase[:n], string.ascii_lowercase[10:10 + n]


def interleave(a: str, b: str) -> str:
    return "".join(x + y for x, y in zip(a, b, strict=True))


def input_state(x1: jax.Array, x2: jax.Array | None, diagonal_spatial: bool, compute_ntk: bool,
                cov_level: CovLevel = COV_FULL) -> KernelState:
    """Kernel of the inputs: `Σ⁰(x, x')[i, i'] = Σ_c x[i, c] x'[i', c] / C`, `Θ⁰ = 0` (docs/theory.md §2).

    Args:
      x1: `(N1, *S, C)`; flat inputs are `(N1, C)`.
      x2: `(N2, *S, C)` or `None` for `x1`.
      diagonal_spatial: carry positions `i = i'` only.
      compute_ntk: also carry the NTK (else `ntk` is `None`).
      cov_level: how much of the per-example covariances to carry (`COV_NONE`, `COV_DIAGONAL`, `COV_FULL`).
    """
    n = x1.ndim - 2
    c = x1.shape[-1]
    s1, s2 = spatial_letters(n)
    if diagonal_spatial:
        out_cross = "XY" + s1
        side2 = "Y" + s1 + "z"
    else:
        out_cross = "XY" + interleave(s1, s2)
        side2 = "Y" + s2 + "z"
    cov_diagonal = cov_level == COV_DIAGONAL and not diagonal_spatial
    if diagonal_spatial or cov_diagonal:
        out_self, self2 = "X" + s1, "X" + s1 + "z"
    else:
        out_self, self2 = "X" + interleave(s1, s2), "X" + s2 + "z"
    side1 = "X" + s1 + "z"
    other = x1 if x2 is None else x2
    nngp = jnp.einsum(f"{side1},{side2}->{out_cross}", x1, other) / c
    cov1 = cov2 = None
    if cov_level != COV_NONE:
        cov1 = jnp.einsum(f"{side1},{self2}->{out_self}", x1, x1) / c
        cov2 = None if x2 is None else jnp.einsum(f"{side1},{self2}->{out_self}", x2, x2) / c
    return KernelState(
        nngp=nngp, ntk=jnp.zeros_like(nngp) if compute_ntk else None, cov1=cov1, cov2=cov2,
        shape1=tuple(x1.shape), shape2=tuple(other.shape), diagonal_spatial=diagonal_spatial,
        is_gaussian=False, is_input=True, x1_is_x2=x2 is None, cov_diagonal=cov_diagonal)


def spatial_diagonal(cov: jax.Array, n_batch: int, n_spatial: int) -> jax.Array:
    """`(B..., S_1, S_1', ..., S_k, S_k') -> (B..., S_1, ..., S_k)`: the entries with `i = i'`."""
    for d in range(n_spatial):
        axis = n_batch + d
        cov = jnp.diagonal(cov, axis1=axis, axis2=axis + 1)
        cov = jnp.moveaxis(cov, -1, axis)
    return cov


def diagonal_variances(k: KernelState, layer: str) -> tuple[jax.Array, jax.Array]:
    """Per-position variances of each example, `(N1, *S)` and `(N2, *S)` (`Σ(x, x)[i, i]`)."""
    cov1, cov2 = k.covariances(layer)
    cov2 = cov1 if cov2 is None else cov2
    if k.cov_is_diagonal:
        return cov1, cov2
    return spatial_diagonal(cov1, 1, k.n_spatial), spatial_diagonal(cov2, 1, k.n_spatial)


def cross_variances(d1: jax.Array, d2: jax.Array, k: KernelState) -> tuple[jax.Array, jax.Array]:
    """`d1`, `d2` from `diagonal_variances` broadcast against `nngp` `(N1, N2, ...)`: `Σ₁₁` and `Σ₂₂` per entry."""
    if k.diagonal_spatial:
        return d1[:, None], d2[None, :]
    n = k.n_spatial
    return _spread(d1, 1, n, first=True)[:, None], _spread(d2, 1, n, first=False)[None, :]


def self_variances(d: jax.Array, k: KernelState) -> tuple[jax.Array, jax.Array]:
    """`d` `(N, *S)` broadcast against one example's own covariance `(N, ...)`: `Σ₁₁` and `Σ₂₂` per entry."""
    if k.cov_is_diagonal:
        return d, d
    n = k.n_spatial
    return _spread(d, 1, n, first=True), _spread(d, 1, n, first=False)


def _spread(d: jax.Array, n_batch: int, n_spatial: int, first: bool) -> jax.Array:
    """`(B, S_1, ..., S_k) -> (B, S_1, 1, S_2, 1, ...)` (first) or `(B, 1, S_1, 1, S_2, ...)`."""
    for a in range(n_spatial):
        d = jnp.expand_dims(d, n_batch + 2 * a + (1 if first else 0))
    return d


def without_covariances(k: KernelState) -> KernelState:
    return k.replace(cov1=None, cov2=None, cov_diagonal=False)


def mixing_cov_needs(out_level: CovLevel) -> CovLevel:
    """`cov_needs` of a layer mixing positions: full covariances in to produce any covariances out."""
    return COV_FULL if out_level >= COV_DIAGONAL else COV_NONE


def drop_diagonal_covariances(k: KernelState) -> KernelState:
    """What a position-mixing layer reads: diagonal-only covariances cannot be mixed, and by `mixing_cov_needs`
    they arrive only when nothing after reads the result."""
    return without_covariances(k) if k.cov_level == COV_DIAGONAL else k


def align_covariances(ks: list[KernelState]) -> list[KernelState]:
    """Branches brought to the least carried covariance level among them (for fan-in layers)."""
    level = min(k.cov_level for k in ks)
    out = []
    for k in ks:
        if k.cov_level == level:
            out.append(k)
        elif level == COV_NONE:
            out.append(without_covariances(k))
        else:  # full -> diagonal
            n = k.n_spatial
            cov1, cov2 = k.covariances("a fan-in layer")
            out.append(k.replace(cov1=spatial_diagonal(cov1, 1, n),
                                 cov2=None if cov2 is None else spatial_diagonal(cov2, 1, n), cov_diagonal=True))
    return out


def diagonal_spatial_state(k: KernelState) -> KernelState:
    """`k` with only positions `i = i'` of its spatial axes (the layout `diagonal_spatial=True`)."""
    if k.diagonal_spatial:
        return k
    n = k.n_spatial
    to_diagonal = (lambda a, n_batch: None if a is None else spatial_diagonal(a, n_batch, n))  # noqa: E731
    covs = (k.cov1, k.cov2) if k.cov_diagonal else (to_diagonal(k.cov1, 1), to_diagonal(k.cov2, 1))
    return k.replace(nngp=to_diagonal(k.nngp, 2), ntk=to_diagonal(k.ntk, 2), cov1=covs[0], cov2=covs[1],
                     diagonal_spatial=True, cov_diagonal=False)


def check_state(k: Any, layer: str) -> KernelState:
    """`k` if it is one kernel state; a layer taking one input names itself in the error otherwise."""
    if not isinstance(k, KernelState):
        raise ValueError(f"{layer} takes one input; got {type(k).__name__} (use a FanIn* layer to merge branches).")
    return k
