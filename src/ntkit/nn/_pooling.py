"""Pooling and flattening: average/sum pooling over windows or globally, and `Flatten`."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from ._axes import check_axis_argument, check_layout
from ._layer import Layer
from ._masking import masked_mean, position_mask
from ._state import (
    COV_DIAGONAL,
    COV_NONE,
    CovLevel,
    check_state,
    drop_diagonal_covariances,
    mixing_cov_needs,
    spatial_diagonal,
)
from ._windows import Padding, check_padding, check_sizes, out_size, pads, window_sum


@dataclasses.dataclass(frozen=True)
class _Pool(Layer):
    weight_free: ClassVar[bool] = True

    window_shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: Padding = "VALID"

    _average = True
    _name = "AvgPool"

    @property
    def _normalize_edges(self) -> bool:
        return False

    def _layout(self) -> tuple[int, int]:
        return 0, -1

    def __post_init__(self):
        for name, value in zip(("batch_axis", "channel_axis"), self._layout(), strict=True):
            check_axis_argument(value, name, self._name)
        check_padding(self.padding)
        object.__setattr__(self, "window_shape", tuple(self.window_shape))
        strides = (1,) * len(self.window_shape) if self.strides is None else tuple(self.strides)
        if len(strides) != len(self.window_shape):
            raise ValueError(f"`strides` {strides} and `window_shape` {self.window_shape} differ in length.")
        check_sizes(self.window_shape, "window_shape", self._name)
        check_sizes(strides, "strides", self._name)
        object.__setattr__(self, "strides", strides)

    @property
    def _strides(self) -> tuple[int, ...]:
        assert self.strides is not None  # set in __post_init__
        return self.strides

    def _out_shape(self, shape):
        shape = tuple(shape)
        check_layout(*self._layout(), len(shape), self._name)
        if len(shape) != len(self.window_shape) + 2:
            raise ValueError(f"{self._name} with `window_shape` {self.window_shape} needs inputs (N, "
                             f"*{len(self.window_shape)} spatial axes, C), got shape {shape}.")
        spatial = tuple(out_size(n, k, s, self.padding, f"{self._name} `window_shape`")
                        for n, k, s in zip(shape[1:-1], self.window_shape, self._strides, strict=True))
        return (shape[0],) + spatial + (shape[-1],)

    def _scale(self) -> float:
        return 1 / math.prod(self.window_shape) if self._average else 1.0

    def init(self, key, input_shape):
        return self._out_shape(input_shape), ()

    def _counts(self, spatial: tuple[int, ...]) -> list[np.ndarray]:
        """Per spatial axis, how many input positions (not padding) each output position's window covers
        (circular padding wraps real positions around: the whole window)."""
        out = []
        for n, k, s in zip(spatial, self.window_shape, self._strides, strict=True):
            lo, _ = pads(n, k, s, self.padding)
            m = out_size(n, k, s, self.padding)
            start = s * np.arange(m) - (0 if self.padding == "CIRCULAR" else lo)
            covered = np.arange(k)[None, :] + start[:, None]
            inside = (covered >= 0) & (covered < n) if self.padding != "CIRCULAR" else np.ones((m, k), bool)
            out.append(inside.sum(1).astype(np.float64))
        return out

    def _edge_scale(self, spatial: tuple[int, ...], n_lead: int, ndim: int, twice: bool, dtype):
        """`1 / Π_d count_d`, shaped to divide an array with `n_lead` leading axes (then each spatial axis once, or
        twice interleaved for covariances)."""
        scale = np.ones((1,) * ndim)
        for d, c in enumerate(self._counts(spatial)):
            for a in ((n_lead + 2 * d, n_lead + 2 * d + 1) if twice else (n_lead + d,)):
                shape = [1] * ndim
                shape[a] = c.shape[0]
                scale = scale / c.reshape(shape)
        return jnp.asarray(scale, dtype)

    def apply(self, params, x, **kwargs):
        self._out_shape(x.shape)
        spatial = x.shape[1:-1]
        for d, (k, s) in enumerate(zip(self.window_shape, self._strides, strict=True)):
            x = window_sum(x, (1 + d,), k, s, x.shape[1 + d], self.padding)
        if self._normalize_edges:
            return x * self._edge_scale(spatial, 1, x.ndim, False, x.dtype)
        return x * self._scale()

    def transform(self, k, **kwargs):
        k = check_state(k, self._name)
        shape1, shape2 = self._out_shape(k.shape1), self._out_shape(k.shape2)
        if k.diagonal_spatial:
            raise ValueError(f"{self._name} needs full spatial covariances; the kernel carries only the diagonal.")
        spatial = k.shape1[1:-1]
        scale = self._scale() ** 2
        k = drop_diagonal_covariances(k)

        def linear(a, n_batch, diagonal):
            # independent windows on `i` and `i'`: one group per axis, all summed in one pass
            axes = tuple((n_batch + ax,) for ax in range(2 * len(spatial)))
            twice = lambda t: tuple(v for v in t for _ in range(2))  # noqa: E731
            out = window_sum(a, axes, twice(self.window_shape), twice(self._strides), twice(spatial), self.padding)
            if self._normalize_edges:
                return out * self._edge_scale(spatial, n_batch, out.ndim, True, out.dtype)
            return out * scale

        return k.map(linear).replace(shape1=shape1, shape2=shape2, is_input=False)

    def needs_full(self, out_full: bool) -> bool:
        return True

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return mixing_cov_needs(out_level)


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Average over windows: `Σ'[p, p'] = Σ_{i ∈ w(p), i' ∈ w(p')} Σ[i, i'] / (c(p) c(p'))`.

    `c(p)` is the window size, or with `normalize_edges=True` the number of input positions (not padding) the
    window covers, as neural-tangents. Needs full spatial covariances.

    Args:
      window_shape: `(k_1, ..., k_d)`.
      strides: default ones.
      padding: `"VALID"`, `"SAME"`, `"CIRCULAR"` (or `Padding` members).
      normalize_edges: divide by the positions covered rather than the window size (matters with `"SAME"`).
      batch_axis: neural-tangents' layout argument; must name the first axis.
      channel_axis: must name the last axis.
    """

    normalize_edges: bool = False
    batch_axis: int = 0
    channel_axis: int = -1

    @property
    def _normalize_edges(self) -> bool:
        return bool(self.normalize_edges)

    def _layout(self) -> tuple[int, int]:
        return self.batch_axis, self.channel_axis


