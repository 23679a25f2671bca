"""`gradient_descent_mse` against independent references: matrix exponentials, Euler integration, numpy KRR.

Float64 NumPy/SciPy references; the library's error is bounded normwise by `cond_rtol(dtype, cond(Θ))`, since it
computes through one symmetric eigendecomposition or Cholesky solve of `Θ` (with `(1 − e^{−τλ})/λ ≤ min(τ, 1/λ)`, no
factor is worse conditioned than `Θ` itself).
"""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from ntkit.predict import gradient_descent_mse
from tests.tolerance import assert_normwise_close, cond_rtol


def _problem(n=7, n_test=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n + 3))
    k_dd = a @ a.T / n
    b = rng.normal(size=(n_test, n + 3))
    k_td = b @ a.T / n
    y = rng.normal(size=(n, k))
    f0, g0 = 0.3 * rng.normal(size=(n, k)), 0.3 * rng.normal(size=(n_test, k))
    return k_dd, k_td, y, f0, g0


def _cast(dtype, *arrays):
    return [jnp.asarray(a, dtype) for a in arrays]


def _expm_reference(k_dd, k_td, y, f0, g0, tau):
    decay = scipy.linalg.expm(-tau * k_dd)
    train = y + decay @ (f0 - y)
    test = g0 + k_td @ np.linalg.solve(k_dd, (np.eye(len(y)) - decay) @ (y - f0))
    return train, test


def test_matches_matrix_exponential_at_every_time(dtype):
    k_dd, k_td, y, f0, g0 = _problem()
    lr = 0.7
    ts = np.array([[0.0, 1.0, 5.0], [20.0, 60.0, 300.0]])
    predict_fn = gradient_descent_mse(*_cast(dtype, k_dd, y), learning_rate=lr)
    train, test = predict_fn(jnp.asarray(ts, dtype), *_cast(dtype, f0, g0, k_td))
    assert train.shape == (2, 3, *y.shape) and test.shape == (2, 3, *g0.shape)
    assert train.dtype == dtype and test.dtype == dtype
    rtol = cond_rtol(dtype, np.linalg.cond(k_dd))
    for idx in np.ndindex(ts.shape):
        ref_train, ref_test = _expm_reference(k_dd, k_td, y, f0, g0, lr * ts[idx] / y.size)
        assert_normwise_close(train[idx], ref_train, rtol, err_msg=f"train at t={ts[idx]}")
        assert_normwise_close(test[idx], ref_test, rtol, err_msg=f"test at t={ts[idx]}")


def test_matches_explicit_euler_integration_of_the_ode():
    """df/dt = −η Θ (f − Y)/(nk), integrated with 20000 tiny Euler steps (float64 numpy, first order)."""
    k_dd, k_td, y, f0, g0 = _problem(seed=1)
    lr, t_end, steps = 2.0, 40.0, 20000
    h = t_end / steps
    f, g = f0.copy(), g0.copy()
    for _ in range(steps):
        grad = (f - y) / y.size
        f, g = f - h * lr * k_dd @ grad, g - h * lr * k_td @ grad
    train, test = gradient_descent_mse(k_dd, y, lr)(t_end, f0, g0, k_td)
    np.testing.assert_allclose(train, f, atol=2e-4 * np.abs(f0 - y).max())
    np.testing.assert_allclose(test, g, atol=2e-4 * np.abs(f0 - y).max())


@pytest.mark.parametrize("diag_reg", [0.0, 0.1])
def test_infinite_time_is_kernel_ridge_regression(dtype, diag_reg):
    k_dd, k_td, y, f0, g0 = _problem(seed=2)
    eps = diag_reg * np.mean(np.diag(k_dd))
    ref_test = g0 + k_td @ np.linalg.solve(k_dd + eps * np.eye(len(y)), y - f0)
    rtol = cond_rtol(dtype, np.linalg.cond(k_dd + eps * np.eye(len(y))))
    predict_fn = gradient_descent_mse(*_cast(dtype, k_dd, y), diag_reg=diag_reg)
    train, test = predict_fn(None, *_cast(dtype, f0, g0, k_td))
    assert_normwise_close(test, ref_test, rtol)
    assert_normwise_close(train, y, rtol)
    # t = inf through the eigendecomposition agrees with the Cholesky path.
    train_inf, test_inf = predict_fn(jnp.inf, *_cast(dtype, f0, g0, k_td))
    assert_normwise_close(test_inf, ref_test, rtol)
    assert_normwise_close(train_inf, y, rtol)


