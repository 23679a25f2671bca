"""Dense (fully connected) layers and the affine kernel map shared with convolutions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax

from ._axes import check_axis_argument, check_layout
from ._layer import Layer
from ._state import KernelState, check_state

Parameterization = Literal["ntk", "standard"]
_PARAMETERIZATIONS: tuple[Parameterization, ...] = ("ntk", "standard")


def check_parameterization(parameterization: str) -> None:
    if parameterization not in _PARAMETERIZATIONS:
        raise ValueError(f"`parameterization` must be one of {_PARAMETERIZATIONS}, got {parameterization!r}.")


def affine_kernel(k: KernelState, linear: Callable, W_std: float, b_std: float | None, parameterization: str,
                  fan_in: float, shape1: tuple, shape2: tuple) -> KernelState:
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


def init_affine(key, w_shape, fan_in, b_shape, W_std, b_std, parameterization):
    """`(W, b)` drawn as neural-tangents draws them: `k_W, k_b = split(key)`, `W ~ N(0, 1)` of `w_shape` from `k_W`
    and `b ~ N(0, 1)` of `b_shape` from `k_b` (NTK); standard parameterization scales them by `σ_w/√n`
    (`n = fan_in`) and `σ_b`.

    `b` is `None` when `b_std` is None. With one key, the same values as neural-tangents 0.6.5 (with
    `jax_threefry_partitionable=False`, its era's default). An int `b_shape` means `(b_shape,)`.
    """
    b_shape = (b_shape,) if isinstance(b_shape, int) else tuple(b_shape)
    k_w, k_b = jax.random.split(key)
    w = jax.random.normal(k_w, tuple(w_shape))
    b = None if b_std is None else jax.random.normal(k_b, b_shape)
    if parameterization == "standard":
        w = w * (W_std / fan_in ** 0.5)
        b = None if b is None else b * b_std
    return (w, b)


def bias_shape(ndim: int, width: int) -> tuple[int, ...]:
    """neural-tangents' bias shape for outputs of `ndim` axes, channels last: `(1, ..., 1, width)`."""
    return (1,) * (ndim - 1) + (width,)


def add_bias(z, b, s_b):
    """`z + s_b b`, the bias `(1, ..., 1, C)` (or `(C,)`) reshaped to the rank of `z` explicitly (rank promotion may
    be off)."""
    if b is None:
        return z
    return z + s_b * b.reshape((1,) * (z.ndim - 1) + (b.shape[-1],))


def affine_scales(W_std, b_std, parameterization, fan_in, s_in: int = 1) -> tuple[float, float]:
    """Factors `(s_w, s_b)` in `z = s_w (W x) + s_b b`; `s_in` is the first width scale `s[0]` of the standard
    parameterization (Sohl-Dickstein et al. 2020)."""
    if parameterization == "ntk":
        return W_std / fan_in ** 0.5, (0.0 if b_std is None else b_std)
    return 1.0 / s_in ** 0.5, 1.0


def check_scales(s) -> tuple[int, int]:
    """`s = (s_in, s_out)`: two positive integers."""
    try:
        pair = tuple(s)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"`s` must be a pair of positive integers (s_in, s_out), got {s!r}.")
    return pair  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer acting on the last (channel) axis.

    NTK parameterization: `z = σ_w/√n · W x + σ_b · b`, `W, b ~ N(0, 1)`; standard: `z = W x / √s_in + b` with
    `W ~ N(0, σ_w² s_in/n)`, `b ~ N(0, σ_b²)` and `s_out · out_dim` units (Jacot et al. 2018; Lee et al. 2019;
    Sohl-Dickstein et al. 2020 for `s`). Kernel: see `affine_kernel`, with fan-in `n / s_in` in the standard NTK.

    Parameters `(W, b)` as neural-tangents': `W` of shape `(n, out)`, `b` of shape `(1, ..., 1, out)` (the rank of
    the input) or `None` without a bias, drawn by `init_affine`.

    Args:
      out_dim: width of the finite layer (the kernel does not depend on it in NTK parameterization).
      W_std: `σ_w`.
      b_std: `σ_b`, or `None` for no bias.
      batch_axis: neural-tangents' layout argument; must name the first axis (ntkit is batch first). A string here
        is taken as `parameterization` (ntkit's earlier positional order).
      channel_axis: must name the last axis (ntkit is channels last).
      parameterization: `"ntk"` or `"standard"`.
      s: `(s_in, s_out)`, the width scales of the standard parameterization: the layer's input width is
        `s_in` times its base width and its output `s_out · out_dim`; `(1, 1)` is the usual (He) network. Ignored
        by the NTK parameterization, as in neural-tangents.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
      >>> kernel_fn(jnp.ones((3, 4)), None, "ntk").shape
      (3, 3)
    """

    out_dim: int
    W_std: float = 1.0
    b_std: float | None = None
    batch_axis: int = 0
    channel_axis: int = -1
    parameterization: Parameterization = "ntk"
    s: tuple[int, int] = (1, 1)

    def __post_init__(self):
        if isinstance(self.batch_axis, str):  # ntkit's former order `Dense(out_dim, W_std, b_std, parameterization)`
            object.__setattr__(self, "parameterization", self.batch_axis)
            object.__setattr__(self, "batch_axis", 0)
        object.__setattr__(self, "parameterization", str(self.parameterization).lower())
        check_parameterization(self.parameterization)
        if not isinstance(self.out_dim, int) or self.out_dim < 1:
            raise ValueError(f"`out_dim` must be a positive integer, got {self.out_dim!r}.")
        check_axis_argument(self.batch_axis, "batch_axis", "Dense")
        check_axis_argument(self.channel_axis, "channel_axis", "Dense")
        object.__setattr__(self, "s", check_scales(self.s))

    @property
    def _s(self) -> tuple[int, int]:
        return self.s if self.parameterization == "standard" else (1, 1)

    def _width(self) -> int:
        return self.out_dim * self._s[1]

    def init(self, key, input_shape):
        input_shape = tuple(input_shape)
        check_layout(self.batch_axis, self.channel_axis, len(input_shape), "Dense")
        n = input_shape[-1]
        params = init_affine(key, (n, self._width()), n / self._s[0], bias_shape(len(input_shape), self._width()),
                             self.W_std, self.b_std, self.parameterization)
        return input_shape[:-1] + (self._width(),), params

    def apply(self, params, x, **kwargs):
        check_layout(self.batch_axis, self.channel_axis, x.ndim, "Dense")
        w, b = params
        s_w, s_b = affine_scales(self.W_std, self.b_std, self.parameterization, x.shape[-1], self._s[0])
        return add_bias(s_w * (x @ w), b, s_b)

    def transform(self, k, **kwargs):
        k = check_state(k, "Dense")
        check_layout(self.batch_axis, self.channel_axis, len(k.shape1), "Dense")
        return affine_kernel(k, lambda a, nb, diagonal: a, self.W_std, self.b_std, self.parameterization,
                             k.shape1[-1] / self._s[0], k.shape1[:-1] + (self._width(),),
                             k.shape2[:-1] + (self._width(),))
