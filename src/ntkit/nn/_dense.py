"""Dense (fully connected) layers and the affine kernel map shared with convolutions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax

from ._layer import Layer
from ._state import KernelState, check_state

Parameterization = Literal["ntk", "standard"]
_PARAMETERIZATIONS: tuple[Parameterization, ...] = ("ntk", "standard")


def check_parameterization(parameterization: str) -> None:
    if parameterization not in _PARAMETERIZATIONS:
        raise ValueError(f"`parameterization` must be one of {_PARAMETERIZATIONS}, got {parameterization!r}.")


def affine_kernel(k: KernelState, linear: Callable, W_std: float, b_std: float | None, parameterization: str,
                  fan_in: int, shape1: tuple, shape2: tuple) -> KernelState:
    """Kernel of `z = W x + b` given the linear action `linear(array, n_batch, diagonal)` of the layer on
    covariances (see `KernelState.map`).

    NTK parameterization (docs/theory.md §2): `Σ' = σ_w² A(Σ) + σ_b²`, `Θ' = Σ' + σ_w² A(Θ)`, where `A` is the identity
    for a dense layer and the same-offset window average for a convolution. Standard parameterization
    (`W ~ N(0, σ_w²/n)`, `b ~ N(0, σ_b²)` trained directly): same `Σ'`, `Θ' = n A(Σ) + 1 + σ_w² A(Θ)` with `n` the
    fan-in, so the NTK grows with the width of the layer's input (the `+1` is the bias gradient, absent when
    `b_std is None`).
    """
    bias_var = 0.0 if b_std is None else b_std ** 2
    lin = k.map(linear)
    nngp = W_std ** 2 * lin.nngp + bias_var
    ntk = None
    if k.ntk is not None:
        assert lin.ntk is not None  # `map` keeps the NTK when there is one
        if parameterization == "ntk":
            ntk = nngp + W_std ** 2 * lin.ntk
        else:
            ntk = fan_in * lin.nngp + (0.0 if b_std is None else 1.0) + W_std ** 2 * lin.ntk
    return k.replace(
        nngp=nngp, ntk=ntk, cov1=None if lin.cov1 is None else W_std ** 2 * lin.cov1 + bias_var,
        cov2=None if lin.cov2 is None else W_std ** 2 * lin.cov2 + bias_var,
        shape1=shape1, shape2=shape2, is_gaussian=True, is_input=False)


def init_affine(key, w_shape, fan_in, out_dim, W_std, b_std, parameterization):
    """`W ~ N(0, 1)` (NTK) or `N(0, σ_w²/n)` (standard); `b ~ N(0, 1)` (NTK) or `N(0, σ_b²)`.

    No `b` when `b_std` is None.
    """
    k_w, k_b = jax.random.split(key)
    w = jax.random.normal(k_w, w_shape)
    b = None if b_std is None else jax.random.normal(k_b, (out_dim,))
    if parameterization == "standard":
        w = w * (W_std / fan_in ** 0.5)
        b = None if b is None else b * b_std
    return (w, b)


def affine_scales(W_std, b_std, parameterization, fan_in) -> tuple[float, float]:
    """Factors `(s_w, s_b)` in `z = s_w (W x) + s_b b`."""
    if parameterization == "ntk":
        return W_std / fan_in ** 0.5, (0.0 if b_std is None else b_std)
    return 1.0, 1.0


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer acting on the last (channel) axis.

    NTK parameterization: `z = σ_w/√n · W x + σ_b · b`, `W, b ~ N(0, 1)`; standard: `z = W x + b` with
    `W ~ N(0, σ_w²/n)`, `b ~ N(0, σ_b²)` (Jacot et al. 2018; Lee et al. 2019). Kernel: see `affine_kernel`.

    Args:
      out_dim: width of the finite layer (the kernel does not depend on it in NTK parameterization).
      W_std: `σ_w`.
      b_std: `σ_b`, or `None` for no bias.
      parameterization: `"ntk"` or `"standard"`.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
      >>> kernel_fn(jnp.ones((3, 4)), None, "ntk").shape
      (3, 3)
    """

    out_dim: int
    W_std: float = 1.0
    b_std: float | None = None
    parameterization: Parameterization = "ntk"

    def __post_init__(self):
        check_parameterization(self.parameterization)
        if not isinstance(self.out_dim, int) or self.out_dim < 1:
            raise ValueError(f"`out_dim` must be a positive integer, got {self.out_dim!r}.")

    def init(self, key, input_shape):
        input_shape = tuple(input_shape)
        n = input_shape[-1]
        params = init_affine(key, (n, self.out_dim), n, self.out_dim, self.W_std, self.b_std, self.parameterization)
        return input_shape[:-1] + (self.out_dim,), params

    def apply(self, params, x, **kwargs):
        w, b = params
        s_w, s_b = affine_scales(self.W_std, self.b_std, self.parameterization, x.shape[-1])
        z = s_w * (x @ w)
        return z if b is None else z + s_b * b

    def transform(self, k, **kwargs):
        k = check_state(k, "Dense")
        return affine_kernel(k, lambda a, nb, diagonal: a, self.W_std, self.b_std, self.parameterization,
                             k.shape1[-1], k.shape1[:-1] + (self.out_dim,), k.shape2[:-1] + (self.out_dim,))


