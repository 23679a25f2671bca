"""The layer protocol: `init`, `apply`, `kernel`, and the kernel driver (input kernel, jit, tiling, `get`).

Every layer is a small frozen dataclass deriving from `Layer` with

* `init(key, input_shape) -> (output_shape, params)`: parameters of the matching finite network;
* `apply(params, x, **kwargs)`: the finite network (NTK parameterization by default);
* `kernel(x1, x2=None, get=None, batch_size=None, **kwargs)`: its infinite-width NNGP/NTK (THEORY.md §2);

and unpacks as `init_fn, apply_fn, kernel_fn = layer`, so code written for neural-tangents' `stax` ports
unchanged. A subclass implements `init`, `apply`, `transform(state) -> state` and, when it needs off-diagonal
spatial covariances (pooling, attention) or can drop them (`Flatten`), `needs_full`; when it reads the
per-example covariances differently from a position-wise linear map, `cov_needs`.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .._empirical import Kernel, _chunks, _split_kwargs
from ._kernel import COV_FULL, COV_NONE, KernelState, input_state

_GETS = ("nngp", "ntk")


class Layer:
    """Base class of analytic layers (see the module docstring)."""

    def init(self, key: jax.Array, input_shape):
        raise NotImplementedError

    def apply(self, params, x, **kwargs):
        raise NotImplementedError

    def transform(self, k, **kwargs):
        """Maps the kernel state of the layer's input to that of its output."""
        raise NotImplementedError

    def needs_full(self, out_full: bool) -> bool:
        """Whether the input kernel must carry full spatial covariances, given whether the output must."""
        return out_full

    def cov_needs(self, out_level: int) -> int:
        """How much of the per-example covariances (`COV_NONE`, `COV_DIAGONAL`, `COV_FULL`) the input must carry,
        given how much the output must. Linear maps that act position by position keep the level; a layer that
        reads variances needs at least `COV_DIAGONAL`; one that mixes positions needs `COV_FULL` to produce any.
        Layers receiving more than they need pass on what they can."""
        return out_level

    def __iter__(self):
        return iter((self.init, self.apply, self.kernel))

    def kernel(self, x1, x2=None, get=None, batch_size: int | None = None, memory_limit: float | None = None,
               **kwargs):
        """Infinite-width NNGP and/or NTK between `x1` and `x2`.

        Args:
          x1: inputs `(N1, *S, C)` (channels last, batch first), a list of them for a multi-input network, or a
            `KernelState` to continue from.
          x2: `(N2, *S, C)` or `None` for `x1` (then `Σ(x, x)` holds each input's variance; when `get` is set and the
            call is large, estimated above `_SPLIT_BYTES`, two diagonal blocks and one off-diagonal block are computed
            and the fourth mirrored).
          get: `"nngp"`, `"ntk"`, a tuple of them (a `Kernel(nngp, ntk)` named tuple comes back) or `None` (the
            whole `KernelState`).
          batch_size: compute the `(N1, N2)` kernel in tiles of this many examples per side; with `x2=None` only
            tiles on and above the diagonal are computed. Tiled and untiled results agree (with `get=None`, the
            per-example covariances are taken from the tiles too).
          memory_limit: bytes the kernel's arrays may use: the largest tiles whose estimated peak (every layer's
            kernel state for the tile, times `MEMORY_OVERHEAD` for the step's input, output and temporaries) fits
            are used. JAX itself (~0.25 GB) and XLA's compiler come on top: for Myrtle-5 on 32x32 images the process
            peaked at most 0.3 GB above JAX's baseline plus the limit, for limits from 0.15 to 1.6 GB. Give this or
            `batch_size`, not both.
          **kwargs: passed to every layer's kernel (array values are traced).

        Returns:
          Arrays `(N1, N2)` for flat outputs, `(N1, N2, S_1, S_1', ...)` for outputs with spatial axes.
        """
        return compute_kernel(self, x1, x2, get, batch_size, kwargs, memory_limit)


def _parse_get(get) -> tuple[tuple[str, ...] | None, bool]:
    if get is None:
        return None, False
    single = isinstance(get, str)
    gets = (get,) if single else tuple(get)
    for g in gets:
        if g not in _GETS:
            raise ValueError(f"`get` must be 'nngp', 'ntk', a tuple of them or None, got {get!r}.")
    return gets, single


def _select(out, gets, single):
    if isinstance(out, list | tuple) and not isinstance(out, Kernel):
        return [_select(o, gets, single) for o in out]
    if gets is None:
        return out
    if single:
        return getattr(out, gets[0])
    return Kernel(**{g: (getattr(out, g) if g in gets else None) for g in _GETS})


