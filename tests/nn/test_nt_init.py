"""`init_fn` draws the same parameter trees as neural-tangents 0.6.5 for the same key.

The reference here is a re-implementation of neural-tangents' key splitting with plain `jax.random` calls,
written from its source (google/neural-tangents, `neural_tangents/_src/stax/linear.py` and `combinators.py`, which
reuse `jax/example_libraries/stax.py`'s `serial`/`parallel`/`GeneralConv`); each helper cites the part it follows.
neural-tangents ran with `jax_threefry_partitionable=False` (JAX < 0.5), so the tests set it (fixture `nt_era_prng`).
Trees are compared bit for bit, outputs against the layer equations evaluated by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from tests.tolerance import assert_close

normal = jax.random.normal
split = jax.random.split


@pytest.fixture
def nt_era_prng():
    """`jax_threefry_partitionable=False`, the default of the JAX versions neural-tangents 0.6.5 ran on."""
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    yield
    jax.config.update("jax_threefry_partitionable", before)


# --- neural-tangents' init, restated ------------------------------------------------------------------------------


def nt_serial(*inits):
    """`jax/example_libraries/stax.py` `serial.init_fun` (used by NT's `combinators.py` `serial`): for each layer
    `rng, layer_rng = random.split(rng)`; parameters are a *list*."""
    def init(key, shape):
        params = []
        for f in inits:
            key, layer_key = split(key)
            shape, p = f(layer_key, shape)
            params.append(p)
        return shape, params
    return init


def nt_parallel(*inits):
    """`jax/example_libraries/stax.py` `parallel.init_fun`: `rngs = random.split(rng, nlayers)`, layer `i` gets
    `rngs[i]`; NT's `parallel` returns the parameters as a tuple."""
    def init(key, shapes):
        keys = split(key, len(inits))
        outs = [f(keys[i], s) for i, (f, s) in enumerate(zip(inits, shapes, strict=True))]
        return [o[0] for o in outs], tuple(o[1] for o in outs)
    return init


def nt_repeat(init_layer, n):
    """NT `combinators.py` `repeat.init_fn_repeat`: a `lax.scan` whose step does `rng, layer_rng = split(rng)` and
    returns the layer's parameters, stacked along a new leading axis."""
    def init(key, shape):
        out = []
        for _ in range(n):
            key, layer_key = split(key)
            out.append(init_layer(layer_key, shape)[1])
        return shape, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *out)
    return init


def nt_no_params(out_shape=lambda s: s):
    """Parameter-free layers (nonlinearities, `FanOut`, `FanInSum`, `Flatten`, pooling, `LayerNorm`, `Dropout`):
    `()`."""
    return lambda key, shape: (out_shape(shape), ())


def nt_dense(out, b_std=None, W_std=1.0, parameterization="ntk", s=(1, 1)):
    """NT `linear.py` `Dense._init_fn`: `rng1, rng2 = random.split(rng)`, `W = normal(rng1, (in, out))`,
    `b = normal(rng2, b_shape)` with `b_shape = [1] * ndim`, `out` at the channel axis, `None` if `b_std is None`;
    `standard_init_fn`: `out * s[1]` units, `W *= W_std / (in / s[0])**0.5`, `b *= b_std`."""
    def init(key, shape):
        width = out * (s[1] if parameterization == "standard" else 1)
        k_w, k_b = split(key)
        w = normal(k_w, (shape[-1], width))
        b = None if b_std is None else normal(k_b, (1,) * (len(shape) - 1) + (width,))
        if parameterization == "standard":
            w = w * (W_std / (shape[-1] / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return shape[:-1] + (width,), (w, b)
    return init


def nt_conv(out, filter_shape, b_std=None, local=False):
    """NT `linear.py` `_Conv` (NTK parameterization, default channels-last dimension numbers):

    shared weights: `ostax.GeneralConv(W_init=b_init=random.normal)` `init_fun`: `k1, k2 = random.split(rng)`, `W`
    of the `HWIO` kernel shape `(*filter_shape, C, out)`, `b` of shape `[out if c == 'C' else 1 for c in out_spec]`,
    then `b = None` if `b_std is None`. Unshared (`ConvLocal`): `k1, k2 = random.split(rng)`,
    `W = normal(k1, (*S_out, C * q, out))`, `b = normal(k2, (1, *S_out, out))` or `None` (output shapes here are
    VALID with unit strides)."""
    def init(key, shape):
        spatial = tuple(n - k + 1 for n, k in zip(shape[1:-1], filter_shape, strict=True))
        k_w, k_b = split(key)
        if local:
            w = normal(k_w, spatial + (shape[-1] * int(np.prod(filter_shape)), out))
            b = normal(k_b, (1,) + spatial + (out,))
        else:
            w = normal(k_w, tuple(filter_shape) + (shape[-1], out))
            b = normal(k_b, (1,) * (len(shape) - 1) + (out,))
        return (shape[0],) + spatial + (out,), (w, None if b_std is None else b)
    return init


def nt_attention(n_out, n_key, n_val, n_heads, b_std=None, linear_scaling=False):
    """NT `linear.py` `GlobalSelfAttention.init_fn`: `rng_Q, rng_K, rng_V, rng_O, rng_b, rng_pe = random.split(rng,
    6)`; keys and queries `(n_heads, C, n_key)`, values `(n_heads, C, n_val)`, `W_out` `(n_val * n_heads, n_out)`,
    `b` `(1, ..., 1, n_out)` or `None`, `pos_emb` `None` without positional embeddings; parameters
    `(query, key, val, W_out, b, pos_emb)` with `query = None` when `linear_scaling` (tied to the keys)."""
    def init(key, shape):
        k_q, k_k, k_v, k_o, k_b, _ = split(key, 6)
        c = shape[-1]
        query = None if linear_scaling else normal(k_q, (n_heads, c, n_key))
        b = None if b_std is None else normal(k_b, (1,) * (len(shape) - 1) + (n_out,))
        return shape[:-1] + (n_out,), (query, normal(k_k, (n_heads, c, n_key)), normal(k_v, (n_heads, c, n_val)),
                                       normal(k_o, (n_val * n_heads, n_out)), b, None)
    return init


def assert_same_tree(actual, desired):
    """Same structure (lists, tuples, `None`s), shapes, dtypes and bits."""
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(desired)
    for a, d in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(desired), strict=True):
        assert a.shape == d.shape and a.dtype == d.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(d))


