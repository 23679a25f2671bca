"""Empirical NTK of an Equinox model, checked against a brute-force Jacobian contraction.

The neural-tangents workflow "empirical NTK of any JAX model", for an Equinox module. A module holds its parameters
itself, next to non-array fields (activation functions), so split the trainable arrays off with `eqx.partition` and
rebuild the model inside `f(params, x)` with `eqx.combine`; Equinox layers take one example, so `f` maps over the
batch with `jax.vmap`. The kernel from `nt.empirical_ntk_fn` (every implementation) must equal
`Σ_p ∂f(x1)/∂p ∂f(x2)/∂p`, computed here directly with `jax.jacobian`.

Run: `python examples/equinox_ntk.py` (float64: `JAX_ENABLE_X64=1`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import ntkit as nt


class ConvNet(eqx.Module):
    conv: eqx.nn.Conv2d
    mlp: eqx.nn.MLP

    def __init__(self, key):
        key_conv, key_mlp = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(2, 4, kernel_size=3, stride=2, key=key_conv)  # (2, 7, 7) -> (4, 3, 3)
        self.mlp = eqx.nn.MLP(36, 3, width_size=32, depth=2, activation=jnp.tanh, key=key_mlp)

    def __call__(self, x):  # one example, channels first
        return self.mlp(jax.nn.relu(self.conv(x)).reshape(-1))


key1, key2, key3 = jax.random.split(jax.random.PRNGKey(1), 3)
x1 = jax.random.normal(key1, (6, 2, 7, 7))
x2 = jax.random.normal(key2, (3, 2, 7, 7))
dtype = x1.dtype  # float64 under JAX_ENABLE_X64=1
model = ConvNet(key3)
params, static = eqx.partition(model, eqx.is_inexact_array)
params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)


def apply_fn(params, x):
    return jax.vmap(eqx.combine(params, static))(x)


def brute_force_ntk(x1, x2):
    """`(N1, N2, O, O)`: Σ over every parameter of the outer product of the two Jacobians."""
    jacobian = jax.jit(jax.jacobian(apply_fn))
    j1, j2 = jacobian(params, x1), jacobian(params, x2)  # pytrees of (N, O, *param_shape)

    def contract(a, b):
        return jnp.einsum("iaP,jbP->ijab", a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1))

    return sum(jax.tree_util.tree_leaves(jax.tree_util.tree_map(contract, j1, j2)))


reference = np.asarray(brute_force_ntk(x1, x2), np.float64)
# Rounding bound: each entry sums products of derivatives over all parameters; allow 50 ulps of the largest entry.
eps = float(jnp.finfo(dtype).eps)
atol = 50 * eps * (float(np.max(np.abs(reference))) + 1.0)

for implementation in ("jacobian", "ntvp", "structured"):
    ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation))
    full = np.asarray(ntk_fn(x1, x2, params), np.float64)
    err = float(np.max(np.abs(full - reference)))
    print(f"{implementation:10s} (6, 3, 3, 3) kernel: max |diff| from brute force = {err:.1e}")
    assert full.shape == (6, 3, 3, 3) and err <= atol, (implementation, full.shape, err, atol)

# The default implementation ("auto", a cost model's choice): only the diagonal over the outputs (diagonal_axes),
# and the traced kernel on x2 = None (x1 with itself).
diag = np.asarray(nt.empirical_ntk_fn(apply_fn, trace_axes=(), diagonal_axes=(-1,), vmap_axes=0)(x1, x2, params))
assert diag.shape == (6, 3, 3) and np.max(np.abs(diag - np.einsum("ijaa->ija", reference))) <= atol
traced = np.asarray(nt.empirical_ntk_fn(apply_fn, vmap_axes=0)(x1, None, params), np.float64)
reference_11 = np.asarray(brute_force_ntk(x1, x1), np.float64)
err = float(np.max(np.abs(traced - np.trace(reference_11, axis1=2, axis2=3) / 3)))
print(f"traced (6, 6) kernel of x1 with itself: max |diff| = {err:.1e}")
assert traced.shape == (6, 6) and err <= atol, (traced.shape, err, atol)