def _is_state(x) -> bool:
    if isinstance(x, KernelState):
        return True
    return isinstance(x, list | tuple) and len(x) > 0 and all(isinstance(s, KernelState) for s in x)


def _check_input(x, name: str):
    if isinstance(x, list | tuple):
        return [_check_input(xi, f"{name}[{i}]") for i, xi in enumerate(x)]
    if not hasattr(x, "shape"):
        x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"`{name}` must be (N, *spatial, channels) with at least 2 axes, got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be floating, got dtype {x.dtype}.")
    return x


def _inputs(x1, x2, diagonal_spatial, compute_ntk, cov_level):
    if isinstance(x1, list):
        x2s = [None] * len(x1) if x2 is None else x2
        return [input_state(a, b, diagonal_spatial, compute_ntk, cov_level) for a, b in zip(x1, x2s, strict=True)]
    return input_state(x1, x2, diagonal_spatial, compute_ntk, cov_level)


def _transform(layers, static_kwargs, k, dynamic_kwargs):
    """Applies `layers` in order; `dynamic_kwargs[i]` are layer `i`'s traced keyword arguments."""
    for layer, dynamic in zip(layers, dynamic_kwargs, strict=True):
        k = layer.transform(k, **dict(dynamic, **dict(static_kwargs)))
    return k


_jit_inputs = jax.jit(_inputs, static_argnums=(2, 3, 4))
_jit_transform = jax.jit(_transform, static_argnums=(0, 1))


def _segments(layers) -> list[tuple[int, ...]]:
    """Indices of the layers compiled together: an affine layer with the nonlinearity right after it, else one.

    A nonlinearity reads its input entry by entry, so fusing it with the layer before saves a pass over the
    covariances (~25% on convolutional networks); anything reading at shifted offsets stays in its own step.
    """
    from ._elementwise import Elementwise

    out: list[tuple[int, ...]] = []
    i = 0
    while i < len(layers):
        if i + 1 < len(layers) and isinstance(layers[i + 1], Elementwise) and not isinstance(layers[i], Elementwise):
            out.append((i, i + 1))
            i += 2
        else:
            out.append((i,))
            i += 1
    return out


def _steps(layer) -> list[tuple[tuple[Layer, ...], tuple[int, ...]]]:
    """The compiled steps of `layer`: `(layers, indices into a top-level serial)`; one step unless it is one."""
    from ._combinators import serial

    if not isinstance(layer, serial):
        return [((layer,), ())]
    return [(tuple(layer.layers[i] for i in segment), segment) for segment in _segments(layer.layers)]


def _step_kwargs(dynamic_kwargs, indices):
    from ._combinators import _fold_rng

    if not indices:
        return (dynamic_kwargs,)
    return tuple(_fold_rng(dynamic_kwargs, i) for i in indices)


def _run(layer, diagonal_spatial, compute_ntk, cov_level, static_kwargs, x1, x2, dynamic_kwargs):
    """Input kernel, then the layers of a top-level `serial` one jitted step at a time.

    One `jit` over a deep network lets XLA fuse each layer into the next, and since a layer reads its input
    covariance at several shifted offsets the fused code recomputes layers per offset: a 21-layer CNN ran ~40x
    slower than its layers one by one and took minutes to compile. Stepping layer by layer keeps the cost linear
    in depth, and identical layers (the same object and shapes) share one compiled step.
    """
    def step(k, layers, indices):
        return _jit_transform(layers, static_kwargs, k, _step_kwargs(dynamic_kwargs, indices))

    k = _jit_inputs(x1, x2, diagonal_spatial, compute_ntk, cov_level)
    for layers, indices in _steps(layer):
        k = _named_step(step, k, layers, indices)
    return k


def _named_step(step, k, layers, indices):
    """`step(k, layers, indices)`; a `ValueError` from a step of a `serial` names the layer that raised it."""
    try:
        return step(k, layers, indices)
    except ValueError:
        if not indices:
            raise
        for sub, i in zip(layers, indices, strict=True):
            try:  # errors come from checks at trace time: retrace layer by layer to find the culprit
                k = step(k, (sub,), (i,))
            except ValueError as err:
                raise ValueError(f"serial: layer {i} ({type(sub).__name__}): {err}") from err
        raise


_SPLIT_BYTES = 2 ** 28  # untiled `x2=None` calls estimated above this compute one triangle of blocks

MEMORY_OVERHEAD = 4.0
"""Peak memory of one compiled step over the size of its larger kernel state: its input and output states, the
padded copy a convolution or pooling reads, and temporaries (Myrtle-5 tiles measured 3.9x; see benchmarks)."""


