"""`NTKernel` and `NNGPKernel`: an architecture's infinite-width kernels as scikit-learn Gaussian-process kernels."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils import check_array

from .. import nn as stax
from ._architecture import check_options, network, shaped

_HYPERPARAMETERS = ("W_std", "b_std")


@functools.partial(jax.jit, static_argnames=("config", "get", "free", "diagonal"))
def _kernel(values: jax.Array, fixed: jax.Array, X: jax.Array, Y: jax.Array | None, *, config: tuple,
            get: str, free: tuple[str, ...], diagonal: bool) -> jax.Array:
    """The kernel (or its diagonal) as a function of the free hyperparameters `values` (in the order of `free`),
    the others held at `fixed` (`W_std`, `b_std`)."""
    depth, activation, parameterization, architecture, input_shape = config
    stds = dict(zip(_HYPERPARAMETERS, (fixed[0], fixed[1]), strict=True))
    stds.update({name: values[i] for i, name in enumerate(free)})
    net = network(depth, activation, stds["W_std"], stds["b_std"], parameterization, architecture)
    X = shaped(X, input_shape)
    if diagonal:  # one example at a time: never the (n, n) matrix
        return jax.vmap(lambda x: net.kernel(x[None], None, get)[0, 0])(X)
    return net.kernel(X, None if Y is None else shaped(Y, input_shape), get)


class _ArchitectureKernel(Kernel):
    """Shared by `NTKernel` and `NNGPKernel` (see `NTKernel`)."""

    _get: ClassVar[str]

    def __init__(self, depth: int = 1, activation: str = "relu", W_std: float = 2 ** 0.5, b_std: float = 0.0,
                 parameterization: str = "ntk", architecture: Any = None, input_shape: tuple[int, ...] | None = None,
                 W_std_bounds: Any = (1e-2, 1e2), b_std_bounds: Any = (1e-5, 1e1)):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.architecture = architecture
        self.input_shape = input_shape
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds

    @property
    def _fixed_architecture(self) -> bool:
        return isinstance(self.architecture, stax.Layer)  # a built layer: W_std/b_std do not reach it

    @property
    def hyperparameter_W_std(self) -> Hyperparameter:
        return Hyperparameter("W_std", "numeric", "fixed" if self._fixed_architecture else self.W_std_bounds)

    @property
    def hyperparameter_b_std(self) -> Hyperparameter:
        # log-space optimisation cannot leave b_std = 0: a network without bias keeps it fixed
        fixed = self._fixed_architecture or float(self.b_std) == 0.0
        return Hyperparameter("b_std", "numeric", "fixed" if fixed else self.b_std_bounds)

    def _config(self) -> tuple:
        check_options(self.depth, self.activation, self.W_std, self.b_std, self.parameterization, self.architecture,
                      self.input_shape)
        return (self.depth, self.activation, self.parameterization, self.architecture, self.input_shape)

    def _evaluate(self, X: Any, Y: Any, free: tuple[str, ...], diagonal: bool = False) -> Any:
        config = self._config()
        values = jnp.asarray([float(getattr(self, name)) for name in free], dtype=float)
        fixed = jnp.asarray([float(self.W_std), float(self.b_std)], dtype=float)
        X = jnp.asarray(check_array(X, dtype=np.float64, input_name="X"), dtype=float)
        if Y is not None:
            Y = jnp.asarray(check_array(Y, dtype=np.float64, input_name="Y"), dtype=float)
            if Y.shape[1] != X.shape[1]:
                raise ValueError(f"X and Y must have the same number of features, got {X.shape[1]} and {Y.shape[1]}.")
        return functools.partial(_kernel, fixed=fixed, X=X, Y=Y, config=config, get=self._get, free=free,
                                 diagonal=diagonal), values

    def __call__(self, X: Any, Y: Any = None, eval_gradient: bool = False) -> Any:
        """The kernel `k(X, Y)` `(n_X, n_Y)`, and with `eval_gradient` (only for `Y=None`) its gradient with respect
        to the log-transformed free hyperparameters `theta`, `(n_X, n_X, n_dims)`, by JAX autodiff."""
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        if not eval_gradient:
            fn, values = self._evaluate(X, Y, ())
            return np.array(fn(values), dtype=np.float64)
        free = tuple(hp.name for hp in self.hyperparameters if not hp.fixed)
        fn, values = self._evaluate(X, None, free)
        k = fn(values)
        if not free:
            return np.array(k, dtype=np.float64), np.empty(k.shape + (0,))
        jac = jax.jacfwd(fn)(values)  # (n, n, n_free); ∂k/∂log θ = θ ∂k/∂θ
        return np.array(k, dtype=np.float64), np.array(jac * values[None, None, :], dtype=np.float64)

    def diag(self, X: Any) -> np.ndarray:
        """`k(x, x)` for every row of `X`, one example at a time (the full matrix is never formed)."""
        fn, values = self._evaluate(X, None, (), diagonal=True)
        return np.array(fn(values), dtype=np.float64)

    def is_stationary(self) -> bool:
        return False


class NTKernel(_ArchitectureKernel):
    """The infinite-width NTK of a network as a scikit-learn kernel (Gaussian processes, SVMs, kernel ridge).

    The network is `depth` hidden layers of `Dense(W_std, b_std)` followed by `activation`, then a readout
    `Dense(1, W_std, b_std)` (docs/theory.md §2), or `architecture`: any `ntkit.nn` layer (its `W_std`/`b_std` are
    then fixed) or a function `(W_std, b_std) -> layer` (e.g. a convolutional network; give `input_shape` to
    reshape the feature rows, e.g. `(8, 8, 1)` for digits). `W_std` and `b_std` are hyperparameters optimised in
    log space within their bounds; `b_std=0` (no bias) keeps `b_std` fixed. Gradients with respect to them are exact
    (JAX autodiff through the kernel recursion). Computed in float64 when JAX's `jax_enable_x64` is on, else float32
    (Gaussian processes want float64).

    Example:
      >>> import numpy as np
      >>> from sklearn.svm import SVC
      >>> from ntkit.sklearn import NTKernel
      >>> X = np.random.default_rng(0).normal(size=(20, 3)); y = (X[:, 0] > 0).astype(int)
      >>> SVC(kernel=NTKernel(depth=2)).fit(X, y).score(X, y) > 0.9
      True
    """

    _get = "ntk"


class NNGPKernel(_ArchitectureKernel):
    """The infinite-width NNGP kernel (the covariance of the network's outputs at initialization) of the same
    networks as `NTKernel`, as a scikit-learn kernel; see `NTKernel` for the arguments."""

    _get = "nngp"
