"""`linearize` and `taylor_expand` against explicit derivatives."""

import jax
import jax.numpy as jnp
import pytest

import ntkit
from tests.models import MODELS
from tests.tolerance import assert_close


def _shifted(params, dtype, size=0.1):
    keys = iter(jax.random.split(jax.random.key(11), len(jax.tree_util.tree_leaves(params))))
    return jax.tree_util.tree_map(lambda p: p + size * jax.random.normal(next(keys), p.shape, dtype), params)


def test_linearize_is_first_order_expansion(dtype):
    f, params, x1, _ = MODELS["mlp"](dtype)
    f_lin = ntkit.linearize(f, params)
    assert_close(f_lin(params, x1), f(params, x1))
    new = _shifted(params, dtype)
    delta = jax.tree_util.tree_map(lambda a, b: a - b, new, params)
    jac = jax.jacobian(f)(params, x1)
    expected = f(params, x1) + sum(
        jnp.tensordot(j, d, axes=d.ndim) for j, d in zip(jax.tree_util.tree_leaves(jac),
                                                        jax.tree_util.tree_leaves(delta), strict=True))
    assert_close(f_lin(new, x1), expected, scale=10)
    # The linearized model's NTK is the model's NTK at `params`, wherever it is evaluated.
    ntk = ntkit.empirical_ntk_fn(f, vmap_axes=0)(x1, None, params)
    ntk_lin = ntkit.empirical_ntk_fn(f_lin, vmap_axes=0, implementation="jacobian")(x1, None, new)
    assert_close(ntk_lin, ntk, scale=10)


def test_taylor_expand_degrees(dtype):
    def quadratic(p, x):
        return (x @ p["a"]) ** 2 + x @ p["b"]

    k = jax.random.split(jax.random.key(0), 4)
    params = {"a": jax.random.normal(k[0], (3, 2), dtype), "b": jax.random.normal(k[1], (3, 2), dtype)}
    x = jax.random.normal(k[2], (5, 3), dtype)
    new = _shifted(params, dtype, 0.5)
    assert_close(ntkit.taylor_expand(quadratic, params, 0)(new, x), quadratic(params, x))
    assert_close(ntkit.taylor_expand(quadratic, params, 1)(new, x), ntkit.linearize(quadratic, params)(new, x))
    # A quadratic in its parameters is its own second-order expansion.
    assert_close(ntkit.taylor_expand(quadratic, params, 2)(new, x), quadratic(new, x), scale=10)
    assert_close(ntkit.taylor_expand(quadratic, params, 3)(new, x), quadratic(new, x), scale=10)
    with pytest.raises(ValueError, match="`degree`"):
        ntkit.taylor_expand(quadratic, params, -1)


def test_pytree_outputs(dtype):
    """Models returning tuples or dicts: a quadratic in its parameters is its own second-order expansion, and
    its linearization is `f(p0) + J Δ` leaf by leaf."""
    def f(p, x):
        z = x @ p
        return z ** 2, {"lin": 3.0 * z}

    k1, k2 = jax.random.split(jax.random.key(3))
    p0, x = jax.random.normal(k1, (3, 2), dtype), jax.random.normal(k2, (4, 3), dtype)
    p = p0 + 0.5
    expanded = ntkit.taylor_expand(f, p0, 2)(p, x)
    assert_close(expanded[0], f(p, x)[0], scale=10)
    assert_close(expanded[1]["lin"], f(p, x)[1]["lin"], scale=10)
    linear = ntkit.linearize(f, p0)(p, x)
    z0, dz = x @ p0, x @ (p - p0)
    assert_close(linear[0], z0 ** 2 + 2 * z0 * dz, scale=10)
    assert_close(linear[1]["lin"], 3.0 * (z0 + dz), scale=10)
