"""Convolutions (1-, 2- and 3-D, channels last) with SAME, VALID and CIRCULAR padding."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ._axes import check_dimension_numbers
from ._dense import (
    Parameterization,
    add_bias,
    affine_kernel,
    affine_scales,
    bias_shape,
    check_parameterization,
    check_scales,
    init_affine,
)
from ._layer import Layer
from ._state import check_state
from ._windows import Padding, check_padding, check_sizes, out_size, pads, window_sum

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


@dataclasses.dataclass(frozen=True)
class Conv(Layer):
    """Convolution over the spatial axes of `(N, *S, C)` inputs, the same filter at every position.

    Finite layer (NTK parameterization): `z[i] = σ_w/√(q C) Σ_{j, c} W[j, c] x[s·i + j, c] + σ_b b`, with `q` the
    filter size. Kernel (docs/theory.md §2; Novak et al. 2019, Garriga-Alonso et al. 2019):
    `Σ'[i, i'] = σ_w²/q Σ_j Σ[s·i + j, s·i' + j] + σ_b²` — the same offset on both sides — and `Θ'` likewise plus
    `Σ'`. With diagonal-only covariances this is a box filter over `Σ[i, i]`.

    Parameters `(W, b)` as neural-tangents': the filter `W` in `HWIO` layout (`(*filter_shape, C, out_chan)`), the
    bias `b` of shape `(1, ..., 1, out_chan)` or `None`, drawn by `init_affine`.

    Args:
      out_chan: channels of the finite layer.
      filter_shape: `(k_1, ..., k_d)`, `d` in 1..3.
      strides: `(s_1, ..., s_d)`, default ones.
      padding: `"VALID"`, `"SAME"` (zeros) or `"CIRCULAR"` (wrap-around).
      W_std: `σ_w`, as in `Dense`.
      b_std: `σ_b` or `None` for no bias, as in `Dense`.
      dimension_numbers: neural-tangents' layout argument: `None` or the channels-last
        `("N…C", "…IO", "N…C")`; other layouts raise `NotImplementedError`. A string here is taken as
        `parameterization` (ntkit's earlier positional order).
      parameterization: `"ntk"` or `"standard"`, as in `Dense`.
      s: `(s_in, s_out)` width scales of the standard parameterization, as in `Dense`.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> net = stax.serial(stax.Conv(8, (3, 3), padding="SAME"), stax.Relu(), stax.Flatten(), stax.Dense(1))
      >>> net.kernel(jnp.ones((2, 5, 5, 3)), None, "nngp").shape
      (2, 2)
    """

    out_chan: int
    filter_shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: Padding = "VALID"
    W_std: float = 1.0
    b_std: float | None = None
    dimension_numbers: tuple[str, str, str] | None = None
    parameterization: Parameterization = "ntk"
    s: tuple[int, int] = (1, 1)

    def __post_init__(self):
        if isinstance(self.dimension_numbers, str):  # ntkit's former seventh positional argument
            object.__setattr__(self, "parameterization", self.dimension_numbers)
            object.__setattr__(self, "dimension_numbers", None)
        object.__setattr__(self, "parameterization", str(self.parameterization).lower())
        check_parameterization(self.parameterization)
        object.__setattr__(self, "s", check_scales(self.s))
        if self.dimension_numbers is not None:
            object.__setattr__(self, "dimension_numbers", tuple(self.dimension_numbers))
        check_padding(self.padding)
        object.__setattr__(self, "filter_shape", tuple(self.filter_shape))
        if len(self.filter_shape) not in _SPATIAL:
            raise ValueError(f"`filter_shape` must have 1 to 3 entries, got {self.filter_shape}.")
        strides = (1,) * len(self.filter_shape) if self.strides is None else tuple(self.strides)
        if len(strides) != len(self.filter_shape):
            raise ValueError(f"`strides` {strides} and `filter_shape` {self.filter_shape} differ in length.")
        check_sizes(self.filter_shape, "filter_shape", "Conv")
        check_sizes(strides, "strides", "Conv")
        check_sizes((self.out_chan,), "out_chan", "Conv")
        object.__setattr__(self, "strides", strides)
        check_dimension_numbers(self.dimension_numbers, len(self.filter_shape), "Conv")

    @property
    def _s(self) -> tuple[int, int]:
        return self.s if self.parameterization == "standard" else (1, 1)

    @property
    def _width(self) -> int:
        return self.out_chan * self._s[1]

    @property
    def _strides(self) -> tuple[int, ...]:
        assert self.strides is not None  # set in __post_init__
        return self.strides

    def _check_spatial(self, shape) -> tuple[int, ...]:
        if len(shape) != len(self.filter_shape) + 2:
            raise ValueError(f"Conv with `filter_shape` {self.filter_shape} needs inputs (N, *{len(self.filter_shape)} "
                             f"spatial axes, C), got shape {tuple(shape)}.")
        return tuple(out_size(n, k, s, self.padding, "`filter_shape`")
                     for n, k, s in zip(shape[1:-1], self.filter_shape, self._strides, strict=True))

    def init(self, key, input_shape):
        input_shape = tuple(input_shape)
        spatial = self._check_spatial(input_shape)
        c_in = input_shape[-1]
        fan_in = math.prod(self.filter_shape) * c_in / self._s[0]
        params = init_affine(key, self.filter_shape + (c_in, self._width), fan_in,
                             bias_shape(len(input_shape), self._width), self.W_std, self.b_std, self.parameterization)
        return (input_shape[0],) + spatial + (self._width,), params

    def apply(self, params, x, **kwargs):
        w, b = params
        self._check_spatial(x.shape)
        sp = _SPATIAL[len(self.filter_shape)]
        padding = [pads(n, k, s, self.padding) for n, k, s in zip(x.shape[1:-1], self.filter_shape, self._strides,
                                                                    strict=True)]
        if self.padding == "CIRCULAR":
            x = jnp.pad(x, [(0, 0)] + padding + [(0, 0)], mode="wrap")
            padding = [(0, 0)] * len(padding)
        z = jax.lax.conv_general_dilated(x, w, self._strides, padding,
                                         dimension_numbers=("N" + sp + "C", sp + "IO", "N" + sp + "C"))
        s_w, s_b = affine_scales(self.W_std, self.b_std, self.parameterization, w.shape[-2] * math.prod(w.shape[:-2]),
                                 self._s[0])
        return add_bias(s_w * z, b, s_b)

    def transform(self, k, **kwargs):
        k = check_state(k, "Conv")
        spatial1, spatial2 = self._check_spatial(k.shape1), self._check_spatial(k.shape2)
        q = math.prod(self.filter_shape)
        in_spatial = k.shape1[1:-1]

        def linear(a, n_batch, diagonal):
            axes = tuple((n_batch + d,) if diagonal else (n_batch + 2 * d, n_batch + 2 * d + 1)
                         for d in range(len(in_spatial)))
            return window_sum(a, axes, self.filter_shape, self._strides, in_spatial, self.padding) / q

        fan_in = q * k.shape1[-1] / self._s[0]
        return affine_kernel(k, linear, self.W_std, self.b_std, self.parameterization, fan_in,
                             (k.shape1[0],) + spatial1 + (self._width,), (k.shape2[0],) + spatial2 + (self._width,))
