"""Structured derivatives find the dense and convolutional structure they exploit (and only where it holds)."""

import jax
import jax.numpy as jnp
import pytest

from ntkit.empirical._structured import make_plan, trace_program
from tests.models import MODELS


def _kinds(name, dtype):
    f, params, x1, _ = MODELS[name](dtype)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    prog = trace_program(lambda *a: f(jax.tree_util.tree_unflatten(treedef, a[:-1]), a[-1]), *leaves, x1[:1])
    return dict(zip(paths, make_plan(prog, len(leaves)).kinds, strict=True))


@pytest.mark.parametrize("name,expected", [
    ("mlp", {"['w1']": "dot", "['w2']": "dot", "['w3']": "dot", "['b1']": "generic"}),
    ("cnn", {"['k1']": "conv", "['k2']": "conv", "['w']": "dot", "['c1']": "generic"}),
    # w1 is used twice (tied weights): cross terms between its uses need the generic rule.
    ("residual_layernorm", {"['w_in']": "dot", "['w2']": "dot", "['w1']": "generic", "['gamma']": "generic"}),
    ("scan_custom_jvp", {"['u']": "generic", "['w']": "generic", "['v']": "dot"}),
])
def test_plan(dtype, name, expected):
    kinds = _kinds(name, dtype)
    for path, kind in expected.items():
        assert kinds[path] == kind, (path, kinds)


def test_scaled_weight_is_a_view():
    """`(W · c) x` is recognised as a dense use of W, with `c²` in its kernel term."""
    params = {"w": jnp.ones((3, 4))}
    prog = trace_program(lambda w, x: x @ (w * 0.5), params["w"], jnp.ones((1, 3)))
    plan = make_plan(prog, 1)
    assert plan.kinds == ("dot",)
    ((k, (pos,)),) = plan.consumers[0]
    assert plan.views[prog.ops[k].ins[pos]].scale == 0.5


def test_scaled_and_transposed_weight_kernel(dtype):
    """Views (scale, transpose, reshape) of a weight before its product give the right kernel."""
    import ntkit
    from tests.models import brute_force_ntk
    from tests.tolerance import assert_close

    k = jax.random.split(jax.random.key(5), 3)
    params = {"w": jax.random.normal(k[0], (6, 3), dtype), "v": jax.random.normal(k[1], (12,), dtype)}

    def f(p, x):
        h = jnp.tanh(x @ (p["w"].T * 0.5))  # (N, 6)
        return h @ (-p["v"].reshape(6, 2) / 3.0)

    x = jax.random.normal(k[2], (4, 3), dtype)
    ref = jnp.einsum("icjc->ij", brute_force_ntk(f, params, x, x)) / 2
    ntk = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation="structured")(x, None, params)
    assert_close(ntk, ref, scale=10)
