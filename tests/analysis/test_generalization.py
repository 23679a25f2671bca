"""`generalization_bound` and `kernel_alignment` against direct NumPy formulas, closed forms and a real data set."""

import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as nn
from ntkit.analysis import generalization_bound, kernel_alignment
from tests.tolerance import cond_rtol


def _spd(n, seed, cond=30.0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.geomspace(cond, 1.0, n)) @ q.T


def test_bound_matches_a_numpy_solve(dtype):
    k = _spd(8, 0)
    y = np.random.default_rng(1).normal(size=8)
    expected = np.sqrt(2 * y @ np.linalg.solve(k, y) / 8)
    value = generalization_bound(jnp.asarray(k, dtype), jnp.asarray(y, dtype))
    assert value == pytest.approx(expected, rel=cond_rtol(dtype, 30.0, 100))
    # Several outputs, traced kernel: root mean square over outputs of the one-output complexity.
    y2 = np.random.default_rng(2).normal(size=(8, 3))
    per = [2 * y2[:, j] @ np.linalg.solve(k, y2[:, j]) / 8 for j in range(3)]
    assert generalization_bound(jnp.asarray(k, dtype), jnp.asarray(y2, dtype)) == pytest.approx(
        np.sqrt(np.mean(per)), rel=cond_rtol(dtype, 30.0, 100))
    # Paired outputs (N, N, 2, 2): the (2N, 2N) matrix, targets flattened example-major.
    big = _spd(8, 3)
    k4 = big.reshape(4, 2, 4, 2).transpose(0, 2, 1, 3)
    y4 = np.random.default_rng(4).normal(size=(4, 2))
    expected = np.sqrt(2 * y4.ravel() @ np.linalg.solve(big, y4.ravel()) / 8)
    assert generalization_bound(jnp.asarray(k4, dtype), jnp.asarray(y4, dtype)) == pytest.approx(
        expected, rel=cond_rtol(dtype, 30.0, 100))
    # A ridge adds δI.
    assert generalization_bound(jnp.asarray(k, dtype), jnp.asarray(y, dtype), ridge=0.5) == pytest.approx(
        np.sqrt(2 * y @ np.linalg.solve(k + 0.5 * np.eye(8), y) / 8), rel=cond_rtol(dtype, 30.0, 100))


def test_bound_separates_true_from_random_labels_on_digits():
    """Arora et al. 2019 §5: true labels of a real data set have a far smaller complexity than random ones.

    Measured (float32 kernel, 200 examples of 3 vs 8): true 7.7, random 33.5-36.5 over 10 label draws.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    keep = (y == 3) | (y == 8)
    x, y = x[keep][:200], np.where(y[keep][:200] == 3, 1.0, -1.0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)  # the theorem's ‖x‖ = 1
    _, _, kernel_fn = nn.serial(nn.Dense(512, W_std=2**0.5, b_std=0.0), nn.Relu(), nn.Dense(1, b_std=0.0))
    k = kernel_fn(jnp.asarray(x, jnp.float32), None, "ntk")
    true = generalization_bound(k, y)
    rng = np.random.default_rng(0)
    random = [generalization_bound(k, rng.choice([-1.0, 1.0], size=y.size)) for _ in range(5)]
    assert true < 0.5 * min(random), (true, random)


def test_bound_rejects_singular_and_indefinite_kernels():
    x = np.random.default_rng(0).normal(size=(5, 3))
    x[4] = x[0]  # a repeated input: the kernel matrix is singular
    k = np.exp(-np.sum((x[:, None] - x[None]) ** 2, -1))
    with pytest.raises(ValueError, match="singular"):
        generalization_bound(jnp.asarray(k), jnp.ones(5))
    assert np.isfinite(generalization_bound(jnp.asarray(k), jnp.ones(5), ridge=1e-3))
    with pytest.raises(ValueError, match="indefinite"):
        generalization_bound(jnp.diag(jnp.array([1.0, -0.5, 2.0])), jnp.ones(3))
    with pytest.raises(ValueError, match="ridge"):
        generalization_bound(jnp.eye(3), jnp.ones(3), ridge=-1.0)


def _centred_alignment(k, y):
    h = np.eye(len(y)) - 1 / len(y)
    kc, yc = h @ k @ h, h @ np.outer(y, y) @ h
    return np.sum(kc * yc) / (np.linalg.norm(kc) * np.linalg.norm(yc))


def test_alignment_matches_the_direct_formula_and_known_cases(dtype):
    rng = np.random.default_rng(0)
    k = _spd(6, 5)
    y = rng.normal(size=(6, 2))
    a = kernel_alignment(jnp.asarray(k, dtype), jnp.asarray(y, dtype))
    expected = [_centred_alignment(k, y[:, j]) for j in range(2)]
    np.testing.assert_allclose(a.per_output, expected, rtol=cond_rtol(dtype, 30.0, 100))
    assert a.mean == pytest.approx(np.mean(expected), rel=cond_rtol(dtype, 30.0, 100))
    # K = yyᵀ gives 1, also after a constant shift (centring); the identity gives 1/√(n − 1).
    v = rng.normal(size=6)
    assert kernel_alignment(jnp.asarray(np.outer(v, v) + 3.0, dtype), jnp.asarray(v, dtype)).mean == pytest.approx(
        1.0, rel=1e-5)
    assert kernel_alignment(jnp.eye(6, dtype=dtype), jnp.asarray(v, dtype)).mean == pytest.approx(
        1 / np.sqrt(5), rel=1e-5)
    # Uncentred (Cristianini et al.): ⟨I, yyᵀ⟩/(‖I‖ ‖yyᵀ‖) = 1/√n.
    assert kernel_alignment(jnp.eye(6, dtype=dtype), jnp.asarray(v, dtype), centered=False).mean == pytest.approx(
        1 / np.sqrt(6), rel=1e-5)


def test_alignment_per_output_follows_the_target_layout(dtype):
    """A kernel `(N, N, 2, 2)` pairing axis 1 of targets `(N, 2, 3)`, traced over axis 2: output `(a, r)` uses the
    diagonal block `k[:, :, a, a]`."""
    rng = np.random.default_rng(1)
    big = _spd(10, 6)
    k4 = big.reshape(5, 2, 5, 2).transpose(0, 2, 1, 3)
    y = rng.normal(size=(5, 2, 3))
    a = kernel_alignment(jnp.asarray(k4, dtype), jnp.asarray(y, dtype), trace_axes=(2,))
    expected = [_centred_alignment(k4[:, :, i, i], y[:, i, r]) for i in range(2) for r in range(3)]
    np.testing.assert_allclose(a.per_output, expected, rtol=cond_rtol(dtype, 30.0, 100))


def test_alignment_rejects_constant_targets():
    with pytest.raises(ValueError, match="constant targets"):
        kernel_alignment(jnp.eye(3), jnp.ones(3))
