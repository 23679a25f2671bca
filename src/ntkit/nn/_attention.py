"""Global self-attention over all spatial positions, where an infinite-width closed form exists."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ._core import Layer
from ._dense import check_state


@dataclasses.dataclass(frozen=True)
class GlobalSelfAttention(Layer):
    """Multi-head softmax self-attention over all positions of `(N, *S, C)` inputs (NTK parameterization).

    Finite layer, per head `h`: `Q = σ_q X W_q/√C`, `K = σ_k X W_k/√C`, `V = σ_v X W_v/√C`,
    `A = softmax(Q Kᵀ / n_k)` over key positions (`linear_scaling=True`), `out = σ_o [A V]_h W_o/√(H n_v) + σ_b b`.

    Kernel: with the `1/n_k` logit scaling and independent `W_q`, `W_k` the logits `Q Kᵀ/n_k` tend to 0 at infinite
    width, so attention becomes the uniform average over positions (Hron et al. 2020) and
    `Σ'[i, i'] = σ_o²σ_v² mean_{j, j'} Σ[j, j'] + σ_b²`, `Θ'[i, i'] = Σ' + σ_o²σ_v² mean_{j, j'} (Σ + Θ)[j, j']`
    (query and key gradients vanish in the limit). With `1/√n_k` scaling (`linear_scaling=False`) the logits stay
    Gaussian and the softmax expectation has no closed form: the kernel raises `NotImplementedError`.
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

    def init(self, key, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(f"GlobalSelfAttention needs inputs (N, *spatial, C), got shape {input_shape}.")
        c = input_shape[-1]
        ks = jax.random.split(key, 5)
        h, nk, nv = self.n_heads, self.n_chan_key, self.n_chan_val
        params = (jax.random.normal(ks[0], (c, h, nk)), jax.random.normal(ks[1], (c, h, nk)),
                  jax.random.normal(ks[2], (c, h, nv)), jax.random.normal(ks[3], (h * nv, self.n_chan_out)),
                  None if self.b_std is None else jax.random.normal(ks[4], (self.n_chan_out,)))
        return input_shape[:-1] + (self.n_chan_out,), params

    def apply(self, params, x, **kwargs):
        wq, wk, wv, wo, b = params
        shape = x.shape
        c = shape[-1]
        x = jnp.reshape(x, (shape[0], -1, c))
        q = self.W_query_std / math.sqrt(c) * jnp.einsum("npc,chk->nhpk", x, wq)
        k = self.W_key_std / math.sqrt(c) * jnp.einsum("npc,chk->nhpk", x, wk)
        v = self.W_value_std / math.sqrt(c) * jnp.einsum("npc,chk->nhpk", x, wv)
        scale = self.n_chan_key if self.linear_scaling else math.sqrt(self.n_chan_key)
        attn = jax.nn.softmax(jnp.einsum("nhpk,nhqk->nhpq", q, k) / scale, axis=-1)
        heads = jnp.einsum("nhpq,nhqv->nphv", attn, v).reshape(shape[0], x.shape[1], -1)
        out = self.W_out_std / math.sqrt(heads.shape[-1]) * heads @ wo
        if b is not None:
            out = out + self.b_std * b
        return jnp.reshape(out, shape[:-1] + (self.n_chan_out,))

    def transform(self, k, **kwargs):
        k = check_state(k, "GlobalSelfAttention")
        if not self.linear_scaling:
            raise NotImplementedError("GlobalSelfAttention with `linear_scaling=False` has Gaussian attention logits "
                                      "at infinite width and no closed-form kernel; use `linear_scaling=True`.")
        if k.n_spatial == 0:
            raise ValueError(f"GlobalSelfAttention needs inputs with spatial axes, got shape {k.shape1}.")
        if k.diagonal_spatial:
            raise ValueError("GlobalSelfAttention needs full spatial covariances; the kernel carries only the "
                             "diagonal.")
        n = k.n_spatial
        scale = self.W_out_std ** 2 * self.W_value_std ** 2
        bias = 0.0 if self.b_std is None else self.b_std ** 2

        def spread(a, nb):
            """Mean over all position pairs, broadcast back to every pair."""
            axes = tuple(range(nb, nb + 2 * n))
            return jnp.broadcast_to(jnp.mean(a, axes, keepdims=True), a.shape)

        mean = k.map(spread)
        nngp = scale * mean.nngp + bias
        ntk = None if k.ntk is None else nngp + scale * (mean.nngp + mean.ntk)
        return k.replace(nngp=nngp, ntk=ntk, cov1=scale * mean.cov1 + bias,
                         cov2=None if k.cov2 is None else scale * mean.cov2 + bias,
                         shape1=k.shape1[:-1] + (self.n_chan_out,), shape2=k.shape2[:-1] + (self.n_chan_out,),
                         is_gaussian=True, is_input=False)

    def needs_full(self, out_full: bool) -> bool:
        return True
