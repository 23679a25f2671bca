"""`batch`: any kernel function computed in tiles of examples (neural-tangents' `nt.batch`)."""

from __future__ import annotations

import inspect
import numbers
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax

from .._tiling import Tiles


def check_count(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")
    return int(value)


def _takes_batch_size(fn: Callable[..., Any]) -> bool:
    """Whether `fn` tiles by itself: it has a parameter named `batch_size` (ntkit's kernel functions do) and is not
    a `jax.jit` wrapper (which would trace `batch_size`)."""
    if hasattr(fn, "lower"):
        return False
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "batch_size" in parameters


def _n_examples(x: Any, name: str) -> int:
    leaves = jax.tree_util.tree_leaves(x)
    sizes = {int(leaf.shape[0]) for leaf in leaves if getattr(leaf, "ndim", 0)}
    if len(sizes) != 1 or any(not getattr(leaf, "ndim", 0) for leaf in leaves):
        raise ValueError(f"`{name}` must be an array or a pytree of arrays sharing the batch axis 0; got leading "
                         f"sizes {sorted(sizes)}.")
    return sizes.pop()


def _rows(x: Any, rows: slice) -> Any:
    return jax.tree_util.tree_map(lambda leaf: leaf[rows], x)


def _to_host(out: Any) -> Any:
    return jax.device_put(out, jax.devices("cpu")[0])


def _to_host_each(outs: Iterator[Any]) -> Iterator[Any]:
    for out in outs:
        yield _to_host(out)


class BatchedKernelFn:
    """`kernel_fn(x1, x2=None, *args, **kwargs)` computed in tiles, from `ntkit.batch`."""

    def __init__(self, kernel_fn: Callable[..., Any], batch_size: int, device_count: int, store_on_device: bool):
        self.kernel_fn = kernel_fn
        self.batch_size = batch_size
        self.device_count = device_count
        self.store_on_device = store_on_device

    def __call__(self, x1: Any, x2: Any = None, *args: Any, **kwargs: Any) -> Any:
        if "batch_size" in kwargs:
            raise TypeError("a function from `ntkit.batch` sets `batch_size` itself; pass it to `batch`.")
        size = self.batch_size or None
        # ntkit's own tiling takes single arrays; lists and other pytrees of inputs are tiled here
        if _takes_batch_size(self.kernel_fn) and not isinstance(x1, list | tuple | dict):
            out = self.kernel_fn(x1, x2, *args, batch_size=size, **kwargs)
        else:
            out = self._tiled(x1, x2, size, args, kwargs)
        if not self.store_on_device:
            if isinstance(out, types.GeneratorType):  # Monte Carlo estimates at several sample counts
                return _to_host_each(out)
            out = _to_host(out)
        return out

    def _tiled(self, x1: Any, x2: Any, size: int | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Tiles of any kernel function whose outputs are `(N1, N2, ...)` arrays (or a pytree of them): every tile
        is computed (nothing is mirrored, as the layout of the output is not known), a diagonal tile of `x2=None`
        with `x2=None`."""
        n1 = _n_examples(x1, "x1")
        n2 = n1 if x2 is None else _n_examples(x2, "x2")
        tiles = Tiles.build(n1, n2, size)
        if tiles.single:
            return self.kernel_fn(x1, x2, *args, **kwargs)
        assemblies: list[Any] = []
        treedef = None
        for i in range(len(tiles.rows)):
            for j in range(len(tiles.cols)):
                a = _rows(x1, tiles.rows[i])
                b = None if x2 is None and i == j else _rows(x1 if x2 is None else x2, tiles.cols[j])
                leaves, treedef = jax.tree_util.tree_flatten(self.kernel_fn(a, b, *args, **kwargs))
                if not assemblies:
                    assemblies = [tiles.assembly() for _ in leaves]
                lead = (tiles.rows[i].stop - tiles.rows[i].start, tiles.cols[j].stop - tiles.cols[j].start)
                for assembly, leaf in zip(assemblies, leaves, strict=True):
                    if getattr(leaf, "shape", (None,))[:2] != lead:
                        raise ValueError(f"`kernel_fn` returned an output of shape {getattr(leaf, 'shape', None)} "
                                         f"for a tile of {lead[0]} x {lead[1]} examples; `batch` needs kernels "
                                         "laid out (N1, N2, ...).")
                    assembly.add(i, j, leaf)
        assert treedef is not None
        return jax.tree_util.tree_unflatten(treedef, [assembly.result() for assembly in assemblies])


def batch(kernel_fn: Callable[..., Any], batch_size: int = 0, device_count: int = -1,
          store_on_device: bool = True) -> BatchedKernelFn:
    """`kernel_fn` computed in tiles of `batch_size` examples per side, as neural-tangents' `nt.batch`.

    ntkit's own kernel functions (analytic `kernel_fn`s of `ntkit.nn`, `empirical_kernel_fn` and the others,
    `monte_carlo_kernel_fn`) tile by themselves: the returned function calls them with `batch_size=`, so the
    whole kernel state (`get=None`) and symmetric calls (`x2=None`, upper tiles only) are tiled as they are
    natively. Any other function `kernel_fn(x1, x2, *args, **kwargs)` returning `(N1, N2, ...)` arrays (or a pytree
    of them, e.g. a `Kernel`), a `jax.jit` of a kernel function included, is called once per pair of tiles and the
    tiles assembled. Tiled and untiled results agree.

    Args:
      kernel_fn: the kernel function, `kernel_fn(x1, x2=None, *args, **kwargs)`.
      batch_size: examples per tile side; `0` computes the kernel in one piece (as in neural-tangents).
      device_count: accepted for neural-tangents compatibility (`-1` all devices, `0` none): ntkit computes the
        tiles one after another on JAX's default device, and warns when several devices would have been used.
      store_on_device: `False` moves the result to host (CPU) memory, to keep large kernels off the accelerator.

    Returns:
      A `BatchedKernelFn` with the call signature of `kernel_fn` (without `batch_size`).

    Example:
      >>> import jax.numpy as jnp, ntkit, ntkit.nn as stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
      >>> x = jnp.linspace(-1.0, 1.0, 12).reshape(6, 2)
      >>> tiled = ntkit.batch(kernel_fn, batch_size=2)
      >>> bool(jnp.allclose(tiled(x, None, "ntk"), kernel_fn(x, None, "ntk")))
      True
    """
    if not callable(kernel_fn):
        raise TypeError(f"`kernel_fn` must be callable, got {type(kernel_fn).__name__}.")
    batch_size = check_count(batch_size, "batch_size", 0)
    device_count = check_count(device_count, "device_count", -1)
    if not isinstance(store_on_device, bool):
        raise TypeError(f"`store_on_device` must be a bool, got {store_on_device!r}.")
    devices = jax.device_count() if device_count == -1 else device_count
    if devices > 1 and jax.device_count() > 1:
        warnings.warn(f"ntkit.batch computes tiles on one device; device_count={device_count} does not spread them "
                      f"over the {jax.device_count()} devices.", UserWarning, stacklevel=2)
    return BatchedKernelFn(kernel_fn, batch_size, device_count, store_on_device)
