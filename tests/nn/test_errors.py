"""Bad layer options and degenerate inputs: clear errors naming the argument, or the finite network's answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
import ntkit.nn as stax


@pytest.mark.parametrize("make,match", [
    (lambda: stax.Conv(4, (0, 3)), "Conv: `filter_shape`"),
    (lambda: stax.Conv(4, (3, 3), strides=(-1, 1)), "Conv: `strides`"),
    (lambda: stax.Conv(0, (3,)), "Conv: `out_chan`"),
    (lambda: stax.AvgPool((2, 0)), "AvgPool: `window_shape`"),
    (lambda: stax.SumPool((2, 2), strides=(0, 1)), "SumPool: `strides`"),
])
def test_non_positive_sizes_are_errors_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_empty_and_non_finite_inputs_are_errors():
    net = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(1))
    with pytest.raises(ValueError, match="`x1` holds no examples"):
        net.kernel(jnp.ones((0, 3)), None, "ntk")
    with pytest.raises(ValueError, match="`x2` holds no examples"):
        net.kernel(jnp.ones((2, 3)), jnp.ones((0, 3)), "ntk")
    with pytest.raises(ValueError, match="`x1` contains NaN"):
        net.kernel(jnp.array([[1.0, jnp.nan, 0.0]]), None, "ntk")
    f = lambda p, x: x @ p  # noqa: E731
    with pytest.raises(ValueError, match="`x1` holds no examples"):
        ntkit.empirical_ntk_fn(f)(jnp.ones((0, 3)), None, jnp.ones((3, 2)))


def test_layer_norm_of_a_constant_unit_is_zero_like_the_finite_layer(dtype):
    """An all-zero input row without bias has zero variance: the finite LayerNorm outputs 0, so must the kernel."""
    net = stax.serial(stax.Dense(64), stax.LayerNorm(), stax.Dense(1))
    x = jnp.concatenate([jnp.zeros((1, 3), dtype), jnp.ones((2, 3), dtype)])
    k = net.kernel(x, None, ("nngp", "ntk"))
    assert bool(jnp.all(jnp.isfinite(k.nngp))) and bool(jnp.all(jnp.isfinite(k.ntk)))
    np.testing.assert_array_equal(k.nngp[0], 0)
    np.testing.assert_array_equal(k.ntk[0], 0)
    init_fn, apply_fn, _ = net
    _, params = init_fn(jax.random.key(0), x.shape)
    np.testing.assert_array_equal(apply_fn(params, x)[0], 0)
