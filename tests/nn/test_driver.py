"""The kernel driver: nested `serial`s run as the flat network's steps, with the same kernels and error names."""

import jax
import jax.numpy as jnp
import pytest

import ntkit.nn as stax
from tests.tolerance import assert_close


def _block():
    return stax.serial(stax.Dense(16, W_std=1.4, b_std=0.1), stax.Relu())


def test_nested_serial_runs_the_steps_of_the_flat_network(dtype):
    """`serial(repeat(block, n))` is compiled as the flat network's steps (linear in depth), same kernel."""
    x = jax.random.normal(jax.random.key(0), (5, 4), dtype)
    flat = stax.serial(*[stax.Dense(16, W_std=1.4, b_std=0.1), stax.Relu()] * 6, stax.Dense(1))
    nested = stax.serial(stax.repeat(_block(), 6), stax.Dense(1))
    assert [layers for layers, _ in nested.compiled_steps()] == [layers for layers, _ in flat.compiled_steps()]
    assert [paths for _, paths in nested.compiled_steps()][:2] == [((0, 0, 0), (0, 0, 1)), ((0, 1, 0), (0, 1, 1))]
    assert_close(nested.kernel(x, None, "ntk"), flat.kernel(x, None, "ntk"), scale=10)


def test_errors_name_the_nested_layer():
    net = stax.serial(stax.Dense(4), stax.serial(stax.Relu(), stax.Relu()), stax.Dense(1))
    with pytest.raises(ValueError, match=r"serial: layer 1\.1 \(Elementwise\)"):
        net.kernel(jnp.ones((2, 3)), None, "ntk")
