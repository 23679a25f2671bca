"""Keyword arguments of models and layers: which are traced by `jit`, and per-layer random keys."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """`(dynamic, static)`: array pytrees are traced by `jit`; everything else is static and must be hashable."""
    dynamic: dict[str, Any] = {}
    static: list[tuple[str, Any]] = []
    for key, value in kwargs.items():
        leaves = jax.tree_util.tree_leaves(value)
        if leaves and all(isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves):
            dynamic[key] = value
        else:
            try:
                hash(value)
            except TypeError as err:
                raise TypeError(f"keyword argument `{key}` must be an array pytree or hashable.") from err
            static.append((key, value))
    return dynamic, tuple(sorted(static, key=lambda kv: kv[0]))


def fold_rng(kwargs: dict[str, Any], i: int) -> dict[str, Any]:
    """`kwargs` with `rng` replaced by `fold_in(rng, i)`: independent randomness (dropout masks) for layer or
    sample `i`. Without an `rng`, `kwargs` unchanged."""
    if kwargs.get("rng") is None:
        return kwargs
    return dict(kwargs, rng=jax.random.fold_in(kwargs["rng"], i))
