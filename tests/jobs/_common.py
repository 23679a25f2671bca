"""Small jobs shared by the tests of `ntkit.jobs`."""

import jax
import numpy as np

import ntkit.nn as stax

ARCH_SOURCE = """import ntkit.nn as stax
net = stax.serial(stax.Dense(64, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5))
"""


def network():
    """The layer `ARCH_SOURCE` defines (the same repr, so the same job identity)."""
    return stax.serial(stax.Dense(64, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5))


def inputs(n, d=5, seed=0, dtype=np.float32):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, d)), dtype)