# --- tests ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b_std", [None, 0.1])
def test_mlp_784_512_10(nt_era_prng, b_std, dtype):
    """`serial(Dense(512), Relu(), Dense(10))` on 784 inputs: neural-tangents' tree, and outputs equal to
    `relu(x W1 / √784 + σ_b b1) W2 / √512 + σ_b b2` evaluated by hand (the scale computed as NT's `apply_fn` does,
    `W_std / n**0.5`), to the last bit."""
    net = stax.serial(stax.Dense(512, b_std=b_std), stax.Relu(), stax.Dense(10, b_std=b_std))
    reference = nt_serial(nt_dense(512, b_std), nt_no_params(), nt_dense(10, b_std))
    key = jax.random.PRNGKey(0)
    out_shape, params = net.init(key, (-1, 784))
    ref_shape, ref_params = reference(key, (-1, 784))
    assert out_shape == ref_shape == (-1, 10)
    assert isinstance(params, list) and isinstance(params[0], tuple)
    assert_same_tree(params, ref_params)

    x = normal(jax.random.PRNGKey(1), (3, 784), dtype)
    (w1, b1), _, (w2, b2) = ref_params
    h = jnp.maximum(1.0 / 784 ** 0.5 * (x @ w1) + (0 if b1 is None else b_std * b1), 0)
    expected = 1.0 / 512 ** 0.5 * (h @ w2) + (0 if b2 is None else b_std * b2)
    np.testing.assert_array_equal(np.asarray(net.apply(params, x)), np.asarray(expected))


def test_standard_parameterization_dense(nt_era_prng, dtype):
    """Standard parameterization with width scales `s=(2, 3)`: `3·out` units, `W·σ_w/√(n/2)`, `b·σ_b`."""
    layer = stax.Dense(4, W_std=1.3, b_std=0.4, parameterization="standard", s=(2, 3))
    key = jax.random.PRNGKey(3)
    shape, params = layer.init(key, (5, 6))
    ref_shape, ref_params = nt_dense(4, 0.4, 1.3, "standard", (2, 3))(key, (5, 6))
    assert shape == ref_shape == (5, 12)
    assert_same_tree(params, ref_params)
    x = normal(jax.random.PRNGKey(4), (5, 6), dtype)
    assert_close(layer.apply(params, x), x @ ref_params[0] / 2 ** 0.5 + ref_params[1], dtype)


