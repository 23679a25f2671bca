"""Mean and covariance of an infinite ensemble of infinitely wide networks trained by gradient flow on MSE."""

from __future__ import annotations

import jax.numpy as jnp

from .._checks import check_array, check_scalar
from .._kernel import parse_get
from ._common import (
    Factorizations,
    check_kernel,
    check_symmetric,
    decay_factors,
    float_dtype,
    outputs_type,
    regularize,
    target_layout,
    times,
)
from ._gp import Gaussian


def _fetch(result, name: str, call: str):
    value = getattr(result, name, None)
    if value is None and hasattr(result, "shape"):
        value = result
    if value is None:
        raise ValueError(f"`kernel_fn` must return an array or a named tuple with a `{name}` field for {call}; got "
                         f"{type(result).__name__}.")
    return value


def gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate: float = 1.0, diag_reg: float = 0.0,
                                  diag_reg_absolute_scale: bool = False, trace_axes=(-1,),
                                  **kernel_fn_train_train_kwargs):
    r"""Gaussian over outputs of an infinite ensemble of infinitely wide networks trained on MSE, at any time.

    At initialization the outputs are a GP with the NNGP kernel `K`; training by gradient flow with the NTK `Θ`
    (loss `1/(2nk) Σ ‖f − y‖²`, `τ = η t/(nk)`) moves them linearly, `f_t(x) = f₀(x) + A_t(x) (Y − f₀(X))` with
    `A_t(x) = Θ(x,X) Θ⁻¹ (I − e^{−τΘ})`, so they stay Gaussian with (docs/theory.md §3; Lee et al. 2019, "Wide neural
    networks of any depth evolve as linear models under gradient descent")

    * mean `A_t(x) Y`,
    * covariance `K(x,x) + A_t(x) K A_t(x)ᵀ − (A_t(x) K(X,x) + transpose)`.

    `get="ntk"` is this NTK ensemble; `get="nngp"` trains with `K` in place of `Θ` (only the readout layer
    trained): at `t = ∞` the NNGP Bayesian posterior. The train-train kernel of the dynamics gets the ridge
    `diag_reg` (relative to its mean diagonal unless `diag_reg_absolute_scale`); the prior `K` does not. One
    eigendecomposition (finite `t`) or Cholesky factor (`t=None`) per kernel is computed and cached.

    Args:
      kernel_fn: `kernel_fn(x1, x2, get, **kwargs)` returning a named tuple with `nngp`/`ntk` fields (an analytic
        `ntkit.nn` layer's kernel, or `functools.partial(ntkit.empirical_kernel_fn(f), params=params)`), or an array
        when one kernel is asked for. `x2=None` means `x1`. Called once for the train-train kernels.
      x_train: training inputs `(N, ...)`.
      y_train: targets `(N, O_1, ..., O_d)`.
      learning_rate: `η`; `t` counts steps of it.
      diag_reg: ridge `ε ≥ 0` on the dynamics kernel.
      diag_reg_absolute_scale: take `diag_reg` in absolute units.
      trace_axes: output axes the kernels are traced over (kernels stand for `Θ ⊗ I` along them).
      **kernel_fn_train_train_kwargs: passed to every `kernel_fn` call.

    Returns:
      `predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs)`: `t` a scalar
      or array of times (leading axes of the result), `None` for infinity; `x_test=None` gives the outputs on the
      training set as the dynamics move them (mean `(I − e^{−τΘ̃}) Y`, covariance `e^{−τΘ̃} K e^{−τΘ̃}`; at
      infinite time `N(Y, 0)`; pass `x_test=x_train` for the ridge regressor's fit); `get` is `"nngp"`, `"ntk"`, a
      tuple of them or `None` for both; extra keyword arguments override the train ones in the test calls. Each
      result is the mean `t.shape + (N_test, O_1, ..., O_d)` or, with `compute_cov`, `Gaussian(mean, covariance)`
      with covariance `t.shape + (N_test, N_test, O_a, O_a', ...)`; a tuple `get` gives a named tuple of them.

    Example:
      >>> import jax.numpy as jnp, ntkit.predict
      >>> def kernel_fn(x1, x2, get):  # a linear network's kernels
      ...     x2 = x1 if x2 is None else x2
      ...     k = x1 @ x2.T / x1.shape[1]
      ...     return ntkit.Kernel(nngp=k, ntk=2 * k)
      >>> x = jnp.eye(3); y = jnp.ones((3, 1))
      >>> predict_fn = ntkit.predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=1.0)
      >>> out = predict_fn(t=None, x_test=x, get="ntk", compute_cov=True)
      >>> out.mean.shape, out.covariance.shape
      ((3, 1), (3, 3))
    """
    if not callable(kernel_fn):
        raise TypeError(f"`kernel_fn` must be callable as kernel_fn(x1, x2, get), got {type(kernel_fn).__name__}.")
    x_train = check_array(x_train, "x_train")
    y_train = check_array(y_train, "y_train")
    learning_rate = check_scalar(learning_rate, "learning_rate", positive=True)
    diag_reg = check_scalar(diag_reg, "diag_reg")
    layout = target_layout(y_train.shape, trace_axes)
    n = y_train.shape[0]
    if x_train.ndim < 1 or x_train.shape[0] != n:
        raise ValueError(f"`x_train` {x_train.shape} and `y_train` {y_train.shape} need the same number of examples.")
    size = y_train.size
    k_train: dict = {}
    facs: dict = {}

    def train_kernels(gets):
        missing = tuple(g for g in gets if g not in k_train)
        if missing:
            res = kernel_fn(x_train, None, missing, **kernel_fn_train_train_kwargs)
            for g in missing:
                what = f"kernel_fn(x_train, None).{g}"
                k = check_array(_fetch(res, g, "the train-train kernel"), what)
                k = check_kernel(layout, k, n, n, what, float_dtype(k))
                k_train[g] = check_symmetric(layout.kernel_matrix(k), what)
        return [k_train[g] for g in gets]

    def factorization(g):
        if g not in facs:
            (k,) = train_kernels((g,))
            facs[g] = Factorizations(regularize(k, diag_reg, diag_reg_absolute_scale), f"kernel_fn(x_train, None).{g}")
        return facs[g]

    def one(g, t, test, compute_cov):
        fac = factorization(g)
        k_dd = k_train[g]
        dtype = k_dd.dtype
        y = layout.to_matrix(y_train.astype(dtype))
        prior = train_kernels(("nngp",))[0] if compute_cov else None
        if t is not None:
            tau = times(t, dtype) * (learning_rate / size)
            evals, evecs = fac.eigh
            if bool(jnp.any(jnp.isinf(tau))):
                fac.check_invertible_eigh()
            expm1, inv = decay_factors(evals, tau)
        if test is None:  # training set, as the dynamics move it (from f₀ = 0)
            if t is None:
                fac.cho  # noqa: B018  (a singular kernel never reaches Y)
                mean = jnp.broadcast_to(y, y.shape)
                cov = jnp.zeros_like(prior) if compute_cov else None
            else:
                mean = -evecs @ (expm1[..., :, None] * (evecs.T @ y))
                if compute_cov:
                    e = (evecs * (1 + expm1)[..., None, :]) @ evecs.T  # e^{−τΘ̃}
                    cov = e @ prior @ jnp.swapaxes(e, -1, -2)
            n_out = n
        else:
            k_td, nngp_td, nngp_tt = test[g], test.get("nngp_td"), test.get("nngp_tt")
            if t is None:
                a = fac.solve(k_td.T).T  # Θ(x,X) Θ̃⁻¹
            else:
                a = ((k_td @ evecs) * inv[..., None, :]) @ evecs.T  # (*t, N_test·M, N·M)
            mean = a @ y
            if compute_cov:
                cross = a @ nngp_td.T
                cov = nngp_tt + a @ prior @ jnp.swapaxes(a, -1, -2) - (cross + jnp.swapaxes(cross, -1, -2))
            n_out = k_td.shape[0] // layout.paired_size
        mean = layout.from_matrix(mean, n_out)
        if not compute_cov:
            return mean
        return Gaussian(mean, layout.kernel_from_matrix(cov, n_out, n_out))

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs):
        gets, single = parse_get(get, allow_none=True)
        needed = tuple(sorted(set(gets) | ({"nngp"} if compute_cov else set())))
        train_kernels(needed)
        test = None
        if x_test is not None:
            x_test = check_array(x_test, "x_test")
            if x_test.shape[1:] != x_train.shape[1:]:
                raise ValueError(f"`x_test` {x_test.shape} and `x_train` {x_train.shape} need the same feature shape.")
            n_test = x_test.shape[0]
            kwargs = {**kernel_fn_train_train_kwargs, **kernel_fn_test_test_kwargs}
            res = kernel_fn(x_test, x_train, needed, **kwargs)
            test = {}
            for g in needed:
                what = f"kernel_fn(x_test, x_train).{g}"
                k = check_array(_fetch(res, g, "the test-train kernel"), what)
                test[g] = layout.kernel_matrix(check_kernel(layout, k, n_test, n, what, k_train[g].dtype))
            if compute_cov:
                test["nngp_td"] = test["nngp"]
                what = "kernel_fn(x_test, None).nngp"
                res_tt = kernel_fn(x_test, None, ("nngp",), **kwargs)
                k = check_array(_fetch(res_tt, "nngp", "the test-test kernel"), what)
                test["nngp_tt"] = layout.kernel_matrix(check_kernel(layout, k, n_test, n_test, what,
                                                                           k_train["nngp"].dtype))
        out = [one(g, t, test, bool(compute_cov)) for g in gets]
        return out[0] if single else outputs_type(gets)(*out)

    return predict_fn
