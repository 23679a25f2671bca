"""Jacobian contraction: `Θ = J(x1) J(x2)ᵀ` from explicit per-parameter Jacobians."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._layout import KernelLayout
from ._model import Model


def jacobian(model: Model, x, params, kwargs):
    """Per-leaf Jacobians of shape `(N, O_1, ..., O_d, *leaf.shape)`."""
    if model.per_example:
        return jax.vmap(lambda xi: jax.jacrev(model.single)(params, xi, kwargs))(x)
    return jax.jacrev(model.batch)(params, x, kwargs)


def contract_jacobians(layout: KernelLayout, jac1, jac2):
    """Sum over leaves of the layout-aware contraction of two Jacobian pytrees (before trace averaging)."""
    spec = f"{layout.side1}z,{layout.side2}z->{layout.out}"
    n_out = len(layout.out_shape) + 1
    total = None
    for j1, j2 in zip(jax.tree_util.tree_leaves(jac1), jax.tree_util.tree_leaves(jac2), strict=True):
        j1 = j1.reshape(j1.shape[:n_out] + (math.prod(j1.shape[n_out:]),))
        j2 = j2.reshape(j2.shape[:n_out] + (math.prod(j2.shape[n_out:]),))
        term = jnp.einsum(spec, j1, j2)
        total = term if total is None else total + term
    return total


def jacobian_kernel(model: Model, layout: KernelLayout, x1, x2, params, kwargs):
    jac1 = jacobian(model, x1, params, kwargs)
    jac2 = jac1 if x2 is None else jacobian(model, x2, params, kwargs)
    return contract_jacobians(layout, jac1, jac2)
