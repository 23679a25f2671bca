"""Mean and covariance of an infinite ensemble of infinitely wide networks trained by gradient flow on MSE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._checks import check_array, check_scalar
from .._kernel import Get, parse_get
from .._layout import KernelLayout
from ._common import (
    Factorizations,
    NegativeEigenvalues,
    Solver,
    TraceAxes,
    all_concrete,
    as_scalar,
    check_kernel,
    check_negative_eigenvalues,
    check_solver,
    check_symmetric,
    concrete_eval,
    decay_factors,
    float_dtype,
    iterative_solve,
    lead,
    outputs_type,
    regularize,
    ridge_scale,
    target_layout,
    times,
)
from ._gp import Gaussian


def _fetch(result: Any, name: str, call: str) -> Any:
    value = getattr(result, name, None)
    if value is None and hasattr(result, "shape"):
        value = result
    if value is None:
        raise ValueError(f"`kernel_fn` must return an array or a named tuple with a `{name}` field for {call}; got "
                         f"{type(result).__name__}.")
    return value


class EnsemblePredictor:
    """The `predict_fn` that `gradient_descent_mse_ensemble` returns: call it as
    `predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs)`.

    The train-train kernels and their factorizations are computed on first use and kept only when concrete (the
    training inputs, the keyword arguments and `diag_reg` hold values): they are then computed eagerly, even when the
    first call is traced by `jit`, and reused by every later call and trace. Otherwise they are recomputed at every
    call and never kept, so calling it under `jax.jit`, `jax.grad` or `jax.vmap` leaks no tracer.
    """

    def __init__(self, kernel_fn: Callable[..., Any], x_train: jax.Array, y_train: jax.Array, layout: KernelLayout,
                 learning_rate: Any, diag_reg: Any, diag_reg_absolute_scale: bool,
                 kernel_fn_kwargs: dict[str, Any], negative_eigenvalues: NegativeEigenvalues = "warn",
                 solver: Any = None) -> None:
        self.kernel_fn = kernel_fn
        self.x_train = x_train
        self.y_train = y_train
        self.layout = layout
        self.learning_rate = learning_rate
        self.diag_reg = diag_reg
        self.diag_reg_absolute_scale = diag_reg_absolute_scale
        self.kernel_fn_kwargs = kernel_fn_kwargs
        self.negative_eigenvalues = negative_eigenvalues
        self._k_train: dict[str, jax.Array] = {}
        self.solver = solver
        self._facs: dict[str, Factorizations] = {}
        self._alpha: dict[str, jax.Array] = {}

    def _train_kernels(self, gets: tuple[str, ...]) -> dict[str, jax.Array]:
        """The train-train kernel matrices of `gets`, each from the cache or from one `kernel_fn` call."""
        out = {g: self._k_train[g] for g in gets if g in self._k_train}
        missing = tuple(g for g in gets if g not in out)
        if missing:
            layout, n = self.layout, self.y_train.shape[0]
            with concrete_eval(self.x_train, self.kernel_fn_kwargs):
                res = self.kernel_fn(self.x_train, None, missing, **self.kernel_fn_kwargs)
                for g in missing:
                    what = f"kernel_fn(x_train, None).{g}"
                    k = check_array(_fetch(res, g, "the train-train kernel"), what)
                    k = check_kernel(layout, k, n, n, what, float_dtype(k))
                    out[g] = check_symmetric(layout.kernel_matrix(k), what)
                    if all_concrete(out[g]):
                        self._k_train[g] = out[g]
        return out

    def _factorization(self, g: str, k: jax.Array) -> Factorizations:
        if g in self._facs:
            return self._facs[g]
        with concrete_eval(k, self.diag_reg):
            fac = Factorizations(regularize(k, self.diag_reg, self.diag_reg_absolute_scale),
                                 f"kernel_fn(x_train, None).{g}", self.negative_eigenvalues)
        if fac.concrete:
            self._facs[g] = fac
        return fac

    def _solve(self, g: str, k: jax.Array, fac: Factorizations, b: jax.Array) -> jax.Array:
        """`Θ̃⁻¹ b` by the Cholesky factor, or by `ntkit.solve.kernel_ridge` with the `solver` options."""
        if self.solver is None:
            return fac.solve(b)
        with concrete_eval(k, self.diag_reg):
            ridge = ridge_scale(k, self.diag_reg, self.diag_reg_absolute_scale)
        return iterative_solve(k, ridge, b, self.solver, f"kernel_fn(x_train, None).{g}")

    def _weights(self, g: str, k: jax.Array, fac: Factorizations) -> jax.Array:
        """`Θ̃⁻¹ Y` by the solver, kept when concrete."""
        if g in self._alpha:
            return self._alpha[g]
        with concrete_eval(k, self.y_train):
            y = self.layout.to_matrix(self.y_train.astype(k.dtype))
        alpha = self._solve(g, k, fac, y)
        if all_concrete(alpha):
            self._alpha[g] = alpha
        return alpha

    def _one(self, g: str, t: ArrayLike | None, test: dict[str, jax.Array] | None, compute_cov: bool,
             k_train: dict[str, jax.Array]) -> jax.Array | Gaussian:
        layout, n = self.layout, self.y_train.shape[0]
        k_dd = k_train[g]
        fac = self._factorization(g, k_dd)
        dtype = k_dd.dtype
        y = layout.to_matrix(self.y_train.astype(dtype))
        # The outputs' prior covariance on the training set. With `get="nngp"` the ridge is observation noise of the
        # Bayesian posterior the dynamics reach at t = ∞, so it is part of it (`K̃ = K + εI`, whose posterior is
        # `K(x,x) − K(x,X) K̃⁻¹ K(X,x)`, as `gp_inference` and neural-tangents give); with `get="ntk"` it is the
        # NNGP `K` of the networks at initialization, and the ridge only regularizes the dynamics kernel `Θ̃`.
        prior_dd: Any = fac.k if g == "nngp" else k_train.get("nngp")
        if t is not None:
            t_arr, infinite = times(t, dtype)
            evals, evecs = fac.eigh
            if infinite:
                fac.check_invertible_eigh()
            tau = t_arr * (as_scalar(self.learning_rate, dtype) / self.y_train.size)
            expm1, inv = decay_factors(evals, tau)
        cov = None
        if test is None:  # training set, as the dynamics move it (from f₀ = 0)
            if t is None:
                if self.solver is None:
                    fac.cho  # noqa: B018  (a singular concrete kernel never reaches Y)
                mean = jnp.broadcast_to(y, y.shape)
                if compute_cov:
                    cov = jnp.zeros_like(prior_dd)
            else:
                mean = -evecs @ (expm1[..., :, None] * lead(evecs.T @ y, expm1.ndim + 1))
                if compute_cov:
                    e = (lead(evecs, expm1.ndim + 1) * (1 + expm1)[..., None, :]) @ evecs.T  # e^{−τΘ̃}
                    cov = e @ prior_dd @ jnp.swapaxes(e, -1, -2)
            n_out = n
        else:
            k_td = test[g]
            if t is None and self.solver is not None:
                mean = k_td @ self._weights(g, k_dd, fac)
                a = self._solve(g, k_dd, fac, k_td.T).T if compute_cov else None
            else:
                if t is None:
                    a = fac.solve(k_td.T).T  # Θ(x,X) Θ̃⁻¹
                else:
                    a = (lead(k_td @ evecs, inv.ndim + 1) * inv[..., None, :]) @ evecs.T  # (*t, N_test·M, N·M)
                mean = a @ y
            if compute_cov:
                assert a is not None
                cross = a @ test["nngp_td"].T
                spread = a @ prior_dd @ jnp.swapaxes(a, -1, -2) - (cross + jnp.swapaxes(cross, -1, -2))
                cov = lead(test["nngp_tt"], spread.ndim) + spread
            n_out = k_td.shape[0] // layout.paired_size
        mean = layout.from_matrix(mean, n_out)
        if cov is None:
            return mean
        return Gaussian(mean, layout.kernel_from_matrix(cov, n_out, n_out))

    def __call__(self, t: ArrayLike | None = None, x_test: ArrayLike | None = None,
                 get: Get | tuple[Get, ...] | None = None, compute_cov: bool = False,
                 **kernel_fn_test_test_kwargs: Any) -> Any:
        """Means (or `Gaussian`s) at times `t` on `x_test` (see `gradient_descent_mse_ensemble`)."""
        layout, n = self.layout, self.y_train.shape[0]
        gets, single = parse_get(get, allow_none=True)
        compute_cov = bool(compute_cov)
        needed = tuple(sorted(set(gets) | ({"nngp"} if compute_cov else set())))
        k_train = self._train_kernels(needed)
        test = None
        if x_test is not None:
            x_test = check_array(x_test, "x_test")
            if x_test.ndim < 1 or x_test.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(f"`x_test` {x_test.shape} and `x_train` {self.x_train.shape} need the same feature "
                                 "shape.")
            n_test = x_test.shape[0]
            if n_test == 0:  # no test point: empty predictions, without asking kernel_fn about no inputs
                m = n * layout.paired_size
                test = {g: jnp.zeros((0, m), k_train[g].dtype) for g in needed}
                if compute_cov:
                    test["nngp_td"] = test["nngp"]
                    test["nngp_tt"] = jnp.zeros((0, 0), k_train["nngp"].dtype)
                out = [self._one(g, t, test, compute_cov, k_train) for g in gets]
                return out[0] if single else outputs_type(gets)(*out)
            kwargs = {**self.kernel_fn_kwargs, **kernel_fn_test_test_kwargs}
            res = self.kernel_fn(x_test, self.x_train, needed, **kwargs)
            test = {}
            for g in needed:
                what = f"kernel_fn(x_test, x_train).{g}"
                k = check_array(_fetch(res, g, "the test-train kernel"), what)
                test[g] = layout.kernel_matrix(check_kernel(layout, k, n_test, n, what, k_train[g].dtype))
            if compute_cov:
                test["nngp_td"] = test["nngp"]
                what = "kernel_fn(x_test, None).nngp"
                res_tt = self.kernel_fn(x_test, None, ("nngp",), **kwargs)
                k = check_array(_fetch(res_tt, "nngp", "the test-test kernel"), what)
                test["nngp_tt"] = layout.kernel_matrix(check_kernel(layout, k, n_test, n_test, what,
                                                                    k_train["nngp"].dtype))
        out = [self._one(g, t, test, compute_cov, k_train) for g in gets]
        return out[0] if single else outputs_type(gets)(*out)


def gradient_descent_mse_ensemble(kernel_fn: Callable[..., Any], x_train: ArrayLike, y_train: ArrayLike,
                                  learning_rate: float | jax.Array = 1.0, diag_reg: float | jax.Array = 0.0,
                                  diag_reg_absolute_scale: bool = False, trace_axes: TraceAxes = (-1,), *,
                                  negative_eigenvalues: NegativeEigenvalues = "warn", solver: Solver = "cholesky",
                                  **kernel_fn_train_train_kwargs: Any) -> EnsemblePredictor:
    r"""Gaussian over outputs of an infinite ensemble of infinitely wide networks trained on MSE, at any time.

    At initialization the outputs are a GP with the NNGP kernel `K`; training by gradient flow with the NTK `Θ`
    (loss `1/(2nk) Σ ‖f − y‖²`, `τ = η t/(nk)`) moves them linearly, `f_t(x) = f₀(x) + A_t(x) (Y − f₀(X))` with
    `A_t(x) = Θ(x,X) Θ⁻¹ (I − e^{−τΘ})`, so they stay Gaussian with (docs/theory.md §3; Lee et al. 2019, "Wide neural
    networks of any depth evolve as linear models under gradient descent")

    * mean `A_t(x) Y`,
    * covariance `K(x,x) + A_t(x) K A_t(x)ᵀ − (A_t(x) K(X,x) + transpose)`.

    `get="ntk"` is this NTK ensemble; `get="nngp"` trains with `K` in place of `Θ` (only the readout layer
    trained): at `t = ∞` the NNGP Bayesian posterior. The train-train kernel of the dynamics gets the ridge
    `diag_reg` (relative to its mean diagonal unless `diag_reg_absolute_scale`). For `get="ntk"` the prior `K` (the
    networks at initialization) does not; for `get="nngp"` the ridge is the observation noise of the Bayesian
    posterior, so the prior covariance on the training set is `K̃ = K + εI` too, and at `t = ∞` the result is
    `gp_inference`'s posterior `K(x,x) − K(x,X) K̃⁻¹ K(X,x)` (as in neural-tangents). One
    eigendecomposition (finite `t`) or Cholesky factor (`t=None`) per kernel is computed on first use.

    A singular dynamics kernel (an input repeated, a low-rank empirical kernel) is handled as in
    `gradient_descent_mse`: eigenvalues within rounding of zero (`|λ| ≤ N·eps·λ_max`) are set to exactly 0, so along
    their eigenvectors the outputs keep their initial distribution (mean 0, covariance `K`) and `Θ⁺` (the
    pseudo-inverse) stands for `Θ⁻¹` in `A_t(x)` at finite `t`; `t = ∞` (or `None`) raises for a singular kernel.

    Under JAX transformations: `predict_fn` may be called under `jax.jit`, `jax.grad` and `jax.vmap` with `t` or
    `x_test` traced (`get` and `compute_cov` are Python values), and `gradient_descent_mse_ensemble` itself with
    traced `x_train`, `y_train`, `learning_rate` or `diag_reg`. Train-train kernels and factorizations are kept only
    when concrete (computed eagerly, once, even if the first call is traced), else recomputed at every call. Checks
    that need values (NaN/Inf, symmetry, negative times, a singular kernel at infinite time) run only on concrete
    inputs.

    Args:
      kernel_fn: `kernel_fn(x1, x2, get, **kwargs)` returning a named tuple with `nngp`/`ntk` fields (an analytic
        `ntkit.nn` layer's kernel, or `functools.partial(ntkit.empirical_kernel_fn(f), params=params)`), or an array
        when one kernel is asked for. `x2=None` means `x1`. Called once for the train-train kernels (when concrete).
      x_train: training inputs `(N, ...)`.
      y_train: targets `(N, O_1, ..., O_d)`.
      learning_rate: `η`; `t` counts steps of it.
      diag_reg: ridge `ε ≥ 0` on the dynamics kernel.
      diag_reg_absolute_scale: take `diag_reg` in absolute units.
      trace_axes: output axes the kernels are traced over (kernels stand for `Θ ⊗ I` along them).
      negative_eigenvalues: eigenvalues of a (regularized) dynamics kernel below `−N·eps·λ_max` (not rounding):
        `"warn"` (default) clips them to 0 with a `UserWarning`, `"raise"` raises a `ValueError`, `"clip"` clips
        them silently (concrete kernels only). An indefinite kernel always raises at `t = ∞`.
      solver: how `t = ∞` (`t=None`) test predictions solve `Θ̃ x = b`: `"cholesky"` (default: one Cholesky
        factorization, pure under `jit`/`grad`), `"cg"` / `"auto"` (`ntkit.solve.kernel_ridge`: conjugate gradients
        with a Nyström preconditioner, for large `N`), or an `ntkit.solve.SolverOptions`. With an iterative solver
        the train-train kernels and targets must be concrete (`predict_fn` may still be jitted over `x_test` for the
        mean, as `Θ̃⁻¹ Y` is solved once and kept); finite times always use the eigendecomposition.
      **kernel_fn_train_train_kwargs: passed to every `kernel_fn` call.

    Returns:
      An `EnsemblePredictor` `predict_fn(t=None, x_test=None, get=None, compute_cov=False,
      **kernel_fn_test_test_kwargs)`: `t` a scalar or array of times (leading axes of the result), `None` for
      infinity; `x_test=None` gives the outputs on the training set as the dynamics move them (mean
      `(I − e^{−τΘ̃}) Y`, covariance `e^{−τΘ̃} K e^{−τΘ̃}`, `K̃` for `"nngp"`; at infinite time `N(Y, 0)`; pass
      `x_test=x_train` for the ridge regressor's fit); `get` is `"nngp"`, `"ntk"`, a tuple of them or `None` for
      both; extra keyword arguments override the train ones in the test calls. An `x_test` with no example gives
      empty results (`kernel_fn` is not called). Each result is the mean `t.shape + (N_test, O_1, ...,
      O_d)` or, with `compute_cov`, `Gaussian(mean, covariance)` with covariance
      `t.shape + (N_test, N_test, O_a, O_a', ...)`; a tuple `get` gives a named tuple of them.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.predict
      >>> def kernel_fn(x1, x2, get):  # a linear network's kernels
      ...     x2 = x1 if x2 is None else x2
      ...     k = x1 @ x2.T / x1.shape[1]
      ...     return ntkit.Kernel(nngp=k, ntk=2 * k)
      >>> x = jnp.eye(3); y = jnp.ones((3, 1))
      >>> predict_fn = ntkit.predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=1.0)
      >>> out = predict_fn(t=None, x_test=x, get="ntk", compute_cov=True)
      >>> out.mean.shape, out.covariance.shape
      ((3, 1), (3, 3))
      >>> mean_at = jax.jit(lambda t: predict_fn(t, x, "ntk"))  # jit over t
      >>> bool(jnp.allclose(mean_at(2.0), predict_fn(2.0, x, "ntk")))
      True
    """
    if not callable(kernel_fn):
        raise TypeError(f"`kernel_fn` must be callable as kernel_fn(x1, x2, get), got {type(kernel_fn).__name__}.")
    with concrete_eval(x_train):
        x_train = check_array(x_train, "x_train")
    with concrete_eval(y_train):
        y_train = check_array(y_train, "y_train")
    learning_rate = check_scalar(learning_rate, "learning_rate", positive=True)
    diag_reg = check_scalar(diag_reg, "diag_reg")
    negative_eigenvalues = check_negative_eigenvalues(negative_eigenvalues)
    if x_train.ndim < 1 or x_train.shape[0] == 0:
        raise ValueError(f"`x_train` holds no examples (shape {x_train.shape}); training needs at least one.")
    layout = target_layout(y_train.shape, trace_axes)
    n = y_train.shape[0]
    if x_train.shape[0] != n:
        raise ValueError(f"`x_train` {x_train.shape} and `y_train` {y_train.shape} need the same number of examples.")
    return EnsemblePredictor(kernel_fn, x_train, y_train, layout, learning_rate, diag_reg, diag_reg_absolute_scale,
                             dict(kernel_fn_train_train_kwargs), negative_eigenvalues, check_solver(solver))
