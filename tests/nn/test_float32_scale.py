"""Closed-form activations stay within float32 accuracy of the float64 result at any input scale.

At large scales (raw 0–255 pixels, ×3000) `(1 + 2Σ₁₁)(1 + 2Σ₂₂) − 4Σ₁₂²`-type determinants cancel catastrophically
in float32 unless written as `... + Σ₁₁Σ₂₂ sin²θ`; at tiny scales a bias makes every pair nearly parallel, where
`arcsin` near ±1 amplifies the float32 rounding of Σ itself by ~1/√(1 − cos²) (~100 here). The bound, 1e-4
relative to the largest entry (~800 float32 ulp), admits that conditioning and rejects the unstable forms, which
were off by 1e-1 to 1e2 or gave NaN.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax

ACTIVATIONS = {
    "Relu": stax.Relu, "LeakyRelu": lambda: stax.LeakyRelu(0.1), "Abs": stax.Abs, "Erf": stax.Erf,
    "Sigmoid_like": stax.Sigmoid_like, "Gelu": stax.Gelu, "Sin": stax.Sin, "Rbf": stax.Rbf,
    "Gaussian": stax.Gaussian, "Sign": stax.Sign, "RectifiedMonomial": lambda: stax.RectifiedMonomial(2),
    "Polynomial": lambda: stax.Polynomial([0.1, 1.0, 0.5]),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_float32_matches_float64_at_every_scale(name):
    if not jax.config.jax_enable_x64:
        pytest.skip("needs float64 for the reference (runs in the JAX_ENABLE_X64=1 pass)")
    # one nonlinearity: each closed form at the given scale (a second one would compound the conditioning)
    net = stax.serial(stax.Dense(8, b_std=0.1), ACTIVATIONS[name](), stax.Dense(1, b_std=0.1))
    x = np.random.default_rng(0).normal(size=(6, 5))
    for scale in (1e-3, 1.0, 255.0, 3000.0):
        k32 = net.kernel(jnp.asarray(x * scale, jnp.float32), None, ("nngp", "ntk"))
        k64 = net.kernel(jnp.asarray(x * scale, jnp.float64), None, ("nngp", "ntk"))
        for got, want in zip(k32, k64, strict=True):
            assert got.dtype == jnp.float32 and want.dtype == jnp.float64, (name, scale, got.dtype, want.dtype)
            got, want = np.asarray(got, np.float64), np.asarray(want)
            assert np.all(np.isfinite(got)), (name, scale)
            err = np.max(np.abs(got - want)) / np.max(np.abs(want))
            assert err < 1e-4, (name, scale, err)