@dataclasses.dataclass(frozen=True)
class SumPool(_Pool):
    """Sum over windows: `Σ'[p, p'] = Σ_{i ∈ w(p), i' ∈ w(p')} Σ[i, i']`. Arguments as `AvgPool` (no
    `normalize_edges`)."""

    batch_axis: int = 0
    channel_axis: int = -1

    _average = False
    _name = "SumPool"

    def _layout(self) -> tuple[int, int]:
        return self.batch_axis, self.channel_axis


def _spatial_axes(k, n_batch: int) -> tuple[int, ...]:
    n = k.n_spatial
    return tuple(range(n_batch, n_batch + (n if k.diagonal_spatial else 2 * n)))


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Mean over all positions, `(N, *S, C) -> (N, C)`: `Σ' = mean_{i, i'} Σ[i, i']` (all pairs of positions).

    `batch_axis` and `channel_axis` (neural-tangents' layout arguments) must name the first and last axes.
    """

    weight_free: ClassVar[bool] = True

    batch_axis: int = 0
    channel_axis: int = -1

    _average = True

    def __post_init__(self):
        check_axis_argument(self.batch_axis, "batch_axis", type(self).__name__)
        check_axis_argument(self.channel_axis, "channel_axis", type(self).__name__)

    def init(self, key, input_shape):
        check_layout(self.batch_axis, self.channel_axis, len(input_shape), type(self).__name__)
        if len(input_shape) < 3:
            raise ValueError(f"{type(self).__name__} needs inputs with spatial axes, got shape {tuple(input_shape)}.")
        return (input_shape[0], input_shape[-1]), ()

    def apply(self, params, x, mask=None, **kwargs):
        """The pooled `x`; with `mask` (`(N, *S, 1)`, `True` at masked positions, where `x` is zero) the mean is
        over unmasked positions only."""
        self.init(None, x.shape)
        axes = tuple(range(1, x.ndim - 1))
        if not self._average:
            return jnp.sum(x, axes)
        positions = position_mask(mask, self)
        if positions is None:
            return jnp.mean(x, axes)
        count = jnp.sum(~positions, axes).astype(x.dtype)  # (N,)
        total = jnp.sum(jnp.where(jnp.broadcast_to(mask, x.shape), jnp.zeros((), x.dtype), x), axes)
        return total / jnp.maximum(count, jnp.ones((), x.dtype))[:, None]

    def transform(self, k, **kwargs):
        k = check_state(k, type(self).__name__)
        self.init(None, k.shape1)
        if k.diagonal_spatial:
            raise ValueError(f"{type(self).__name__} needs full spatial covariances; the kernel carries only the "
                             "diagonal.")
        k = drop_diagonal_covariances(k)
        # with masks (`mask_constant`), the mean over pairs of unmasked positions
        return k.replace(
            nngp=masked_mean(k, k.nngp, "nngp", _spatial_axes(k, 2), average=self._average),
            ntk=None if k.ntk is None else masked_mean(k, k.ntk, "nngp", _spatial_axes(k, 2), average=self._average),
            cov1=None if k.cov1 is None else masked_mean(k, k.cov1, "cov1", _spatial_axes(k, 1),
                                                         average=self._average),
            cov2=None if k.cov2 is None else masked_mean(k, k.cov2, "cov2", _spatial_axes(k, 1),
                                                         average=self._average),
            shape1=(k.shape1[0], k.shape1[-1]), shape2=(k.shape2[0], k.shape2[-1]), is_input=False)

    def needs_full(self, out_full: bool) -> bool:
        return True

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return mixing_cov_needs(out_level)


@dataclasses.dataclass(frozen=True)
class GlobalSumPool(GlobalAvgPool):
    """Sum over all positions: `Σ' = Σ_{i, i'} Σ[i, i']`."""

    _average = False


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """`(N, *S, C) -> (N, prod(S)·C)`: the mean over features keeps only diagonal positions, `Σ' = mean_i Σ[i, i]`.

    So a network ending in `Flatten` (then `Dense`) only ever needs diagonal spatial covariances, and layers before
    it carry those alone (docs/theory.md §2). `batch_axis` and `batch_axis_out` (neural-tangents' layout
    arguments) must be 0.
    """

    weight_free: ClassVar[bool] = True

    batch_axis: int = 0
    batch_axis_out: int = 0

    def __post_init__(self):
        check_axis_argument(self.batch_axis, "batch_axis", "Flatten")
        check_axis_argument(self.batch_axis_out, "batch_axis_out", "Flatten")

    def init(self, key, input_shape):
        check_layout(self.batch_axis, None, len(input_shape), "Flatten")
        check_layout(self.batch_axis_out, None, 2, "Flatten")
        return (input_shape[0], math.prod(input_shape[1:])), ()

    def apply(self, params, x, **kwargs):
        return jnp.reshape(x, (x.shape[0], -1))

    def transform(self, k, **kwargs):
        k = check_state(k, "Flatten")
        n = k.n_spatial

        def flat(a, nb, diagonal):
            if not diagonal:
                a = spatial_diagonal(a, nb, n)
            return jnp.mean(a, tuple(range(nb, nb + n)))

        return k.map(flat).replace(shape1=self.init(None, k.shape1)[0], shape2=self.init(None, k.shape2)[0],
                                   is_input=False, cov_diagonal=False)

    def needs_full(self, out_full: bool) -> bool:
        return False

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return COV_DIAGONAL if out_level >= COV_DIAGONAL else COV_NONE
