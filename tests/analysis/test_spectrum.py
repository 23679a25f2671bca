"""`spectrum` against kernels built from a known eigendecomposition (closed forms) and SciPy's solver."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from ntkit.analysis import spectrum
from tests.tolerance import cond_rtol


def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def _known(n=7, seed=0):
    lam = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1])[:n]
    v = _orthogonal(n, seed)
    return lam, v, (v * lam) @ v.T


def test_spectrum_recovers_a_known_eigendecomposition(dtype):
    lam, v, k = _known()
    coef = np.array([1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0])
    y = v @ coef
    s = spectrum(jnp.asarray(k, dtype), jnp.asarray(y, dtype))
    rtol = cond_rtol(dtype, lam[0] / lam[-1], 20)
    np.testing.assert_allclose(s.eigenvalues, lam, rtol=rtol)
    # Eigenvectors up to sign (all eigenvalues simple and well separated).
    signs = np.sign(np.sum(s.eigenvectors * v, axis=0))
    np.testing.assert_allclose(s.eigenvectors * signs, v, atol=100 * rtol)
    np.testing.assert_allclose(s.condition_number, 50.0, rtol=rtol)
    np.testing.assert_allclose(s.effective_rank, lam.sum() ** 2 / np.sum(lam**2), rtol=rtol)
    p = lam / lam.sum()
    np.testing.assert_allclose(s.entropy_effective_rank, np.exp(-np.sum(p * np.log(p))), rtol=rtol)
    np.testing.assert_allclose(s.target_fraction, coef**2 / np.sum(coef**2), atol=100 * rtol)


def test_effective_ranks_of_identity_and_rank_one():
    s = spectrum(jnp.eye(6))
    assert s.condition_number == pytest.approx(1.0)
    assert s.effective_rank == pytest.approx(6.0) and s.entropy_effective_rank == pytest.approx(6.0)
    u = np.arange(1.0, 5.0)
    s1 = spectrum(jnp.asarray(np.outer(u, u), jnp.float32))
    assert s1.condition_number == float("inf")
    assert s1.effective_rank == pytest.approx(1.0, rel=1e-5)
    assert s1.entropy_effective_rank == pytest.approx(1.0, rel=1e-4)


def test_paired_output_layout_is_the_kronecker_matrix(dtype):
    """A kernel `(N, N, k, k)` = `Θ ⊗ A` has eigenvalues `λ_i μ_j` (closed form); SciPy on the explicit matrix."""
    lam, v, theta = _known(4, seed=1)
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    k4 = np.einsum("ij,ab->iajb", theta, a).transpose(0, 2, 1, 3)  # (N, N, k, k)
    s = spectrum(jnp.asarray(k4, dtype))
    mu = np.linalg.eigvalsh(a)
    expected = np.sort(np.outer(lam, mu).ravel())[::-1]
    rtol = cond_rtol(dtype, expected[0] / expected[-1], 20)
    np.testing.assert_allclose(s.eigenvalues, expected, rtol=rtol)
    np.testing.assert_allclose(s.eigenvalues, scipy.linalg.eigh(np.kron(theta, a), eigvals_only=True)[::-1],
                               rtol=rtol)
    # Targets (N, k): all of y along one eigenvector of Θ ⊗ A (row n·k + j is example n, output j).
    w = np.linalg.eigh(a)[1][:, 1]
    y = np.outer(v[:, 0], w)
    s = spectrum(jnp.asarray(k4, dtype), jnp.asarray(y, dtype))
    assert s.target_fraction[0] == pytest.approx(1.0, abs=100 * rtol)
    assert s.target_fraction.sum() == pytest.approx(1.0, abs=100 * rtol)


def test_traced_kernel_sums_target_power_over_outputs(dtype):
    lam, v, k = _known(5, seed=2)
    y = np.stack([v[:, 0], 2 * v[:, 3]], axis=1)  # two outputs, traced: powers 1 and 4 of 5
    s = spectrum(jnp.asarray(k, dtype), jnp.asarray(y, dtype))
    tol = 100 * cond_rtol(dtype, 50.0)
    np.testing.assert_allclose(s.target_fraction, [0.2, 0, 0, 0.8, 0], atol=tol)
    # Output axes (N, 2, 3) traced over both: the explicit `trace_axes` gives the same.
    y3 = np.stack([y, y, y], axis=2)
    s3 = spectrum(jnp.asarray(k, dtype), jnp.asarray(y3, dtype), trace_axes=(1, 2))
    np.testing.assert_allclose(s3.target_fraction, s.target_fraction, atol=tol)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="symmetric"):
        spectrum(jnp.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        spectrum(jnp.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="square"):
        spectrum(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="one row per example"):
        spectrum(jnp.eye(3), jnp.ones(4))
    with pytest.raises(ValueError, match="trace_axes"):
        spectrum(jnp.ones((2, 2, 3, 3)), jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        spectrum(jnp.array([[1.0, jnp.nan], [jnp.nan, 1.0]]))
    with pytest.raises(ValueError, match="all zeros"):
        spectrum(jnp.eye(2), jnp.zeros(2))
