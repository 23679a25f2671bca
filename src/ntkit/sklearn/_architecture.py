"""The network behind the scikit-learn kernels and estimators: a default MLP, or any `ntkit.nn` architecture."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import nn as stax

HIDDEN_WIDTH = 512
"""Width of the hidden layers of the finite network the default MLP stands for. NTK-parameterized kernels do not
depend on it; standard-parameterized NTKs grow with it (docs/theory.md §1)."""

ACTIVATIONS: dict[str, Callable[[], stax.Layer]] = {
    "relu": stax.Relu,
    "erf": stax.Erf,
    "gelu": stax.Gelu,
    "abs": stax.Abs,
    "leaky_relu": lambda: stax.LeakyRelu(0.1),
    "sigmoid_like": stax.Sigmoid_like,
    "sin": stax.Sin,
    "tanh": lambda: stax.Elementwise(jnp.tanh, name="Tanh"),
    "identity": stax.Identity,
}


def mlp(depth: int, activation: str, W_std: Any, b_std: Any, parameterization: Any) -> stax.Layer:
    """`depth` hidden layers of `Dense(W_std, b_std)` + activation, then a readout `Dense(1, W_std, b_std)`."""
    make = ACTIVATIONS[activation]
    hidden = [layer for _ in range(depth)
              for layer in (stax.Dense(HIDDEN_WIDTH, W_std, b_std, parameterization), make())]
    return stax.serial(*hidden, stax.Dense(1, W_std, b_std, parameterization))


def check_options(depth: Any, activation: Any, W_std: Any, b_std: Any, parameterization: Any,
                  architecture: Any, input_shape: Any) -> None:
    """Clear errors for options that cannot describe a network (checked when the network is first needed)."""
    if architecture is None:
        if not isinstance(depth, int | np.integer) or isinstance(depth, bool) or depth < 0:
            raise ValueError(f"`depth` must be a non-negative integer, got {depth!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    elif not (isinstance(architecture, stax.Layer) or callable(architecture)):
        raise TypeError("`architecture` must be an ntkit.nn layer or a function (W_std, b_std) -> layer, got "
                        f"{type(architecture).__name__}.")
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"`parameterization` must be 'ntk' or 'standard', got {parameterization!r}.")
    for name, value, positive in (("W_std", W_std, True), ("b_std", b_std, False)):
        v = float(value)
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise ValueError(f"`{name}` must be a finite {'positive' if positive else 'non-negative'} number, "
                             f"got {value!r}.")
    if input_shape is not None and (not isinstance(input_shape, tuple) or not all(
            isinstance(s, int | np.integer) and s > 0 for s in input_shape)):
        raise ValueError(f"`input_shape` must be None or a tuple of positive integers, got {input_shape!r}.")


def network(depth: int, activation: str, W_std: Any, b_std: Any, parameterization: Any,
            architecture: Any) -> stax.Layer:
    """The analytic network: the default MLP, `architecture(W_std, b_std)`, or `architecture` itself."""
    if architecture is None:
        return mlp(depth, activation, W_std, b_std, parameterization)
    if isinstance(architecture, stax.Layer):
        return architecture
    layer = architecture(W_std, b_std)
    if not isinstance(layer, stax.Layer):
        raise TypeError(f"`architecture(W_std, b_std)` must return an ntkit.nn layer, got {type(layer).__name__}.")
    return layer


def shaped(X: Any, input_shape: tuple[int, ...] | None) -> Any:
    """Rows of `X` `(n, n_features)` reshaped to the network's inputs `(n, *input_shape)`."""
    if input_shape is None:
        return X
    if math.prod(input_shape) != X.shape[1]:
        raise ValueError(f"`input_shape` {input_shape} holds {math.prod(input_shape)} values per example but X has "
                         f"{X.shape[1]} features.")
    return X.reshape((X.shape[0], *input_shape))
