"""`ConvLocal`: a locally connected layer, a convolution whose filter and bias differ at every output position
(neural-tangents' `stax.ConvLocal`)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._conv import Conv
from ._dense import affine_scales, init_affine
from ._state import KernelState
from ._windows import pads


def _position_diagonal(spatial: tuple[int, ...], n_batch: int) -> np.ndarray:
    """`Π_d δ(i_d, i_d')` laid out `(1,)*n_batch + (S_1, S_1, S_2, S_2, ...)`."""
    mask = np.ones((1,) * n_batch)
    for n in spatial:
        mask = mask[..., None, None] * np.eye(n)
    return mask


@dataclasses.dataclass(frozen=True)
class ConvLocal(Conv):
    """Locally connected layer: `Conv` with independent weights `W[i]` and bias `b[i]` at each output position.

    Kernel (as `Conv`, then): weights shared by no two positions make every covariance between different output
    positions vanish at infinite width, `Σ'[i, i'] = δ(i, i') (σ_w²/q Σ_j Σ[s·i + j, s·i + j] + σ_b²)` and
    `Θ'[i, i'] = δ(i, i') (Σ'[i, i] + σ_w²/q Σ_j Θ[s·i + j, s·i + j])`. Arguments as `Conv`.

    Parameters `(W, b)` as neural-tangents': `W` of shape `(*S', C·q, out_chan)` (one filter per output position
    `S'`, patches ordered as `jax.lax.conv_general_dilated_local`'s), `b` of shape `(1, *S', out_chan)` or `None`.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> stax.ConvLocal(4, (2,)).kernel(jnp.ones((2, 3, 1)), None, "nngp").shape
      (2, 2, 2, 2)
    """

    def _patches(self, x):
        """`(N, *S', C·q)` input patches of each output position (the same ordering on every call)."""
        padding = [pads(n, k, s, self.padding) for n, k, s in zip(x.shape[1:-1], self.filter_shape, self._strides,
                                                                    strict=True)]
        if self.padding == "CIRCULAR":
            x = jnp.pad(x, [(0, 0)] + padding + [(0, 0)], mode="wrap")
            padding = [(0, 0)] * len(padding)
        sp = "".join("DHW"[-len(self.filter_shape):])
        return jax.lax.conv_general_dilated_patches(x, self.filter_shape, self._strides, padding,
                                                    dimension_numbers=("N" + sp + "C", sp + "IO", "N" + sp + "C"))

    def init(self, key, input_shape):
        input_shape = tuple(input_shape)
        spatial = self._check_spatial(input_shape)
        fan_in = math.prod(self.filter_shape) * input_shape[-1]
        params = init_affine(key, spatial + (fan_in, self._width), fan_in / self._s[0], (1,) + spatial + (self._width,),
                             self.W_std, self.b_std, self.parameterization)
        return (input_shape[0],) + spatial + (self._width,), params

    def apply(self, params, x, **kwargs):
        w, b = params
        self._check_spatial(x.shape)
        patches = self._patches(x)
        z = jnp.einsum("n...i,...io->n...o", patches, w)
        s_w, s_b = affine_scales(self.W_std, self.b_std, self.parameterization, patches.shape[-1], self._s[0])
        if b is None:
            return s_w * z
        return s_w * z + s_b * (b if b.ndim == z.ndim else b[None])

    def transform(self, k, **kwargs) -> KernelState:
        out = super().transform(k, **kwargs)
        spatial = out.shape1[1:-1]

        def local(a, n_batch, diagonal):
            return a if diagonal else a * jnp.asarray(_position_diagonal(spatial, n_batch), a.dtype)

        return out.map(local)
