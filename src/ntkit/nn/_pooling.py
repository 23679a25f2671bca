"""Pooling and flattening: average/sum pooling over windows or globally, and `Flatten`."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from ._layer import Layer
from ._state import (
    COV_DIAGONAL,
    COV_NONE,
    CovLevel,
    check_state,
    drop_diagonal_covariances,
    mixing_cov_needs,
    spatial_diagonal,
)
from ._windows import Padding, check_padding, check_sizes, out_size, window_sum


@dataclasses.dataclass(frozen=True)
class _Pool(Layer):
    window_shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: Padding = "VALID"

    _average = True
    _name = "AvgPool"

    def __post_init__(self):
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

    def apply(self, params, x, **kwargs):
        self._out_shape(x.shape)
        for d, (k, s) in enumerate(zip(self.window_shape, self._strides, strict=True)):
            x = window_sum(x, (1 + d,), k, s, x.shape[1 + d], self.padding)
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
            return window_sum(a, axes, twice(self.window_shape), twice(self._strides), twice(spatial),
                              self.padding) * scale

        return k.map(linear).replace(shape1=shape1, shape2=shape2, is_input=False)

    def needs_full(self, out_full: bool) -> bool:
        return True

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return mixing_cov_needs(out_level)


class AvgPool(_Pool):
    """Average over windows (zero padding counts as zeros): `Σ'[p, p'] = mean_{i ∈ w(p), i' ∈ w(p')} Σ[i, i']`.

    Needs full spatial covariances. Args: `window_shape`, `strides` (default ones), `padding` (`"VALID"`,
    `"SAME"`, `"CIRCULAR"`).
    """


class SumPool(_Pool):
    """Sum over windows: `Σ'[p, p'] = Σ_{i ∈ w(p), i' ∈ w(p')} Σ[i, i']`. Arguments as `AvgPool`."""

    _average = False
    _name = "SumPool"


def _spatial_axes(k, n_batch: int) -> tuple[int, ...]:
    n = k.n_spatial
    return tuple(range(n_batch, n_batch + (n if k.diagonal_spatial else 2 * n)))


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Mean over all positions, `(N, *S, C) -> (N, C)`: `Σ' = mean_{i, i'} Σ[i, i']` (all pairs of positions)."""

    _average = True

    def init(self, key, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"{type(self).__name__} needs inputs with spatial axes, got shape {tuple(input_shape)}.")
        return (input_shape[0], input_shape[-1]), ()

    def apply(self, params, x, **kwargs):
        self.init(None, x.shape)
        axes = tuple(range(1, x.ndim - 1))
        return jnp.mean(x, axes) if self._average else jnp.sum(x, axes)

    def transform(self, k, **kwargs):
        k = check_state(k, type(self).__name__)
        self.init(None, k.shape1)
        if k.diagonal_spatial:
            raise ValueError(f"{type(self).__name__} needs full spatial covariances; the kernel carries only the "
                             "diagonal.")
        reduce = jnp.mean if self._average else jnp.sum
        k = drop_diagonal_covariances(k)
        return k.map(lambda a, nb, diagonal: reduce(a, _spatial_axes(k, nb))).replace(
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
    it carry those alone (docs/theory.md §2).
    """

    def init(self, key, input_shape):
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
