"""The kernel driver: from inputs to the kernel a layer asks for (input kernel, compiled steps, tiling, `get`).

The driver sees a layer only through `KernelLayer`: how it maps kernel states (`transform`), what it needs of
them (`needs_full`, `cov_needs`) and how it is cut into compiled steps (`compiled_steps`). It runs the input
kernel and the steps under `jit`, sizes tiles to a memory limit, computes large symmetric calls by triangles, and
selects what `get` asks for.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_array, check_batch_size
from .._kernel import GETS, Kernel, parse_get, select
from .._kwargs import fold_rng, split_kwargs
from .._tiling import Assembly, Tiles, interleaved_mirror
from . import _masking
from ._state import COV_FULL, COV_NONE, CovLevel, KernelState, diagonal_spatial_state, input_state


class KernelLayer(Protocol):
    """What the driver needs of a layer (every `ntkit.nn.Layer` is one)."""

    def transform(self, k: Any, **kwargs: Any) -> Any: ...

    def needs_full(self, out_full: bool) -> bool: ...

    def cov_needs(self, out_level: CovLevel) -> CovLevel: ...

    def compiled_steps(self) -> Sequence[tuple[Sequence[KernelLayer], tuple[tuple[int, ...], ...]]]: ...


def _select(out: Any, gets: tuple[str, ...] | None, single: bool) -> Any:
    """What `get` asks for of a state (or of each state of a multi-output network); `gets=None`: the state."""
    if isinstance(out, list | tuple) and not isinstance(out, Kernel):
        return [_select(o, gets, single) for o in out]
    if gets is None:
        return out
    return select({g: getattr(out, g) for g in GETS}, gets, single)


def _is_state(x: Any) -> bool:
    if isinstance(x, KernelState):
        return True
    return isinstance(x, list | tuple) and len(x) > 0 and all(isinstance(s, KernelState) for s in x)


def _check_input(x: Any, name: str, mask_constant: Any = None) -> Any:
    if isinstance(x, list | tuple):
        return [_check_input(xi, f"{name}[{i}]", mask_constant) for i, xi in enumerate(x)]
    if mask_constant is not None and hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.asarray(x)  # masked entries may be NaN or Inf (a NaN `mask_constant`): the rest is checked
        check_array(_masking.masked_input(x, mask_constant)[0], name, min_ndim=2, floating=True, nonempty=True)
        return x
    return check_array(x, name, min_ndim=2, floating=True, nonempty=True)


def _input(x1, x2, diagonal_spatial, compute_ntk, cov_level, mask_constant):
    """Kernel of one pair of inputs; with `mask_constant` (a 0-d array) their masked entries are zeroed and the
    masks carried."""
    if mask_constant is None:
        return input_state(x1, x2, diagonal_spatial, compute_ntk, cov_level)
    x1, mask1 = _masking.masked_input(x1, mask_constant)
    x2, mask2 = (None, None) if x2 is None else _masking.masked_input(x2, mask_constant)
    return input_state(x1, x2, diagonal_spatial, compute_ntk, cov_level).replace(mask1=mask1, mask2=mask2)


def _inputs(x1, x2, diagonal_spatial, compute_ntk, cov_level, mask_constant=None):
    if isinstance(x1, list):
        x2s = [None] * len(x1) if x2 is None else x2
        return [_input(a, b, diagonal_spatial, compute_ntk, cov_level, mask_constant)
                for a, b in zip(x1, x2s, strict=True)]
    return _input(x1, x2, diagonal_spatial, compute_ntk, cov_level, mask_constant)


def transform_step(layer, k, **kwargs):
    """`layer.transform(k, **kwargs)`, through the layer's masking rule when `k` carries masks."""
    if _masking.has_masks(k):
        return _masking.transform(layer, k, kwargs)
    return layer.transform(k, **kwargs)


