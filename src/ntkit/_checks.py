"""Input validation shared by the public functions: clear errors that name the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_array(x, name: str, min_ndim: int = 1):
    """Returns `x` as a JAX array after checking it is a finite floating/integer array of `min_ndim`+ axes."""
    if x is None:
        raise TypeError(f"`{name}` must be an array, got None.")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = jnp.asarray(x)
        except TypeError as err:
            raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.") from err
    if x.ndim < min_ndim:
        raise ValueError(f"`{name}` must have at least {min_ndim} axis (batch first), got shape {x.shape}.")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    check_finite(x, name)
    return x


def check_finite(tree, name: str) -> None:
    """Raises `ValueError` if any concrete floating leaf of `tree` holds NaN or Inf."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not _is_concrete(leaf) or not hasattr(leaf, "dtype"):
            continue
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(np.all(np.isfinite(np.asarray(leaf)))):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"`{name}{where}` contains NaN or Inf.")


def check_params(params, name: str = "params") -> None:
    """Every leaf must be a floating array: the NTK differentiates with respect to all of them."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError(f"`{name}` has no array leaves; the NTK needs parameters to differentiate.")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            where = jax.tree_util.keystr(path)
            raise TypeError(
                f"`{name}{where}` must be a floating-point array, got {type(leaf).__name__}"
                f"{'' if dtype is None else ' of dtype ' + str(dtype)}. Pass only trainable arrays "
                "(for Equinox: `params, static = eqx.partition(model, eqx.is_inexact_array)`)."
            )
    check_finite(params, name)


def check_same_features(x1, x2) -> None:
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"`x1` and `x2` must have the same feature shape; got {x1.shape[1:]} and {x2.shape[1:]} "
            f"(full shapes {x1.shape} and {x2.shape})."
        )