def _conv_by_hand(x, w, pad):
    """`Σ_{j, c} W[j, c, o] x[i + j, c]` with zero padding `pad` per spatial axis (2-D), in float64."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    x = np.pad(x, [(0, 0)] + list(pad) + [(0, 0)])
    kh, kw = w.shape[:2]
    out = np.zeros((x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1, w.shape[-1]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = np.einsum("nabc,abco->no", x[:, i:i + kh, j:j + kw], w)
    return out


def test_conv_net(nt_era_prng, dtype):
    """`Conv(SAME) → Relu → Conv(VALID) → Flatten → Dense`: `HWIO` filters, `(1, 1, 1, out)` biases, NT's keys; the
    output is the convolution sums written out."""
    net = stax.serial(stax.Conv(5, (3, 3), padding="SAME", b_std=0.3), stax.Relu(), stax.Conv(4, (2, 2)),
                      stax.Flatten(), stax.Dense(3, b_std=0.2))
    reference = nt_serial(nt_conv(5, (3, 3), 0.3), nt_no_params(), nt_conv(4, (2, 2)),
                          nt_no_params(lambda s: (s[0], int(np.prod(s[1:])))), nt_dense(3, 0.2))
    key = jax.random.PRNGKey(7)
    x = normal(jax.random.PRNGKey(8), (2, 5, 5, 2), dtype)
    out_shape, params = net.init(key, x.shape)
    ref_shape, ref_params = reference(key, (2, 7, 7, 2))  # SAME keeps 5x5: the reference's VALID counts it as 7x7
    assert out_shape == ref_shape == (2, 3)
    assert params[0][1].shape == (1, 1, 1, 5) and params[0][0].shape == (3, 3, 2, 5)
    assert_same_tree(params, ref_params)

    (w1, b1), _, (w2, _), _, (w3, b3) = [jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
                                          for p in ref_params]
    h = np.maximum(_conv_by_hand(x, w1, [(1, 1), (1, 1)]) / np.sqrt(9 * 2) + 0.3 * b1, 0)
    h = _conv_by_hand(h, w2, [(0, 0), (0, 0)]) / np.sqrt(4 * 5)
    expected = h.reshape(2, -1) @ w3 / np.sqrt(16 * 4) + 0.2 * b3
    assert_close(net.apply(params, x), expected, dtype, scale=10)


def test_conv_local(nt_era_prng, dtype):
    """`ConvLocal`: one filter `(C·q, out)` per output position, bias `(1, *S', out)`; outputs equal
    `jax.lax.conv_general_dilated_local`, the operation neural-tangents applies to that tree."""
    layer = stax.ConvLocal(3, (2,), b_std=0.5)
    key = jax.random.PRNGKey(11)
    x = normal(jax.random.PRNGKey(12), (2, 6, 4), dtype)
    shape, params = layer.init(key, x.shape)
    ref_shape, ref_params = nt_conv(3, (2,), 0.5, local=True)(key, x.shape)
    assert shape == ref_shape == (2, 5, 3)
    assert_same_tree(params, ref_params)
    w, b = ref_params
    expected = jax.lax.conv_general_dilated_local(x, w.astype(dtype), (1,), "VALID", (2,),
                                                  dimension_numbers=("NWC", "WIO", "NWC")) / np.sqrt(8) + 0.5 * b
    assert_close(layer.apply(params, x), expected, dtype)


def test_fan_out_parallel_branches(nt_era_prng, dtype):
    """`FanOut(2) → parallel(Dense, serial(Dense, Relu, Dense)) → FanInSum`: `parallel` splits its key in two,
    `FanOut`/`FanInSum` have `()`; the sum of the branches by hand."""
    net = stax.serial(stax.FanOut(2),
                      stax.parallel(stax.Dense(4, b_std=0.1), stax.serial(stax.Dense(6), stax.Relu(), stax.Dense(4))),
                      stax.FanInSum())
    reference = nt_serial(nt_no_params(lambda s: [s, s]),
                          nt_parallel(nt_dense(4, 0.1), nt_serial(nt_dense(6), nt_no_params(), nt_dense(4))),
                          nt_no_params(lambda s: s[0]))
    key = jax.random.PRNGKey(5)
    _, params = net.init(key, (3, 5))
    _, ref_params = reference(key, (3, 5))
    assert isinstance(params[1], tuple) and isinstance(params[1][1], list)
    assert_same_tree(params, ref_params)

    x = normal(jax.random.PRNGKey(6), (3, 5), dtype)
    _, ((w, b), ((w1, _), _, (w2, _))), _ = ref_params
    expected = (x @ w / 5 ** 0.5 + 0.1 * b) + jnp.maximum(x @ w1 / 5 ** 0.5, 0) @ w2 / 6 ** 0.5
    assert_close(net.apply(params, x), expected, dtype)


def test_repeat_stacks_the_copies(nt_era_prng, dtype):
    """`repeat(block, 3)`: the block's tree with leaves stacked `(3, ...)`, drawn with `serial`'s keys, and the
    network of three copies."""
    block = stax.serial(stax.Dense(4, b_std=0.2), stax.Relu())
    key = jax.random.PRNGKey(9)
    shape, params = stax.repeat(block, 3).init(key, (2, 4))
    _, ref_params = nt_repeat(nt_serial(nt_dense(4, 0.2), nt_no_params()), 3)(key, (2, 4))
    assert shape == (2, 4) and params[0][0].shape == (3, 4, 4) and params[0][1].shape == (3, 1, 4)
    assert_same_tree(params, ref_params)
    _, unrolled = stax.serial(block, block, block).init(key, (2, 4))
    for i in range(3):
        assert_same_tree(jax.tree_util.tree_map(lambda a, i=i: a[i], params), unrolled[i])

    x = normal(jax.random.PRNGKey(10), (2, 4), dtype)
    expected = x
    for i in range(3):
        (w, b), _ = ref_params
        expected = jnp.maximum(expected @ w[i] / 2 + 0.2 * b[i], 0)
    assert_close(stax.repeat(block, 3).apply(params, x), expected, dtype)
    assert_same_tree(stax.repeat(block, 0).init(key, (2, 4))[1], [(jnp.zeros((0, 4, 4)), jnp.zeros((0, 1, 4))), ()])
    with pytest.raises(ValueError, match="keep"):
        stax.repeat(stax.Dense(3), 2).init(key, (2, 4))


def _softmax_attention_by_hand(x, params, b_std, n_key):
    """NT's `GlobalSelfAttention.apply_fn`, all `W_*_std = 1`: per head `G = (X Q_h)(X K_h)ᵀ / (C √n_key)`,
    `softmax(G) X V_h`, heads concatenated value channel major, `· W_out / √(n_val H C) + σ_b b`."""
    x = np.asarray(x, np.float64)
    q, k, v, w_out, b, _ = [None if p is None else np.asarray(p, np.float64) for p in params]
    n_heads, c, n_val = v.shape
    heads = []
    for h in range(n_heads):
        logits = (x @ q[h]) @ np.swapaxes(x @ k[h], -1, -2) / (c * np.sqrt(n_key))
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        heads.append(weights / weights.sum(-1, keepdims=True) @ (x @ v[h]))
    concat = np.stack(heads, -1).reshape(x.shape[:-1] + (n_val * n_heads,))
    return concat @ w_out / np.sqrt(n_val * n_heads * c) + b_std * b


def test_attention(nt_era_prng, dtype):
    """`GlobalSelfAttention(linear_scaling=False)`: neural-tangents' six-entry tree, and its forward pass."""
    layer = stax.GlobalSelfAttention(5, 4, 3, 2, linear_scaling=False, b_std=0.2)
    key = jax.random.PRNGKey(13)
    x = normal(jax.random.PRNGKey(14), (2, 7, 6), dtype)
    shape, params = layer.init(key, x.shape)
    ref_shape, ref_params = nt_attention(5, 4, 3, 2, 0.2)(key, x.shape)
    assert shape == ref_shape == (2, 7, 5)
    assert_same_tree(params, ref_params)
    assert_close(layer.apply(params, x), _softmax_attention_by_hand(x, ref_params, 0.2, 4), dtype, scale=10)

    # In a serial, after a Dense: the layer gets the second key of the split chain.
    net = stax.serial(stax.Dense(6), stax.GlobalSelfAttention(5, 4, 3, 2, linear_scaling=False))
    _, params = net.init(key, (2, 7, 3))
    assert_same_tree(params, nt_serial(nt_dense(6), nt_attention(5, 4, 3, 2))(key, (2, 7, 3))[1])


