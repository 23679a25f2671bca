"""Sliding-window sums shared by convolutions and pooling, on activations and on covariances."""

from __future__ import annotations

import jax
import jax.numpy as jnp

PADDINGS = ("VALID", "SAME", "CIRCULAR")


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


def window_sum(x: jax.Array, axes: tuple[int, ...], k: int, s: int, n: int, padding: str) -> jax.Array:
    """`out[o] = Σ_{j<k} x_pad[s·o + j]`, the same offset `j` on every axis in `axes` (all of size `n`).

    With one axis this is a strided box sum (a convolution with a filter of ones); with the two axes `(i, i')` of a
    covariance it is the same-offset sum `Σ_j Σ[i + j, i' + j]` of THEORY.md §2 (q terms per entry, not q²).
    Padding: zeros for 'SAME', wrap-around for 'CIRCULAR', none for 'VALID'.
    """
    lo, hi = pads(n, k, s, padding)
    if lo or hi:
        widths = [(0, 0)] * x.ndim
        for a in axes:
            widths[a] = (lo, hi)
        x = jnp.pad(x, widths, mode="wrap" if padding == "CIRCULAR" else "constant")
    m = (n + lo + hi - k) // s + 1
    total = jnp.zeros((), x.dtype)
    for j in range(k):
        index = [slice(None)] * x.ndim
        for a in axes:
            index[a] = slice(j, j + s * (m - 1) + 1, s)
        part = x[tuple(index)]
        total = total + part
    return total
