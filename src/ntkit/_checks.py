"""Input validation shared by every stage: clear errors that name the argument and say what was expected.

Checks that need values (NaN/Inf, symmetry) run only on concrete arrays: under `jax.jit` or `jax.grad` the values
are tracers and only shapes and dtypes are checked.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    """Whether `x` holds values now (not a tracer under `jit`/`grad`/`vmap`)."""
    return not isinstance(x, jax.core.Tracer)


def check_array(x: Any, name: str, min_ndim: int = 0, dtype: Any = None, floating: bool = False,
                nonempty: bool = False) -> jax.Array:
    """`x` as a JAX array (cast to `dtype` if given) after checking it holds finite real numbers in `min_ndim`+
    axes (floating ones if `floating`; at least one example along the first axis if `nonempty`)."""
    if x is None:
        raise TypeError(f"`{name}` must be an array, got None.")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = jnp.asarray(x)
        except TypeError as err:
            raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.") from err
    if not isinstance(x, jax.Array):
        x = jnp.asarray(x)
    if x.ndim < min_ndim:
        raise ValueError(f"`{name}` must have at least {min_ndim} axes (batch first), got shape {x.shape}.")
    if nonempty and (x.ndim == 0 or x.shape[0] == 0):
        raise ValueError(f"`{name}` holds no examples (shape {x.shape}); pass at least one.")
    if floating and not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be floating, got dtype {x.dtype}.")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    check_finite(x, name)
    return x if dtype is None else x.astype(dtype)


def check_finite(tree: Any, name: str) -> None:
    """Raises `ValueError` if any concrete floating leaf of `tree` holds NaN or Inf."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not is_concrete(leaf) or not hasattr(leaf, "dtype"):
            continue
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(np.all(np.isfinite(np.asarray(leaf)))):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"`{name}{where}` contains NaN or Inf.")


def check_params(params: Any, name: str = "params") -> None:
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


def check_same_features(x1: Any, x2: Any, name1: str = "x1", name2: str = "x2") -> None:
    """Both inputs have the same shape past the batch axis."""
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"`{name1}` and `{name2}` must have the same shape past the batch axis; got {x1.shape[1:]} and "
            f"{x2.shape[1:]} (full shapes {x1.shape} and {x2.shape})."
        )


def check_positive_int(value: Any, name: str) -> int:
    """A positive Python integer."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_batch_size(batch_size: Any) -> int | None:
    """`batch_size`: a positive integer or None (no tiling)."""
    if batch_size is None:
        return None
    if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer or None, got {batch_size!r}.")
    return int(batch_size)


def check_scalar(value: Any, name: str, positive: bool = False) -> Any:
    """A finite, non-negative (or positive) real scalar: a Python float when concrete; a traced scalar (under
    `jit`/`grad`) passes through unchecked."""
    if not is_concrete(value):
        if jnp.ndim(value) != 0:
            raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
        return value
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a real scalar, got {value!r}.") from err
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"`{name}` must be a finite {'positive' if positive else 'non-negative'} number, "
                         f"got {value}.")
    return value
