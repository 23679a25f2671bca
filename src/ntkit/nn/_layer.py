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
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import jax

from ._driver import compute_kernel
from ._state import CovLevel, KernelState


class Layer(abc.ABC):
    """Base class of analytic layers (see the module docstring)."""

    pointwise: ClassVar[bool] = False
    """Whether the layer reads its input kernel entry by entry (a nonlinearity): it is then compiled together with
    the layer before it."""

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
               memory_limit: float | None = None, **kwargs: Any) -> Any:
        """Infinite-width NNGP and/or NTK between `x1` and `x2`.

        Args:
          x1: inputs `(N1, *S, C)` (channels last, batch first), a list of them for a multi-input network, or a
            `KernelState` to continue from.
          x2: `(N2, *S, C)` or `None` for `x1` (then `Σ(x, x)` holds each input's variance; when `get` is set and the
            call is large, two diagonal blocks and one off-diagonal block are computed and the fourth mirrored).
          get: `"nngp"`, `"ntk"`, a tuple of them (a `Kernel(nngp, ntk)` named tuple comes back) or `None` (the
            whole `KernelState`).
          batch_size: compute the `(N1, N2)` kernel in tiles of this many examples per side; with `x2=None` only
            tiles on and above the diagonal are computed. Tiled and untiled results agree (with `get=None`, the
            per-example covariances are taken from the tiles too).
          memory_limit: bytes the kernel's arrays may use: the largest tiles whose estimated peak (every layer's
            kernel state for the tile, times a measured overhead for the step's input, output and temporaries)
            fits are used. JAX itself and XLA's compiler come on top (see docs/analytic.md for measurements).
            Give this or `batch_size`, not both.
          **kwargs: passed to every layer's kernel (array values are traced).

        Returns:
          Arrays `(N1, N2)` for flat outputs, `(N1, N2, S_1, S_1', ...)` for outputs with spatial axes.
        """
        return compute_kernel(self, x1, x2, get, batch_size, kwargs, memory_limit)
