"""Dropout, in training or test mode."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp

from ._layer import Layer
from ._state import check_state

_MODES = ("train", "test")


def _same_position(k, dtype) -> jax.Array:
    """Indicator of entries at the same spatial position (all of them in the diagonal layout)."""
    if k.diagonal_spatial or k.n_spatial == 0:
        return jnp.ones((), dtype)
    spatial = k.shape1[1:-1]
    eye = jnp.ones((), dtype)
    for d, size in enumerate(spatial):
        e = jnp.eye(size, dtype=dtype)
        eye = eye[..., None, None] * e.reshape((1, 1) * d + e.shape) if d else e  # explicit ranks
    return eye


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: `y = m ⊙ x / p`, `m ~ Bernoulli(p)` per unit, `p = 1 − rate` (Srivastava et al. 2014).

    In `"train"` mode masks are independent across examples and positions, so only the variance of a unit with
    itself grows: `Σ'(x, x)[i, i] = Σ(x, x)[i, i] / p` (and `Θ'` likewise); every other entry is unchanged. This
    diagonal is only known to be a diagonal when `x2` is `None` (or within a diagonal tile). `"test"` mode is the
    identity. `apply` needs `rng=` in train mode.
    """

    weight_free: ClassVar[bool] = True

    rate: float
    mode: Literal["train", "test"] = "train"

    def __post_init__(self):
        if self.mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}, got {self.mode!r}.")
        if not 0 <= self.rate < 1:
            raise ValueError(f"`rate` must be in [0, 1), got {self.rate!r}.")

    def init(self, key, input_shape):
        return tuple(input_shape), ()

    def apply(self, params, x, rng=None, **kwargs):
        if self.mode == "test" or self.rate == 0:
            return x
        if rng is None:
            raise ValueError("Dropout in 'train' mode needs a PRNG key: pass `rng=` to apply_fn.")
        keep = 1 - self.rate
        mask = jax.random.bernoulli(rng, keep, x.shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))

    def transform(self, k, **kwargs):
        k = check_state(k, "Dropout")
        if self.mode == "test" or self.rate == 0:
            return k
        extra = 1 / (1 - self.rate) - 1
        same = _same_position(k, k.nngp.dtype)
        # every entry of a diagonal-only covariance is at one position
        factor_cov = 1 + extra * (jnp.ones((), k.nngp.dtype) if k.cov_is_diagonal else same[None])
        cov1 = None if k.cov1 is None else k.cov1 * factor_cov
        cov2 = None if k.cov2 is None else k.cov2 * factor_cov
        nngp, ntk = k.nngp, k.ntk
        if k.x1_is_x2:
            n = k.nngp.shape[0]
            eye = jnp.eye(n, dtype=k.nngp.dtype).reshape((n, n) + (1,) * (k.nngp.ndim - 2))
            factor = 1 + extra * eye * same.reshape((1, 1) + same.shape)
            nngp = nngp * factor
            ntk = None if ntk is None else ntk * factor
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False, is_input=False)
