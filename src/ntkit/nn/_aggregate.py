"""`Aggregate`: message passing over a graph given with each input (neural-tangents' `stax.Aggregate`)."""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ._axes import check_axis_argument, check_layout
from ._enums import AggregateImplementation, plain
from ._layer import Layer
from ._state import CovLevel, check_state, drop_diagonal_covariances, mixing_cov_needs

_IMPLEMENTATIONS = tuple(m.value for m in AggregateImplementation)


@dataclasses.dataclass(frozen=True)
class Aggregate(Layer):
    """Graph aggregation: every vertex is replaced by the weighted sum of its direct predecessors.

    The vertices are the positions along the `aggregate_axis` axes of `(N, *S, C)` inputs; each input example `n`
    comes with its own graph, passed as `pattern` to `apply_fn(params, x, pattern=P)` and as
    `kernel_fn(x1, x2, get, pattern=(P1, P2))`. With `P[n, i, j]` the weight of the edge from tail `i` to head `j`
    (`i`, `j` multi-indices over the `K` aggregated axes, other spatial axes and channels processed alike):

    * finite layer: `z[n, j] = Σ_i P[n, i, j] x[n, i]` (`x @ P` for one aggregated axis);
    * kernel (a fixed linear map of a Gaussian process): `Σ'[n1, n2](j, j') = Σ_{i, i'} P1[n1, i, j]
      Σ[n1, n2](i, i') P2[n2, i', j']` (`P1ᵀ Σ P2`), `Θ'` likewise from `Θ`, the per-example covariances with
      `P1` (`P2`) on both sides (Du et al. 2019, Graph Neural Tangent Kernel). It mixes positions, so full spatial
      covariances are carried.

    `pattern=None` (the default) is the graph with no edges but self-loops: the layer is the identity, as in
    neural-tangents. With `x2=None`, `pattern` may be `P1`, `(P1, None)` or `(P1, P1)`.

    Args:
      aggregate_axis: the spatial axes of the inputs holding the vertices (an int or a tuple, counted with the
        batch axis as 0); `None` for all spatial axes.
      batch_axis: neural-tangents' layout argument; must name the first axis.
      channel_axis: must name the last axis.
      to_dense: for `"DENSE"`, a function applied to each `pattern` before use (e.g. decoding a sparse format);
        `None` (identity) takes `pattern` as the dense `(N, *X, *X)` tensor, `X` the sizes of the aggregated axes.
      implementation: `"DENSE"` (`pattern` the `(N, *X, *X)` adjacency tensor) or `"SPARSE"` (an integer array
        `(N, n_edges, K, 2)` of tail and head coordinates, `(N, n_edges, 2)` when `K = 1`, each edge of weight
        one, repeated edges adding up; an edge with a negative coordinate is padding and dropped). ntkit turns a
        sparse pattern into the dense tensor, so both cost `O(V²)` memory per example (`V` vertices);
        neural-tangents' segment-sum implementation, cheaper for very sparse graphs, is not reproduced.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> x = jnp.ones((2, 4, 3))  # 2 graphs of 4 vertices with 3 features
      >>> ring = jnp.roll(jnp.eye(4), 1, axis=1)[None].repeat(2, 0)  # edges i -> i + 1
      >>> net = stax.serial(stax.Dense(8), stax.Relu(), stax.Aggregate(), stax.GlobalSumPool(), stax.Dense(1))
      >>> net.kernel(x, None, "nngp", pattern=(ring, ring)).shape
      (2, 2)
    """

    weight_free: ClassVar[bool] = True

    aggregate_axis: int | tuple[int, ...] | None = None
    batch_axis: int = 0
    channel_axis: int = -1
    to_dense: Callable[[Any], Any] | None = None
    implementation: str = "DENSE"

    def __post_init__(self):
        check_axis_argument(self.batch_axis, "batch_axis", "Aggregate")
        check_axis_argument(self.channel_axis, "channel_axis", "Aggregate")
        implementation = plain(self.implementation)
        if implementation not in _IMPLEMENTATIONS:
            raise ValueError(f"Aggregate: `implementation` must be one of {_IMPLEMENTATIONS}, got "
                             f"{self.implementation!r}.")
        object.__setattr__(self, "implementation", implementation)
        if self.to_dense is not None and not callable(self.to_dense):
            raise TypeError(f"Aggregate: `to_dense` must be callable or None, got {self.to_dense!r}.")
        axis = self.aggregate_axis
        if axis is not None and not isinstance(axis, int):
            axis = tuple(axis)
        for a in (axis,) if isinstance(axis, int) else axis or ():
            check_axis_argument(a, "aggregate_axis", "Aggregate")
        object.__setattr__(self, "aggregate_axis", axis)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        """The aggregated axes of `ndim`-axis inputs, in the order of `aggregate_axis` (the pattern's order)."""
        check_layout(self.batch_axis, self.channel_axis, ndim, "Aggregate")
        if self.aggregate_axis is None:
            axes = tuple(range(1, ndim - 1))
        else:
            given = (self.aggregate_axis,) if isinstance(self.aggregate_axis, int) else self.aggregate_axis
            if any(not -ndim <= a < ndim for a in given):
                raise ValueError(f"Aggregate: `aggregate_axis={self.aggregate_axis}` is out of range for inputs with "
                                 f"{ndim} axes.")
            axes = tuple(a % ndim for a in given)
            if any(a in (0, ndim - 1) for a in axes) or len(set(axes)) != len(axes):
                raise ValueError(f"Aggregate: `aggregate_axis={self.aggregate_axis}` must name distinct spatial "
                                 f"axes (not the batch axis 0 or the channel axis {ndim - 1}).")
        if not axes:
            raise ValueError(f"Aggregate needs inputs with spatial axes (N, *S, C) holding the vertices; got {ndim} "
                             "axes.")
        return axes

    def _dense(self, pattern: Any, n: int, sizes: tuple[int, ...], name: str) -> jax.Array:
        """The `(n, *sizes, *sizes)` adjacency tensor of `pattern`."""
        if self.implementation == "SPARSE":
            return _sparse_to_dense(pattern, n, sizes, name)
        p = pattern if self.to_dense is None else self.to_dense(pattern)
        expected = (n,) + sizes + sizes
        if not hasattr(p, "shape") or tuple(p.shape) != expected:
            got = tuple(p.shape) if hasattr(p, "shape") else type(p).__name__
            raise ValueError(f"Aggregate: `{name}` must be a dense pattern of shape (batch, *X, *X) = {expected} "
                             f"(X the sizes of the aggregated axes), got {got}.")
        return jnp.asarray(p)

    def init(self, key, input_shape):
        input_shape = tuple(input_shape)
        self._axes(len(input_shape))
        return input_shape, ()

    def apply(self, params, x, pattern: Any = None, **kwargs):
        axes = self._axes(x.ndim)
        if pattern is None:
            return x
        p = self._dense(pattern, x.shape[0], tuple(x.shape[a] for a in axes), "pattern").astype(x.dtype)
        letters = string.ascii_letters
        src = list(letters[:x.ndim])
        dst = {a: letters[x.ndim + i] for i, a in enumerate(axes)}
        out = [dst.get(a, c) for a, c in enumerate(src)]
        p_sub = src[0] + "".join(src[a] for a in axes) + "".join(dst[a] for a in axes)
        return jnp.einsum(f"{''.join(src)},{p_sub}->{''.join(out)}", x, p)

    def transform(self, k, pattern: Any = None, **kwargs):
        k = check_state(k, "Aggregate")
        axes = self._axes(len(k.shape1))
        p1, p2 = pattern if isinstance(pattern, tuple | list) else (pattern, None)
        if isinstance(pattern, tuple | list) and len(pattern) != 2:
            raise ValueError(f"Aggregate: `pattern` must be one array or a pair (pattern1, pattern2), got "
                             f"{len(pattern)} entries.")
        if p1 is None and p2 is None:
            return k
        if p1 is None:
            raise ValueError("Aggregate: `pattern` gives a graph for x2 but none for x1 (pattern1 is None).")
        if p2 is None and not k.x1_is_x2:
            raise ValueError("Aggregate: `pattern` must be a pair (pattern1, pattern2) when x2 is given; got no "
                             "pattern for x2.")
        if k.diagonal_spatial:
            raise ValueError("Aggregate needs full spatial covariances; the kernel carries only the diagonal.")
        k = drop_diagonal_covariances(k)
        sizes = tuple(k.shape1[a] for a in axes)
        dtype = k.nngp.dtype
        d1 = self._dense(p1, k.shape1[0], sizes, "pattern[0]").astype(dtype)
        d2 = d1 if p2 is None else self._dense(p2, k.shape2[0], sizes, "pattern[1]").astype(dtype)
        spatial = tuple(a - 1 for a in axes)  # spatial axis indices
        n = len(k.shape1) - 2
        return k.replace(
            nngp=_aggregate_cov(k.nngp, d1, d2, spatial, n, 2),
            ntk=None if k.ntk is None else _aggregate_cov(k.ntk, d1, d2, spatial, n, 2),
            cov1=None if k.cov1 is None else _aggregate_cov(k.cov1, d1, d1, spatial, n, 1),
            cov2=None if k.cov2 is None else _aggregate_cov(k.cov2, d2, d2, spatial, n, 1),
            is_input=False)

    def needs_full(self, out_full: bool) -> bool:
        return True

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return mixing_cov_needs(out_level)


