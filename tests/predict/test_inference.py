"""`gradient_descent_mse_ensemble` and `gp_inference` against direct numpy formulas and scikit-learn.

The references are float64 NumPy/SciPy. The library works through one eigendecomposition or Cholesky solve of the
(regularized) dynamics kernel, so its error is bounded normwise by `cond_rtol(dtype, cond)` of that kernel, relative to
the size of the result (means) or of the largest term it is a difference of (covariances).
"""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF

import ntkit
import ntkit.nn as nn
from ntkit.predict import Gaussian, gp_inference, gradient_descent_mse_ensemble
from tests.tolerance import assert_close, assert_normwise_close, cond_rtol


def relu_kernels(x1, x2):
    """One hidden ReLU layer, NTK parameterization, `W_std = 1` then `√2`, no bias (THEORY.md §2), numpy float64."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    d = x1.shape[1]
    s12 = x1 @ x2.T / d
    s11, s22 = np.sum(x1**2, 1)[:, None] / d, np.sum(x2**2, 1)[None, :] / d
    norm = np.sqrt(s11 * s22)
    theta = np.arccos(np.clip(s12 / norm, -1.0, 1.0))
    theta[np.all(x1[:, None] == x2[None], axis=-1)] = 0.0  # arccos loses √eps near 1; a point with itself is at 0
    e_phi = norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    e_dphi = (np.pi - theta) / (2 * np.pi)
    nngp = 2.0 * e_phi
    return nngp, nngp + 2.0 * s12 * e_dphi


def make_kernel_fn(dtype):
    def kernel_fn(x1, x2, get):
        nngp, ntk = relu_kernels(x1, x1 if x2 is None else x2)
        return ntkit.Kernel(nngp=jnp.asarray(nngp, dtype), ntk=jnp.asarray(ntk, dtype))
    return kernel_fn


def _data(n=8, n_test=5, k=2, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x, xt = rng.normal(size=(n, d)), rng.normal(size=(n_test, d))
    return x, xt, np.sin(x[:, :k] * 2.0)


def _ensemble_reference(dyn_dd, dyn_td, nngp_dd, nngp_td, nngp_tt, y, tau):
    """Mean, covariance and the size of the covariance's terms (THEORY.md §3), with A = Θ(x,X) Θ⁻¹ (I − e^{−τΘ})
    (τ = inf: Θ(x,X) Θ⁻¹)."""
    proj = np.eye(len(y)) if np.isinf(tau) else np.eye(len(y)) - scipy.linalg.expm(-tau * dyn_dd)
    a = dyn_td @ np.linalg.solve(dyn_dd, proj)
    terms = [nngp_tt, a @ nngp_dd @ a.T, a @ nngp_td.T]
    cov = terms[0] + terms[1] - (terms[2] + terms[2].T)
    return a @ y, cov, max(np.linalg.norm(term) for term in terms)


def test_relu_kernels_helper_is_the_ntkit_nn_kernel(dtype):
    """The NumPy reference of this file is the analytic kernel of the same `ntkit.nn` network, and both give the
    exact values of THEORY.md §2 (`Θ(x, x) = 2` for one hidden layer, `‖x‖² = d`; the closed form at angle θ)."""
    _, _, kernel_fn = nn.serial(nn.Dense(16, W_std=1.0), nn.Relu(), nn.Dense(1, W_std=2**0.5))
    x, xt, _ = _data()
    for a, b in ((x, x), (xt, x)):
        nngp, ntk = relu_kernels(a, b)
        got = kernel_fn(jnp.asarray(a, dtype), jnp.asarray(b, dtype), ("nngp", "ntk"))
        assert_close(got.nngp, nngp, dtype)
        assert_close(got.ntk, ntk, dtype)
    theta = 1.0
    pair = jnp.asarray(np.array([[1.0, 0.0], [np.cos(theta), np.sin(theta)]]) * np.sqrt(2.0), dtype)
    ntk = kernel_fn(pair, None, "ntk")
    assert_close(jnp.diagonal(ntk), np.full(2, 2.0), dtype)
    assert_close(ntk[0, 1], np.cos(theta) * (np.pi - theta) / np.pi
                 + (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / np.pi, dtype)


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_ensemble_mean_and_covariance_match_numpy(dtype, get):
    x, xt, y = _data()
    lr = 2.0
    nngp_dd, ntk_dd = relu_kernels(x, x)
    nngp_td, ntk_td = relu_kernels(xt, x)
    nngp_tt, _ = relu_kernels(xt, xt)
    dyn_dd, dyn_td = (ntk_dd, ntk_td) if get == "ntk" else (nngp_dd, nngp_td)
    predict_fn = gradient_descent_mse_ensemble(make_kernel_fn(dtype), jnp.asarray(x, dtype), jnp.asarray(y, dtype),
                                               learning_rate=lr)
    ts = np.array([1.0, 30.0, 1000.0])
    out = predict_fn(jnp.asarray(ts, dtype), jnp.asarray(xt, dtype), get, compute_cov=True)
    assert isinstance(out, Gaussian) and out.mean.shape == (3, 5, 2) and out.covariance.shape == (3, 5, 5)
    rtol = cond_rtol(dtype, np.linalg.cond(dyn_dd))
    for i, t in enumerate(ts):
        mean, cov, size = _ensemble_reference(dyn_dd, dyn_td, nngp_dd, nngp_td, nngp_tt, y, lr * t / y.size)
        assert_normwise_close(out.mean[i], mean, rtol, err_msg=f"mean t={t}")
        assert_normwise_close(out.covariance[i], cov, rtol, scale=size, err_msg=f"covariance t={t}")
    inf = predict_fn(None, jnp.asarray(xt, dtype), get, compute_cov=True)
    mean, cov, size = _ensemble_reference(dyn_dd, dyn_td, nngp_dd, nngp_td, nngp_tt, y, np.inf)
    assert_normwise_close(inf.mean, mean, rtol)
    assert_normwise_close(inf.covariance, cov, rtol, scale=size)
    if get == "nngp":  # trained readout to t = ∞ is the NNGP Bayesian posterior
        posterior = nngp_tt - nngp_td @ np.linalg.solve(nngp_dd, nngp_td.T)
        assert_normwise_close(inf.covariance, posterior, rtol, scale=np.linalg.norm(nngp_tt))


def test_ensemble_on_the_training_set_and_get_tuple(dtype):
    x, _, y = _data(seed=1)
    lr, t = 1.0, 20.0
    nngp_dd, ntk_dd = relu_kernels(x, x)
    predict_fn = gradient_descent_mse_ensemble(make_kernel_fn(dtype), jnp.asarray(x, dtype), jnp.asarray(y, dtype),
                                               learning_rate=lr)
    out = predict_fn(t, None, None, compute_cov=True)
    assert out._fields == ("nngp", "ntk")
    decay = scipy.linalg.expm(-lr * t / y.size * ntk_dd)
    rtol = cond_rtol(dtype, np.linalg.cond(ntk_dd))
    assert_normwise_close(out.ntk.mean, y - decay @ y, rtol)
    assert_normwise_close(out.ntk.covariance, decay @ nngp_dd @ decay, rtol, scale=np.linalg.norm(nngp_dd))
    at_inf = predict_fn(None, None, "ntk", compute_cov=True)
    assert_normwise_close(at_inf.mean, y, rtol)
    assert np.all(np.asarray(at_inf.covariance) == 0)
    mean_only = predict_fn(t, None, "ntk")
    assert_close(mean_only, out.ntk.mean, dtype)


def test_ensemble_with_ridge_equals_gp_inference_at_infinite_time(dtype):
    x, xt, y = _data(seed=2)
    kernel_fn = make_kernel_fn(dtype)
    xs, ys, xts = (jnp.asarray(v, dtype) for v in (x, y, xt))
    ens = gradient_descent_mse_ensemble(kernel_fn, xs, ys, diag_reg=0.05)(None, xts, "ntk", compute_cov=True)
    gp = gp_inference(kernel_fn(xs, None, None), ys, diag_reg=0.05)("ntk", kernel_fn(xts, xs, None),
                                                                     kernel_fn(xts, None, None))
    (nngp_dd, ntk_dd), (nngp_td, ntk_td), (nngp_tt, _) = relu_kernels(x, x), relu_kernels(xt, x), relu_kernels(xt, xt)
    ntk_reg = ntk_dd + 0.05 * np.mean(np.diag(ntk_dd)) * np.eye(len(y))
    rtol = cond_rtol(dtype, np.linalg.cond(ntk_reg))
    assert_normwise_close(ens.mean, gp.mean, rtol)
    _, _, size = _ensemble_reference(ntk_reg, ntk_td, nngp_dd, nngp_td, nngp_tt, y, np.inf)
    assert_normwise_close(ens.covariance, gp.covariance, rtol, scale=size)
    # ... and the ensemble's finite-time eigen path tends to it.
    late = gradient_descent_mse_ensemble(kernel_fn, xs, ys, diag_reg=0.05)(1e9, xts, "ntk")
    assert_normwise_close(late, gp.mean, rtol)


def test_gp_inference_nngp_matches_sklearn(dtype):
    rng = np.random.default_rng(3)
    x, xt = rng.normal(size=(12, 3)), rng.normal(size=(5, 3))
    y = np.cos(x[:, :2])
    rbf = RBF(length_scale=1.3)
    noise = 0.05
    gpr = GaussianProcessRegressor(kernel=rbf, alpha=noise, optimizer=None, normalize_y=False).fit(x, y)
    mean, cov = gpr.predict(xt, return_cov=True)
    cov = cov[..., 0] if cov.ndim == 3 else cov
    predict_fn = gp_inference(jnp.asarray(rbf(x), dtype), jnp.asarray(y, dtype), diag_reg=noise,
                              diag_reg_absolute_scale=True)
    post = predict_fn("nngp", jnp.asarray(rbf(xt, x), dtype), jnp.asarray(rbf(xt), dtype))
    rtol = cond_rtol(dtype, np.linalg.cond(rbf(x) + noise * np.eye(len(x))))
    assert_normwise_close(post.mean, mean, rtol)
    assert_normwise_close(post.covariance, cov, rtol, scale=np.linalg.norm(rbf(xt)))


def test_gp_inference_ntk_and_ntkgp_match_numpy(dtype):
    x, xt, y = _data(seed=4)
    nngp_dd, ntk_dd = relu_kernels(x, x)
    nngp_td, ntk_td = relu_kernels(xt, x)
    nngp_tt, ntk_tt = relu_kernels(xt, xt)
    eps = 0.1 * np.mean(np.diag(ntk_dd))

    def k(a, b):
        return ntkit.Kernel(nngp=jnp.asarray(a, dtype), ntk=jnp.asarray(b, dtype))

    predict_fn = gp_inference(k(nngp_dd, ntk_dd), jnp.asarray(y, dtype), diag_reg=0.1)
    out = predict_fn(("ntk", "ntkgp"), k(nngp_td, ntk_td), k(nngp_tt, ntk_tt))
    ntk_reg = ntk_dd + eps * np.eye(len(y))
    a = ntk_td @ np.linalg.inv(ntk_reg)
    rtol = cond_rtol(dtype, np.linalg.cond(ntk_reg))
    assert_normwise_close(out.ntk.mean, a @ y, rtol)
    size = max(np.linalg.norm(m) for m in (nngp_tt, a @ nngp_dd @ a.T, a @ nngp_td.T))
    assert_normwise_close(out.ntk.covariance, nngp_tt + a @ nngp_dd @ a.T - (a @ nngp_td.T + nngp_td @ a.T), rtol,
                          scale=size)
    assert_normwise_close(out.ntkgp.mean, a @ y, rtol)
    assert_normwise_close(out.ntkgp.covariance, ntk_tt - a @ ntk_td.T, rtol, scale=np.linalg.norm(ntk_tt))
    train = predict_fn("nngp", None, True)
    assert_close(train.mean, y, dtype)
    assert np.all(np.asarray(train.covariance) == 0)
    assert predict_fn("ntk", k(nngp_td, ntk_td)).shape == y[:5].shape


def test_inference_errors(dtype):
    x, xt, y = _data()
    nngp_dd, ntk_dd = relu_kernels(x, x)
    ys = jnp.asarray(y, dtype)
    with pytest.raises(ValueError, match="singular"):
        gp_inference(jnp.ones((8, 8), dtype), ys)("nngp", jnp.ones((2, 8), dtype))
    with pytest.raises(ValueError, match="nngp"):
        gp_inference(ntkit.Kernel(nngp=None, ntk=jnp.asarray(ntk_dd, dtype)), ys)("nngp", jnp.ones((2, 8), dtype))
    with pytest.raises(ValueError, match="get"):
        gp_inference(jnp.asarray(nngp_dd, dtype), ys)("bayes")
    with pytest.raises(ValueError, match="k_test_train.*shape"):
        gp_inference(jnp.asarray(nngp_dd, dtype), ys)("nngp", jnp.ones((2, 7), dtype))
    kernel_fn = make_kernel_fn(dtype)
    with pytest.raises(ValueError, match="same number of examples"):
        gradient_descent_mse_ensemble(kernel_fn, jnp.asarray(x[:-1], dtype), ys)
    predict_fn = gradient_descent_mse_ensemble(kernel_fn, jnp.asarray(x, dtype), ys)
    with pytest.raises(ValueError, match="feature shape"):
        predict_fn(1.0, jnp.ones((2, 3), dtype))
    with pytest.raises(ValueError, match="get"):
        predict_fn(1.0, None, "ntkgp")


def test_ensemble_with_a_repeated_input_keeps_its_null_direction(dtype):
    """Inputs #2 and #5 the same point (the NTK and NNGP singular, null vector `(e₂ − e₅)/√2` exactly): at t = 1e10
    the mean and covariance are those of the reduced problem on the kernel's range, in float64 (the null direction
    is not trained; A_t(x) uses Θ⁺). The null eigenvalue, computed as ±eps·λ_max, was taken for a real one: means 10
    to 100 times too large in float32."""
    x, xt, y = _data(seed=5)
    x[5] = x[2]
    lr, t = 1.0, 1e10
    nngp_dd, ntk_dd = relu_kernels(x, x)
    nngp_td, ntk_td = relu_kernels(xt, x)
    nngp_tt, _ = relu_kernels(xt, xt)
    null = np.zeros(len(y))
    null[2], null[5] = 1 / np.sqrt(2), -1 / np.sqrt(2)
    q = scipy.linalg.null_space(null[None])
    k_r = q.T @ ntk_dd @ q
    a = ntk_td @ q @ np.linalg.solve(k_r, (np.eye(len(k_r)) - scipy.linalg.expm(-lr * t / y.size * k_r)) @ q.T)
    terms = [nngp_tt, a @ nngp_dd @ a.T, a @ nngp_td.T]
    predict_fn = gradient_descent_mse_ensemble(make_kernel_fn(dtype), jnp.asarray(x, dtype), jnp.asarray(y, dtype),
                                               learning_rate=lr)
    out = predict_fn(t, jnp.asarray(xt, dtype), "ntk", compute_cov=True)
    rtol = cond_rtol(dtype, np.linalg.cond(k_r))
    assert_normwise_close(out.mean, a @ y, rtol)
    assert_normwise_close(out.covariance, terms[0] + terms[1] - terms[2] - terms[2].T, rtol,
                          scale=max(np.linalg.norm(m) for m in terms))
    on_train = predict_fn(t, None, "ntk")  # the pair stays equal, at the mean of its targets
    assert_normwise_close(on_train[2], (y[2] + y[5]) / 2, rtol, scale=np.linalg.norm(y))
    assert_normwise_close(on_train[5], (y[2] + y[5]) / 2, rtol, scale=np.linalg.norm(y))
    with pytest.raises(ValueError, match="singular"):
        predict_fn(None, jnp.asarray(xt, dtype), "ntk")


def test_indefinite_kernels_are_reported(dtype):
    """An eigenvalue of −0.3 λ_max: the ensemble warns (or raises) naming the kernel; every posterior of
    `gp_inference` inverts it, so it raises, giving the eigenvalue (it used to call it "singular"), unless a ridge
    makes it definite, where it matches the float64 posterior."""
    rng = np.random.default_rng(10)
    vecs, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    k_dd = (vecs * np.array([-0.6, 0.4, 0.8, 1.2, 1.6, 2.0])) @ vecs.T
    k_td, y = rng.normal(size=(3, 6)), rng.normal(size=(6, 1))
    kd, ys = jnp.asarray(k_dd, dtype), jnp.asarray(y, dtype)
    with pytest.raises(ValueError, match=r"`k_train_train` is not positive semi-definite.*-0\.6.*-0\.3 times"):
        gp_inference(kd, ys)("nngp", jnp.asarray(k_td, dtype))
    ok = gp_inference(kd, ys, diag_reg=0.8, diag_reg_absolute_scale=True)("nngp", jnp.asarray(k_td, dtype))
    assert_normwise_close(ok, k_td @ np.linalg.solve(k_dd + 0.8 * np.eye(6), y), cond_rtol(dtype, 14))

    def kernel_fn(x1, x2, get):
        return ntkit.Kernel(nngp=kd if x2 is None else jnp.asarray(k_td, dtype),
                            ntk=kd if x2 is None else jnp.asarray(k_td, dtype))

    xs = jnp.zeros((6, 1), dtype)
    with pytest.warns(UserWarning, match=r"`kernel_fn\(x_train, None\)\.ntk` has 1 negative eigenvalue"):
        gradient_descent_mse_ensemble(kernel_fn, xs, ys)(1.0, jnp.zeros((3, 1), dtype), "ntk")
    strict = gradient_descent_mse_ensemble(kernel_fn, xs, ys, negative_eigenvalues="raise")
    with pytest.raises(ValueError, match=r"`kernel_fn\(x_train, None\)\.ntk` has 1 negative eigenvalue"):
        strict(1.0, jnp.zeros((3, 1), dtype), "ntk")
