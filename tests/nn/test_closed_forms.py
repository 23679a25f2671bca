"""Exact checks of Dense/ReLU kernels with biases, in both parameterizations (docs/theory.md §1–2).

No Monte Carlo: the analytic kernels are compared at float tolerance with an independent NumPy float64 recursion,
and with the empirical kernels of finite linear networks whose kernels are deterministic.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
import ntkit.nn as stax
from tests.tolerance import assert_close

D = 5  # input dimension

# (out_dim, W_std, b_std) of up to three hidden Dense layers, each followed by ReLU, then the readout. Widths
# differ so that the standard parameterization's fan-in factor is wrong if taken from the wrong layer; depth 3
# has a layer without bias (`None`: no parameter, no `+1`) and a readout with `b_std=0` (a bias parameter
# initialized to 0: it adds nothing to the NNGP, nor to the NTK in NTK parameterization, but its gradient is 1 in
# the standard one).
HIDDEN = {1: [(7, 1.3, 0.3)],
          2: [(7, 1.3, 0.3), (3, 0.8, 0.5)],
          3: [(7, 1.3, 0.3), (3, 0.8, None), (4, 1.6, 0.4)]}
READOUT = {1: (2, 1.1, 0.3), 2: (2, 1.7, 0.2), 3: (2, 1.1, 0.0)}


def _network(depth, parameterization):
    layers = []
    for out_dim, w_std, b_std in HIDDEN[depth]:
        layers += [stax.Dense(out_dim, W_std=w_std, b_std=b_std, parameterization=parameterization), stax.Relu()]
    out_dim, w_std, b_std = READOUT[depth]
    return stax.serial(*layers, stax.Dense(out_dim, W_std=w_std, b_std=b_std, parameterization=parameterization))


def _relu(cov, var):
    """Arc-cosine kernel (Cho & Saul 2009) of a Gaussian with covariance `cov` and variances `var`:
    `E[φφ] = √(Σ₁₁Σ₂₂)(sin θ + (π − θ) cos θ)/(2π)`, `E[φ'φ'] = (π − θ)/(2π)`."""
    norm = np.sqrt(var[:, None] * var[None, :])
    cos = np.clip(cov / norm, -1.0, 1.0)
    theta = np.arccos(cos)
    return norm * (np.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi), (math.pi - theta) / (2 * math.pi)


def _reference(x, depth, parameterization):
    """NNGP and NTK of `_network(depth, parameterization)` on all pairs of rows of `x`, in NumPy float64.

    One Gram matrix over all inputs, so every variance is the exact diagonal of the covariance it goes with (each
    input's correlation with itself is exactly 1, as it is in the library).

    Dense layer with fan-in `n` on input kernels `(Σ, Θ)`, both parameterizations: `Σ' = σ_w² Σ + σ_b²`.
    NTK parameterization, `z = σ_w/√n W x + σ_b b`: `Θ' = Σ' + σ_w² Θ`.
    Standard parameterization, `z = W x + b` with `W ~ N(0, σ_w²/n)`, `b ~ N(0, σ_b²)` the trained parameters:
    from `Θ = Σ_p ∂z/∂p ∂z'/∂p`, `∂z_k/∂W_ik = x_i` gives `x·x' = n Σ` (Σ is per unit), `∂z_k/∂b_k = 1` gives `1`
    (whatever `σ_b`, if there is a `b`), and the earlier parameters reach `z_k` through `Σ_i W_ik x_i`, giving
    `Σ_i W_ik² ∂x_i·∂x_i' → σ_w² Θ`: `Θ' = n Σ + 1 + σ_w² Θ`.
    """
    x = np.asarray(x, np.float64)
    nngp, ntk = x @ x.T / x.shape[1], np.zeros((len(x), len(x)))
    fan_in = x.shape[1]
    for i, (out_dim, w_std, b_std) in enumerate(HIDDEN[depth] + [READOUT[depth]]):
        if i > 0:
            nngp, d_nngp = _relu(nngp, np.diagonal(nngp).copy())
            ntk = ntk * d_nngp
        bias_var = 0.0 if b_std is None else b_std ** 2
        new_nngp = w_std ** 2 * nngp + bias_var
        if parameterization == "ntk":
            ntk = new_nngp + w_std ** 2 * ntk
        else:
            ntk = fan_in * nngp + (0.0 if b_std is None else 1.0) + w_std ** 2 * ntk
        nngp, fan_in = new_nngp, out_dim
    return nngp, ntk


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_relu_mlp_with_biases_matches_numpy_recursion(depth, parameterization, dtype):
    """`kernel_fn` of ReLU MLPs with biases equals `_reference` for `x2=None` and for a separate `x2` (the joint
    reference's off-diagonal block), at float tolerance."""
    x1 = jax.random.normal(jax.random.key(0), (4, D), dtype)
    x2 = jax.random.normal(jax.random.key(1), (3, D), dtype) * 1.5
    nngp, ntk = _reference(np.concatenate([x1, x2]), depth, parameterization)
    kernel_fn = _network(depth, parameterization).kernel
    same, cross = kernel_fn(x1, None, ("nngp", "ntk")), kernel_fn(x1, x2, ("nngp", "ntk"))
    # Measured: within 5e-7 (float32) and 1e-14 (float64) relative, or 4e-8 absolute where an NTK entry is ~0.
    assert_close(same.nngp, nngp[:4, :4], dtype)
    assert_close(same.ntk, ntk[:4, :4], dtype)
    assert_close(cross.nngp, nngp[:4, 4:], dtype)
    assert_close(cross.ntk, ntk[:4, 4:], dtype)
    assert same.ntk.dtype == cross.ntk.dtype == dtype


def _orthogonal_rows(seed, rows, cols, dtype):
    """`√cols ·` a `(rows, cols)` matrix with orthonormal rows: `M Mᵀ = cols · I` exactly (needs `cols ≥ rows`)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((cols, rows)))
    return jnp.asarray(math.sqrt(cols) * q.T, dtype)


def _moment_exact_params(layers, d, dtype):
    """Weights of a chain of Dense layers whose second moments equal their expectations exactly.

    For Dense `n → o` with a bias, `M = [W; bᵀ]` (stored weights, before the parameterization's scale) gets
    orthogonal rows of squared norm `o`: `W Wᵀ = o I`, `W b = 0`, `‖b‖² = o`, i.e. what `W, b ~ N(0, 1)` give on
    average. In the standard parameterization the rows are then scaled by the init's `σ_w/√n` and `σ_b`.
    """
    params, n = [], d
    for i, layer in enumerate(layers):
        has_bias = layer.b_std is not None
        m = _orthogonal_rows(10 + i, n + has_bias, layer.out_dim, dtype)
        w, b = m[:n], (m[n:n + 1] if has_bias else None)  # the bias as init's: `(1, out)`
        if layer.parameterization == "standard":
            w = w * (layer.W_std / math.sqrt(n))
            b = None if b is None else b * layer.b_std
        params.append((w, b))
        n = layer.out_dim
    return params  # a list, as `serial`'s init


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_single_dense_layer_empirical_ntk_is_analytic(parameterization, dtype):
    """`f = s_w x·W + s_b b`: `Θ̂ = s_w² x·x' + s_b²`, the same for every draw of `W, b` (deterministic), which is
    `σ_w² x·x'/d + σ_b²` in NTK parameterization (`s_w = σ_w/√d`, `s_b = σ_b`) and `x·x' + 1` in the standard one
    (`s_w = s_b = 1`), the analytic NTK of both."""
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.7, parameterization=parameterization))
    x1 = jax.random.normal(jax.random.key(0), (4, D), dtype)
    x2 = jax.random.normal(jax.random.key(1), (3, D), dtype)
    ntk_fn = ntkit.empirical_ntk_fn(apply_fn, vmap_axes=0)
    gram = np.asarray(x1, np.float64) @ np.asarray(x2, np.float64).T
    expected = gram * 1.5 ** 2 / D + 0.7 ** 2 if parameterization == "ntk" else gram + 1.0
    assert_close(kernel_fn(x1, x2, "ntk"), expected, dtype)
    for seed in (0, 1):
        _, params = init_fn(jax.random.key(seed), x1.shape)
        assert_close(ntk_fn(x1, x2, params), expected, dtype)
        assert_close(ntk_fn(x1, None, params), kernel_fn(x1, None, "ntk"), dtype)


@pytest.mark.parametrize("readout_b_std", [0.4, 0.0, None])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_linear_network_with_moment_exact_weights_is_analytic(parameterization, readout_b_std, dtype):
    """A linear network's kernels depend on its weights only through their second moments, so a finite network
    whose weights have exactly the expected moments (`_moment_exact_params`) has exactly the analytic kernels.

    `Dense(5) → Dense(7)` on `d = 3`, `z = s_w W x + s_b b`, kernels traced over the 7 outputs. NNGP: the hidden
    layer gives `h·h'/5 = σ₁² x·x'/3 + σ_b₁² = Σ₁` (the cross terms vanish with `W₁ b₁ = 0`), the readout likewise
    `σ₂² Σ₁ + σ_b₂²`. NTK: the readout's own gradients give `s₂² h·h' + s_b₂²`, i.e. `σ₂² Σ₁ + σ_b₂²` (NTK
    parameterization) or `5 Σ₁ + 1` (standard); the hidden layer's reach the output through `W₂`, giving
    `s₂² ‖W₂‖²/7 · Θ₁` with `Θ₁` the hidden layer's own (deterministic) NTK and `s₂² ‖W₂‖² = (σ₂²/5)(5·7)` or
    `1 · 7σ₂²`: `σ₂² Θ₁` either way. That is the recursion of docs/theory.md §2, term by term, at width 5.
    """
    layers = (stax.Dense(5, W_std=1.5, b_std=0.7, parameterization=parameterization),
              stax.Dense(7, W_std=0.9, b_std=readout_b_std, parameterization=parameterization))
    init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    x1 = jax.random.normal(jax.random.key(0), (4, 3), dtype)
    x2 = jax.random.normal(jax.random.key(1), (2, 3), dtype)
    _, random_params = init_fn(jax.random.key(0), x1.shape)
    params = _moment_exact_params(layers, 3, dtype)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(random_params)
    assert [p.shape for p in jax.tree_util.tree_leaves(params)] == [
        p.shape for p in jax.tree_util.tree_leaves(random_params)]
    empirical = ntkit.empirical_kernel_fn(apply_fn, vmap_axes=0)
    for other in (None, x2):
        analytic = kernel_fn(x1, other, ("nngp", "ntk"))
        finite = empirical(x1, other, ("nngp", "ntk"), params)
        assert_close(finite.nngp, analytic.nngp, dtype)
        assert_close(finite.ntk, analytic.ntk, dtype)
    # A random draw of the same network is not exact (so the match above is not a coincidence of the inputs).
    finite = empirical(x1, x2, "ntk", random_params)
    assert float(np.max(np.abs(finite - kernel_fn(x1, x2, "ntk")))) > 1e-2


def test_standard_parameterization_computes_the_same_function_at_initialization(dtype):
    """The init draws the same normal samples in both parameterizations and scales them by `σ_w/√n`, `σ_b` in the
    weights (standard) or in the forward pass (NTK): with one key the two networks are the same function, only their
    gradients differ. This pins the standard init's scales, which the moment-exact weights above bypass."""
    x = jax.random.normal(jax.random.key(0), (4, D), dtype)
    outputs = []
    for parameterization in ("ntk", "standard"):
        init_fn, apply_fn, _ = _network(3, parameterization)
        _, params = init_fn(jax.random.key(3), x.shape)
        outputs.append(apply_fn(params, x))
    assert outputs[0].shape == (4, 2)
    assert_close(outputs[1], outputs[0], dtype)
