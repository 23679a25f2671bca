"""neural-tangents' idiom `jax.jit(kernel_fn, static_argnames="get")`, and `vmap`, over the layer-by-layer driver.

Under an outer `jit` the driver fences each compiled step in a `lax.cond` and scans runs of identical steps; the
results must equal the plain call's (which the closed-form and Monte Carlo tests check against independent
references), and the traced program must grow with the number of distinct steps, not with depth.
"""

import jax
import jax.numpy as jnp
import pytest

import ntkit.nn as stax
from tests.tolerance import assert_close


def _conv(width=8, shape=(3, 3)):
    return stax.Conv(width, shape, padding="SAME", W_std=1.5, b_std=0.1)


ARCHITECTURES = {
    "nested_serial_repeat": lambda: stax.serial(
        stax.Dense(8, W_std=1.5, b_std=0.1), stax.serial(stax.Relu(), stax.repeat(stax.serial(
            stax.Dense(8, W_std=1.5, b_std=0.1), stax.Erf()), 3)), stax.Dense(1)),
    "cnn_pooling": lambda: stax.serial(_conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
                                       *[_conv(), stax.Relu()] * 3, stax.GlobalAvgPool(), stax.Dense(1)),
    "residual_attention": lambda: stax.serial(
        _conv(), stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), _conv()), stax.Identity()), stax.FanInSum(),
        stax.Relu(), stax.GlobalSelfAttention(4, 4, 4, 2, linear_scaling=True), stax.Relu(), stax.Flatten(),
        stax.Dense(1)),
}


def _inputs(name, dtype, n, key):
    shape = (n, 5) if name == "nested_serial_repeat" else (n, 4, 4, 2)
    return jax.random.normal(jax.random.key(key), shape, dtype)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_jit_equals_plain(name, dtype):
    net = ARCHITECTURES[name]()
    x, y = _inputs(name, dtype, 3, 0), _inputs(name, dtype, 2, 1)
    jitted = jax.jit(net.kernel, static_argnames="get")
    for x2 in (None, y):
        plain = net.kernel(x, x2, ("nngp", "ntk"))
        got = jitted(x, x2, get=("nngp", "ntk"))
        for g in ("nngp", "ntk"):
            assert getattr(got, g).shape == getattr(plain, g).shape
            assert_close(getattr(got, g), getattr(plain, g), dtype, scale=10, err_msg=f"{name} {g}")


def test_vmap_over_inputs(dtype):
    """One example at a time under `vmap` (and `jit(vmap)`) gives the rows of the batched kernel."""
    net = ARCHITECTURES["cnn_pooling"]()
    xs, y = _inputs("cnn_pooling", dtype, 3, 2), _inputs("cnn_pooling", dtype, 2, 3)
    plain = net.kernel(xs, y, "ntk")
    row = lambda x: net.kernel(x[None], y, "ntk")[0]  # noqa: E731
    assert_close(jax.vmap(row)(xs), plain, dtype, scale=10)
    assert_close(jax.jit(jax.vmap(row))(xs), plain, dtype, scale=10)


def test_grad_under_jit(dtype):
    """Input derivatives through the fenced, scanned steps equal those of the plain call."""
    net = stax.serial(*[stax.Dense(4, b_std=0.2), stax.Relu()] * 3, stax.Dense(1))
    x, y = _inputs("nested_serial_repeat", dtype, 3, 4), _inputs("nested_serial_repeat", dtype, 2, 5)
    loss = lambda a: jnp.sum(net.kernel(a, y, "ntk") ** 2)  # noqa: E731
    assert_close(jax.jit(jax.grad(loss))(x), jax.grad(loss)(x), dtype, scale=100)


def _top_level_eqns(depth):
    net = stax.serial(stax.Dense(4, b_std=0.1), stax.repeat(stax.serial(stax.Relu(), stax.Dense(4, b_std=0.1)),
                                                             depth))
    x = jnp.ones((2, 3), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda a: net.kernel(a, None, "ntk"))(x)
    return len(jaxpr.jaxpr.eqns), sum(e.primitive.name == "scan" for e in jaxpr.jaxpr.eqns)


