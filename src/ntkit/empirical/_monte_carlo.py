"""Monte Carlo kernels: the empirical NNGP/NTK averaged over randomly initialized finite networks."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax

from .._checks import check_positive_int
from .._kernel import parse_get, select
from .._kwargs import fold_rng
from ._api import EmpiricalKernelFn, Implementation, empirical_kernel_fn
from ._batch import batch, check_count


def _input_shapes(x: Any) -> Any:
    """`x.shape`, or the same pytree of shapes for a pytree of inputs (what `init_fn` of a multi-input network
    takes)."""
    if hasattr(x, "shape"):
        return tuple(x.shape)
    shapes = jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), x)
    return list(shapes) if isinstance(shapes, tuple) else shapes


def _sample_counts(n_samples: Any) -> tuple[tuple[int, ...], bool]:
    """`(counts, several)`: the sample counts asked for, increasing without repeats, and whether a sequence was
    given (then the kernel function returns a generator)."""
    if isinstance(n_samples, numbers.Integral) and not isinstance(n_samples, bool):
        return (check_positive_int(n_samples, "n_samples"),), False
    if not isinstance(n_samples, Iterable) or isinstance(n_samples, str):
        raise ValueError(f"`n_samples` must be a positive integer or a sequence of them, got {n_samples!r}.")
    counts = tuple(sorted({check_positive_int(n, "n_samples") for n in n_samples}))
    if not counts:
        raise ValueError("`n_samples` is an empty sequence; give at least one count.")
    return counts, True


class MonteCarloKernelFn:
    """`kernel_fn(x1, x2=None, get=("nngp", "ntk"), batch_size=None, **apply_kwargs)` from `monte_carlo_kernel_fn`.

    With an integer `n_samples` it returns the average over that many networks; with a sequence, a generator of
    the running averages at each count (increasing), as neural-tangents.
    """

    def __init__(self, init_fn: Callable[..., Any], key: jax.Array, n_samples: Any, empirical: EmpiricalKernelFn,
                 batch_size: int | None):
        self._init_fn = init_fn
        self._key = key
        self._counts, self._several = _sample_counts(n_samples)
        self._empirical = empirical
        self._batch_size = batch_size

    def __call__(self, x1: Any, x2: Any = None, get: Any = ("nngp", "ntk"), batch_size: int | None = None,
                 **kwargs: Any) -> Any:
        gets, single = parse_get(get, allow_none=True)  # None: both, as in neural-tangents
        estimates = self._estimates(x1, x2, gets, single, batch_size or self._batch_size, kwargs)
        if self._several:
            return estimates
        return next(estimates)

    def _estimates(self, x1: Any, x2: Any, gets: tuple[str, ...], single: bool, batch_size: int | None,
                   kwargs: dict[str, Any]) -> Iterator[Any]:
        shapes = _input_shapes(x1)
        total: list[Any] = []
        for s in range(1, self._counts[-1] + 1):
            _, params = self._init_fn(jax.random.fold_in(self._key, s - 1), shapes)
            k = self._empirical(x1, x2, gets, params, batch_size, **fold_rng(kwargs, s - 1))
            values = [getattr(k, g) for g in gets]
            total = values if not total else [t + v for t, v in zip(total, values, strict=True)]
            if s in self._counts:
                yield select({g: t / s for g, t in zip(gets, total, strict=True)}, gets, single)


def monte_carlo_kernel_fn(
    init_fn: Callable[..., Any],
    apply_fn: Callable[..., Any],
    key: jax.Array,
    n_samples: int | Sequence[int],
    batch_size: int | None = 0,
    device_count: int = -1,
    store_on_device: bool = True,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: Implementation | int = "auto",
) -> Any:
    """`kernel_fn(x1, x2=None, get=("nngp", "ntk"), **apply_kwargs)` averaging `n_samples` finite networks.

    For sample `s`, parameters come from `init_fn(fold_in(key, s), x1.shape)` and the empirical kernels
    `K̂ = f(x1) f(x2)ᵀ`, `Θ̂ = J(x1) J(x2)ᵀ` (traced over `trace_axes`, so averaged over the readout) from
    `ntkit.empirical_kernel_fn`. Their mean converges to the analytic kernel of the same `ntkit.nn` network: the
    NTK's error is `O(1/√(width · n_samples))`, the NNGP's `O(1/√(n_samples · O))` for `O` traced readout outputs
    at any width (one network's outputs are one Gaussian sample). If `apply_kwargs` holds `rng` (dropout), sample
    `s` uses `fold_in(rng, s)`. The arguments and their order are neural-tangents'.

    Args:
      init_fn: `init_fn(key, input_shape) -> (output_shape, params)` of the finite network (e.g. from
        `init_fn, apply_fn, kernel_fn = stax.serial(...)`).
      apply_fn: `apply_fn(params, x, **apply_kwargs)` of the same network.
      key: PRNG key of the initializations.
      n_samples: number of networks averaged, or a sequence of counts: the kernel function then returns a
        generator of the averages over the first `n` networks for each count `n` (increasing), all from one pass.
      batch_size: as in `ntkit.empirical_kernel_fn`; `0` or `None` for no tiling.
      device_count: as in `ntkit.batch` (accepted; tiles run on the default device).
      store_on_device: `False` moves each result to host (CPU) memory, as in `ntkit.batch`.
      trace_axes: as in `ntkit.empirical_kernel_fn`.
      diagonal_axes: as in `ntkit.empirical_kernel_fn`.
      vmap_axes: as in `ntkit.empirical_kernel_fn`.
      implementation: as in `ntkit.empirical_kernel_fn` (strings, `ntkit.NtkImplementation` or 0–3).

    Returns:
      A `MonteCarloKernelFn`, `kernel_fn(x1, x2=None, get=("nngp", "ntk"), **apply_kwargs)`: with a string `get`
      an array, with a tuple (or `None`) a `Kernel(nngp, ntk)`; a generator of them when `n_samples` is a
      sequence.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit, ntkit.nn as stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(1))
      >>> mc = ntkit.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), [1, 4])
      >>> tuple(k.shape for k in mc(jnp.ones((3, 2)), None, "ntk"))
      ((3, 3), (3, 3))
    """
    _sample_counts(n_samples)
    size = None if batch_size in (0, None) else check_positive_int(batch_size, "batch_size")
    empirical = empirical_kernel_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)
    mc = MonteCarloKernelFn(init_fn, key, n_samples, empirical, size)
    if store_on_device is True and check_count(device_count, "device_count", -1) in (-1, 0, 1):
        return mc
    # neural-tangents' device arguments, through `batch` (which checks them; tiles come from `batch_size` above)
    return batch(mc, 0, device_count, store_on_device)