def test_attention_linear_scaling_draws_untied_queries(nt_era_prng):
    """With `linear_scaling=True` neural-tangents ties queries to keys (`query = None`); ntkit's layer keeps them
    independent and draws them from the key neural-tangents reserves for queries. Everything else is NT's."""
    key = jax.random.PRNGKey(15)
    _, params = stax.GlobalSelfAttention(5, 4, 3, 2, b_std=0.1).init(key, (2, 7, 6))
    _, ref_params = nt_attention(5, 4, 3, 2, 0.1, linear_scaling=True)(key, (2, 7, 6))
    assert ref_params[0] is None
    assert_same_tree(params[1:], ref_params[1:])
    np.testing.assert_array_equal(np.asarray(params[0]), np.asarray(normal(split(key, 6)[0], (2, 6, 4))))


def test_parameter_free_layers_return_empty_tuples():
    key = jax.random.PRNGKey(0)
    for layer, shape in [(stax.Relu(), (2, 3)), (stax.LayerNorm(), (2, 3)), (stax.Dropout(0.5), (2, 3)),
                         (stax.Identity(), (2, 3)), (stax.FanOut(2), (2, 3)), (stax.Flatten(), (2, 3, 4)),
                         (stax.AvgPool((2,)), (2, 4, 3)), (stax.GlobalAvgPool(), (2, 4, 3))]:
        assert layer.init(key, shape)[1] == ()