def test_traced_program_does_not_grow_with_repeat_depth():
    """A `repeat` of depth 100 traces to the same program as one of depth 3 (one `scan`): compile time O(1)."""
    shallow, deep = _top_level_eqns(3), _top_level_eqns(100)
    assert deep == shallow
    assert deep[1] == 1


def test_steps_stay_separate_computations_after_xla():
    """The fences survive XLA's optimization (one conditional per distinct step), so steps are not fused into
    each other; without them XLA inlines every step and the program grows superlinearly with depth."""
    net = stax.serial(_conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2)), _conv(4), stax.Erf(), stax.Flatten(),
                      stax.Dense(1))
    x = jnp.ones((2, 4, 4, 2), jnp.float32)
    steps = len(net.compiled_steps())
    hlo = jax.jit(net.kernel, static_argnames="get").lower(x, None, get="nngp").compile().as_text()
    assert hlo.count("conditional(") >= steps


def test_symmetric_split_under_jit(dtype, monkeypatch):
    """Large `x2=None` calls are computed as two diagonal blocks and one mirrored off-diagonal block, traced too
    (so a jitted call's peak memory stays that of the plain call)."""
    import ntkit.nn._driver as driver

    net = ARCHITECTURES["cnn_pooling"]()
    x = _inputs("cnn_pooling", dtype, 4, 6)
    whole = net.kernel(x, None, ("nngp", "ntk"))

    def conds():
        jaxpr = jax.make_jaxpr(lambda a: net.kernel(a, None, ("nngp", "ntk")))(x)
        return sum(e.primitive.name == "cond" for e in jaxpr.jaxpr.eqns)

    unsplit = conds()
    monkeypatch.setattr(driver, "_SPLIT_BYTES", 0)
    assert conds() == 3 * unsplit  # three blocks, each through every step
    got = jax.jit(net.kernel, static_argnames="get")(x, None, get=("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        assert_close(getattr(got, g), getattr(whole, g), dtype, scale=10)


def test_equal_traced_hyperparameters_keep_their_own_gradients(dtype):
    """Two traced `W_std` of equal value are distinct variables: grouping their steps as "identical" would give
    all the gradient to one of them. Under `vmap` and `jit`, as in plain mode; the reference is central
    differences of the plain call in each variable."""
    x = jax.random.normal(jax.random.key(4), (2, 3), dtype)

    def total(w1, w2, inputs):
        net = stax.serial(stax.Dense(8, W_std=w1), stax.Relu(), stax.Dense(8, W_std=w2), stax.Relu(),
                          stax.Dense(8, W_std=w2), stax.Relu(), stax.Dense(1))
        return net.kernel(inputs, None, "nngp").sum()

    def diagonal(w1, w2, inputs):  # what the vmapped gradients add up: each example's own kernel
        return sum(total(w1, w2, inputs[i:i + 1]) for i in range(len(inputs)))

    one = jnp.asarray(1.0, dtype)
    h = 1e-3
    jitted = jax.jit(jax.grad(total, (0, 1)))(one, one, x)
    mapped = jax.vmap(jax.grad(total, (0, 1)), (None, None, 0))(one, one, x[:, None])
    for got, fn in ((jitted, total), ([g.sum() for g in mapped], diagonal)):
        want = [(fn(one + h, one, x) - fn(one - h, one, x)) / (2 * h),
                (fn(one, one + h, x) - fn(one, one - h, x)) / (2 * h)]
        # a quadratic error h² · (third derivative ~ 1) of the differences, and float32 rounding of them
        assert_close(jnp.stack(got), jnp.stack(want), dtype, scale=50 if dtype == jnp.float32 else 2e3)


def test_array_hyperparameters_under_jit(dtype):
    """neural-tangents' idiom `Dense(8, W_std=jnp.sqrt(2.0))` inside a jitted function."""
    x = jax.random.normal(jax.random.key(5), (3, 4), dtype)

    def kernel(inputs):
        return stax.serial(stax.Dense(8, W_std=jnp.sqrt(2.0)), stax.Relu(), stax.Dense(8, W_std=jnp.sqrt(2.0)),
                           stax.Relu(), stax.Dense(1)).kernel(inputs, None, "ntk")

    assert_close(jax.jit(kernel)(x), kernel(x), dtype)