def test_absolute_ridge_and_regularized_train_fit(dtype):
    k_dd, _, y, _, _ = _problem(seed=3)
    eps = 0.5
    predict_fn = gradient_descent_mse(*_cast(dtype, k_dd, y), diag_reg=eps, diag_reg_absolute_scale=True)
    # Passing k_test_train=k_train_train gives the ridge regressor's fit on the training inputs.
    _, fit = predict_fn(None, 0.0, None, jnp.asarray(k_dd, dtype))
    rtol = cond_rtol(dtype, np.linalg.cond(k_dd + eps * np.eye(len(y))))
    assert_normwise_close(fit, k_dd @ np.linalg.solve(k_dd + eps * np.eye(len(y)), y), rtol)


def test_paired_output_axes_match_the_flattened_system(dtype):
    """`trace_axes=()`: kernel (N, N, O, O'), the dynamics of the (N·O, N·O) matrix."""
    rng = np.random.default_rng(4)
    n, n_test, k = 5, 3, 2
    a = rng.normal(size=(n * k, n * k + 2))
    full = a @ a.T / n
    cross = rng.normal(size=(n_test * k, n * k + 2)) @ a.T / n
    k_dd = full.reshape(n, k, n, k).transpose(0, 2, 1, 3)
    k_td = cross.reshape(n_test, k, n, k).transpose(0, 2, 1, 3)
    y, f0, g0 = rng.normal(size=(n, k)), rng.normal(size=(n, k)), rng.normal(size=(n_test, k))
    ref_train, ref_test = _expm_reference(full, cross, y.reshape(-1), f0.reshape(-1), g0.reshape(-1), 3.0 / y.size)
    predict_fn = gradient_descent_mse(*_cast(dtype, k_dd, y), learning_rate=1.0, trace_axes=())
    train, test = predict_fn(3.0, *_cast(dtype, f0, g0, k_td))
    rtol = cond_rtol(dtype, np.linalg.cond(full))
    assert_normwise_close(train.reshape(-1), ref_train, rtol)
    assert_normwise_close(test.reshape(-1), ref_test, rtol)


def test_traced_kernel_acts_on_every_traced_axis_alike(dtype):
    """Outputs (N, 2, 3) traced over the last axis: kernel (N, N, 2, 2), identity along the traced axis."""
    rng = np.random.default_rng(5)
    n, p, r = 4, 2, 3
    a = rng.normal(size=(n * p, n * p + 1))
    full = a @ a.T
    k_dd = full.reshape(n, p, n, p).transpose(0, 2, 1, 3)
    y, f0 = rng.normal(size=(n, p, r)), rng.normal(size=(n, p, r))
    train = gradient_descent_mse(*_cast(dtype, k_dd, y), learning_rate=5.0)(2.0, jnp.asarray(f0, dtype))
    decay = scipy.linalg.expm(-5.0 * 2.0 / y.size * full)
    rtol = cond_rtol(dtype, np.linalg.cond(full))
    for j in range(r):
        ref = y[:, :, j].reshape(-1) + decay @ (f0[:, :, j] - y[:, :, j]).reshape(-1)
        assert_normwise_close(train[:, :, j].reshape(-1), ref, rtol, err_msg=f"traced output {j}")


def test_singular_kernel_finite_time_is_fine_but_infinite_time_raises(dtype):
    rng = np.random.default_rng(6)
    feats = rng.normal(size=(6, 3))  # rank-3 Gram matrix of 6 points
    k_dd = feats @ feats.T
    y = rng.normal(size=(6, 1))
    predict_fn = gradient_descent_mse(*_cast(dtype, k_dd, y))
    out = predict_fn(jnp.asarray([1.0, 1e3], dtype))
    assert np.all(np.isfinite(np.asarray(out)))
    # Outputs move only within the kernel's range: their null-space part stays that of f₀ = 0. Rounding leaks into it
    # through the eigenvectors (by eps · λ_max / λ_min, λ_min the smallest nonzero eigenvalue) and through the null
    # eigenvalues, computed as ±eps · λ_max, which decay over τ (by eps · τ λ_max): relative to ‖Y‖.
    null = scipy.linalg.null_space(k_dd)
    lam = np.linalg.eigvalsh(k_dd)[-3:]
    leak = null.T @ np.asarray(out[-1], np.float64)
    effective_cond = lam[-1] / lam[0] + 1e3 / y.size * lam[-1]
    assert_normwise_close(leak, np.zeros_like(leak), cond_rtol(dtype, effective_cond), scale=np.linalg.norm(y))
    with pytest.raises(ValueError, match="singular.*diag_reg"):
        predict_fn(None)
    with pytest.raises(ValueError, match="singular"):
        predict_fn(jnp.inf, 0.0, None, jnp.asarray(k_dd[:2], dtype))
    ok = gradient_descent_mse(*_cast(dtype, k_dd, y), diag_reg=1e-2)(None, 0.0, None, jnp.asarray(k_dd[:2], dtype))
    assert np.all(np.isfinite(np.asarray(ok[1])))


