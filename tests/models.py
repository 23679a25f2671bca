"""Small models shared by the empirical-kernel tests: each returns `(f, params, x1, x2)`."""

import jax
import jax.numpy as jnp


def _normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


def _add(a, b):
    """`a + b` with `b` broadcast explicitly (the suite runs with `jax_numpy_rank_promotion="raise"`)."""
    return a + jnp.broadcast_to(b, a.shape)


def _mul(a, b):
    return a * jnp.broadcast_to(b, a.shape)


def mlp(dtype, n1=4, n2=3):
    k = jax.random.split(jax.random.key(0), 8)

    def f(p, x):
        h = jax.nn.relu(_add(x @ p["w1"] / jnp.sqrt(5.0).astype(dtype), p["b1"]))
        h = jnp.tanh(_add(h @ p["w2"] * 0.25, p["b2"]))
        return _add(h @ p["w3"] * 0.25, p["b3"])

    params = {"w1": _normal(k[0], (5, 16), dtype), "b1": _normal(k[1], (16,), dtype),
              "w2": _normal(k[2], (16, 16), dtype), "b2": _normal(k[3], (16,), dtype),
              "w3": _normal(k[4], (16, 3), dtype), "b3": _normal(k[5], (3,), dtype)}
    return f, params, _normal(k[6], (n1, 5), dtype), _normal(k[7], (n2, 5), dtype)


def cnn(dtype, n1=3, n2=2):
    """Two 3x3 convolutions (SAME, then strided VALID), average pooling and a dense readout."""
    k = jax.random.split(jax.random.key(1), 8)
    dn = ("NHWC", "HWIO", "NHWC")

    def f(p, x):
        y = _add(jax.lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=dn) / 3.0, p["c1"])
        y = jax.nn.relu(y)
        y = jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
        y = jax.lax.conv_general_dilated(y, p["k2"], (2, 2), "VALID", dimension_numbers=dn) / 3.0
        y = jnp.mean(jax.nn.relu(y), axis=(1, 2))
        return y @ p["w"]

    params = {"k1": _normal(k[0], (3, 3, 2, 4), dtype), "c1": _normal(k[1], (4,), dtype),
              "k2": _normal(k[2], (3, 3, 4, 5), dtype), "w": _normal(k[3], (5, 3), dtype)}
    return f, params, _normal(k[4], (n1, 8, 8, 2), dtype), _normal(k[5], (n2, 8, 8, 2), dtype)


def residual_layernorm(dtype, n1=4, n2=3):
    """x -> LayerNorm(x + W2 relu(W1 x)) * gamma + beta -> dense; the same weight used twice (tied)."""
    k = jax.random.split(jax.random.key(2), 8)

    def layer_norm(h, gamma, beta):
        mean = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.var(h, axis=-1, keepdims=True)
        return _add(_mul((h - mean) / jnp.sqrt(var + 1e-5), gamma), beta)

    def f(p, x):
        h = x @ p["w_in"] / 2.0
        h = h + jax.nn.relu(h @ p["w1"] / 4.0) @ p["w2"] / 4.0
        h = layer_norm(h, p["gamma"], p["beta"])
        h = h + jnp.tanh(h @ p["w1"] / 4.0) @ p["w1"].T / 4.0  # tied weights: two uses of w1
        return h @ p["w_out"] / 4.0

    params = {"w_in": _normal(k[0], (4, 16), dtype), "w1": _normal(k[1], (16, 16), dtype),
              "w2": _normal(k[2], (16, 16), dtype), "gamma": 1.0 + 0.1 * _normal(k[3], (16,), dtype),
              "beta": 0.1 * _normal(k[4], (16,), dtype), "w_out": _normal(k[5], (16, 2), dtype)}
    return f, params, _normal(k[6], (n1, 4), dtype), _normal(k[7], (n2, 4), dtype)


