"""`ConvTranspose`: the transposed (fractionally strided) convolution of neural-tangents' `stax.ConvTranspose`."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ._conv import Conv
from ._dense import add_bias, affine_kernel, affine_scales
from ._state import check_state
from ._windows import window_sum

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
    """Padding `(lo, hi)` of the stride-dilated input in `jax.lax.conv_transpose` (XLA's and TensorFlow's rule).

    The input `x` of size `n` is dilated to `(n - 1)·s + 1` (`s - 1` zeros between entries), padded by `(lo, hi)`
    and convolved with stride 1: `VALID` gives `n·s + max(k - s, 0)` outputs, `SAME` `n·s`.
    """
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
    else:  # VALID
        total = k + s - 2 + max(k - s, 0)
        lo = k - 1
    return lo, total - lo


def transpose_out_size(n: int, k: int, s: int, padding: str) -> int:
    lo, hi = transpose_pads(k, s, padding)
    return (n - 1) * s + 1 + lo + hi - k + 1


@dataclasses.dataclass(frozen=True)
class ConvTranspose(Conv):
    """Transposed convolution over the spatial axes of `(N, *S, C)` inputs (`jax.lax.conv_transpose`).

    Finite layer (NTK parameterization): the input is dilated by the strides (`s - 1` zeros between positions),
    padded by `(lo, hi)` (`transpose_pads`) into `x̃`, and convolved with stride one:
    `z[o] = σ_w/√(q C) Σ_{j, c} W[j, c] x̃[o + j, c] + σ_b b`, `q` the filter size. Each input position thus spreads
    over `q` output positions, `s` apart per stride. Kernel (the same same-offset map as `Conv`, on the dilated and
    padded covariance): `Σ'[o, o'] = σ_w²/q Σ_j Σ̃[o + j, o' + j] + σ_b²`, `Θ'` likewise plus `Σ'` (docs/theory.md
    §2). With diagonal-only covariances it is a box filter over the dilated variances.

    Output sizes: `n·s + max(k - s, 0)` for `"VALID"`, `n·s` for `"SAME"`, as neural-tangents and
    `jax.lax.conv_transpose`. `"CIRCULAR"` padding (neural-tangents wraps the `VALID` output onto `n·s` positions)
    raises `NotImplementedError`.

    Args:
      out_chan: channels of the finite layer.
      filter_shape: `(k_1, ..., k_d)`, `d` in 1..3.
      strides: `(s_1, ..., s_d)` (the upsampling factors), default ones.
      padding: `"VALID"` or `"SAME"`.
      W_std: `σ_w`, as in `Dense`; the fan-in is `q·C` as neural-tangents.
      b_std: `σ_b` or `None` for no bias.
      dimension_numbers: `None` or the channels-last `("N…C", "…IO", "N…C")`; other layouts raise
        `NotImplementedError`.
      parameterization: `"ntk"` or `"standard"`, as in `Dense`.
      s: `(s_in, s_out)` width scales of the standard parameterization, as in `Dense`.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.nn as stax
      >>> net = stax.serial(stax.ConvTranspose(8, (3,), (2,), "SAME"), stax.Relu(), stax.Flatten(), stax.Dense(1))
      >>> net.kernel(jnp.ones((2, 4, 3)), None, "nngp").shape
      (2, 2)
      >>> stax.ConvTranspose(8, (3,), (2,)).init(jax.random.key(0), (2, 4, 3))[0]
      (2, 9, 8)
    """

    def __post_init__(self):
        super().__post_init__()
        if self.padding == "CIRCULAR":
            raise NotImplementedError("ConvTranspose: `padding='CIRCULAR'` is not supported by ntkit; use 'VALID' or "
                                      "'SAME'.")

    def _check_spatial(self, shape) -> tuple[int, ...]:
        if len(shape) != len(self.filter_shape) + 2:
            raise ValueError(f"ConvTranspose with `filter_shape` {self.filter_shape} needs inputs (N, "
                             f"*{len(self.filter_shape)} spatial axes, C), got shape {tuple(shape)}.")
        return tuple(transpose_out_size(n, k, s, self.padding)
                     for n, k, s in zip(shape[1:-1], self.filter_shape, self._strides, strict=True))

    def apply(self, params, x, **kwargs):
        w, b = params
        self._check_spatial(x.shape)
        sp = _SPATIAL[len(self.filter_shape)]
        z = jax.lax.conv_transpose(x, w, self._strides, self.padding,
                                   dimension_numbers=("N" + sp + "C", sp + "IO", "N" + sp + "C"))
        s_w, s_b = affine_scales(self.W_std, self.b_std, self.parameterization, w.shape[-2] * math.prod(w.shape[:-2]),
                                 self._s[0])
        return add_bias(s_w * z, b, s_b)

    def transform(self, k, **kwargs):
        k = check_state(k, "ConvTranspose")
        spatial1, spatial2 = self._check_spatial(k.shape1), self._check_spatial(k.shape2)
        q = math.prod(self.filter_shape)
        in_spatial = k.shape1[1:-1]
        config = [transpose_pads(kd, sd, self.padding) + (sd - 1,)
                  for kd, sd in zip(self.filter_shape, self._strides, strict=True)]
        dilated = tuple((n - 1) * (gap + 1) + 1 + lo + hi for n, (lo, hi, gap) in zip(in_spatial, config, strict=True))
        d = len(in_spatial)

        def linear(a, n_batch, diagonal):
            axes = tuple((n_batch + i,) if diagonal else (n_batch + 2 * i, n_batch + 2 * i + 1) for i in range(d))
            widths = [(0, 0, 0)] * a.ndim
            for group, c in zip(axes, config, strict=True):
                for ax in group:
                    widths[ax] = c
            a = jax.lax.pad(a, jnp.zeros((), a.dtype), widths)  # zeros between positions (strides) and around
            return window_sum(a, axes, self.filter_shape, (1,) * d, dilated, "VALID") / q

        fan_in = q * k.shape1[-1] / self._s[0]
        return affine_kernel(k, linear, self.W_std, self.b_std, self.parameterization, fan_in,
                             (k.shape1[0],) + spatial1 + (self._width,), (k.shape2[0],) + spatial2 + (self._width,))