def test_clear_errors(dtype):
    k_dd, k_td, y, f0, g0 = _cast(dtype, *_problem())
    with pytest.raises(ValueError, match="k_train_train.*shape"):
        gradient_descent_mse(k_dd[:-1], y)
    with pytest.raises(ValueError, match="k_train_train.*NaN"):
        gradient_descent_mse(k_dd.at[0, 0].set(jnp.nan), y)
    with pytest.raises(ValueError, match="k_train_train.*symmetric"):
        gradient_descent_mse(k_dd.at[0, 1].add(1.0), y)
    with pytest.raises(ValueError, match="y_train.*Inf"):
        gradient_descent_mse(k_dd, y.at[0, 0].set(jnp.inf))
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_descent_mse(k_dd, y, learning_rate=-1.0)
    with pytest.raises(ValueError, match="diag_reg"):
        gradient_descent_mse(k_dd, y, diag_reg=float("nan"))
    with pytest.raises(ValueError, match="trace_axes"):
        gradient_descent_mse(k_dd, y, trace_axes=(0,))
    predict_fn = gradient_descent_mse(k_dd, y)
    with pytest.raises(ValueError, match="k_test_train"):
        predict_fn(1.0, f0, g0)
    with pytest.raises(ValueError, match="k_test_train.*shape"):
        predict_fn(1.0, f0, g0, k_td[:, :-1])
    with pytest.raises(ValueError, match="fx_train_0.*broadcast"):
        predict_fn(1.0, f0[:-1])
    with pytest.raises(ValueError, match="fx_test_0.*broadcast"):
        predict_fn(1.0, f0, g0[:-1], k_td)
    with pytest.raises(ValueError, match="`t`"):
        predict_fn(-1.0, f0)
    with pytest.raises(ValueError, match="`t`"):
        predict_fn(jnp.asarray([1.0, jnp.nan], dtype), f0)


def _repeated_input_problem(seed=8):
    """An RBF-plus-linear kernel of 8 inputs of which #2 and #5 are the same point, with targets 1 and 0 there: a
    singular kernel whose null vector is exactly `(e₂ − e₅)/√2` (equal rows), and `Θ(x, X)` has equal columns 2, 5."""
    rng = np.random.default_rng(seed)
    x, xt = rng.normal(size=(8, 4)), rng.normal(size=(5, 4))
    x[5] = x[2]

    def kernel(a, b):
        sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T
        return np.exp(-np.maximum(sq, 0) / 2) + a @ b.T / a.shape[1]

    y = rng.normal(size=(8, 1))
    y[2], y[5] = 1.0, 0.0
    return kernel(x, x), kernel(xt, x), y


def _null_space_reference(k_dd, k_td, y, tau):
    """Gradient flow from f₀ = 0 in float64 with the exact null space `(e₂ − e₅)/√2` taken out: on the 7-dimensional
    range `Q` the kernel `QᵀΘQ` is invertible; along the null direction the outputs stay at 0 (docs/theory.md §3)."""
    null = np.zeros(len(y))
    null[2], null[5] = 1 / np.sqrt(2), -1 / np.sqrt(2)
    q = scipy.linalg.null_space(null[None])
    k_r = q.T @ k_dd @ q
    fit = np.eye(len(k_r)) - scipy.linalg.expm(-tau * k_r)
    return q @ fit @ q.T @ y, k_td @ q @ np.linalg.solve(k_r, fit @ q.T @ y), np.linalg.cond(k_r)


