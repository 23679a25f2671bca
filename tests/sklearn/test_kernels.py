"""`NTKernel`/`NNGPKernel` against closed forms, `ntkit.nn`, finite differences and scikit-learn's own machinery."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
from sklearn.svm import SVC

import ntkit.nn as stax
from ntkit.sklearn import NNGPKernel, NTKernel
from tests.tolerance import assert_close


def _data(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n // 2, d))


def test_linear_architecture_kernel_and_gradient_are_the_closed_form(dtype):
    """One Dense layer: K = W² XXᵀ/d + b², so ∂K/∂log W = 2W² XXᵀ/d and ∂K/∂log b = 2b², exactly."""
    X, _ = _data()
    kernel = NTKernel(architecture=lambda w, b: stax.Dense(1, W_std=w, b_std=b), W_std=1.7, b_std=0.4)
    K, grad = kernel(X, eval_gradient=True)
    gram = X @ X.T / X.shape[1]
    assert_close(K, 1.7 ** 2 * gram + 0.4 ** 2, dtype, scale=4)
    assert grad.shape == (12, 12, 2)  # theta = log(W_std), log(b_std): hyperparameters in name order
    assert_close(grad[..., 0], 2 * 1.7 ** 2 * gram, dtype, scale=4)
    assert_close(grad[..., 1], np.full((12, 12), 2 * 0.4 ** 2), dtype, scale=4)


@pytest.mark.parametrize("cls,get", [(NTKernel, "ntk"), (NNGPKernel, "nngp")])
def test_default_mlp_is_the_nn_kernel(cls, get, dtype):
    X, Y = _data()
    kernel = cls(depth=2, activation="erf", W_std=1.3, b_std=0.2)
    net = stax.serial(stax.Dense(1, 1.3, 0.2), stax.Erf(), stax.Dense(1, 1.3, 0.2), stax.Erf(),
                      stax.Dense(1, 1.3, 0.2))
    assert_close(kernel(X, Y), net.kernel(jnp.asarray(X, dtype), jnp.asarray(Y, dtype), get), dtype, scale=10)
    assert_close(kernel.diag(X), np.diag(kernel(X)), dtype, scale=10)


def test_gradient_matches_central_differences(dtype):
    if dtype != jnp.float64:
        pytest.skip("central differences need float64")
    X, _ = _data()
    kernel = NTKernel(depth=2, b_std=0.3)
    _, grad = kernel(X, eval_gradient=True)
    eps = 1e-4  # truncation O(eps²) ~ 1e-8 relative, rounding ~ 1e-16 / eps
    for i in range(2):
        up, down = kernel.theta.copy(), kernel.theta.copy()
        up[i] += eps
        down[i] -= eps
        fd = (kernel.clone_with_theta(up)(X) - kernel.clone_with_theta(down)(X)) / (2 * eps)
        np.testing.assert_allclose(grad[..., i], fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())


def test_hyperparameters_follow_sklearns_contract():
    kernel = NTKernel(depth=3, W_std=2.0, b_std=0.5)
    assert [h.name for h in kernel.hyperparameters] == ["W_std", "b_std"]
    np.testing.assert_allclose(kernel.theta, np.log([2.0, 0.5]))
    other = kernel.clone_with_theta(np.log([1.5, 0.25]))
    assert (other.W_std, other.b_std, other.depth) == pytest.approx((1.5, 0.25, 3))
    assert kernel.get_params()["depth"] == 3 and clone(kernel) == kernel
    assert NTKernel(b_std=0.0).n_dims == 1  # no bias: b_std is fixed
    assert NTKernel(architecture=stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))).n_dims == 0
    assert not kernel.is_stationary()


def test_in_a_gaussian_process_with_sklearn_kernels_the_likelihood_rises(dtype):
    """Optimising W_std/b_std (exact gradients) raises the log marginal likelihood above its starting value."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.normal(size=40)
    kernel = ConstantKernel(1.0, "fixed") * NTKernel(depth=2, W_std=0.5, b_std=0.5) + WhiteKernel(0.01)
    with warnings.catch_warnings():  # an optimum at a bound (b_std → 0 in float32) is a warning, not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(X, y)
    start = gp.log_marginal_likelihood(kernel.theta)
    assert gp.log_marginal_likelihood_value_ > start + 1.0
    assert gp.kernel_.k1.k2.W_std != 0.5


def test_svc_with_a_callable_and_a_precomputed_kernel_agree():
    X, _ = _data(n=40)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    kernel = NTKernel(depth=2)
    by_callable = SVC(kernel=kernel).fit(X, y).decision_function(X)
    by_gram = SVC(kernel="precomputed").fit(kernel(X), y).decision_function(kernel(X))
    np.testing.assert_allclose(by_callable, by_gram, rtol=1e-5, atol=1e-6)


def test_bad_options_and_inputs_are_clear_errors():
    X, _ = _data()
    with pytest.raises(ValueError, match="activation"):
        NTKernel(activation="swish")(X)
    with pytest.raises(ValueError, match="depth"):
        NTKernel(depth=-1)(X)
    with pytest.raises(ValueError, match="input_shape"):
        NTKernel(input_shape=(2, 2))(X)
    with pytest.raises(ValueError, match="NaN"):
        NTKernel()(np.where(X > 1, np.nan, X))
    with pytest.raises(ValueError, match="Y is None"):
        NTKernel()(X, X, eval_gradient=True)
    with pytest.raises(TypeError, match="architecture"):
        NTKernel(architecture=3)(X)


def test_convolutional_architecture_with_input_shape():
    X = np.random.default_rng(2).normal(size=(5, 16))
    conv = lambda w, b: stax.serial(stax.Conv(1, (3, 3), padding="SAME", W_std=w, b_std=b), stax.Relu(),  # noqa: E731
                                    stax.GlobalAvgPool(), stax.Dense(1, W_std=w, b_std=b))
    kernel = NTKernel(architecture=conv, input_shape=(4, 4, 1), b_std=0.1)
    expected = conv(2 ** 0.5, 0.1).kernel(jnp.asarray(X.reshape(5, 4, 4, 1), dtype=float), None, "ntk")
    np.testing.assert_allclose(kernel(X), expected, rtol=1e-5)
    assert kernel(X, eval_gradient=True)[1].shape == (5, 5, 2)
    jax.block_until_ready(expected)
