"""`NTKRegressor` and `NTKClassifier`: an infinitely wide network trained by gradient descent on the mean squared
loss, as scikit-learn estimators (the mean of the infinite ensemble, `ntkit.predict.gradient_descent_mse_ensemble`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import predict
from .._kernel import Kernel
from ._architecture import check_options, network, shaped


class _TrainKernelCache:
    """`kernel_fn(x1, x2, get)` for `gradient_descent_mse_ensemble`: the train-train kernels computed at `fit`,
    every other kernel computed (tiled to `memory_limit`)."""

    def __init__(self, net: Any, x_train: np.ndarray, k_train: Kernel, memory_limit: float | None):
        self.net, self.x_train, self.k_train, self.memory_limit = net, x_train, k_train, memory_limit

    def __call__(self, x1: Any, x2: Any, get: tuple[str, ...]) -> Kernel:
        if x2 is None and x1.shape == self.x_train.shape and np.array_equal(np.asarray(x1), self.x_train):
            return self.k_train
        return self.net.kernel(x1, x2, get, memory_limit=self.memory_limit)


class _NTKEstimator(BaseEstimator):
    """Shared by `NTKRegressor` and `NTKClassifier` (see `NTKRegressor`)."""

    def __init__(self, depth: int = 1, activation: str = "relu", W_std: float = 2 ** 0.5, b_std: float = 0.0,
                 parameterization: str = "ntk", architecture: Any = None, input_shape: tuple[int, ...] | None = None,
                 t: float | None = None, kernel: Any = "ntk", diag_reg: float = 1e-3, learning_rate: float = 1.0,
                 memory_limit: float | None = 2e9):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.architecture = architecture
        self.input_shape = input_shape
        self.t = t
        self.kernel = kernel
        self.diag_reg = diag_reg
        self.learning_rate = learning_rate
        self.memory_limit = memory_limit

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # In float32 (JAX's default) a test point's prediction moves with the other points of its batch by float32
        # rounding of its kernel row times the train kernel's conditioning (~1e-5 relative), so scikit-learn's
        # exact subset- and order-invariance checks hold in float64 only (`jax_enable_x64`).
        tags.non_deterministic = jax.dtypes.canonicalize_dtype(float) != jnp.float64
        return tags

    def _network(self) -> Any:
        return network(self.depth, self.activation, self.W_std, self.b_std, self.parameterization, self.architecture)

    def _fit_targets(self, X: Any, targets: np.ndarray) -> None:
        check_options(self.depth, self.activation, self.W_std, self.b_std, self.parameterization, self.architecture,
                      self.input_shape)
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"`kernel` must be 'ntk' or 'nngp', got {self.kernel!r}.")
        if self.t is not None and not float(self.t) >= 0:
            raise ValueError(f"`t` must be None (infinite time) or a non-negative time, got {self.t!r}.")
        x = shaped(X, self.input_shape)
        gets = ("nngp", "ntk")
        k = self._network().kernel(jnp.asarray(x, dtype=float), None, gets, memory_limit=self.memory_limit)
        self.x_train_ = x
        self.targets_ = targets
        self.kernel_train_ = Kernel(nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))

    def _outputs(self, X: Any, return_std: bool = False) -> Any:
        """Mean `(n, k)` of the trained infinite ensemble on `X` (and the standard deviation of each output)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        x = shaped(X, self.input_shape)
        dtype = self.kernel_train_.ntk.dtype
        kernel_fn = _TrainKernelCache(self._network(), self.x_train_, self.kernel_train_, self.memory_limit)
        predict_fn = predict.gradient_descent_mse_ensemble(
            kernel_fn, self.x_train_.astype(dtype), self.targets_.astype(dtype), learning_rate=self.learning_rate,
            diag_reg=self.diag_reg)
        out = predict_fn(t=self.t, x_test=jnp.asarray(x, dtype=dtype), get=self.kernel, compute_cov=return_std)
        if not return_std:
            return np.asarray(out, dtype=np.float64)
        std = np.sqrt(np.maximum(np.diagonal(np.asarray(out.covariance, dtype=np.float64)), 0.0))
        return np.asarray(out.mean, dtype=np.float64), std


class NTKRegressor(RegressorMixin, _NTKEstimator):
    """The infinitely wide network trained by gradient descent on the mean squared loss, as a regressor.

    Predictions are the mean of the infinite ensemble of such networks (Lee et al. 2019): at time `t` (in steps of
    `learning_rate`; `None` for the end of training) `Θ(x, X) Θ⁻¹ (I − e^{−ηtΘ/(nk)}) Y` with the NTK (`kernel="ntk"`)
    or, with `kernel="nngp"`, only the readout trained (at `t=None` the NNGP posterior mean). `diag_reg` is a ridge
    relative to the mean diagonal of the train kernel (it keeps the solve well posed for repeated points).
    `predict(X, return_std=True)` also gives the ensemble's standard deviation. The network is the one of
    `ntkit.sklearn.NTKernel` (`depth`, `activation`, `W_std`, `b_std`, `parameterization`, `architecture`,
    `input_shape`); kernels are tiled to `memory_limit` bytes. Targets are used as given (not centred).

    Example:
      >>> import numpy as np
      >>> from ntkit.sklearn import NTKRegressor
      >>> X = np.random.default_rng(0).normal(size=(30, 2)); y = np.sin(X[:, 0])
      >>> NTKRegressor(depth=2).fit(X, y).score(X, y) > 0.99
      True
    """

    def fit(self, X: Any, y: Any) -> NTKRegressor:
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True, dtype=np.float64)
        self._fit_targets(X, y.reshape(len(y), -1))
        self.y_ndim_ = y.ndim
        return self

    def predict(self, X: Any, return_std: bool = False) -> Any:
        out = self._outputs(X, return_std)
        mean, std = out if return_std else (out, None)
        if self.y_ndim_ == 1:
            mean = mean[:, 0]
        return (mean, std) if return_std else mean

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class NTKClassifier(ClassifierMixin, _NTKEstimator):
    """The infinitely wide network trained by gradient descent on the mean squared loss, as a classifier.

    Fits centred one-hot targets (one-hot minus `1/k`, the mean output of a network at initialization being 0) with
    the infinite ensemble's mean, as `NTKRegressor`; `decision_function` gives the `k` outputs (for two classes one
    score, positive for `classes_[1]`), `predict` the class of the largest.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> from ntkit.sklearn import NTKClassifier
      >>> X, y = load_iris(return_X_y=True)
      >>> NTKClassifier(depth=1).fit(X, y).score(X, y) > 0.9
      True
    """

    def fit(self, X: Any, y: Any) -> NTKClassifier:
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        one_hot = (y[:, None] == self.classes_[None, :]).astype(np.float64)
        self._fit_targets(X, one_hot - 1.0 / len(self.classes_))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        outputs = self._outputs(X)
        if len(self.classes_) == 2:
            return outputs[:, 1] - outputs[:, 0]
        return outputs

    def predict(self, X: Any) -> np.ndarray:
        outputs = self._outputs(X)
        return self.classes_[np.argmax(outputs, axis=1)]