def sequence_model(dtype, n1=3, n2=2):
    """Outputs `(N, T, C)`: a dense map applied at every position, for trace and diagonal axes."""
    k = jax.random.split(jax.random.key(3), 4)

    def f(p, x):
        h = jnp.tanh(x @ p["w1"] / 2.0)
        return h @ p["w2"] / 3.0 + jnp.mean(h, axis=1, keepdims=True) @ p["w3"] / 3.0

    params = {"w1": _normal(k[0], (4, 9), dtype), "w2": _normal(k[1], (9, 2), dtype),
              "w3": _normal(k[2], (9, 2), dtype)}
    return f, params, _normal(k[3], (n1, 3, 4), dtype), _normal(jax.random.key(9), (n2, 3, 4), dtype)


def flax_model(dtype, n1=4, n2=3):
    from flax import linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.gelu(nn.Dense(12, dtype=dtype, param_dtype=dtype)(x))
            x = nn.LayerNorm(dtype=dtype, param_dtype=dtype)(x)
            return nn.Dense(3, dtype=dtype, param_dtype=dtype)(x)

    model = MLP()
    x1 = _normal(jax.random.key(4), (n1, 5), dtype)
    x2 = _normal(jax.random.key(5), (n2, 5), dtype)
    with jax.numpy_dtype_promotion("standard"):
        params = model.init(jax.random.key(6), x1)

    def f(p, x):
        # Flax's LayerNorm mixes float32 constants into float64 math; strict promotion is ours, not Flax's.
        with jax.numpy_dtype_promotion("standard"):
            return model.apply(p, x)

    return f, params, x1, x2


def equinox_model(dtype, n1=4, n2=3):
    import equinox as eqx

    net = eqx.nn.MLP(5, 3, width_size=12, depth=2, activation=jax.nn.softplus, key=jax.random.key(7),
                     dtype=dtype)
    params, static = eqx.partition(net, eqx.is_inexact_array)

    def f(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    return f, params, _normal(jax.random.key(8), (n1, 5), dtype), _normal(jax.random.key(9), (n2, 5), dtype)


MODELS = {"mlp": mlp, "cnn": cnn, "residual_layernorm": residual_layernorm, "sequence": sequence_model,
          "flax": flax_model, "equinox": equinox_model}


def brute_force_ntk(f, params, x1, x2):
    """Full `(N1, O..., N2, O'...)` NTK from explicit `jax.jacobian` of the whole batch and `einsum`."""
    j1 = jax.jacobian(f)(params, x1)
    j2 = jax.jacobian(f)(params, x2)
    out_ndim = f(params, x1).ndim
    total = 0.0
    for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2), strict=True):
        a = a.reshape(a.shape[:out_ndim] + (-1,))
        b = b.reshape(b.shape[:out_ndim] + (-1,))
        total = total + jnp.tensordot(a, b, axes=((-1,), (-1,)))
    return total


def scan_custom_jvp(dtype, n1=3, n2=2):
    """Parameters inside `lax.scan` and through a `custom_jvp` activation: no structured rule applies there."""
    k = jax.random.split(jax.random.key(4), 4)

    @jax.custom_jvp
    def softsign(z):
        return z / (1.0 + jnp.abs(z))

    @softsign.defjvp
    def _softsign_jvp(primals, tangents):
        (z,), (dz,) = primals, tangents
        return softsign(z), dz / (1.0 + jnp.abs(z)) ** 2

    def f(p, x):  # x: (N, T, d)
        def step(h, xt):
            h = softsign(h @ p["u"] / 3.0 + xt @ p["w"] / 2.0)
            return h, None

        h0 = jnp.zeros((x.shape[0], p["u"].shape[0]), x.dtype)
        h, _ = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
        return h @ p["v"] / 3.0

    params = {"u": _normal(k[0], (9, 9), dtype), "w": _normal(k[1], (4, 9), dtype), "v": _normal(k[2], (9, 2), dtype)}
    return f, params, _normal(k[3], (n1, 5, 4), dtype), _normal(jax.random.key(10), (n2, 5, 4), dtype)


MODELS["scan_custom_jvp"] = scan_custom_jvp
