"""Empirical NTK of a Flax (linen) convolutional network, checked against a brute-force Jacobian contraction.

The neural-tangents workflow "empirical NTK of any JAX model": a Flax module's `apply(variables, x)` already has
the `f(params, x)` signature that `nt.empirical_ntk_fn` and `nt.empirical_kernel_fn` take, and the variables from
`init` are the parameters. Every implementation (Jacobian contraction, NTK-vector products, structured
derivatives) must equal `Σ_p ∂f(x1)/∂p ∂f(x2)/∂p`, computed here directly with `jax.jacobian`.

Run: `python examples/flax_ntk.py` (float64: `JAX_ENABLE_X64=1`).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import ntkit as nt


class CNN(nn.Module):
    param_dtype: Any = jnp.float32  # Flax's default, whatever JAX_ENABLE_X64 says

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), param_dtype=self.param_dtype)(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), param_dtype=self.param_dtype)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.gelu(nn.Dense(16, param_dtype=self.param_dtype)(x))
        return nn.Dense(3, param_dtype=self.param_dtype)(x)


key1, key2, key3 = jax.random.split(jax.random.PRNGKey(0), 3)
x1 = jax.random.normal(key1, (5, 8, 8, 2))
x2 = jax.random.normal(key2, (4, 8, 8, 2))
dtype = x1.dtype  # float64 under JAX_ENABLE_X64=1
model = CNN(param_dtype=dtype)  # so that a float64 run is float64 throughout
params = model.init(key3, x1)


def brute_force_ntk(x1, x2):
    """`(N1, N2, O, O)`: Σ over every parameter of the outer product of the two Jacobians."""
    jacobian = jax.jit(jax.jacobian(model.apply))
    j1 = jacobian(params, x1)  # pytree of (N1, O, *param_shape)
    j2 = jacobian(params, x2)

    def contract(a, b):
        return jnp.einsum("iaP,jbP->ijab", a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1))

    return sum(jax.tree_util.tree_leaves(jax.tree_util.tree_map(contract, j1, j2)))


reference = np.asarray(brute_force_ntk(x1, x2), np.float64)
# Rounding bound: each entry sums |∂f/∂p| products over all parameters; allow 50 ulps of the sum of magnitudes.
eps = float(jnp.finfo(dtype).eps)
magnitude = float(np.max(np.abs(reference))) + 1.0
atol = 50 * eps * magnitude

for implementation in (nt.NtkImplementation.JACOBIAN_CONTRACTION, nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
                       nt.NtkImplementation.STRUCTURED_DERIVATIVES):
    ntk_fn = jax.jit(nt.empirical_ntk_fn(model.apply, trace_axes=(), vmap_axes=0, implementation=implementation))
    full = np.asarray(ntk_fn(x1, x2, params), np.float64)
    err = float(np.max(np.abs(full - reference)))
    print(f"{implementation.name:24s} (5, 4, 3, 3) kernel: max |diff| from brute force = {err:.1e}")
    assert full.shape == (5, 4, 3, 3) and err <= atol, (implementation, full.shape, err, atol)

# The default kernel traces (averages) the output axis, as neural-tangents; `empirical_kernel_fn` gives the NNGP too.
kernel_fn = nt.empirical_kernel_fn(model.apply, vmap_axes=0)
kernel = kernel_fn(x1, x2, ("nngp", "ntk"), params)
ntk, nngp = kernel.ntk, kernel.nngp
f1, f2 = np.asarray(model.apply(params, x1), np.float64), np.asarray(model.apply(params, x2), np.float64)
err_ntk = float(np.max(np.abs(np.asarray(ntk, np.float64) - np.trace(reference, axis1=2, axis2=3) / 3)))
err_nngp = float(np.max(np.abs(np.asarray(nngp, np.float64) - f1 @ f2.T / 3)))
print(f"traced NTK: max |diff| = {err_ntk:.1e}; NNGP (outputs' inner product): max |diff| = {err_nngp:.1e}")
assert err_ntk <= atol and err_nngp <= atol, (err_ntk, err_nngp, atol)