def _state_bytes(k) -> int:
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(k))


def estimate_peak_bytes(layer, x1, x2, diagonal_spatial, compute_ntk, cov_level, static_kwargs,
                        dynamic_kwargs) -> float:
    """Estimated peak memory of `_run` on these inputs, from the shapes of every step's kernel state."""
    abstract = lambda a: None if a is None else jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
    leaves, tree = jax.tree_util.tree_flatten(dynamic_kwargs)
    return _estimate_cached(layer, abstract(x1), abstract(x2), diagonal_spatial, compute_ntk, cov_level,
                            static_kwargs, tuple(abstract(a) for a in leaves), tree)


@functools.lru_cache(maxsize=256)
def _estimate_cached(layer, x1, x2, diagonal_spatial, compute_ntk, cov_level, static_kwargs, leaves, tree) -> float:
    # Tracing every step costs ~30 ms for a small MLP; repeated calls on the same shapes reuse the estimate.
    dynamic_kwargs = jax.tree_util.tree_unflatten(tree, leaves)

    def step(k, layers, indices):
        return jax.eval_shape(lambda state, dyn: _transform(layers, static_kwargs, state, _step_kwargs(dyn, indices)),
                              k, dynamic_kwargs)

    k = jax.eval_shape(lambda a, b: _inputs(a, b, diagonal_spatial, compute_ntk, cov_level), x1, x2)
    peak = _state_bytes(k)
    for layers, indices in _steps(layer):
        k = _named_step(step, k, layers, indices)
        peak = max(peak, _state_bytes(k))
    return MEMORY_OVERHEAD * peak


