"""Masked inputs, neural-tangents' `mask_constant`: entries of the inputs equal to it are masked (padding of
variable-length sequences, missing pixels).

A masked entry counts as zero, in the finite network and in its kernel, and the mask travels with the activations:

* a mask has the activations' shape with the channel axis of size `C` (the inputs' entries, `Flatten`'s features)
  or 1 (a whole position): `(N, *S, C)` or `(N, *S, 1)`;
* layers acting on each position keep it (`Dense` and `Conv` first reduce it over channels: a position is masked
  when all its channels are), `Conv`, `AvgPool` and `SumPool` mask an output position when the input position at
  the centre of its window is masked (`AvgPool` still divides by the window size: masked positions count as
  zeros), `GlobalAvgPool` averages over unmasked positions only (its output is masked when every position was),
  `GlobalSelfAttention` attends to unmasked keys only, `Flatten` flattens the mask with the activations;
* after each layer the activations at masked positions are set to zero and so are the kernel's covariances
  involving a masked position (`Σ[i, i'] = 0` when `i` or `i'` is masked);
* any other layer receiving a mask raises a `ValueError` naming it.

So a network of position-wise layers and global average pooling gives on a padded sequence what it gives on the
sequence without its padding (the tests check this), and the kernel is the infinite-width limit of the masked
finite network (checked by Monte Carlo).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._kwargs import fold_rng
from ._state import KernelState, cross_variances, self_variances
from ._windows import out_size, pads


@dataclasses.dataclass(frozen=True)
class MaskedArray:
    """Activations with the mask of their masked entries (what `apply_fn(..., mask_constant=c)` returns).

    Attributes:
      masked_value: the activations, zero at masked entries.
      mask: boolean, `True` where masked, broadcastable to `masked_value` (`(N, *S, 1)` or its full shape).

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.nn as stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(4), stax.Relu())
      >>> _, params = init_fn(jax.random.key(0), (1, 3, 2))
      >>> out = apply_fn(params, jnp.array([[[1.0, 2.0], [0.5, 1.0], [-9.0, -9.0]]]), mask_constant=-9.0)
      >>> out.mask[0, :, 0].tolist(), float(jnp.abs(out.masked_value[0, 2]).sum())
      ([False, False, True], 0.0)
    """

    masked_value: Any
    mask: Any


jax.tree_util.register_dataclass(MaskedArray, data_fields=["masked_value", "mask"], meta_fields=[])


def _zero(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """`x` with zeros where `mask` (broadcast to `x`'s shape) is set."""
    if mask is None:
        return x
    return jnp.where(jnp.broadcast_to(mask, x.shape), jnp.zeros((), x.dtype), x)


def unmask_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` returning arrays with zeros at masked entries wherever it returned a `MaskedArray` (in any pytree).

    For passing masked outputs to functions taking arrays (`ntkit.empirical_kernel_fn`, `monte_carlo_kernel_fn`).
    """
    def unmask(x: Any) -> Any:
        return _zero(x.masked_value, x.mask) if isinstance(x, MaskedArray) else x

    @functools.wraps(fn)
    def unmasked(*args: Any, **kwargs: Any) -> Any:
        return jax.tree_util.tree_map(unmask, fn(*args, **kwargs), is_leaf=lambda x: isinstance(x, MaskedArray))

    return unmasked


def input_mask(x: jax.Array, mask_constant: Any) -> jax.Array:
    """`x == mask_constant` entry by entry (`isnan(x)` for a NaN constant), `(N, *S, C)` booleans."""
    c = jnp.asarray(mask_constant)
    if c.ndim:
        raise ValueError(f"`mask_constant` must be a scalar, got an array of shape {c.shape}.")
    c = c.astype(x.dtype)
    return jnp.where(jnp.isnan(c), jnp.isnan(x), x == c)


def masked_input(x: Any, mask_constant: Any) -> tuple[jax.Array, jax.Array | None]:
    """`(x with masked entries zeroed, mask)` for an array (mask from `mask_constant`) or a `MaskedArray`."""
    if isinstance(x, MaskedArray):
        return _zero(x.masked_value, x.mask), x.mask
    if mask_constant is None:
        return x, None
    mask = input_mask(x, mask_constant)
    return _zero(x, mask), mask


# --- what each layer does with a mask ---------------------------------------------------------------------------

_KINDS = {
    "ntkit.nn._combinators.serial": "serial",
    "ntkit.nn._combinators.Identity": "identity",
    "ntkit.nn._dense.Dense": "channels",
    "ntkit.nn._conv.Conv": "window",
    "ntkit.nn._conv_local.ConvLocal": "window",
    "ntkit.nn._elementwise.Elementwise": "pointwise",
    "ntkit.nn._normalization.LayerNorm": "pointwise",
    "ntkit.nn._pooling.AvgPool": "window",
    "ntkit.nn._pooling.SumPool": "window",
    "ntkit.nn._pooling.GlobalAvgPool": "global",
    "ntkit.nn._pooling.GlobalSumPool": "global",
    "ntkit.nn._pooling.Flatten": "flatten",
    "ntkit.nn._attention.GlobalSelfAttention": "attention",
    "ntkit.nn._custom.FunctionLayer": "custom",
}
"""How each layer class handles masks, by qualified name (the layer modules import this one, not the reverse). Only
the classes named: a subclass may change what its base does with positions (`ConvTranspose` of `Conv`)."""

_REMASK = ("channels", "window", "pointwise", "attention")
"""Kinds after which the kernel's covariances at masked positions are zeroed (the others keep zeros)."""


def _name(layer: Any) -> str:
    name = getattr(layer, "name", None)
    return name if isinstance(name, str) else type(layer).__name__


def _kind(layer: Any) -> str:
    cls = type(layer)
    kind = _KINDS.get(f"{cls.__module__}.{cls.__qualname__}")
    if kind == "custom" and getattr(layer, "mask_rule", None) is None:
        kind = None  # a custom layer takes masks only when declared with `supports_masking`
    if kind is not None:
        return kind
    raise ValueError(f"masking is not supported by {_name(layer)}: `mask_constant` (masked inputs) works through "
                     "serial, Dense, Conv, elementwise nonlinearities, LayerNorm, AvgPool, SumPool, GlobalAvgPool, "
                     "GlobalSumPool, Flatten, GlobalSelfAttention, Identity and layers declared with "
                     "`supports_masking`.")


def has_masks(k: Any) -> bool:
    """Whether a kernel state (or any in a list of them) carries masks."""
    states = k if isinstance(k, list | tuple) else [k]
    return any(isinstance(s, KernelState) and (s.mask1 is not None or s.mask2 is not None) for s in states)


def _positions(mask: jax.Array) -> jax.Array:
    """A per-position mask `(N, *S, 1)`: a position is masked when all its channels are."""
    return jnp.all(mask, -1, keepdims=True)


def _check_positions(mask: jax.Array | None, layer: Any) -> None:
    if mask is not None and mask.shape[-1] != 1:
        raise ValueError(f"masking is not supported by {_name(layer)} for masks that differ between channels (the "
                         "inputs' own masks, or Flatten's): put a Dense or Conv layer before it, which masks a "
                         "position when all its channels are masked.")


def _centres(mask: jax.Array, window: tuple[int, ...], strides: tuple[int, ...], padding: str) -> jax.Array:
    """Output positions of a window layer masked as the input position at the centre of their window."""
    for d, (k, s) in enumerate(zip(window, strides, strict=True)):
        n = mask.shape[1 + d]
        lo, _ = pads(n, k, s, padding)
        m = out_size(n, k, s, padding)
        mask = jnp.take(mask, s * np.arange(m) - lo + (k - 1) // 2, axis=1 + d)
    return mask


def _next_mask(kind: str, layer: Any, mask: jax.Array | None, shape: tuple[int, ...]) -> jax.Array | None:
    """The mask of the layer's output, given its input's mask and shape."""
    if mask is None:
        return None
    if kind in ("identity", "pointwise"):
        return mask
    if kind in ("channels", "attention"):
        return _positions(mask)
    if kind == "window":
        window = tuple(getattr(layer, "filter_shape", None) or layer.window_shape)
        strides = (1,) * len(window) if layer.strides is None else tuple(layer.strides)
        return _centres(_positions(mask), window, strides, str(layer.padding))
    if kind == "global":
        return jnp.all(mask, tuple(range(1, mask.ndim - 1)))
    if kind == "flatten":
        return jnp.reshape(jnp.broadcast_to(mask, shape), (shape[0], -1))
    if kind == "custom":
        return layer.mask_rule(mask, shape)
    raise AssertionError(kind)


def _pair_masks(k: KernelState) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Boolean masks of `nngp`, `cov1`, `cov2`: entry `(i, i')` masked when position `i` or `i'` is."""
    if k.mask1 is None:
        raise ValueError("the kernel state carries no masks.")
    m1 = jnp.all(k.mask1, -1)
    m2 = m1 if k.mask2 is None else jnp.all(k.mask2, -1)
    a, b = cross_variances(m1, m2, k)
    s1, s1p = self_variances(m1, k)
    s2, s2p = self_variances(m2, k)
    return a | b, s1 | s1p, None if k.cov2 is None else s2 | s2p


def remask(k: KernelState) -> KernelState:
    """`k` with zero covariances wherever a masked position is involved (masks reduced over channels)."""
    if k.mask1 is None:
        return k
    m12, m11, m22 = _pair_masks(k)
    return k.replace(nngp=_zero(k.nngp, m12), ntk=None if k.ntk is None else _zero(k.ntk, m12),
                     cov1=None if k.cov1 is None else _zero(k.cov1, m11),
                     cov2=None if k.cov2 is None else _zero(k.cov2, m22))


def masked_mean(k: KernelState, a: jax.Array, which: str, axes: tuple[int, ...], keepdims: bool = False,
                average: bool = True) -> jax.Array:
    """Mean (or sum) of a covariance of `k` over `axes` counting only pairs of unmasked positions; without masks,
    the plain mean. `which` names the array's layout: `"nngp"` (also the NTK), `"cov1"` or `"cov2"`."""
    if k.mask1 is None:
        return jnp.mean(a, axes, keepdims=keepdims) if average else jnp.sum(a, axes, keepdims=keepdims)
    m12, m11, m22 = _pair_masks(k)
    mask = {"nngp": m12, "cov1": m11, "cov2": m22}[which]
    if mask is None:
        raise ValueError(f"the kernel state has no `{which}`.")
    mask = jnp.broadcast_to(mask, a.shape)
    total = jnp.sum(_zero(a, mask), axes, keepdims=keepdims)
    if not average:
        return total
    count = jnp.sum(~mask, axes, keepdims=keepdims).astype(a.dtype)
    return total / jnp.maximum(count, jnp.ones((), a.dtype))


def position_mask(mask: jax.Array | None, layer: Any) -> jax.Array | None:
    """`(N, *S)` booleans of masked positions, for a layer needing whole positions masked."""
    if mask is None:
        return None
    _check_positions(mask, layer)
    return mask[..., 0]


def transform(layer: Any, k: Any, kwargs: dict[str, Any]) -> Any:
    """`layer.transform(k, **kwargs)` for a kernel state carrying masks: the layer's masks rule applied."""
    kind = _kind(layer)
    if not isinstance(k, KernelState):
        raise ValueError(f"masking is not supported by {_name(layer)} on several branches (a list of kernels).")
    if kind == "serial":
        for i, sub in enumerate(layer.layers):
            k = transform(sub, k, fold_rng(kwargs, i))
        return k
    if kind in ("pointwise", "window", "global"):
        _check_positions(k.mask1, layer)
        _check_positions(k.mask2, layer)
    out = layer.transform(k, **kwargs)
    if not isinstance(out, KernelState):
        raise ValueError(f"masking is not supported by {_name(layer)}: it returned several kernels.")
    out = out.replace(mask1=_next_mask(kind, layer, k.mask1, k.shape1),
                      mask2=_next_mask(kind, layer, k.mask2, k.shape2))
    remask_custom = kind == "custom" and getattr(layer, "remask_kernel", False)
    return remask(out) if kind in _REMASK or remask_custom else out


def apply(layer: Any, params: Any, x: Any, mask: jax.Array | None, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The finite layer on `x` (zero at masked entries) with mask `mask`: `(output, its mask)`."""
    if mask is None:
        return layer.apply(params, x, **kwargs), None
    kind = _kind(layer)
    if kind == "serial":
        for i, (sub, p) in enumerate(zip(layer.layers, params, strict=True)):
            x, mask = apply(sub, p, x, mask, fold_rng(kwargs, i))
        return x, mask
    if kind in ("pointwise", "window", "global"):
        _check_positions(mask, layer)
    if kind in ("global", "attention", "custom"):
        out = layer.apply(params, x, mask=mask, **kwargs)
    else:
        out = layer.apply(params, x, **kwargs)
    new = _next_mask(kind, layer, mask, tuple(x.shape))
    return _zero(out, new), new


def apply_fn(layer: Any, params: Any, x: Any, mask_constant: Any, kwargs: dict[str, Any]) -> Any:
    """`apply_fn(params, x, mask_constant=c)`: a `MaskedArray` of the output (a plain output without masks)."""
    if isinstance(x, list | tuple) and not isinstance(x, MaskedArray):
        raise ValueError("masked inputs (`mask_constant`) are supported for networks of one input array.")
    x, mask = masked_input(x, mask_constant)
    out, mask = apply(layer, params, x, mask, kwargs)
    return out if mask is None else MaskedArray(out, mask)
