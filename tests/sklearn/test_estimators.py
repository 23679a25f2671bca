"""`NTKRegressor`/`NTKClassifier`: scikit-learn's estimator checks, kernel regression in NumPy, and composition."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkit.sklearn import NNGPKernel, NTKClassifier, NTKernel, NTKRegressor
from tests.tolerance import assert_close


@parametrize_with_checks([NTKRegressor(), NTKClassifier()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _regression(n=30, n_test=7, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.normal(size=(n, 3)), rng.normal(size=(n_test, 3))
    return X, np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1), Xt


@pytest.mark.parametrize("kernel_name", ["ntk", "nngp"])
def test_infinite_time_is_kernel_ridge_regression_in_numpy(kernel_name, dtype):
    """At t=∞ the ensemble mean is K(x, X)(K + εI)⁻¹ Y with ε = diag_reg · mean diag K (a NumPy float64 solve of
    the kernels from the scikit-learn kernel classes)."""
    X, Y, Xt = _regression()
    reg = NTKRegressor(depth=2, b_std=0.1, kernel=kernel_name, diag_reg=1e-2).fit(X, Y)
    cls = NTKernel if kernel_name == "ntk" else NNGPKernel
    k = cls(depth=2, b_std=0.1)
    K, Kt = k(X).astype(np.float64), k(Xt, X).astype(np.float64)
    ridge = 1e-2 * np.mean(np.diag(K))
    expected = Kt @ np.linalg.solve(K + ridge * np.eye(len(X)), Y)
    # float32: the kernels carry ~1e-7 relative rounding, amplified by cond(K + εI) ≤ ~1e2 here
    assert_close(reg.predict(Xt), expected, dtype, scale=50)


def test_finite_time_and_standard_deviation_against_numpy(dtype):
    """Mean `Θ(x,X) Θ̃⁻¹ (I − e^{−τΘ̃}) Y` and the ensemble variance (docs/theory.md §3), NumPy float64."""
    X, Y, Xt = _regression(n=12, n_test=4)
    y = Y[:, 0]
    t, lr = 50.0, 1.0
    reg = NTKRegressor(depth=1, b_std=0.2, t=t, learning_rate=lr, diag_reg=0.0).fit(X, y)
    mean, std = reg.predict(Xt, return_std=True)
    ntk, nngp = NTKernel(depth=1, b_std=0.2), NNGPKernel(depth=1, b_std=0.2)
    theta, theta_t = ntk(X).astype(np.float64), ntk(Xt, X).astype(np.float64)
    k, k_td, k_tt = (nngp(X).astype(np.float64), nngp(Xt, X).astype(np.float64),
                     nngp(Xt).astype(np.float64))
    lam, v = np.linalg.eigh(theta)
    tau = lr * t / len(y)
    a = theta_t @ v @ np.diag((1 - np.exp(-tau * lam)) / lam) @ v.T
    cov = k_tt + a @ k @ a.T - (a @ k_td.T + k_td @ a.T)
    assert mean.shape == (4,) and std.shape == (4,)
    assert_close(mean, a @ y, dtype, scale=50)
    assert_close(std, np.sqrt(np.diag(cov)), dtype, scale=500)


def test_classifier_on_iris_in_a_pipeline_and_grid_search():
    X, y = load_iris(return_X_y=True)
    # without a bias the ReLU NTK only sees angles between standardised flowers (0.85 here); with one, 0.95
    pipe = make_pipeline(StandardScaler(), NTKClassifier(b_std=0.1))
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.93
    search = GridSearchCV(NTKClassifier(), {"depth": [1, 2], "W_std": [1.0, 1.5], "b_std": [0.1],
                                            "t": [None, 100.0]}, cv=2).fit(X, y)
    assert search.best_score_ > 0.93
    clf = NTKClassifier().fit(X, y)
    assert clf.decision_function(X).shape == (150, 3)
    assert set(clf.predict(X)) <= set(clf.classes_)
    binary = NTKClassifier().fit(X[y < 2], np.where(y[y < 2] == 1, "b", "a"))
    scores = binary.decision_function(X[y < 2])
    assert scores.shape == (100,)
    assert np.array_equal(binary.predict(X[y < 2]), np.where(scores > 0, "b", "a"))


def test_clear_errors():
    X, Y, _ = _regression()
    with pytest.raises(ValueError, match="activation"):
        NTKRegressor(activation="swish").fit(X, Y)
    with pytest.raises(ValueError, match="kernel"):
        NTKRegressor(kernel="rbf").fit(X, Y)
    with pytest.raises(ValueError, match="input_shape"):
        NTKRegressor(input_shape=(2, 2)).fit(X, Y)
    with pytest.raises(ValueError, match="NaN"):
        NTKRegressor().fit(np.where(X > 1, np.nan, X), Y)
    with pytest.raises(ValueError, match="features"):
        NTKRegressor().fit(X, Y).predict(X[:, :2])
    with pytest.raises(ValueError, match="`t`"):
        NTKRegressor(t=-1.0).fit(X, Y)


def test_uses_the_configured_dtype(dtype):
    X, Y, Xt = _regression()
    reg = NTKRegressor().fit(X, Y)
    assert reg.kernel_train_.ntk.dtype == jnp.dtype(dtype)
    assert reg.predict(Xt).dtype == np.float64


def test_feature_names_from_a_dataframe():
    pd = pytest.importorskip("pandas")
    X, Y, _ = _regression()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    reg = NTKRegressor().fit(frame, Y)
    assert list(reg.feature_names_in_) == ["a", "b", "c"] and reg.n_features_in_ == 3
    np.testing.assert_array_equal(reg.predict(frame), NTKRegressor().fit(X, Y).predict(X))