def _batch_size_for(memory_limit, estimate, n1: int, n2: int) -> int:
    """The largest tile side whose estimated peak fits in `memory_limit` bytes."""
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, numbers.Real) or not float(memory_limit) > 0:
        raise ValueError(f"`memory_limit` must be a positive number of bytes or None, got {memory_limit!r}.")
    memory_limit = float(memory_limit)
    lo, hi = 1, max(n1, n2)
    if estimate(lo) > memory_limit:
        raise ValueError(f"`memory_limit` of {memory_limit / 2**30:.3g} GiB is below the ~{estimate(lo) / 2**30:.3g} "
                         "GiB that one pair of examples needs for this network.")
    while lo < hi:  # the estimate grows with the tile side
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if estimate(mid) <= memory_limit else (lo, mid - 1)
    n = max(n1, n2)
    return -(-n // -(-n // lo))  # as many tiles as `lo` needs, evened out (one compiled shape, not a ragged one)


def compute_kernel(layer: Layer, x1, x2, get, batch_size, kwargs: dict[str, Any], memory_limit=None):
    gets, single = _parse_get(get)
    if _is_state(x1):
        if x2 is not None:
            raise ValueError("`x2` must be None when `x1` is a KernelState (it already holds both inputs).")
        return _select(layer.transform(x1, **kwargs), gets, single)
    x1 = _check_input(x1, "x1")
    if x2 is not None:
        x2 = _check_input(x2, "x2")
        if isinstance(x1, list) != isinstance(x2, list):
            raise ValueError("`x1` and `x2` must both be arrays or both lists of arrays.")
        for a, b in zip(x1 if isinstance(x1, list) else [x1], x2 if isinstance(x2, list) else [x2], strict=True):
            if a.shape[1:] != b.shape[1:]:
                raise ValueError(f"`x1` and `x2` must have the same shape past the batch axis, got {a.shape} "
                                 f"and {b.shape}.")
    diagonal_spatial = not layer.needs_full(True)
    compute_ntk = gets is None or "ntk" in gets
    # the whole state comes back when `get` is None; otherwise only what later layers read
    cov_level = layer.cov_needs(COV_FULL if gets is None else COV_NONE)
    dynamic, static = _split_kwargs(kwargs)

    def run(a, b):
        return _run(layer, diagonal_spatial, compute_ntk, cov_level, static, a, b, dynamic)

    single_array = not isinstance(x1, list)
    n1 = x1.shape[0] if single_array else 0
    n2 = n1 if x2 is None or not single_array else x2.shape[0]

    def estimate(b):
        a = jax.ShapeDtypeStruct((min(b, n1),) + x1.shape[1:], x1.dtype)
        if x2 is None and b >= n1:
            c = None  # one untiled call of x1 with itself
        else:  # off-diagonal tiles carry both sides' own covariances
            other = x1 if x2 is None else x2
            c = jax.ShapeDtypeStruct((min(b, n2),) + other.shape[1:], other.dtype)
        return estimate_peak_bytes(layer, a, c, diagonal_spatial, compute_ntk, cov_level, static, dynamic)

    if memory_limit is not None:
        if batch_size is not None:
            raise ValueError("Give `batch_size` or `memory_limit`, not both.")
        if not single_array:
            raise ValueError("`memory_limit` needs a single input array (not a list).")
        batch_size = _batch_size_for(memory_limit, estimate, n1, n2)
        if batch_size >= max(n1, n2):
            batch_size = None
    elif (batch_size is None and x2 is None and gets is not None and single_array and n1 >= 2
          and not isinstance(x1, jax.core.Tracer) and estimate(n1) >= _SPLIT_BYTES):
        # Σ(x, x) is symmetric: compute the two diagonal blocks and one off-diagonal block, mirror the fourth
        # (~25% less work; a 4000-input MLP ran 0.31 s -> 0.20-0.24 s). Small calls stay whole (one compile).
        batch_size = -(-n1 // 2)
    if batch_size is None:
        return _select(run(x1, x2), gets, single)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer or None, got {batch_size!r}.")
    if isinstance(x1, list):
        raise ValueError("`batch_size` needs a single input array (not a list).")
    return _select(_tiled(run, x1, x2, batch_size, gets), gets, single)


def _mirror_axes(ndim: int) -> list[int]:
    """`K(x_a, x_b) -> K(x_b, x_a)`: swap the batch axes and every interleaved spatial pair."""
    perm = [1, 0]
    for a in range(2, ndim, 2):
        perm += [a + 1, a]
    return perm


def _tiled(run, x1, x2, batch_size: int, gets: Sequence[str] | None):
    """The kernel in tiles; with `gets` None the whole state, per-example covariances taken from the tiles."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    rows, cols = _chunks(n1, batch_size), _chunks(n2, batch_size)
    if x2 is None:
        pairs = [(i, j) for i in range(len(rows)) for j in range(i, len(cols))]
    else:
        pairs = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    fields = _GETS if gets is None else tuple(gets)
    blocks: dict[str, dict[tuple[int, int], Any]] = {g: {} for g in fields}
    covs1: dict[int, Any] = {}
    covs2: dict[int, Any] = {}
    for i, j in tqdm(pairs, desc="kernel tiles", disable=None, leave=False):  # shown on a terminal only
        r, c = rows[i], cols[j]
        state = run(x1[r], None) if (x2 is None and i == j) else run(x1[r], (x1 if x2 is None else x2)[c])
        if state.nngp.ndim > 2 and state.diagonal_spatial:
            raise ValueError("tiling expects full spatial covariances at the output.")
        for g in fields:
            if getattr(state, g) is not None:
                blocks[g][i, j] = getattr(state, g)
        covs1.setdefault(i, state.cov1)
        if x2 is not None:
            covs2.setdefault(j, state.cov2)
    kernels = {g: _assemble(blocks[g], rows, cols, x2 is None) if blocks.get(g) else None for g in _GETS}
    if gets is not None:
        return Kernel(**kernels)
    concat = lambda parts: None if any(p is None for p in parts) else jnp.concatenate(parts)  # noqa: E731
    return state.replace(
        nngp=kernels["nngp"], ntk=kernels["ntk"], cov1=concat([covs1[i] for i in range(len(rows))]),
        cov2=None if x2 is None else concat([covs2[j] for j in range(len(cols))]),
        shape1=(n1,) + state.shape1[1:], shape2=(n2,) + state.shape2[1:], x1_is_x2=x2 is None)


def _assemble(blocks, rows, cols, mirror: bool):
    """The `(N1, N2, ...)` kernel from tiles `(i, j)`; lower tiles mirrored from upper ones when `mirror`."""
    if any(isinstance(b, jax.core.Tracer) for b in blocks.values()):  # under an outer `jit`: stay traced
        def tile(i, j):
            return blocks[i, j] if (i, j) in blocks else jnp.transpose(blocks[j, i], _mirror_axes(blocks[j, i].ndim))

        return jnp.concatenate([jnp.concatenate([tile(i, j) for j in range(len(cols))], axis=1)
                                for i in range(len(rows))], axis=0)
    first = np.asarray(next(iter(blocks.values())))
    out = np.empty((rows[-1].stop, cols[-1].stop) + first.shape[2:], dtype=first.dtype)
    for (i, j), block in blocks.items():
        block = np.asarray(block)
        out[rows[i], cols[j]] = block
        if mirror and i != j:
            out[cols[j], rows[i]] = np.transpose(block, _mirror_axes(block.ndim))
    return jnp.asarray(out)
