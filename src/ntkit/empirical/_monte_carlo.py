"""Monte Carlo kernels: the empirical NNGP/NTK averaged over randomly initialized finite networks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from .._checks import check_positive_int
from .._kernel import parse_get, select
from .._kwargs import fold_rng
from ._api import EmpiricalKernelFn, Implementation, empirical_kernel_fn


class MonteCarloKernelFn:
    """`kernel_fn(x1, x2=None, get=("nngp", "ntk"), **apply_kwargs)` from `monte_carlo_kernel_fn`."""

    def __init__(self, init_fn: Callable[..., Any], key: jax.Array, n_samples: int, empirical: EmpiricalKernelFn):
        self._init_fn = init_fn
        self._key = key
        self._n_samples = n_samples
        self._empirical = empirical

    def __call__(self, x1: Any, x2: Any = None, get: Any = ("nngp", "ntk"), **kwargs: Any) -> Any:
        gets, single = parse_get(get)
        total: list[Any] = []
        for s in range(self._n_samples):
            _, params = self._init_fn(jax.random.fold_in(self._key, s), x1.shape)
            k = self._empirical(x1, x2, gets, params, **fold_rng(kwargs, s))
            values = [getattr(k, g) for g in gets]
            total = values if not total else [t + v for t, v in zip(total, values, strict=True)]
        return select({g: t / self._n_samples for g, t in zip(gets, total, strict=True)}, gets, single)


def monte_carlo_kernel_fn(
    init_fn: Callable[..., Any],
    apply_fn: Callable[..., Any],
    key: jax.Array,
    n_samples: int,
    batch_size: int | None = None,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: Implementation | int = "auto",
) -> MonteCarloKernelFn:
    """`kernel_fn(x1, x2=None, get=("nngp", "ntk"), **apply_kwargs)` averaging `n_samples` finite networks.

    For sample `s`, parameters come from `init_fn(fold_in(key, s), x1.shape)` and the empirical kernels
    `K̂ = f(x1) f(x2)ᵀ`, `Θ̂ = J(x1) J(x2)ᵀ` (traced over `trace_axes`, so averaged over the readout) from
    `ntkit.empirical_kernel_fn`. Their mean converges to the analytic kernel of the same `ntkit.nn` network: the
    NTK's error is `O(1/√(width · n_samples))`, the NNGP's `O(1/√(n_samples · O))` for `O` traced readout outputs
    at any width (one network's outputs are one Gaussian sample). If `apply_kwargs` holds `rng` (dropout), sample
    `s` uses `fold_in(rng, s)`.

    Args:
      init_fn: `init_fn(key, input_shape) -> (output_shape, params)` of the finite network (e.g. from
        `init_fn, apply_fn, kernel_fn = stax.serial(...)`).
      apply_fn: `apply_fn(params, x, **apply_kwargs)` of the same network.
      key: PRNG key of the initializations.
      n_samples: number of networks averaged.
      batch_size: as in `ntkit.empirical_kernel_fn`.
      trace_axes: as in `ntkit.empirical_kernel_fn`.
      diagonal_axes: as in `ntkit.empirical_kernel_fn`.
      vmap_axes: as in `ntkit.empirical_kernel_fn`.
      implementation: as in `ntkit.empirical_kernel_fn`.

    Returns:
      A `MonteCarloKernelFn`, `kernel_fn(x1, x2=None, get=("nngp", "ntk"), **apply_kwargs)`: with a string `get`
      an array, with a tuple a `Kernel(nngp, ntk)`.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    empirical = empirical_kernel_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size)
    return MonteCarloKernelFn(init_fn, key, n_samples, empirical)
