"""Sliding-window sums shared by convolutions and pooling, on activations and on covariances."""

from __future__ import annotations

import itertools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Padding = Literal["VALID", "SAME", "CIRCULAR"]
PADDINGS: tuple[Padding, ...] = ("VALID", "SAME", "CIRCULAR")
_ONE_PASS_TERMS = 16  # up to this many terms per entry (a 3x3 filter, a 2x2 pooling window on both sides) in one pass


def check_sizes(sizes: tuple, name: str, layer: str) -> None:
    """Window, filter and stride sizes are positive integers."""
    for s in sizes:
        if not isinstance(s, int | np.integer) or isinstance(s, bool) or s < 1:
            raise ValueError(f"{layer}: `{name}` must hold positive integers, got {sizes}.")


def check_padding(padding: str, allowed=PADDINGS) -> None:
    if padding not in allowed:
        raise ValueError(f"`padding` must be one of {allowed}, got {padding!r}.")


def pads(n: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """Low/high padding of an axis of size `n` for a window `k` and stride `s` (XLA's 'SAME' convention)."""
    if padding == "VALID":
        return 0, 0
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def out_size(n: int, k: int, s: int, padding: str, name: str = "window") -> int:
    lo, hi = pads(n, k, s, padding)
    if n + lo + hi < k:
        raise ValueError(f"{name} of size {k} is larger than the input axis of size {n} (padding {padding!r}).")
    return (n + lo + hi - k) // s + 1


def window_sum(x: jax.Array, axes, k, s, n, padding: str) -> jax.Array:
    """`out[o] = Σ_j x_pad[s·o + j]` over a window, the same offset on every axis of a group.

    `axes` is a tuple of axis groups, one per spatial dimension `d`, with window `k[d]`, stride `s[d]` and input
    size `n[d]` (an int group with ints `k`, `s`, `n` is one dimension). With one axis per group this is a strided
    box sum (a convolution with a filter of ones); with the two axes `(i, i')` of a covariance it is the same-offset
    sum `Σ_j Σ[i + j, i' + j]` of docs/theory.md §2: `q = Π k[d]` terms per entry, not `q²`. Up to `_ONE_PASS_TERMS`
    terms, all dimensions are summed in one pass over one padded copy (fewer passes over memory than one per
    dimension); larger windows go one dimension at a time.
    Padding: zeros for 'SAME', wrap-around for 'CIRCULAR', none for 'VALID'.
    """
    if isinstance(axes[0], int):
        axes, k, s, n = (axes,), (k,), (s,), (n,)
    if len(axes) > 1 and math.prod(k) > _ONE_PASS_TERMS:  # many terms per entry: one dimension at a time reads less
        for group, kd, sd, nd in zip(axes, k, s, n, strict=True):
            x = window_sum(x, (group,), (kd,), (sd,), (nd,), padding)
        return x
    widths = [(0, 0)] * x.ndim
    sizes = []
    for group, kd, sd, nd in zip(axes, k, s, n, strict=True):
        lo, hi = pads(nd, kd, sd, padding)
        for a in group:
            widths[a] = (lo, hi)
        sizes.append((nd + lo + hi - kd) // sd + 1)
    if any(w != (0, 0) for w in widths):
        x = jnp.pad(x, widths, mode="wrap" if padding == "CIRCULAR" else "constant")
    total = jnp.zeros((), x.dtype)
    for offsets in itertools.product(*(range(kd) for kd in k)):
        index = [slice(None)] * x.ndim
        for group, j, sd, m in zip(axes, offsets, s, sizes, strict=True):
            for a in group:
                index[a] = slice(j, j + sd * (m - 1) + 1, sd)
        total = total + x[tuple(index)]
    return total
