"""NTK-vector products: columns `Θ(x1, x2) e` from a vjp on `x2` then a jvp on `x1`; no Jacobian is stored."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._layout import KernelLayout
from ._model import Model


def ntk_vp(model: Model, x1, x2, params, kwargs, cotangent):
    """`Θ(x1, x2) v` for a cotangent `v` shaped like `f(params, x2)`: one vjp and one jvp."""
    _, vjp_fn = jax.vjp(lambda p: model.batch(p, x2, kwargs), params)
    (tangent,) = vjp_fn(cotangent)
    return jax.jvp(lambda p: model.batch(p, x1, kwargs), (params,), (tangent,))[1]


def ntvp_kernel(model: Model, layout: KernelLayout, x1, x2, params, kwargs):
    """The full kernel, one `x2` example's output basis at a time (memory `O · P`, not `N · O · P`)."""
    x2 = x1 if x2 is None else x2
    out_shape = layout.out_shape
    n_out = math.prod(out_shape)
    dtype = jax.eval_shape(lambda: model.batch(params, x2[:1], kwargs)).dtype
    basis = jnp.eye(n_out, dtype=dtype).reshape((n_out,) + out_shape)

    def columns_for_example(x2_i, index):
        if model.per_example:
            _, vjp_fn = jax.vjp(lambda p: model.single(p, x2_i, kwargs), params)
        else:
            _, vjp_fn = jax.vjp(lambda p: model.batch(p, x2, kwargs), params)

        def column(e):
            if not model.per_example:
                e = jnp.zeros((x2.shape[0],) + out_shape, dtype).at[index].set(e)
            (tangent,) = vjp_fn(e)
            return jax.jvp(lambda p: model.outputs(p, x1, kwargs), (params,), (tangent,))[1]

        return jax.vmap(column)(basis)  # (O', N1, O...)

    cols = jax.lax.map(lambda args: columns_for_example(*args), (x2, jnp.arange(x2.shape[0])))
    # cols: (N2, O'..., N1, O...) -> (N1, O..., N2, O'...)
    d = len(out_shape)
    cols = cols.reshape((x2.shape[0],) + out_shape + (x1.shape[0],) + out_shape)
    perm = tuple(range(d + 1, 2 * d + 2)) + tuple(range(d + 1))
    full = jnp.transpose(cols, perm)
    return jnp.einsum(f"{layout.side1}{layout.side2}->{layout.out}", full)