def _transform(layers, static_kwargs, k, dynamic_kwargs):
    """Applies `layers` in order; `dynamic_kwargs[i]` are layer `i`'s traced keyword arguments."""
    for layer, dynamic in zip(layers, dynamic_kwargs, strict=True):
        k = transform_step(layer, k, **dict(dynamic, **dict(static_kwargs)))
    return k


_jit_inputs = jax.jit(_inputs, static_argnums=(2, 3, 4))
_jit_transform = jax.jit(_transform, static_argnums=(0, 1))


def fused_segments(pointwise: Sequence[bool]) -> list[tuple[int, ...]]:
    """Indices of a layer sequence compiled together: a layer with the pointwise nonlinearity right after it,
    else one layer a step.

    A nonlinearity reads its input entry by entry, so fusing it with the layer before saves a pass over the
    covariances; anything reading at shifted offsets stays in its own step.
    """
    out: list[tuple[int, ...]] = []
    i = 0
    while i < len(pointwise):
        if i + 1 < len(pointwise) and pointwise[i + 1] and not pointwise[i]:
            out.append((i, i + 1))
            i += 2
        else:
            out.append((i,))
            i += 1
    return out


def _step_kwargs(dynamic_kwargs: dict[str, Any],
                 paths: tuple[tuple[int, ...], ...]) -> tuple[dict[str, Any], ...]:
    """Each layer's keyword arguments, its `rng` folded along its path in the network (as `serial` does)."""
    if not paths:
        return (dynamic_kwargs,)
    out = []
    for path in paths:
        kwargs = dynamic_kwargs
        for i in path:
            kwargs = fold_rng(kwargs, i)
        out.append(kwargs)
    return tuple(out)


def _run(layer, diagonal_spatial, compute_ntk, cov_level, static_kwargs, x1, x2, dynamic_kwargs, mask_constant=None):
    """Input kernel, then the layers of a top-level `serial` one jitted step at a time.

    One `jit` over a deep network lets XLA fuse each layer into the next, and since a layer reads its input
    covariance at several shifted offsets the fused code recomputes layers per offset: a deep CNN ran many times
    slower than its layers one by one and was slow to compile. Stepping layer by layer keeps the cost linear
    in depth, and identical layers (the same object and shapes) share one compiled step.

    Under an outer `jax.jit`/`vmap` (neural-tangents' `jax.jit(kernel_fn, static_argnames="get")` idiom) the
    steps are traced into the caller's program, where XLA inlines nested `jit` calls and removes optimization
    barriers; each step is then fenced in a `lax.cond` (see `_fenced`), whose branches XLA compiles as separate
    computations, and runs of identical steps become one `lax.scan` (compile time independent of their length).
    """
    # A layer holding traced hyperparameters (`jax.grad` with respect to `W_std`) cannot be a static argument of
    # `jit`: its steps then run inside the caller's trace.
    compiled = _hashable(layer)
    transform, inputs = (_jit_transform, _jit_inputs) if compiled else (_transform, _inputs)

    def step(k, layers, indices):
        return transform(layers, static_kwargs, k, _step_kwargs(dynamic_kwargs, indices))

    k = inputs(x1, x2, diagonal_spatial, compute_ntk, cov_level, mask_constant)
    steps = layer.compiled_steps()
    if not _traced(x1, x2, dynamic_kwargs, mask_constant):
        for layers, indices in steps:
            k = _named_step(step, k, layers, indices)
        return k
    i = 0
    while i < len(steps):
        layers, indices = steps[i]
        run = 1
        # equal steps only when hashable: layers holding tracers compare by value (equal values of distinct
        # traced hyperparameters would share one gradient), and per-layer `rng` folding differs between copies
        if compiled and not dynamic_kwargs:
            while i + run < len(steps) and steps[i + run][0] == layers:
                run += 1
        checked = functools.partial(_named_step, step, layers=layers, indices=indices)
        k = _fenced(checked, k)
        if run > 1:  # the first copy may change the state's structure (`is_input`); the rest are scanned
            k = _scanned(functools.partial(step, layers=layers, indices=indices), k, run - 1, checked)
        i += run
    return k


