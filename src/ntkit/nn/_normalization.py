"""Layer normalization over channels."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from ._axes import check_axis_argument, check_layout
from ._layer import Layer
from ._state import COV_DIAGONAL, CovLevel, check_state, cross_variances, diagonal_variances, self_variances


@dataclasses.dataclass(frozen=True)
class LayerNorm(Layer):
    """`y = (x − mean_c x) / √(var_c x + ε)` over the channel axis.

    On a centred Gaussian input of infinite width the channel mean tends to 0 and the channel variance to `Σ₁₁`,
    so `Σ'[i, i'] = Σ[i, i'] / √(Σ₁₁[i] Σ₂₂[i'])` and `Θ'` likewise (docs/theory.md §2; Ba et al. 2016). A non-Gaussian
    input (after a ReLU, say) has a non-zero channel mean, which this formula ignores: that raises.

    Args:
      axis: must be `-1` (channels).
      eps: `ε` of the finite layer.
      batch_axis: neural-tangents' layout argument; must name the first axis.
      channel_axis: must name the last axis.
    """

    weight_free: ClassVar[bool] = True

    axis: int = -1
    eps: float = 1e-12
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self):
        check_axis_argument(self.batch_axis, "batch_axis", "LayerNorm")
        check_axis_argument(self.channel_axis, "channel_axis", "LayerNorm")
        if self.axis != -1:
            raise ValueError(f"LayerNorm normalizes the channel axis only (`axis=-1`), got axis={self.axis}.")

    def init(self, key, input_shape):
        check_layout(self.batch_axis, self.channel_axis, len(input_shape), "LayerNorm")
        return tuple(input_shape), ()

    def apply(self, params, x, **kwargs):
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean((x - mean) ** 2, -1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + self.eps)

    def transform(self, k, **kwargs):
        k = check_state(k, "LayerNorm")
        check_layout(self.batch_axis, self.channel_axis, len(k.shape1), "LayerNorm")
        if not k.is_gaussian:
            raise ValueError("LayerNorm needs a centred Gaussian input (the output of a Dense or Conv layer, or a "
                             "sum of them); its kernel formula ignores the channel mean.")
        d1, d2 = diagonal_variances(k, "LayerNorm")
        cov1, cov2 = k.covariances("LayerNorm")
        v1, v2 = cross_variances(d1, d2, k)

        def normalized(x, var1, var2):
            # a unit of zero variance is constant: the finite layer maps it to 0 (x − mean = 0), so its kernel is 0
            prod = var1 * var2
            return jnp.where(prod > 0, x / jnp.sqrt(jnp.where(prod > 0, prod, 1)), 0)

        def self_norm(cov, d):
            return normalized(cov, *self_variances(d, k))

        return k.replace(nngp=normalized(k.nngp, v1, v2), ntk=None if k.ntk is None else normalized(k.ntk, v1, v2),
                         cov1=self_norm(cov1, d1), cov2=None if cov2 is None else self_norm(cov2, d2),
                         is_input=False)

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return max(out_level, COV_DIAGONAL)  # the variances of its input