def _aggregate_cov(a: jax.Array, left: jax.Array, right: jax.Array, spatial: tuple[int, ...], n: int,
                   n_batch: int) -> jax.Array:
    """`leftᵀ a right` over the aggregated spatial axes of a covariance laid out `(B..., S_1, S_1', ...)`."""
    letters = iter(string.ascii_letters)
    batch = [next(letters) for _ in range(n_batch)]
    pairs = [(next(letters), next(letters)) for _ in range(n)]
    new = {d: (next(letters), next(letters)) for d in spatial}
    src = "".join(batch) + "".join(i + j for i, j in pairs)
    out = "".join(batch) + "".join(new[d][0] + new[d][1] if d in new else i + j for d, (i, j) in enumerate(pairs))
    b1, b2 = batch[0], batch[-1]
    sub_l = b1 + "".join(pairs[d][0] for d in spatial) + "".join(new[d][0] for d in spatial)
    sub_r = b2 + "".join(pairs[d][1] for d in spatial) + "".join(new[d][1] for d in spatial)
    return jnp.einsum(f"{src},{sub_l},{sub_r}->{out}", a, left, right)


def _sparse_to_dense(pattern: Any, n: int, sizes: tuple[int, ...], name: str) -> jax.Array:
    """Edge lists `(n, n_edges, K, 2)` (or `(n, n_edges, 2)` for `K = 1`) as `(n, *sizes, *sizes)` edge counts."""
    p = jnp.asarray(pattern)
    k = len(sizes)
    if p.ndim == 3 and k == 1:
        p = p[:, :, None, :]
    if not jnp.issubdtype(p.dtype, jnp.integer) or p.ndim != 4 or p.shape[0] != n or p.shape[2:] != (k, 2):
        raise ValueError(f"Aggregate: a SPARSE `{name}` must be an integer array (batch, n_edges, K, 2) = ({n}, "
                         f"n_edges, {k}, 2) of tail and head coordinates, got {p.dtype} {tuple(p.shape)}.")
    strides = np.array([math.prod(sizes[i + 1:]) for i in range(k)], dtype=np.int64)
    bounds = jnp.asarray(np.array(sizes), p.dtype)
    valid = jnp.all((p >= 0) & (p < bounds[None, None, :, None]), axis=(2, 3))  # padding edges dropped
    flat = jnp.einsum("nekt,k->net", p, jnp.asarray(strides, p.dtype))
    v = math.prod(sizes)
    batch = jnp.broadcast_to(jnp.arange(n)[:, None], valid.shape)
    dense = jnp.zeros((n, v, v), jnp.int32).at[batch, flat[..., 0], flat[..., 1]].add(valid.astype(jnp.int32))
    return dense.reshape((n,) + sizes + sizes)