def _traced(*trees) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def _fenced(fn: Callable[[Any], Any], k: Any) -> Any:
    """`fn(k)` as a computation of its own inside a traced program.

    XLA inlines nested `jit` calls and expands `optimization_barrier`s into scheduling constraints, then fuses each
    layer's elementwise work into every shifted read of the next layer, recomputing it per offset, compounding
    with depth (a 5-layer CNN ran 7x slower and compiled 10x longer than step by step). The branches of a
    `lax.cond` stay separate computations as long as XLA cannot evaluate the predicate at compile time: here
    `True` passed through an optimization barrier (unbatched under `vmap`, so the `cond` is not turned into a
    `select` that would run both branches). The other branch is never taken.
    """
    out = jax.eval_shape(fn, k)

    def unreachable(state):
        return jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype), out)

    return jax.lax.cond(jax.lax.optimization_barrier(jnp.bool_(True)), fn, unreachable, k)


def _scanned(fn: Callable[[Any], Any], k: Any, n: int, checked: Callable[[Any], Any]) -> Any:
    """`fn` applied `n` times as one `lax.scan` when it maps the state's structure to itself, else step by step."""
    def structure(state):
        return jax.tree_util.tree_structure(state), [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(state)]

    out = jax.eval_shape(checked, k)
    if structure(out) != structure(k):
        for _ in range(n):
            k = _fenced(checked, k)
        return k
    k, _ = jax.lax.scan(lambda s, _: (fn(s), None), k, None, length=n)
    return k


def _hashable(layer: Any) -> bool:
    try:
        hash(layer)
    except TypeError:
        return False
    return True


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
                where = ".".join(map(str, i))
                raise ValueError(f"serial: layer {where} ({type(sub).__name__}): {err}") from err
        raise


_SPLIT_BYTES = 2 ** 28  # untiled `x2=None` calls estimated above this compute one triangle of blocks

MEMORY_OVERHEAD = 4.0
"""Peak memory of one compiled step over the size of its larger kernel state: its input and output states, the
padded copy a convolution or pooling reads, and temporaries (Myrtle-5 tiles measured 3.9x; see benchmarks)."""


def _state_bytes(k) -> int:
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(k))


def estimate_peak_bytes(layer, x1, x2, diagonal_spatial, compute_ntk, cov_level, static_kwargs,
                        dynamic_kwargs, masked: bool = False) -> float:
    """Estimated peak memory of `_run` on these inputs, from the shapes of every step's kernel state (`masked`:
    with masks, as `mask_constant` gives)."""
    abstract = lambda a: None if a is None else jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
    leaves, tree = jax.tree_util.tree_flatten(dynamic_kwargs)
    estimate = _estimate_cached if _hashable(layer) else _estimate_cached.__wrapped__
    return estimate(layer, abstract(x1), abstract(x2), diagonal_spatial, compute_ntk, cov_level,
                    static_kwargs, tuple(abstract(a) for a in leaves), tree, masked)


@functools.lru_cache(maxsize=256)
def _estimate_cached(layer, x1, x2, diagonal_spatial, compute_ntk, cov_level, static_kwargs, leaves, tree,
                     masked=False) -> float:
    # Tracing every step is not free; repeated calls on the same shapes reuse the estimate.
    dynamic_kwargs = jax.tree_util.tree_unflatten(tree, leaves)

    def step(k, layers, indices):
        return jax.eval_shape(lambda state, dyn: _transform(layers, static_kwargs, state, _step_kwargs(dyn, indices)),
                              k, dynamic_kwargs)

    constant = jax.ShapeDtypeStruct((), x1.dtype) if masked else None
    k = jax.eval_shape(lambda a, b, c: _inputs(a, b, diagonal_spatial, compute_ntk, cov_level, c), x1, x2, constant)
    peak = _state_bytes(k)
    for layers, indices in layer.compiled_steps():
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


def _diagonal_states(k: Any) -> Any:
    """The state (or each state of a multi-output network) in the layout `diagonal_spatial=True`."""
    return [diagonal_spatial_state(o) for o in k] if isinstance(k, list | tuple) else diagonal_spatial_state(k)


