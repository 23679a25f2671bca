"""The layer protocol of `ntkit.nn`: `init`, `apply` and `kernel`, unpacking as `(init_fn, apply_fn, kernel_fn)`.

Every layer is a small frozen dataclass deriving from `Layer` with

* `init(key, input_shape) -> (output_shape, params)`: parameters of the matching finite network;
* `apply(params, x, **kwargs)`: the finite network (NTK parameterization by default);
* `kernel(x1, x2=None, get=None, batch_size=None, memory_limit=None, **kwargs)`: its infinite-width NNGP/NTK
  (docs/theory.md §2);

and unpacks and indexes as the triple `init_fn, apply_fn, kernel_fn = layer`, so code written for
neural-tangents' `stax` ports unchanged. A subclass implements `init`, `apply` and `transform(state) -> state`;
when it needs off-diagonal spatial covariances (pooling, attention) or can drop them (`Flatten`), `needs_full`;
when it reads the per-example covariances differently from a position-wise linear map, `cov_needs`.

Every layer's `apply` also takes neural-tangents' `mask_constant=` keyword (or a `MaskedArray` input) and its
`kernel` the same keyword: masked inputs, handled by `_masking` (see `ntkit.nn.MaskedArray`).

Hyperparameters given as concrete 0-d arrays (`Dense(512, W_std=jnp.sqrt(2.0))`, as neural-tangents code often
writes them) are stored as Python scalars, so layers stay hashable and their compiled kernel steps are cached;
traced ones (`jax.grad` with respect to `W_std`) are kept and run inside the caller's trace.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .._kernel import GETS, STATE_GETS, fields_tuple, parse_get
from . import _masking
from ._axes import check_layout
from ._driver import compute_kernel
from ._enums import AttentionMechanism, Padding, PositionalEmbedding
from ._state import CovLevel, KernelState


def canonical_hyperparameter(value: Any) -> Any:
    """`value` with concrete 0-d arrays (also inside tuples and lists) as Python `float`/`int`/`bool`, and the
    members of `Padding`, `AttentionMechanism` and `PositionalEmbedding` as their strings.

    Tracers and arrays of other ranks are returned unchanged.
    """
    if isinstance(value, Padding | AttentionMechanism | PositionalEmbedding):  # option enums: their strings
        return value.value
    if isinstance(value, tuple | list) and not hasattr(value, "_fields"):
        return type(value)(canonical_hyperparameter(v) for v in value)
    if isinstance(value, jax.core.Tracer):
        return value
    if isinstance(value, jax.Array | np.ndarray | np.generic) and np.ndim(value) == 0:
        dtype = np.dtype(value.dtype)
        # `jnp.issubdtype` knows bfloat16 and the other ML floats as floating, NumPy's does not
        if dtype == np.bool_ or jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating):
            return float(value) if jnp.issubdtype(dtype, jnp.floating) else np.asarray(value).item()
    return value


class _LayerMeta(abc.ABCMeta):
    """Canonicalises constructor arguments with `canonical_hyperparameter` before the layer is built."""

    def __call__(cls, *args, **kwargs):
        args = tuple(canonical_hyperparameter(a) for a in args)
        kwargs = {k: canonical_hyperparameter(v) for k, v in kwargs.items()}
        return super().__call__(*args, **kwargs)


def _with_masking(apply: Callable[..., Any]) -> Callable[..., Any]:
    """`apply` taking neural-tangents' `mask_constant=` keyword (or a `MaskedArray` input): masked entries count
    as zero and a `MaskedArray` comes back (see `ntkit.nn.MaskedArray`)."""
    @functools.wraps(apply)
    def masked(self, params, x, *args, mask_constant=None, **kwargs):
        if mask_constant is None and not isinstance(x, _masking.MaskedArray):
            return apply(self, params, x, *args, **kwargs)
        if args:
            raise TypeError(f"{type(self).__name__}.apply takes `params` and `x` positionally, got {len(args)} more.")
        return _masking.apply_fn(self, params, x, mask_constant, kwargs)

    masked.with_masking = True  # type: ignore[attr-defined]
    return masked


class Layer(metaclass=_LayerMeta):
    """Base class of analytic layers (see the module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        apply = cls.__dict__.get("apply")
        if apply is not None and not getattr(apply, "with_masking", False):
            cls.apply = _with_masking(apply)  # type: ignore[method-assign]

    pointwise: ClassVar[bool] = False
    """Whether the layer reads its input kernel entry by entry (a nonlinearity): it is then compiled together with
    the layer before it."""

    weight_free: ClassVar[bool] = False
    """Whether the layer is known to draw no random weights (a nonlinearity, pooling, normalization): two branches
    made only of such layers are deterministic functions of one input, correlated, so their kernels do not add.
    False means possibly weighted."""

    @abc.abstractmethod
    def init(self, key: jax.Array, input_shape: Any) -> tuple[Any, Any]:
        """`(output_shape, params)` of the finite layer for inputs of `input_shape` (batch axis first)."""

    @abc.abstractmethod
    def apply(self, params: Any, x: Any, **kwargs: Any) -> Any:
        """The finite layer on inputs `x`."""

    @abc.abstractmethod
    def transform(self, k: KernelState, **kwargs: Any) -> Any:
        """Maps the kernel state of the layer's input to that of its output."""

    def needs_full(self, out_full: bool) -> bool:
        """Whether the input kernel must carry full spatial covariances, given whether the output must."""
        return out_full

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        """How much of the per-example covariances (`CovLevel.NONE`, `DIAGONAL`, `FULL`) the input must carry,
        given how much the output must. Linear maps that act position by position keep the level; a layer that
        reads variances needs at least `DIAGONAL`; one that mixes positions needs `FULL` to produce any.
        Layers receiving more than they need pass on what they can."""
        return out_level

    def compiled_steps(self) -> list[tuple[tuple[Layer, ...], tuple[tuple[int, ...], ...]]]:
        """The steps the kernel driver compiles: `(layers, their index paths in this layer)`; one step by
        default."""
        return [((self,), ())]

    def _triple(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        return self.init, self.apply, self.kernel

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter(self._triple())

    def __getitem__(self, index: Any) -> Any:
        return self._triple()[index]

    def __len__(self) -> int:
        return 3

    def kernel(self, x1: Any, x2: Any = None, get: Any = None, batch_size: int | None = None,
               memory_limit: float | None = None, *, diagonal_batch: bool | None = None,
               diagonal_spatial: bool | None = None, mask_constant: Any = None, pattern: Any = None,
               batch_axis: int = 0, channel_axis: int = -1, **kwargs: Any) -> Any:
        """Infinite-width NNGP and/or NTK between `x1` and `x2`.

        Args:
          x1: inputs `(N1, *S, C)` (channels last, batch first), a list (or tuple) of them for a multi-input
            network, or a `KernelState` to continue from.
          x2: `(N2, *S, C)` or `None` for `x1` (then `Σ(x, x)` holds each input's variance; when `get` is set and the
            call is large, two diagonal blocks and one off-diagonal block are computed and the fourth mirrored).
          get: `"nngp"`, `"ntk"`, a tuple of them (a `Kernel(nngp, ntk)` named tuple comes back) or `None` (the
            whole `KernelState`). Any other field of the state (`"cov1"`, `"cov2"`, `"shape1"`, ... as in
            neural-tangents' `Kernel`) may be named too, in any case; a tuple naming one comes back as a named
            tuple `Kernel` with the fields asked for, in that order.
          batch_size: compute the `(N1, N2)` kernel in tiles of this many examples per side; with `x2=None` only
            tiles on and above the diagonal are computed. Tiled and untiled results agree (with `get=None`, the
            per-example covariances are taken from the tiles too).
          memory_limit: bytes the kernel's arrays may use: the largest tiles whose estimated peak (every layer's
            kernel state for the tile, times a measured overhead for the step's input, output and temporaries)
            fits are used. JAX itself and XLA's compiler come on top (see docs/analytic.md for measurements).
            Give this or `batch_size`, not both.
          diagonal_batch: neural-tangents' keyword; `True` (or `None`) is what ntkit computes (`cov1` holds each
            example's own covariance), `False` raises `NotImplementedError`.
          diagonal_spatial: neural-tangents' keyword: `True` returns only the entries with equal positions
            (`(N1, N2, S_1, ..., S_k)` instead of `(N1, N2, S_1, S_1', ...)`); `None`/`False` all pairs.
          mask_constant: neural-tangents' masked inputs: entries of `x1`/`x2` equal to it (NaN: the NaN entries)
            are masked: they count as zero, and covariances involving a position the network masks are zero
            (how each layer propagates masks: `ntkit.nn.MaskedArray`; other layers raise a `ValueError`). The
            state returned with `get=None` carries the masks as `mask1`, `mask2`.
          pattern: the graphs of `Aggregate` layers, `(pattern1, pattern2)` for `x1` and `x2` (with `x2=None`,
            `pattern1` alone or `(pattern1, None)`), each with the batch axis first (cut with the examples when
            tiling); passed to every layer as the keyword `pattern`, read by `Aggregate` only.
          batch_axis: neural-tangents' layout of the inputs: must be 0 (batch first).
          channel_axis: must name the last axis (channels last).
          **kwargs: passed to every layer's kernel (array values are traced); ntkit's own layers read none, custom
            layers may.

        Returns:
          Arrays `(N1, N2)` for flat outputs, `(N1, N2, S_1, S_1', ...)` for outputs with spatial axes.
        """
        if diagonal_batch is not None and not diagonal_batch:
            raise NotImplementedError("`diagonal_batch=False` (the (N1, N1) covariance of x1 with itself, per "
                                      "neural-tangents) is not supported; call kernel_fn(x1, None, ...) for it.")
        if pattern is not None:
            kwargs["pattern"] = pattern
        for a in x1 if isinstance(x1, list | tuple) else [x1]:
            ndim = 0 if isinstance(a, KernelState) else int(np.ndim(a))  # inputs, not a state to continue from
            if ndim:
                check_layout(batch_axis, channel_axis, ndim, "kernel_fn")
        if diagonal_spatial is not None and not isinstance(diagonal_spatial, bool | np.bool_):
            raise TypeError(f"`diagonal_spatial` must be a bool or None, got {diagonal_spatial!r}.")
        fields, single = (None, False) if get is None else parse_get(get, STATE_GETS)
        out_full = not diagonal_spatial
        if fields is not None and set(fields) <= set(GETS):
            return compute_kernel(self, x1, x2, get, batch_size, kwargs, memory_limit, mask_constant, out_full)
        state = compute_kernel(self, x1, x2, None, batch_size, kwargs, memory_limit, mask_constant, out_full)
        if fields is None:
            return state
        return _map_outputs(lambda k: _fields(k, fields, single), state)


def _map_outputs(fn: Callable[[Any], Any], out: Any) -> Any:
    """`fn` on the output, or on each output of a multi-output network (a list)."""
    if isinstance(out, list):
        return [fn(o) for o in out]
    return fn(out)


def _fields(k: KernelState, fields: tuple[str, ...], single: bool) -> Any:
    values = [getattr(k, f) for f in fields]
    return values[0] if single else fields_tuple(fields)(*values)
