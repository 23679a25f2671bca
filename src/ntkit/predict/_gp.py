"""Gaussian-process posteriors with the NNGP, the NTK (infinite-time ensemble) and the NTK as a GP prior."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._checks import check_array, check_scalar
from .._kernel import parse_get
from .._layout import KernelLayout
from ._common import (
    Factorizations,
    Solver,
    TraceAxes,
    all_concrete,
    check_kernel,
    check_solver,
    check_symmetric,
    concrete_eval,
    float_dtype,
    iterative_solve,
    outputs_type,
    pick,
    regularize,
    ridge_scale,
    target_layout,
)

GPGet: TypeAlias = Literal["nngp", "ntk", "ntkgp"]
"""The posteriors `gp_inference` computes."""


class Gaussian(NamedTuple):
    """A Gaussian over outputs: `mean` `(..., N, O_1, ..., O_d)`, `covariance` `(..., N, N, O_a, O_a', ...)` over the
    untraced output axes (the same for every traced output)."""

    mean: jax.Array
    covariance: jax.Array


class _Train(NamedTuple):
    """One train-train kernel as a matrix, the factorizations of its regularized form, and `K̃⁻¹ Y`."""

    k: jax.Array
    fac: Factorizations
    alpha: jax.Array


class GPPredictor:
    """The `predict_fn` that `gp_inference` returns: call it as
    `predict_fn(get=None, k_test_train=None, k_test_test=None)`.

    It holds the train-train kernels and targets. The factorization and `K̃⁻¹ Y` of a concrete kernel are computed on
    first use (eagerly, even under `jit`) and kept; those of a traced kernel are recomputed at every call and never
    kept, so calling it under `jax.jit`, `jax.grad` or `jax.vmap` leaks no tracer.
    """

    def __init__(self, k_train_train: Any, y_train: jax.Array, layout: KernelLayout, diag_reg: Any,
                 diag_reg_absolute_scale: bool, solver: Any = None) -> None:
        self.k_train_train = k_train_train
        self.y_train = y_train
        self.layout = layout
        self.diag_reg = diag_reg
        self.diag_reg_absolute_scale = diag_reg_absolute_scale
        self.solver = solver
        self._cache: dict[str, _Train] = {}

    def _train(self, name: str) -> _Train:
        """The `name` ('nngp'/'ntk') train kernel, its factorizations and `K̃⁻¹ Y`, kept when concrete."""
        if name in self._cache:
            return self._cache[name]
        layout, n = self.layout, self.y_train.shape[0]
        what = f"k_train_train.{name}" if not hasattr(self.k_train_train, "shape") else "k_train_train"
        raw = pick(self.k_train_train, name, "k_train_train")
        with concrete_eval(raw, self.diag_reg):
            k = check_array(raw, what)
            dtype = float_dtype(k)
            k = check_symmetric(layout.kernel_matrix(check_kernel(layout, k, n, n, what, dtype)), what)
            fac = Factorizations(regularize(k, self.diag_reg, self.diag_reg_absolute_scale), what)
        with concrete_eval(k, self.y_train):
            y = layout.to_matrix(self.y_train.astype(dtype))
        if self.solver is None:
            with concrete_eval(fac.k, self.y_train):
                train = _Train(k, fac, fac.solve(y))
        else:
            train = _Train(k, fac, self._solve(k, what, y))
        if all_concrete(train.k, train.alpha):
            self._cache[name] = train
        return train

    def _solve(self, k: jax.Array, name: str, b: jax.Array) -> jax.Array:
        """`(K + εI)⁻¹ b` by `ntkit.solve.kernel_ridge` with the `solver` options (concrete values only)."""
        with concrete_eval(k, self.diag_reg):
            ridge = ridge_scale(k, self.diag_reg, self.diag_reg_absolute_scale)
        return iterative_solve(k, ridge, b, self.solver, name)

    def _inverse_times(self, train: _Train, kname: str, b: jax.Array) -> jax.Array:
        """`K̃⁻¹ b` for the train kernel `kname`, by Cholesky or by the iterative solver."""
        if self.solver is None:
            return train.fac.solve(b)
        return self._solve(train.k, f"k_train_train.{kname}", b)

    def _test_kernel(self, kernels: Any, name: str, arg: str, n1: int, n2: int, dtype: Any) -> jax.Array:
        what = f"{arg}.{name}" if not hasattr(kernels, "shape") else arg
        return self.layout.kernel_matrix(check_kernel(self.layout, pick(kernels, name, arg), n1, n2, what, dtype))

    def _one(self, g: str, k_test_train: Any, k_test_test: Any) -> jax.Array | Gaussian:
        layout, n = self.layout, self.y_train.shape[0]
        kname = "nngp" if g == "nngp" else "ntk"
        train = self._train(kname)
        dtype = train.k.dtype
        if k_test_train is None:
            mean = self.y_train.astype(dtype)
            if k_test_test is None:
                return mean
            return Gaussian(mean, jnp.zeros(layout.kernel_shape(n, n), dtype))
        first = check_array(pick(k_test_train, kname, "k_test_train"), "k_test_train")
        if first.ndim == 0:
            raise ValueError("`k_test_train` must have shape (N_test, N, ...), got a scalar.")
        # N_test = 0 goes through: empty means and covariances (the train kernel is still factorized and checked).
        n_test = first.shape[0]
        k_td = self._test_kernel(k_test_train, kname, "k_test_train", n_test, n, dtype)
        mean = layout.from_matrix(k_td @ train.alpha, n_test)
        if k_test_test is None:
            return mean
        prior = "ntk" if g == "ntkgp" else "nngp"
        k_tt = self._test_kernel(k_test_test, prior, "k_test_test", n_test, n_test, dtype)
        if g in ("nngp", "ntkgp"):
            cov = k_tt - k_td @ self._inverse_times(train, kname, k_td.T)
        else:
            k_dd = self._train("nngp").k
            nngp_td = self._test_kernel(k_test_train, "nngp", "k_test_train", n_test, n, dtype)
            a = self._inverse_times(train, kname, k_td.T).T  # Θ(x,X) Θ̃⁻¹
            cross = a @ nngp_td.T
            cov = k_tt + a @ k_dd @ a.T - (cross + cross.T)
        return Gaussian(mean, layout.kernel_from_matrix(cov, n_test, n_test))

    def __call__(self, get: GPGet | tuple[GPGet, ...] | None = None, k_test_train: Any = None,
                 k_test_test: Any = None) -> Any:
        """Posterior means (or `Gaussian`s) for `get` (see `gp_inference`)."""
        gets, single = parse_get(("nngp", "ntk") if get is None else get, ("nngp", "ntk", "ntkgp"))
        out = [self._one(g, k_test_train, k_test_test) for g in gets]
        return out[0] if single else outputs_type(gets)(*out)


def gp_inference(k_train_train: Any, y_train: ArrayLike, diag_reg: float | jax.Array = 0.0,
                 diag_reg_absolute_scale: bool = False, trace_axes: TraceAxes = (-1,),
                 solver: Solver = "cholesky") -> GPPredictor:
    r"""Posterior mean (and covariance) on test points of the NNGP, NTK and NTK-GP Gaussian processes.

    With train-train kernels `K` (NNGP) and `Θ` (NTK), a ridge `ε` (`K̃ = K + εI`, `Θ̃ = Θ + εI`, `ε = diag_reg`
    times the kernel's mean diagonal unless `diag_reg_absolute_scale`), test-train kernels `K(x, X)`, `Θ(x, X)`
    (docs/theory.md §3):

    * `"nngp"`, the exact posterior of an infinitely wide Bayesian network (observation noise `ε`):
      mean `K(x,X) K̃⁻¹ Y`, covariance `K(x,x) − K(x,X) K̃⁻¹ K(X,x)`;
    * `"ntk"`, the infinite ensemble of infinitely wide networks trained by gradient flow on MSE to `t = ∞`
      (Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under gradient descent"):
      mean `Θ(x,X) Θ̃⁻¹ Y`, covariance
      `K(x,x) + Θ(x,X) Θ̃⁻¹ K Θ̃⁻¹ Θ(X,x) − (Θ(x,X) Θ̃⁻¹ K(X,x) + transpose)`;
    * `"ntkgp"`, a GP with the NTK as prior covariance (He et al. 2020, "Bayesian deep ensembles via the NTK"):
      mean `Θ(x,X) Θ̃⁻¹ Y`, covariance `Θ(x,x) − Θ(x,X) Θ̃⁻¹ Θ(X,x)`.

    Inverses are Cholesky solves, one factorization per kernel, computed on first use and kept when the kernel is
    concrete. Under JAX transformations: `predict_fn` may be called under `jax.jit`, `jax.grad` and `jax.vmap` with
    traced test kernels, and `gp_inference` itself with traced train kernels, targets or `diag_reg`; checks that need
    values (NaN/Inf, symmetry, a singular train kernel) run only on concrete kernels; the Cholesky solve of a traced
    singular kernel gives NaN or Inf instead of an error.

    A singular train kernel (an input repeated, a low-rank kernel) has no inverse: the Cholesky factor flags it (a
    pivot `d` with `d_min² ≤ N·eps·d_max²`) and a `ValueError` asks for a ridge; an indefinite one (negative
    eigenvalues beyond rounding) fails to factorize and raises a `ValueError` giving its smallest eigenvalue relative
    to the largest (every prediction here inverts the kernel, so there is nothing to clip to). A positive `diag_reg`
    that makes `K + εI` positive definite is the way to use either.

    Args:
      k_train_train: train-train kernels: a named tuple with `nngp` and/or `ntk` fields (e.g. `ntkit.Kernel`), or
        one array used for whatever `get` asks. Shape `(N, N, O_a, O_a', ...)` over the untraced output axes.
      y_train: targets `(N, O_1, ..., O_d)`.
      diag_reg: ridge `ε ≥ 0`, relative to the mean diagonal unless `diag_reg_absolute_scale`.
      diag_reg_absolute_scale: take `diag_reg` in absolute units.
      trace_axes: output axes the kernels were traced over.
      solver: how `K̃ x = b` is solved: `"cholesky"` (default: one factorization per kernel, pure under
        `jit`/`grad`), `"cg"` / `"auto"` (`ntkit.solve.kernel_ridge`: conjugate gradients with a Nyström
        preconditioner, for large `N`), or an `ntkit.solve.SolverOptions`. An iterative solver needs concrete
        train kernels and targets (the posterior mean `K(x,X) α` may still be jitted over the test kernel: `α` is
        solved once and kept); covariances then solve with `N_test` right-hand sides and need a concrete test
        kernel too.

    Returns:
      A `GPPredictor` `predict_fn(get=None, k_test_train=None, k_test_test=None)`. `get` is `"nngp"`, `"ntk"`,
      `"ntkgp"`, a tuple of them, or `None` for `("nngp", "ntk")`. `k_test_train` `(N_test, N, ...)`: kernels (array
      or named tuple) to predict on; `None` predicts on the training set, which is `N(Y, 0)` as in neural-tangents
      (for the ridge's fit on the training inputs pass `k_test_train=k_train_train`). `k_test_test`
      `(N_test, N_test, ...)`: give it for the covariance (`"nngp"`/`"ntk"` need the NNGP, `"ntkgp"` the NTK; with
      `k_test_train=None` any value works); `N_test = 0` gives empty results. Each result is the mean, or
      `Gaussian(mean, covariance)` when `k_test_test` is given; a tuple `get` gives a named tuple with one field per
      entry.

    Raises:
      ValueError: bad shapes, no training example or output, NaN/Inf, non-symmetric train kernels, a kernel missing
        for the requested `get`, or a singular or indefinite train kernel without enough ridge (the value checks on
        concrete kernels only).

    Example:
      >>> import jax, jax.numpy as jnp, ntkit.predict
      >>> k = jnp.array([[1.0, 0.5], [0.5, 1.0]]); y = jnp.array([[1.0], [0.0]])
      >>> predict_fn = ntkit.predict.gp_inference(k, y, diag_reg=1e-3)
      >>> post = predict_fn("nngp", k_test_train=jnp.array([[0.5, 1.0]]), k_test_test=jnp.array([[1.0]]))
      >>> post.mean.shape, post.covariance.shape
      ((1, 1), (1, 1))
      >>> mean_at = jax.jit(lambda k_xX: predict_fn("nngp", k_xX))  # jit over the test-train kernel
      >>> bool(jnp.allclose(mean_at(jnp.array([[0.5, 1.0]])), post.mean))
      True
    """
    with concrete_eval(y_train):
        y_train = check_array(y_train, "y_train")
    diag_reg = check_scalar(diag_reg, "diag_reg")
    layout = target_layout(y_train.shape, trace_axes)
    return GPPredictor(k_train_train, y_train, layout, diag_reg, diag_reg_absolute_scale, check_solver(solver))
