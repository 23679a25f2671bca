"""`diag_reg` in the NNGP ensemble at t = ∞ against an independent NumPy GP posterior, and the `solver=` choice of
`gradient_descent_mse_ensemble` and `gp_inference` (iterative solves against the Cholesky ones)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from ntkit import predict
from ntkit.solve import SolverOptions
from tests.tolerance import assert_normwise_close, cond_rtol

DIAG_REG = 0.1


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(24, 4)), rng.normal(size=(6, 4))
    y = np.stack([np.sin(x.sum(1)), np.cos(x[:, 0])], axis=1)
    kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1))[2]
    return x, x_test, y, kernel_fn


def _kernels(kernel_fn, x, x_test, dtype):
    x, x_test = jnp.asarray(x, dtype), jnp.asarray(x_test, dtype)
    get = ("nngp", "ntk")
    return x, x_test, kernel_fn(x, None, get), kernel_fn(x_test, x, get), kernel_fn(x_test, None, get)


def _posterior_np(k_dd, k_td, k_tt, y, diag_reg):
    """The GP posterior with observation noise ε = diag_reg · tr(K)/n, in float64 NumPy."""
    k_dd, k_td, k_tt = (np.asarray(a, np.float64) for a in (k_dd, k_td, k_tt))
    n = k_dd.shape[0]
    reg = k_dd + diag_reg * np.trace(k_dd) / n * np.eye(n)
    mean = k_td @ np.linalg.solve(reg, y)
    cov = k_tt - k_td @ np.linalg.solve(reg, k_td.T)
    return mean, cov, np.linalg.cond(reg)


def test_ensemble_nngp_with_diag_reg_is_the_gp_posterior(setup, dtype):
    x, x_test, y, kernel_fn = setup
    x, x_test, k_dd, k_td, k_tt = _kernels(kernel_fn, x, x_test, dtype)
    mean, cov, cond = _posterior_np(k_dd.nngp, k_td.nngp, k_tt.nngp, y, DIAG_REG)
    rtol = cond_rtol(dtype, cond, 100)
    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x, jnp.asarray(y, dtype), diag_reg=DIAG_REG)
    gp = predict.gp_inference(k_dd, jnp.asarray(y, dtype), diag_reg=DIAG_REG)("nngp", k_td, k_tt)
    # t = ∞ by the Cholesky solve (None) and by the eigendecomposition (inf)
    for out in (ens(None, x_test, "nngp", compute_cov=True), ens(np.inf, x_test, "nngp", compute_cov=True), gp):
        assert_normwise_close(out.mean, mean, rtol)
        assert_normwise_close(out.covariance, cov, rtol, scale=np.linalg.norm(np.asarray(k_tt.nngp, np.float64)))


def test_ensemble_ntk_cov_keeps_the_unregularized_prior(setup, dtype):
    """For `get="ntk"` the prior on the training set is the networks' NNGP `K` (the ridge is on `Θ` only):
    `K(x,x) + A K Aᵀ − (A K(X,x) + transpose)`, `A = Θ(x,X) Θ̃⁻¹`."""
    x, x_test, y, kernel_fn = setup
    x, x_test, k_dd, k_td, k_tt = _kernels(kernel_fn, x, x_test, dtype)
    ntk, nngp = np.asarray(k_dd.ntk, np.float64), np.asarray(k_dd.nngp, np.float64)
    reg = ntk + DIAG_REG * np.trace(ntk) / len(ntk) * np.eye(len(ntk))
    a = np.linalg.solve(reg, np.asarray(k_td.ntk, np.float64).T).T
    cross = a @ np.asarray(k_td.nngp, np.float64).T
    cov = np.asarray(k_tt.nngp, np.float64) + a @ nngp @ a.T - cross - cross.T
    out = predict.gradient_descent_mse_ensemble(kernel_fn, x, jnp.asarray(y, dtype), diag_reg=DIAG_REG)(
        None, x_test, "ntk", compute_cov=True)
    assert_normwise_close(out.covariance, cov, cond_rtol(dtype, np.linalg.cond(reg), 100),
                          scale=np.linalg.norm(np.asarray(k_tt.nngp, np.float64)))


@pytest.mark.parametrize("solver", ["cg", SolverOptions(method="cg", rank=8, tol=1e-10)])
def test_iterative_solver_matches_cholesky(setup, dtype, solver):
    x, x_test, y, kernel_fn = setup
    x, x_test, k_dd, k_td, k_tt = _kernels(kernel_fn, x, x_test, dtype)
    yj = jnp.asarray(y, dtype)
    mean, cov, cond = _posterior_np(k_dd.nngp, k_td.nngp, k_tt.nngp, y, DIAG_REG)
    tol = solver.tol if isinstance(solver, SolverOptions) else max(1e-6, 1000 * float(jnp.finfo(dtype).eps))
    rtol = 2 * cond * tol + cond_rtol(dtype, cond, 100)
    gp = predict.gp_inference(k_dd, yj, diag_reg=DIAG_REG, solver=solver)
    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x, yj, diag_reg=DIAG_REG, solver=solver)
    for out in (gp("nngp", k_td, k_tt), ens(None, x_test, "nngp", compute_cov=True)):
        assert_normwise_close(out.mean, mean, rtol)
        assert_normwise_close(out.covariance, cov, rtol, scale=np.linalg.norm(np.asarray(k_tt.nngp, np.float64)))
    # the mean stays jittable over the test kernel / inputs: α = K̃⁻¹ Y is solved once, on concrete values
    assert_normwise_close(jax.jit(lambda k: gp("nngp", k))(k_td), mean, rtol)
    assert_normwise_close(jax.jit(lambda xt: ens(None, xt, "ntk"))(x_test), ens(None, x_test, "ntk"),
                          cond_rtol(dtype, 1.0, 100))


def test_iterative_solver_needs_concrete_values(setup, dtype):
    x, _, y, kernel_fn = setup
    k = kernel_fn(jnp.asarray(x, dtype), None, "nngp")
    yj = jnp.asarray(y, dtype)
    with pytest.raises(ValueError, match="concrete values only"):
        jax.jit(lambda kk: predict.gp_inference(kk, yj, diag_reg=DIAG_REG, solver="cg")("nngp", kk))(k)
    with pytest.raises(ValueError, match="`solver` must be one of"):
        predict.gp_inference(k, yj, solver="lu")
    with pytest.raises(ValueError, match="`solver` must be one of"):
        predict.gradient_descent_mse_ensemble(kernel_fn, x, yj, solver=None)
