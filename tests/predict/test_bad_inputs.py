"""Every public function of `ntkit.predict` on inputs it cannot use (a clear error naming the argument) and on edge
cases it can (no test point, no time, half-precision or integer arrays, kernels of huge or tiny scale), the values
checked against float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
import ntkit.nn
from ntkit.predict import (
    gp_inference,
    gradient_descent,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
    max_learning_rate,
)
from tests.tolerance import assert_normwise_close, cond_rtol


def _mse(fx, y):
    return 0.5 * jnp.mean((fx - y) ** 2)


def _xent(fx, y):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(fx) * y, axis=-1))


def _problem(n=5, n_test=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n + 2))
    return a @ a.T / n, rng.normal(size=(n_test, n + 2)) @ a.T / n, rng.normal(size=(n, k))


def _kernel_fn(x1, x2, get):
    x2 = x1 if x2 is None else x2
    k = x1 @ x2.T / x1.shape[1]
    return ntkit.Kernel(nngp=k + 0.1, ntk=2 * k + 0.2)


def _cases(dtype):
    """`(name, call, error type, message pattern)` for inputs that must be refused."""
    k_dd, k_td, y = (jnp.asarray(v, dtype) for v in _problem())
    none, no_y = jnp.zeros((0, 0), dtype), jnp.zeros((0, 2), dtype)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), dtype)
    labels = jax.nn.one_hot(jnp.arange(5) % 2, 2, dtype=dtype)
    mse_fn, ens_fn = gradient_descent_mse(k_dd, y), gradient_descent_mse_ensemble(_kernel_fn, x, y)
    return [
        ("mse, no example", lambda: gradient_descent_mse(none, no_y), ValueError, "`y_train` holds no examples"),
        ("mse, no output", lambda: gradient_descent_mse(k_dd, y[:, :0]), ValueError,
         "`y_train` has an output axis of size 0"),
        ("mse, targets (N,)", lambda: gradient_descent_mse(k_dd, y[:, 0]), ValueError,
         r"`y_train` has shape \(5,\).*y\[:, None\]"),
        ("ode, no example", lambda: gradient_descent(_mse, none, no_y), ValueError, "`y_train` holds no examples"),
        ("ensemble, no example", lambda: gradient_descent_mse_ensemble(_kernel_fn, x[:0], no_y), ValueError,
         "`x_train` holds no examples"),
        ("ensemble, no target", lambda: gradient_descent_mse_ensemble(_kernel_fn, x, no_y), ValueError,
         "`y_train` holds no examples"),
        ("gp, no example", lambda: gp_inference(none, no_y), ValueError, "`y_train` holds no examples"),
        ("max_learning_rate, empty", lambda: max_learning_rate(none), ValueError, "`k_train_train` is empty"),
        ("max_learning_rate, empty pairs", lambda: max_learning_rate(jnp.zeros((0, 0, 2, 2), dtype)), ValueError,
         "`k_train_train` is empty"),
        ("max_learning_rate, asymmetric", lambda: max_learning_rate(k_dd.at[0, 1].add(1.0)), ValueError,
         "`k_train_train` must be symmetric"),
        ("max_learning_rate, negative definite", lambda: max_learning_rate(-k_dd), ValueError,
         "diverges along the negative"),
        ("max_learning_rate, zero", lambda: max_learning_rate(0 * k_dd), ValueError, "`k_train_train` is zero"),
        ("mse, complex kernel", lambda: gradient_descent_mse(k_dd.astype(jnp.complex64), y), TypeError,
         "`k_train_train` must hold real"),
        ("mse, boolean targets", lambda: gradient_descent_mse(k_dd, y > 0), TypeError, "`y_train` must hold real"),
        ("mse, complex time", lambda: mse_fn(1j), TypeError, "`t` must hold real"),
        ("mse, NaN initial outputs", lambda: mse_fn(1.0, jnp.nan), ValueError, "`fx_train_0` contains NaN"),
        ("mse, Inf test kernel", lambda: mse_fn(1.0, 0.0, None, k_td.at[0, 0].set(jnp.inf)), ValueError,
         "`k_test_train` contains NaN or Inf"),
        ("mse, kernel of rank 3", lambda: gradient_descent_mse(k_dd[..., None], y), ValueError,
         r"`k_train_train` must have shape \(5, 5\)"),
        ("mse, bad option", lambda: gradient_descent_mse(k_dd, y, negative_eigenvalues="ignore"), ValueError,
         "`negative_eigenvalues` must be one of"),
        ("ode, vector loss", lambda: gradient_descent(lambda f, t: (f - t) ** 2, k_dd, y), TypeError,
         "must return a real floating scalar"),
        ("ode, integer loss", lambda: gradient_descent(lambda f, t: 1, k_dd, y), TypeError,
         "must return a real floating scalar"),
        ("ode, max_steps 0", lambda: gradient_descent(_xent, k_dd, y, max_steps=0), ValueError,
         "`max_steps` must be a positive integer"),
        ("ode, bad method", lambda: gradient_descent(_xent, k_dd, y, method="exact"), ValueError, "`method` must be"),
        ("ode, infinite time", lambda: gradient_descent(_xent, k_dd, y)(jnp.inf), ValueError, "`t` must hold finite"),
        # Cross-entropy with a kernel of scale 1e30 drives the margins to ~70 by t = 1, where `1 − p` is below eps in
        # both precisions, so the gradient is rounding noise: the step bound says so (it used to return NaN).
        ("ode, kernel of scale 1e30", lambda: gradient_descent(_xent, 1e30 * k_dd, labels)(1.0), ValueError,
         "`t` = 1 takes more than `max_steps`"),
        ("ensemble, scalar test input", lambda: ens_fn(1.0, 1.0), ValueError, "`x_test`"),
        ("ensemble, NaN test input", lambda: ens_fn(1.0, x.at[0, 0].set(jnp.nan)), ValueError,
         "`x_test` contains NaN"),
        ("gp, test-test kernel shape", lambda: gp_inference(k_dd, y)("nngp", k_td, jnp.zeros((2, 2), dtype)),
         ValueError, r"`k_test_test` must have shape \(3, 3\)"),
    ]


def test_bad_inputs_are_clear_errors(dtype):
    for name, call, error, pattern in _cases(dtype):
        with pytest.raises(error, match=pattern):
            call()
            pytest.fail(f"{name}: no error")


def test_no_test_point_and_no_time_give_empty_results(dtype):
    k_dd, _, y = (jnp.asarray(v, dtype) for v in _problem())
    no_test, two_classes = jnp.zeros((0, 5), dtype), jax.nn.one_hot(jnp.arange(5) % 2, 2, dtype=dtype)
    for t in (1.0, None):
        train, test = gradient_descent_mse(k_dd, y)(t, 0.0, None, no_test)
        assert train.shape == (5, 2) and test.shape == (0, 2)
    assert gradient_descent_mse(k_dd, y)(jnp.zeros((0,), dtype)).shape == (0, 5, 2)
    train, test = gradient_descent(_xent, k_dd, two_classes)(1.0, 0.0, None, no_test)
    assert train.shape == (5, 2) and test.shape == (0, 2)
    assert gradient_descent(_xent, k_dd, two_classes)(jnp.zeros((0,), dtype)).shape == (0, 5, 2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), dtype)
    _, _, kernel_fn = ntkit.nn.serial(ntkit.nn.Dense(8), ntkit.nn.Relu(), ntkit.nn.Dense(1))
    for t in (1.0, None):  # kernel_fn is never asked about no inputs (an `ntkit.nn` kernel refuses them)
        out = gradient_descent_mse_ensemble(kernel_fn, x, y)(t, x[:0], None, compute_cov=True)
        assert out.ntk.mean.shape == (0, 2) and out.nngp.covariance.shape == (0, 0)
    post = gp_inference(k_dd, y)(("nngp", "ntk", "ntkgp"), no_test, jnp.zeros((0, 0), dtype))
    assert all(p.mean.shape == (0, 2) and p.covariance.shape == (0, 0) for p in post)


@pytest.mark.parametrize("kind", ["float16", "bfloat16", "int32"])
def test_half_precision_and_integer_inputs_run_in_float32_or_wider(dtype, kind):
    """No eigendecomposition or Cholesky factorization exists in half precision (it used to raise
    `NotImplementedError` from LAPACK): such kernels are computed in float32, checked against float64 NumPy on the
    same (rounded) values."""
    k_dd, k_td, y = _problem()
    if kind == "int32":
        k_dd, k_td, y = (np.round(4 * v) for v in (k_dd, k_td, y))
        k_dd = k_dd + 4 * np.eye(5)  # definite after rounding
    cast = [jnp.asarray(v, kind) for v in (k_dd, k_td, y)]
    kd, kt, yd = (np.asarray(v, np.float64) for v in cast)
    want = jnp.float32 if kind != "int32" else dtype
    _, fit = gradient_descent_mse(cast[0], cast[2])(None, 0.0, None, cast[1])
    assert fit.dtype == want
    assert_normwise_close(fit, kt @ np.linalg.solve(kd, yd), cond_rtol(want, np.linalg.cond(kd)))
    mean = gp_inference(cast[0], cast[2])("nngp", cast[1])
    assert mean.dtype == want
    assert_normwise_close(mean, kt @ np.linalg.solve(kd, yd), cond_rtol(want, np.linalg.cond(kd)))
    lam = np.linalg.eigvalsh(kd)[-1]
    assert abs(max_learning_rate(cast[0], 10) - 20 / lam) <= 1e-12 * 20 / lam
    assert abs(float(jax.jit(max_learning_rate, static_argnums=1)(cast[0], 10)) - 20 / lam) <= 1e-5 * 20 / lam
    labels = jax.nn.one_hot(jnp.arange(5) % 2, 2, dtype=kind)
    assert gradient_descent(_xent, cast[0], labels)(1.0).dtype == want


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_kernels_of_huge_and_tiny_scale(dtype, scale):
    """Kernel regression does not depend on the kernel's scale, nor does the flow in τ λ: `Θ` times 1e±30 (near the
    ends of float32) gives the float64 answer of `Θ` (the rounding thresholds are relative to λ_max)."""
    k_dd, k_td, y = _problem(seed=2)
    kd, kt = jnp.asarray(scale * k_dd, dtype), jnp.asarray(scale * k_td, dtype)
    rtol = cond_rtol(dtype, np.linalg.cond(k_dd))
    ref = k_td @ np.linalg.solve(k_dd, y)
    _, fit = gradient_descent_mse(kd, jnp.asarray(y, dtype))(None, 0.0, None, kt)
    assert_normwise_close(fit, ref, rtol)
    assert_normwise_close(gp_inference(kd, jnp.asarray(y, dtype))("ntkgp", kt), ref, rtol)
    _, late = gradient_descent_mse(kd, jnp.asarray(y, dtype))(1e10 / scale, 0.0, None, kt)
    assert_normwise_close(late, ref, rtol)
