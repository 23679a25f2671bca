"""`ImageResize`: resizing the spatial axes with `jax.image.resize`, a fixed linear map (neural-tangents'
`stax.ImageResize`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from ._axes import check_axis_argument, check_layout
from ._layer import Layer
from ._state import CovLevel, KernelState, check_state, drop_diagonal_covariances, mixing_cov_needs


@dataclasses.dataclass(frozen=True)
class ImageResize(Layer):
    """Resize of the spatial axes, `y = R x` with `R` the separable linear map of `jax.image.resize`.

    Kernel: `Σ' = R Σ Rᵀ` on every pair of spatial axes (the same resize applied to the covariance's `S_d` and
    `S_d'` axes), and `Θ'` likewise. Mixes positions, so it needs full spatial covariances.

    Args:
      shape: the output shape `(N, *S', C)`, `-1` to keep an axis; the batch and channel entries must be `-1` or
        unchanged.
      method: any method of `jax.image.resize` (`"linear"`, `"nearest"`, `"cubic"`, ...): all are linear maps.
      antialias: as in `jax.image.resize` (when downsampling).
      precision: as in `jax.image.resize`.
      batch_axis: neural-tangents' layout argument; must name the first axis.
      channel_axis: must name the last axis.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> layer = stax.ImageResize((-1, 6, -1), "linear")
      >>> layer.kernel(jnp.ones((2, 3, 4)), None, "nngp").shape
      (2, 2, 6, 6)
    """

    shape: tuple[int, ...]
    method: Any
    antialias: bool = True
    precision: Any = jax.lax.Precision.HIGHEST
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        check_axis_argument(self.batch_axis, "batch_axis", "ImageResize")
        check_axis_argument(self.channel_axis, "channel_axis", "ImageResize")

    def _out_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        check_layout(self.batch_axis, self.channel_axis, len(input_shape), "ImageResize")
        if len(self.shape) != len(input_shape):
            raise ValueError(f"ImageResize: `shape` {self.shape} and the input shape {input_shape} differ in length.")
        out = tuple(n if s == -1 else s for s, n in zip(self.shape, input_shape, strict=True))
        if out[0] != input_shape[0] or out[-1] != input_shape[-1]:
            raise NotImplementedError("ImageResize: the batch and channel sizes must be kept (`-1` in `shape`).")
        if any(s < 1 for s in out):
            raise ValueError(f"ImageResize: `shape` must hold positive sizes or -1, got {self.shape}.")
        return out

    def _resize(self, a, shape):
        return jax.image.resize(a, shape, self.method, self.antialias, self.precision)

    def init(self, key, input_shape):
        return self._out_shape(input_shape), ()

    def apply(self, params, x, **kwargs):
        return self._resize(x, self._out_shape(x.shape))

    def transform(self, k: KernelState, **kwargs) -> KernelState:
        k = check_state(k, "ImageResize")
        shape1, shape2 = self._out_shape(k.shape1), self._out_shape(k.shape2)
        if k.diagonal_spatial and k.n_spatial:
            raise ValueError("ImageResize needs full spatial covariances; the kernel carries only the diagonal.")
        spatial = shape1[1:-1]
        k = drop_diagonal_covariances(k)

        def resize(a, n_batch, diagonal):
            return self._resize(a, a.shape[:n_batch] + tuple(s for s in spatial for _ in range(2)))

        return k.map(resize).replace(shape1=shape1, shape2=shape2, is_input=False)

    def needs_full(self, out_full: bool) -> bool:
        return True

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return mixing_cov_needs(out_level)
