"""`learning_curve` against actual kernel regression averaged over random training subsets of a pool (NumPy).

Eigenlearning is asymptotic (many modes, Gaussian-equivalent eigenfunctions, i.i.d. samples): it predicts the
average over training sets, and at moderate `n` is within a few percent of it on a smooth kernel in moderate input
dimension. Here: the one-hidden-layer ReLU NTK (closed form, docs/theory.md §2) on 1000 points of the sphere S⁹,
two smooth targets, `n` = 10-120 examples drawn without replacement (i.i.d. up to a 12% pool fraction), 100
training sets per `n`. Measured (float64): test MSE within 0.5-3.6% (ridge 0), 0.2-0.9% (ridge 1, noise 0.05);
train MSE within 3%. Bound: 10% (asymptotic corrections plus the Monte Carlo error of 100 draws, about 1-2%).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from ntkit.analysis import learning_curve

POOL, DIM, TRIALS = 1000, 10, 100
NS = [10, 30, 60, 120]


def _pool():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(POOL, DIM)) * np.linspace(1.0, 0.5, DIM)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = np.clip(x @ x.T, -1, 1)
    th = np.arccos(c)
    k = c * (np.pi - th) / np.pi + (np.sin(th) + (np.pi - th) * c) / np.pi
    y = np.stack([x[:, 0] + 0.5 * x[:, 1] * x[:, 2], np.sin(3 * x[:, 2])], 1)
    return k, y


def _kernel_regression(k, y, n, ridge, noise, seed):
    """Mean test MSE over the pool (plus the test targets' noise) and train MSE of `K(x, X)(K(X, X) + δI)⁻¹ ỹ`."""
    rng = np.random.default_rng(seed)
    test, train = [], []
    for _ in range(TRIALS):
        idx = rng.choice(len(y), n, replace=False)
        noisy = y[idx] + np.sqrt(noise) * rng.normal(size=(n, y.shape[1]))
        f = k[:, idx] @ np.linalg.solve(k[np.ix_(idx, idx)] + ridge * np.eye(n), noisy)
        test.append(np.mean((f - y) ** 2) + noise)
        train.append(np.mean((f[idx] - noisy) ** 2))
    return np.mean(test), np.mean(train)


@pytest.mark.parametrize(("ridge", "noise"), [(0.0, 0.0), (1.0, 0.05)])
def test_eigenlearning_matches_kernel_regression_on_a_pool(dtype, ridge, noise):
    k, y = _pool()
    lc = learning_curve(jnp.asarray(k, dtype), jnp.asarray(y, dtype), NS, ridge=ridge, noise_var=noise)
    np.testing.assert_array_equal(lc.n, NS)
    for i, n in enumerate(NS):
        test, train = _kernel_regression(k, y, n, ridge, noise, seed=i)
        assert abs(lc.test_mse[i] / test - 1) < 0.1, (n, lc.test_mse[i], test)
        if ridge == 0:
            assert lc.train_mse[i] == 0 and train < 1e-8
        else:
            assert abs(lc.train_mse[i] / train - 1) < 0.1, (n, lc.train_mse[i], train)
    # The test error falls with n, and κ solves n = Σ λ/(λ + κ) + δ/κ.
    assert np.all(np.diff(lc.test_mse) < 0)
    lhs = np.sum(lc.eigenvalues / (lc.eigenvalues + lc.kappa[:, None]), axis=1) + ridge / lc.kappa
    np.testing.assert_allclose(lhs, NS, rtol=1e-9)


def test_target_power_and_learnability_closed_forms(dtype):
    """Eigenvalues and target power from an explicit eigendecomposition; flat spectrum: `κ = (N − n)/n` with
    operator eigenvalues 1, and with ridge `δ`: `n = N/(1 + κ) + δ/κ`."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    lam = np.array([3.0, 2.0, 1.0, 0.5, 0.25, 0.0])  # operator eigenvalues: K = N · Q diag(λ) Qᵀ
    k = 6 * (q * lam) @ q.T
    y = q @ np.array([1.0, 0, 2.0, 0, 0, 1.0]) * np.sqrt(6)  # v = (1, 0, 2, 0, 0, 1)
    lc = learning_curve(jnp.asarray(k, dtype), jnp.asarray(y, dtype), 2, ridge=0.1)
    tol = 1e-5 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(lc.eigenvalues, lam, atol=tol * 20)
    np.testing.assert_allclose(lc.target_power, [1, 0, 4, 0, 0, 1], atol=tol * 100)
    assert lc.learnability[0, -1] == 0  # a zero mode is never learned
    flat = learning_curve(jnp.asarray(6 * np.eye(6), dtype), jnp.asarray(y, dtype), [2, 3], ridge=0.6)
    kappa = flat.kappa  # 6/(1 + κ) + 0.6/κ = n
    np.testing.assert_allclose(6 / (1 + kappa) + 0.6 / kappa, [2, 3], rtol=1e-10)
    np.testing.assert_allclose(flat.train_mse, (0.6 / (np.array([2, 3]) * kappa)) ** 2 * flat.test_mse, rtol=1e-12)


def test_bad_inputs_raise_clear_errors():
    k, y = jnp.eye(4), jnp.ones(4)
    with pytest.raises(ValueError, match="nonzero eigenvalues"):
        learning_curve(k, y, 4)
    with pytest.raises(ValueError, match="positive integer"):
        learning_curve(k, y, [0, 2])
    with pytest.raises(ValueError, match="positive integer"):
        learning_curve(k, y, 2.5)
    with pytest.raises(ValueError, match="one row per pool point"):
        learning_curve(k, jnp.ones(3), 2)
    with pytest.raises(ValueError, match="ridge"):
        learning_curve(k, y, 2, ridge=-1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        learning_curve(jnp.diag(jnp.array([1.0, -1.0, 1.0])), jnp.ones(3), 1, ridge=1.0)
    with pytest.raises(ValueError, match=r"\(N, N\)"):
        learning_curve(jnp.ones((2, 2, 3, 3)), jnp.ones((2, 3)), 1)