def test_repeated_input_keeps_its_null_direction_at_any_time(dtype):
    """Two copies of one input with targets 1 and 0, from f₀ = 0: both predictions stay equal (they tend to 0.5), and
    test outputs are those of the reduced, invertible problem. The null eigenvalue is computed as ±eps·λ_max; treated
    as a real eigenvalue it made the pair differ by 1.0 at t = 1e10 in float32 (the noise direction was fit), or
    multiplied the rounding noise of Θ(x, X) v by τ in the test outputs (92× their size in float32, 2e-7 in float64)."""
    k_dd, k_td, y = _repeated_input_problem()
    ts = np.array([10.0, 1e4, 1e10])
    train, test = gradient_descent_mse(*_cast(dtype, k_dd, y))(jnp.asarray(ts, dtype), 0.0, None,
                                                               jnp.asarray(k_td, dtype))
    for i, t in enumerate(ts):
        ref_train, ref_test, cond = _null_space_reference(k_dd, k_td, y, t / y.size)
        rtol = cond_rtol(dtype, cond)
        assert_normwise_close(train[i], ref_train, rtol, scale=np.linalg.norm(y), err_msg=f"train at t={t}")
        assert_normwise_close(test[i], ref_test, rtol, err_msg=f"test at t={t}")
        assert abs(float(train[i, 2, 0]) - float(train[i, 5, 0])) <= rtol * np.linalg.norm(y), f"t={t}"
    assert abs(float(train[-1, 2, 0]) - 0.5) <= cond_rtol(dtype, 100)  # the mean of the two targets


def _indefinite(seed=9, n=6, ratio=-0.3):
    """A symmetric matrix with eigenvalues ratio·λ_max, then positive ones up to λ_max = 2, its eigenvectors, and a
    test-train block."""
    rng = np.random.default_rng(seed)
    vecs, _ = np.linalg.qr(rng.normal(size=(n, n)))
    evals = np.concatenate([[2.0 * ratio], np.linspace(0.4, 2.0, n - 1)])
    return (vecs * evals) @ vecs.T, vecs, evals, rng.normal(size=(3, n)), rng.normal(size=(n, 2))


def test_negative_eigenvalue_warns_raises_or_clips(dtype):
    """An eigenvalue of −0.3 λ_max is not rounding: a warning (or an error) says so; the predictions are those of the
    kernel with it clipped to 0, in float64: its direction is a null one (train outputs stay, test outputs get 0)."""
    k_dd, vecs, evals, k_td, y = _indefinite()
    t = 7.0
    tau = t / y.size
    clipped = np.maximum(evals, 0)
    decay = (vecs * np.exp(-tau * clipped)) @ vecs.T
    inv = np.divide(1 - np.exp(-tau * clipped), clipped, out=np.zeros_like(clipped), where=clipped > 0)
    ref_train, ref_test = y - decay @ y, k_td @ (vecs * inv) @ vecs.T @ y
    rtol = cond_rtol(dtype, 5.0)  # 2 / 0.4 on the range
    with pytest.warns(UserWarning, match=r"`k_train_train` has 1 negative eigenvalue.*-0\.6.*-0\.3 times"):
        train, test = gradient_descent_mse(*_cast(dtype, k_dd, y))(t, 0.0, None, jnp.asarray(k_td, dtype))
    assert_normwise_close(train, ref_train, rtol)
    assert_normwise_close(test, ref_test, rtol)
    quiet = gradient_descent_mse(*_cast(dtype, k_dd, y), negative_eigenvalues="clip")  # no warning (they are errors)
    assert_normwise_close(quiet(t, 0.0, None, jnp.asarray(k_td, dtype))[1], ref_test, rtol)
    strict = gradient_descent_mse(*_cast(dtype, k_dd, y), negative_eigenvalues="raise")
    with pytest.raises(ValueError, match=r"`k_train_train` has 1 negative eigenvalue.*-0\.3 times"):
        strict(t)
    with pytest.raises(ValueError, match=r"`k_train_train` is not positive semi-definite.*-0\.3 times"):
        strict(None, 0.0, None, jnp.asarray(k_td, dtype))
    # A ridge above 0.6 makes it definite: nothing to say, and the exact ridge dynamics.
    ridge = gradient_descent_mse(*_cast(dtype, k_dd, y), diag_reg=0.7, diag_reg_absolute_scale=True,
                                 negative_eigenvalues="raise")(t)
    assert_normwise_close(ridge, y - scipy.linalg.expm(-tau * (k_dd + 0.7 * np.eye(6))) @ y, cond_rtol(dtype, 27))
