"""Gaussian-process posteriors with the NNGP, the NTK (infinite-time ensemble) and the NTK as a GP prior."""

from __future__ import annotations

import collections

import jax.numpy as jnp

from .._checks import check_array, check_scalar
from .._kernel import GETS, parse_get
from ._common import (
    Factorizations,
    check_kernel,
    check_symmetric,
    float_dtype,
    outputs_type,
    pick,
    regularize,
    target_layout,
)

Gaussian = collections.namedtuple("Gaussian", ["mean", "covariance"])
Gaussian.__doc__ = """A Gaussian over outputs: `mean` `(..., N, O_1, ..., O_d)`, `covariance`
`(..., N, N, O_a, O_a', ...)` over the untraced output axes (the same for every traced output)."""


def gp_inference(k_train_train, y_train, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                 trace_axes=(-1,)):
    r"""Posterior mean (and covariance) on test points of the NNGP, NTK and NTK-GP Gaussian processes.

    With train-train kernels `K` (NNGP) and `Θ` (NTK), a ridge `ε` (`K̃ = K + εI`, `Θ̃ = Θ + εI`, `ε = diag_reg`
    times the kernel's mean diagonal unless `diag_reg_absolute_scale`), test-train kernels `K(x, X)`, `Θ(x, X)`:

    * `"nngp"`, the exact posterior of an infinitely wide Bayesian network (observation noise `ε`):
      mean `K(x,X) K̃⁻¹ Y`, covariance `K(x,x) − K(x,X) K̃⁻¹ K(X,x)`;
    * `"ntk"`, the infinite ensemble of infinitely wide networks trained by gradient flow on MSE to `t = ∞`
      (Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under gradient descent"):
      mean `Θ(x,X) Θ̃⁻¹ Y`, covariance
      `K(x,x) + Θ(x,X) Θ̃⁻¹ K Θ̃⁻¹ Θ(X,x) − (Θ(x,X) Θ̃⁻¹ K(X,x) + transpose)`;
    * `"ntkgp"`, a GP with the NTK as prior covariance (He et al. 2020, "Bayesian deep ensembles via the NTK"):
      mean `Θ(x,X) Θ̃⁻¹ Y`, covariance `Θ(x,x) − Θ(x,X) Θ̃⁻¹ Θ(X,x)`.

    Inverses are Cholesky solves, one factorization per kernel, cached.

    Args:
      k_train_train: train-train kernels: a named tuple with `nngp` and/or `ntk` fields (e.g. `ntkit.Kernel`), or
        one array used for whatever `get` asks. Shape `(N, N, O_a, O_a', ...)` over the untraced output axes.
      y_train: targets `(N, O_1, ..., O_d)`.
      diag_reg: ridge `ε ≥ 0`, relative to the mean diagonal unless `diag_reg_absolute_scale`.
      diag_reg_absolute_scale: take `diag_reg` in absolute units.
      trace_axes: output axes the kernels were traced over.

    Returns:
      `predict_fn(get=None, k_test_train=None, k_test_test=None)`. `get` is `"nngp"`, `"ntk"`, `"ntkgp"`, a tuple
      of them, or `None` for `("nngp", "ntk")`. `k_test_train` `(N_test, N, ...)`: kernels (array or named tuple) to
      predict on; `None` predicts on the training set, which is `N(Y, 0)` as in neural-tangents (for the ridge's
      fit on the training inputs pass `k_test_train=k_train_train`). `k_test_test` `(N_test, N_test, ...)`: give it
      for the covariance (`"nngp"`/`"ntk"` need the NNGP, `"ntkgp"` the NTK; with `k_test_train=None` any value
      works). Each result is the mean, or `Gaussian(mean, covariance)` when `k_test_test` is given; a tuple `get`
      gives a named tuple with one field per entry.

    Raises:
      ValueError: bad shapes, NaN/Inf, non-symmetric train kernels, a kernel missing for the requested `get`, or a
        singular train kernel without ridge.

    Example:
      >>> import jax.numpy as jnp, ntkit.predict
      >>> k = jnp.array([[1.0, 0.5], [0.5, 1.0]]); y = jnp.array([[1.0], [0.0]])
      >>> predict_fn = ntkit.predict.gp_inference(k, y, diag_reg=1e-3)
      >>> post = predict_fn("nngp", k_test_train=jnp.array([[0.5, 1.0]]), k_test_test=jnp.array([[1.0]]))
      >>> post.mean.shape, post.covariance.shape
      ((1, 1), (1, 1))
    """
    y_train = check_array(y_train, "y_train")
    diag_reg = check_scalar(diag_reg, "diag_reg")
    layout = target_layout(y_train.shape, trace_axes)
    n = y_train.shape[0]
    cache: dict = {}

    def train(name: str):
        """`(K matrix, Factorizations of K̃, K̃⁻¹ Y)` for the `name` kernel, computed once."""
        if name not in cache:
            what = f"k_train_train.{name}" if not hasattr(k_train_train, "shape") else "k_train_train"
            k = check_array(pick(k_train_train, name, "k_train_train"), what)
            dtype = float_dtype(k)
            k = check_symmetric(layout.kernel_matrix(check_kernel(layout, k, n, n, what, dtype)), what)
            fac = Factorizations(regularize(k, diag_reg, diag_reg_absolute_scale), what)
            cache[name] = (k, fac, None, dtype)
        k, fac, alpha, dtype = cache[name]
        if alpha is None:
            alpha = fac.solve(layout.to_matrix(y_train.astype(dtype)))
            cache[name] = (k, fac, alpha, dtype)
        return cache[name]

    def test_kernel(kernels, name: str, arg: str, n1: int, n2: int, dtype):
        what = f"{arg}.{name}" if not hasattr(kernels, "shape") else arg
        return layout.kernel_matrix(check_kernel(layout, pick(kernels, name, arg), n1, n2, what, dtype))

    def one(g: str, k_test_train, k_test_test):
        kname = "nngp" if g == "nngp" else "ntk"
        _, fac, alpha, dtype = train(kname)
        if k_test_train is None:
            mean = y_train.astype(dtype)
            if k_test_test is None:
                return mean
            return Gaussian(mean, jnp.zeros(layout.kernel_shape(n, n), dtype))
        first = check_array(pick(k_test_train, kname, "k_test_train"), "k_test_train")
        if first.ndim == 0:
            raise ValueError("`k_test_train` must have shape (N_test, N, ...), got a scalar.")
        n_test = first.shape[0]
        k_td = test_kernel(k_test_train, kname, "k_test_train", n_test, n, dtype)
        mean = layout.from_matrix(k_td @ alpha, n_test)
        if k_test_test is None:
            return mean
        prior = "ntk" if g == "ntkgp" else "nngp"
        k_tt = test_kernel(k_test_test, prior, "k_test_test", n_test, n_test, dtype)
        if g in ("nngp", "ntkgp"):
            cov = k_tt - k_td @ fac.solve(k_td.T)
        else:
            k_dd = train("nngp")[0]
            nngp_td = test_kernel(k_test_train, "nngp", "k_test_train", n_test, n, dtype)
            a = fac.solve(k_td.T).T  # Θ(x,X) Θ̃⁻¹
            cross = a @ nngp_td.T
            cov = k_tt + a @ k_dd @ a.T - (cross + cross.T)
        return Gaussian(mean, layout.kernel_from_matrix(cov, n_test, n_test))

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        gets, single = parse_get(GETS if get is None else get, ("nngp", "ntk", "ntkgp"))
        out = [one(g, k_test_train, k_test_test) for g in gets]
        return out[0] if single else outputs_type(gets)(*out)

    return predict_fn
