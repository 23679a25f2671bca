"""Global self-attention over all spatial positions, where an infinite-width closed form exists."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from ._axes import check_axis_argument, check_layout
from ._layer import Layer
from ._masking import masked_mean
from ._state import CovLevel, check_state, drop_diagonal_covariances, mixing_cov_needs

_MECHANISMS = ("SOFTMAX", "IDENTITY")


@dataclasses.dataclass(frozen=True)
class GlobalSelfAttention(Layer):
    """Multi-head self-attention over all positions of `(N, *S, C)` inputs (NTK parameterization).

    Finite layer, per head `h`: `Q = σ_q X W_q/√C`, `K = σ_k X W_k/√C`, `V = σ_v X W_v/√C`, logits
    `G = Q Kᵀ / n_k` (`linear_scaling=True`) or `Q Kᵀ / √n_k` (`False`), attention `A = softmax(G)` over key
    positions (`attention_mechanism="SOFTMAX"`) or `A = G / P` over the `P` positions (`"IDENTITY"`), and
    `out = σ_o [A V]_h W_o/√(H n_v) + σ_b b`.

    Kernels (infinite `C`, `n_k`, `n_v` and heads; Hron et al. 2020), with `M = σ_o²σ_v²`:

    * `SOFTMAX`, `linear_scaling=True`: the logits tend to 0, attention is the uniform average over positions,
      `Σ'[i, i'] = M mean_{j, j'} Σ[j, j'] + σ_b²`, `Θ'[i, i'] = Σ' + M mean_{j, j'} (Σ + Θ)[j, j']` (query and key
      gradients vanish).
    * `IDENTITY`, `linear_scaling=False`: `E[G_ij G'_{i'j'}] = σ_q²σ_k² Σ[i, i'] Σ[j, j']`, so with
      `M' = M σ_q²σ_k²`, `S = mean_{j, j'} Σ[j, j']²`, `T = mean_{j, j'} Σ[j, j'] Θ[j, j']`:
      `Σ'[i, i'] = M' Σ[i, i'] S + σ_b²` and `Θ'[i, i'] = Σ' + 3 M' Σ[i, i'] S + M' (Θ[i, i'] S + 2 Σ[i, i'] T)`
      (the gradients of `W_v`, `W_q`, `W_k` each add `M' Σ S`; the input's NTK enters through queries, keys and
      values).
    * `IDENTITY`, `linear_scaling=True`: the logits tend to 0 and so does the attention output: `Σ' = Θ' = σ_b²`.
    * `SOFTMAX`, `linear_scaling=False`: the logits stay Gaussian and the softmax expectation has no closed form;
      the kernel raises `NotImplementedError`.

    The finite layer's outputs are Gaussian only as the number of heads grows, so Monte Carlo checks use many heads.
    """

    n_chan_out: int
    n_chan_key: int
    n_chan_val: int
    n_heads: int
    linear_scaling: bool = True
    W_key_std: float = 1.0
    W_value_std: float = 1.0
    W_query_std: float = 1.0
    W_out_std: float = 1.0
    b_std: float | None = None
    attention_mechanism: Literal["SOFTMAX", "IDENTITY"] = "SOFTMAX"
    pos_emb_type: str = "NONE"
    pos_emb_p_norm: float = 2
    pos_emb_decay_fn: Callable | None = None
    n_chan_pos_emb: int | None = None
    W_pos_emb_std: float = 1.0
    val_pos_emb: bool = False
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self):
        if str(self.pos_emb_type).upper() != "NONE":
            raise NotImplementedError(f"GlobalSelfAttention: positional embeddings (`pos_emb_type="
                                      f"{self.pos_emb_type!r}`) are not supported by ntkit; use 'NONE'.")
        check_axis_argument(self.batch_axis, "batch_axis", "GlobalSelfAttention")
        check_axis_argument(self.channel_axis, "channel_axis", "GlobalSelfAttention")
        mechanism = str(self.attention_mechanism).upper()
        if mechanism not in _MECHANISMS:
            raise ValueError(f"`attention_mechanism` must be one of {_MECHANISMS}, got {self.attention_mechanism!r}.")
        object.__setattr__(self, "attention_mechanism", mechanism)

    def init(self, key, input_shape):
        input_shape = tuple(input_shape)
        check_layout(self.batch_axis, self.channel_axis, len(input_shape), "GlobalSelfAttention")
        if len(input_shape) < 3:
            raise ValueError(f"GlobalSelfAttention needs inputs (N, *spatial, C), got shape {input_shape}.")
        c = input_shape[-1]
        # neural-tangents' keys, order and shapes: `(W_q, W_k, W_v, W_o, b, pos_emb)` from `split(key, 6)`, heads
        # first; ntkit's queries are never tied to the keys, so `W_q` is drawn for `linear_scaling=True` too (where
        # neural-tangents has `None`), and `pos_emb` is `None` (no positional embeddings)
        k_q, k_k, k_v, k_o, k_b, _ = jax.random.split(key, 6)
        h, nk, nv = self.n_heads, self.n_chan_key, self.n_chan_val
        params = (jax.random.normal(k_q, (h, c, nk)), jax.random.normal(k_k, (h, c, nk)),
                  jax.random.normal(k_v, (h, c, nv)), jax.random.normal(k_o, (nv * h, self.n_chan_out)),
                  None if self.b_std is None else jax.random.normal(k_b, (1,) * (len(input_shape) - 1)
                                                                     + (self.n_chan_out,)),
                  None)
        return input_shape[:-1] + (self.n_chan_out,), params

    def apply(self, params, x, mask=None, **kwargs):
        wq, wk, wv, wo, b, _ = params
        shape = x.shape
        c = shape[-1]
        x = jnp.reshape(x, (shape[0], -1, c))
        q = self.W_query_std / math.sqrt(c) * jnp.einsum("npc,hck->nhpk", x, wq)
        k = self.W_key_std / math.sqrt(c) * jnp.einsum("npc,hck->nhpk", x, wk)
        v = self.W_value_std / math.sqrt(c) * jnp.einsum("npc,hck->nhpk", x, wv)
        scale = self.n_chan_key if self.linear_scaling else math.sqrt(self.n_chan_key)
        logits = jnp.einsum("nhpk,nhqk->nhpq", q, k) / scale
        attn = _attend(logits, mask, self.attention_mechanism == "SOFTMAX")
        # heads concatenated as neural-tangents does: value channel major, head minor (row `v·H + h` of `W_o`)
        heads = jnp.einsum("nhpq,nhqv->npvh", attn, v).reshape(shape[0], x.shape[1], -1)
        out = self.W_out_std / math.sqrt(heads.shape[-1]) * heads @ wo
        if b is not None:
            out = out + self.b_std * b.reshape(1, 1, -1)
        return jnp.reshape(out, shape[:-1] + (self.n_chan_out,))

    def transform(self, k, **kwargs):
        k = check_state(k, "GlobalSelfAttention")
        check_layout(self.batch_axis, self.channel_axis, len(k.shape1), "GlobalSelfAttention")
        if not self.linear_scaling and self.attention_mechanism == "SOFTMAX":
            raise NotImplementedError("GlobalSelfAttention with softmax and `linear_scaling=False` has Gaussian "
                                      "attention logits at infinite width and no closed-form kernel; use "
                                      "`linear_scaling=True` or `attention_mechanism='IDENTITY'`.")
        if k.n_spatial == 0:
            raise ValueError(f"GlobalSelfAttention needs inputs with spatial axes, got shape {k.shape1}.")
        if k.diagonal_spatial:
            raise ValueError("GlobalSelfAttention needs full spatial covariances; the kernel carries only the "
                             "diagonal.")
        n = k.n_spatial
        value = self.W_out_std ** 2 * self.W_value_std ** 2
        bias = 0.0 if self.b_std is None else self.b_std ** 2

        def mean(a, nb, which="nngp"):
            """Mean over all position pairs (with masks, over pairs of unmasked keys), kept as size-1 axes to
            broadcast back to every pair."""
            return masked_mean(k, a, which, tuple(range(nb, nb + 2 * n)), keepdims=True)

        k = drop_diagonal_covariances(k)
        shapes = dict(shape1=k.shape1[:-1] + (self.n_chan_out,), shape2=k.shape2[:-1] + (self.n_chan_out,),
                      is_gaussian=True, is_input=False)
        if self.linear_scaling and self.attention_mechanism == "IDENTITY":
            def constant(a):
                return jnp.full_like(a, bias)

            return k.replace(nngp=constant(k.nngp), ntk=None if k.ntk is None else constant(k.ntk),
                             cov1=None if k.cov1 is None else constant(k.cov1),
                             cov2=None if k.cov2 is None else constant(k.cov2), **shapes)
        if self.linear_scaling:  # softmax of vanishing logits: the uniform average
            def uniform(a, nb, which="nngp"):
                return jnp.broadcast_to(value * mean(a, nb, which) + bias, a.shape)

            nngp = uniform(k.nngp, 2)
            ntk = None if k.ntk is None else nngp + value * jnp.broadcast_to(mean(k.nngp + k.ntk, 2), k.ntk.shape)
            return k.replace(nngp=nngp, ntk=ntk, cov1=None if k.cov1 is None else uniform(k.cov1, 1, "cov1"),
                             cov2=None if k.cov2 is None else uniform(k.cov2, 1, "cov2"), **shapes)
        scale = value * self.W_query_std ** 2 * self.W_key_std ** 2

        def identity(a, nb, which="nngp"):
            return scale * a * mean(a * a, nb, which) + bias

        nngp = identity(k.nngp, 2)
        ntk = None
        if k.ntk is not None:
            squares, mixed = mean(k.nngp * k.nngp, 2), mean(k.nngp * k.ntk, 2)
            ntk = nngp + scale * (3 * k.nngp * squares + k.ntk * squares + 2 * k.nngp * mixed)
        return k.replace(nngp=nngp, ntk=ntk, cov1=None if k.cov1 is None else identity(k.cov1, 1, "cov1"),
                         cov2=None if k.cov2 is None else identity(k.cov2, 1, "cov2"), **shapes)

    def needs_full(self, out_full: bool) -> bool:
        return True

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return mixing_cov_needs(out_level)


def _attend(logits: jax.Array, mask: jax.Array | None, softmax: bool) -> jax.Array:
    """Attention weights from logits `(N, H, P, P)`: softmax over keys, or the logits over the number of keys.

    With `mask` (`(N, *S, C')`, `True` at masked entries; a key is masked when all its channels are) masked keys
    get no weight: the softmax runs over unmasked keys and the identity divides by their number.
    """
    if mask is None:
        return jax.nn.softmax(logits, axis=-1) if softmax else logits / logits.shape[-1]
    keys = jnp.all(mask, -1).reshape(mask.shape[0], 1, 1, -1)
    if softmax:
        return jax.nn.softmax(jnp.where(keys, jnp.finfo(logits.dtype).min, logits), axis=-1)
    count = jnp.sum(~keys, -1, keepdims=True).astype(logits.dtype)
    return jnp.where(keys, jnp.zeros((), logits.dtype), logits) / jnp.maximum(count, jnp.ones((), logits.dtype))