def compute_kernel(layer: KernelLayer, x1: Any, x2: Any, get: Any, batch_size: int | None, kwargs: dict[str, Any],
                   memory_limit: float | None = None, mask_constant: Any = None, out_full: bool = True) -> Any:
    """`layer`'s kernel between `x1` and `x2` (see `Layer.kernel` for the arguments). `out_full=False`: only the
    entries of equal spatial positions come back (`diagonal_spatial=True`), and the layers carry full spatial
    covariances only where a later layer needs them (a convolution's output diagonal needs only its input's)."""
    gets, single = (None, False) if get is None else parse_get(get)
    batch_size = check_batch_size(batch_size)
    if _is_state(x1):
        if x2 is not None:
            raise ValueError("`x2` must be None when `x1` is a KernelState (it already holds both inputs).")
        if mask_constant is not None:
            raise ValueError("`mask_constant` applies to inputs; a KernelState carries its masks (`mask1`, `mask2`).")
        if _masking.has_masks(x1):  # step by step, each layer through its masking rule
            k = x1
            for layers, indices in layer.compiled_steps():
                k = _named_step(lambda s, ls, ix: _transform(ls, (), s, _step_kwargs(kwargs, ix)), k, layers, indices)
        else:
            k = layer.transform(x1, **kwargs)
        return _select(k if out_full else _diagonal_states(k), gets, single)
    _check_mask_constant(mask_constant)
    x1 = _check_input(x1, "x1", mask_constant)
    if x2 is not None:
        x2 = _check_input(x2, "x2", mask_constant)
        if isinstance(x1, list) != isinstance(x2, list):
            raise ValueError("`x1` and `x2` must both be arrays or both lists of arrays.")
        for a, b in zip(x1 if isinstance(x1, list) else [x1], x2 if isinstance(x2, list) else [x2], strict=True):
            if a.shape[1:] != b.shape[1:]:
                raise ValueError(f"`x1` and `x2` must have the same shape past the batch axis, got {a.shape} "
                                 f"and {b.shape}.")
    diagonal_spatial = not layer.needs_full(out_full)
    compute_ntk = gets is None or "ntk" in gets
    # the whole state comes back when `get` is None; otherwise only what later layers read
    cov_level = layer.cov_needs(COV_FULL if gets is None else COV_NONE)
    dynamic, static = split_kwargs(kwargs)
    constant = _mask_constant(mask_constant, x1)

    def run(a, b, rows=slice(None), cols=slice(None)):
        tile = graph_tile(dynamic, rows, None if b is None else cols, x2 is None)
        k = _run(layer, diagonal_spatial, compute_ntk, cov_level, static, a, b, tile, constant)
        return k if out_full else _diagonal_states(k)

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
        tile = graph_tile(dynamic, slice(0, min(b, n1)), None if c is None else slice(0, min(b, n2)), x2 is None)
        return estimate_peak_bytes(layer, a, c, diagonal_spatial, compute_ntk, cov_level, static, tile,
                                   constant is not None)

    if memory_limit is not None:
        if batch_size is not None:
            raise ValueError("Give `batch_size` or `memory_limit`, not both.")
        if not single_array:
            raise ValueError("`memory_limit` needs a single input array (not a list).")
        batch_size = _batch_size_for(memory_limit, estimate, n1, n2)
        if batch_size >= max(n1, n2):
            batch_size = None
    elif (batch_size is None and x2 is None and gets is not None and single_array and n1 >= 2
          and estimate(n1) >= _SPLIT_BYTES):
        # Σ(x, x) is symmetric: compute the two diagonal blocks and one off-diagonal block, mirror the fourth
        # (a quarter less work; `benchmarks/analytic.py` case a). Small calls stay whole (one compile).
        batch_size = -(-n1 // 2)
    if batch_size is None:
        return _select(run(x1, x2), gets, single)
    if isinstance(x1, list):
        raise ValueError("`batch_size` needs a single input array (not a list).")
    return _select(_tiled(run, x1, x2, batch_size, gets), gets, single)


def _check_mask_constant(mask_constant: Any) -> None:
    if mask_constant is None:
        return
    array = isinstance(mask_constant, np.ndarray | np.generic | jax.Array)
    if isinstance(mask_constant, bool) or not (isinstance(mask_constant, numbers.Real) or array):
        raise TypeError(f"`mask_constant` must be a real number or None, got {mask_constant!r}.")
    if np.ndim(mask_constant) != 0:
        raise ValueError(f"`mask_constant` must be a scalar, got an array of shape {np.shape(mask_constant)}.")


def _mask_constant(mask_constant: Any, x1: Any) -> jax.Array | None:
    """`mask_constant` as a 0-d array of the inputs' dtype (traced, so a NaN constant compiles once), or None."""
    if mask_constant is None:
        return None
    dtype = (x1[0] if isinstance(x1, list) else x1).dtype
    return jnp.asarray(mask_constant).astype(dtype)


def graph_tile(dynamic: dict[str, Any], rows: slice, cols: slice | None, x2_is_x1: bool) -> dict[str, Any]:
    """`dynamic` for the examples `rows` of `x1` and `cols` of `x2` (`None`: a tile of `x1` with itself): the
    `pattern` of `Aggregate` holds one graph per example (batch axis first) and is cut with them. Unchanged for the
    whole batch (`rows == slice(None)`)."""
    pattern = dynamic.get("pattern")
    if pattern is None or rows == slice(None):
        return dynamic
    p1, p2 = pattern if isinstance(pattern, tuple | list) else (pattern, None)
    p2 = p1 if p2 is None and x2_is_x1 else p2
    return dict(dynamic, pattern=(p1[rows], None if cols is None or p2 is None else p2[cols]))


def _tiled(run: Callable[..., KernelState], x1: Any, x2: Any, batch_size: int,
           gets: tuple[str, ...] | None) -> Any:
    """The kernel in tiles; with `gets` None the whole state, per-example covariances taken from the tiles."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    tiles = Tiles.build(n1, None if x2 is None else n2, batch_size)
    fields = GETS if gets is None else gets
    assemblies: dict[str, Assembly] = {}
    covs1: dict[int, Any] = {}
    covs2: dict[int, Any] = {}
    masks1: dict[int, Any] = {}
    masks2: dict[int, Any] = {}
    for i, j in tiles.progress():
        state = run(*tiles.inputs(x1, x2, i, j), tiles.rows[i], tiles.cols[j])
        if state.nngp.ndim > 2 and state.diagonal_spatial:
            raise ValueError("tiling expects full spatial covariances at the output.")
        for g in fields:
            if getattr(state, g) is not None:
                if g not in assemblies:
                    assemblies[g] = tiles.assembly(interleaved_mirror(state.nngp.ndim))
                assemblies[g].add(i, j, getattr(state, g))
        covs1.setdefault(i, state.cov1)
        masks1.setdefault(i, state.mask1)
        if x2 is not None:
            covs2.setdefault(j, state.cov2)
            masks2.setdefault(j, state.mask2)
    kernels = {g: assemblies[g].result() if g in assemblies else None for g in GETS}
    if gets is not None:
        return Kernel(**kernels)

    def concat(parts: list[Any]) -> Any:
        return None if any(p is None for p in parts) else jnp.concatenate(parts)

    return state.replace(
        nngp=kernels["nngp"], ntk=kernels["ntk"], cov1=concat([covs1[i] for i in range(len(tiles.rows))]),
        cov2=None if x2 is None else concat([covs2[j] for j in range(len(tiles.cols))]),
        mask1=concat([masks1[i] for i in range(len(tiles.rows))]),
        mask2=None if x2 is None else concat([masks2[j] for j in range(len(tiles.cols))]),
        shape1=(n1,) + state.shape1[1:], shape2=(n2,) + state.shape2[1:], x1_is_x2=x2 is None)
