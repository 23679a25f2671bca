"""`kernel_job`: a large kernel computed tile by tile into a Zarr store, resumable, locally or on a Dask cluster."""

from __future__ import annotations

import functools
import importlib.metadata
import math
import numbers
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from .._kernel import parse_get
from .._memory import memory_budget_bytes
from ._identity import KernelFunction, array_fingerprint, as_input, tree_fingerprint
from ._read import JobStatus, status
from ._store import (
    Identity,
    create_or_reopen,
    done_flags,
    normalize,
    open_arrays,
    open_group,
    read_identity,
    write_tile,
)

MAX_TILE = 4096
"""Largest tile side chosen from a memory budget (a `(4096, 4096)` float32 tile is a 64 MiB chunk): tiles stay
small enough that an interruption loses little and a cluster has many tasks."""


def kernel_job(
    kernel_fn: Any,
    x1: Any,
    x2: Any = None,
    *,
    store: Any,
    get: Any = ("nngp", "ntk"),
    tile: int | None = None,
    memory_limit: float | None = None,
    params: Any = None,
    client: Any = None,
    devices: Sequence[Any] | None = None,
    progress: bool = True,
) -> JobStatus:
    """Computes the `(N1, N2)` kernel `K(x1, x2)` tile by tile into a Zarr store; rerunning resumes.

    The kernel is cut into square tiles of `tile` examples per side, one Zarr chunk each. Every tile is written,
    then marked done (each chunk is written whole, by a temporary file and a rename on a local disk), so a job
    killed at any moment loses at most the tiles in flight: calling `kernel_job` again with the same arguments
    computes only the missing tiles, with the same tile shapes and the same compiled program, and the result is
    bit-identical to an uninterrupted run. With `x2=None` only tiles on and above the diagonal are computed;
    `load` and `open` mirror the others.

    The store records the job's identity (architecture or kernel-function fingerprint, `get`, fingerprints of the
    inputs' and parameters' bytes, shape, dtype, tile, ntkit version); a store holding another job is refused with
    a `ValueError` listing what differs.

    Args:
      kernel_fn: an analytic kernel (an `ntkit.nn` layer, or its `kernel_fn` from
        `init_fn, apply_fn, kernel_fn = layer`), or an empirical kernel function such as
        `ntkit.empirical_kernel_fn(f)` (then pass `params`); any other `fn(x1, x2, get)` returning a `Kernel`
        named tuple is accepted too. The kernel must be `(N1, N2)` (traced outputs, no spatial axes).
      x1: inputs `(N1, ...)`, batch first.
      x2: inputs `(N2, ...)` with `x1`'s shape past the batch axis, or None for `K(x1, x1)`.
      store: a local path or an fsspec URL (`s3://bucket/k.zarr`, ...) of the Zarr group to write.
      get: `"nngp"`, `"ntk"` or a tuple of them: the kernels stored.
      tile: examples per tile side. None: the stored tile when the store exists, else the largest tile (at most
        `MAX_TILE`) whose compiled program fits in `memory_limit`.
      memory_limit: bytes one tile's computation may use (arguments, outputs and temporaries as XLA allocates
        them); default half the memory this process may still use. On a cluster, size it for a worker.
      params: the parameters of an empirical kernel function (None for analytic kernels).
      client: a `dask.distributed.Client`: tiles become tasks, the inputs and parameters are scattered to every
        worker once, and workers write their tiles straight to the store (which they must be able to reach: a
        shared file system or an object store). A worker lost mid-job costs only its tasks, which Dask reruns.
      devices: without a client, the JAX devices that compute tiles, one thread each taking the next missing tile
        (default `jax.local_devices()`: every GPU of the machine; a CPU is one device whose computations already
        use all cores). Tiles are bit-identical whichever device of one kind computes them.
      progress: show a progress bar (tiles done, rate, ETA).

    Returns:
      The finished job's `JobStatus`. Read the kernel with `load(store, get)` or lazily with `open(store, get)`.

    Raises:
      ValueError: bad `get`, `tile` or `memory_limit`; inputs with NaN/Inf or different feature shapes; a kernel
        that is not `(N1, N2)`; a store holding another job or something else.

    Example:
      >>> import jax, numpy as np, ntkit.nn as stax
      >>> from ntkit import jobs
      >>> layer = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(1))
      >>> x = np.asarray(jax.random.normal(jax.random.key(0), (10, 3)))
      >>> import tempfile, os; path = os.path.join(tempfile.mkdtemp(), "k.zarr")
      >>> jobs.kernel_job(layer, x, store=path, get="ntk", tile=4, progress=False).tiles_done
      6
      >>> k = jobs.load(path, "ntk")
      >>> bool(np.allclose(k, layer.kernel(x, None, "ntk"), rtol=1e-5, atol=1e-6))
      True
    """
    gets, _ = parse_get(get)
    x1 = as_input(x1, "x1")
    if x2 is not None:
        x2 = as_input(x2, "x2")
        _checks.check_same_features(x1, x2)
        common = np.result_type(x1.dtype, x2.dtype)
        x1, x2 = x1.astype(common, copy=False), x2.astype(common, copy=False)
    if tile is not None:
        tile = _checks.check_positive_int(tile, "tile")
    if memory_limit is not None and (isinstance(memory_limit, bool) or not isinstance(memory_limit, numbers.Real)
                                     or not (math.isfinite(memory_limit) and memory_limit > 0)):
        raise ValueError(f"`memory_limit` must be a positive number of bytes or None, got {memory_limit!r}.")
    if params is not None:
        _checks.check_params(params)
    kernel = KernelFunction.build(kernel_fn, params, gets)
    one1, one2 = x1[:1], (x1 if x2 is None else x2)[:1]
    out = _check_kernel_shape(kernel, params, one1, one2)
    store = normalize(store)
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    if tile is None:
        tile = _stored_tile(store) or plan_tile(kernel, params, x1, x2, memory_limit)
    tile = min(tile, max(n1, n2))
    identity = Identity(
        kind=kernel.kind, kernel=kernel.description, kernel_fingerprint=kernel.fingerprint(params, one1, one2),
        get=gets, x1=array_fingerprint(x1), x2=None if x2 is None else array_fingerprint(x2),
        params=tree_fingerprint(params), shape=(n1, n2), dtype=str(np.dtype(out[0].dtype)), tile=tile,
        ntkit_version=_version())
    group = create_or_reopen(store, identity)
    flags = done_flags(group)
    missing = [(i, j) for i, j in identity.tiles().pairs() if not flags[i, j]]
    total = len(identity.tiles().pairs())
    with tqdm(total=total, initial=total - len(missing), desc="kernel tiles", unit="tile", disable=not progress,
              dynamic_ncols=True) as bar:
        if client is None:
            _run_on_devices(list(jax.local_devices() if devices is None else devices), store, identity, kernel, x1,
                            x2, params, missing, bar)
        else:
            _run_on_cluster(client, store, identity, kernel, x1, x2, params, missing, bar)
    return status(store)


def _version() -> str:
    try:
        return importlib.metadata.version("ntkit")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _check_kernel_shape(kernel: KernelFunction, params: Any, a: Any, b: Any) -> tuple[Any, ...]:
    """The kernels' shapes and dtypes on one pair of examples, checked to be `(1, 1)` each."""
    outs = tuple(jax.eval_shape(kernel.block, params, a, b))
    for g, out in zip(kernel.gets, outs, strict=True):
        if out.shape != (1, 1):
            raise ValueError(f"kernel jobs store `(N1, N2)` kernels, but the {g} of one pair of examples has shape "
                             f"{out.shape}: trace the output axes (`trace_axes=(-1,)`) and flatten spatial axes.")
    return outs


def _stored_tile(store: str) -> int | None:
    try:
        return read_identity(open_group(store, "r")).tile
    except ValueError:
        return None


def plan_tile(kernel: KernelFunction, params: Any, x1: np.ndarray, x2: np.ndarray | None,
              memory_limit: float | None) -> int:
    """The largest tile side (at most `MAX_TILE`, evened out over the inputs) whose compiled off-diagonal tile
    program allocates at most `memory_limit` bytes (default: `memory_budget_bytes()`)."""
    budget = memory_budget_bytes() if memory_limit is None else float(memory_limit)
    other = x1 if x2 is None else x2
    n = max(x1.shape[0], other.shape[0])
    program = jax.jit(kernel.block)

    @functools.cache
    def need(b: int) -> float:
        a = jax.ShapeDtypeStruct((min(b, x1.shape[0]),) + x1.shape[1:], x1.dtype)
        c = jax.ShapeDtypeStruct((min(b, other.shape[0]),) + other.shape[1:], other.dtype)
        analysis = program.lower(params, a, c).compile().memory_analysis()
        if analysis is None:  # pragma: no cover - backends without the analysis: 4x the tile's outputs
            outs = jax.eval_shape(kernel.block, params, a, c)
            return 4.0 * sum(o.size * np.dtype(o.dtype).itemsize for o in outs)
        return float(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes)

    lo, hi = 1, min(n, MAX_TILE)
    if need(lo) > budget:
        raise ValueError(f"`memory_limit` of {budget:.4g} bytes is below the {need(lo):.4g} bytes one pair of "
                         "examples needs for this kernel.")
    if need(hi) <= budget:
        lo = hi
    while lo < hi:  # the need grows with the tile side
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid - 1)
    return -(-n // -(-n // lo))  # as many tiles as `lo` needs, evened out


_PROGRAMS: dict[int, tuple[KernelFunction, Callable[..., Any]]] = {}


def _program(kernel: KernelFunction) -> Callable[..., Any]:
    """The jitted tile program of `kernel`, compiled once per process (and per tile shape)."""
    entry = _PROGRAMS.get(id(kernel))
    if entry is None or entry[0] is not kernel:
        if len(_PROGRAMS) >= 8:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        entry = _PROGRAMS[id(kernel)] = (kernel, jax.jit(kernel.block))
    return entry[1]


@functools.lru_cache(maxsize=8)
def _arrays(store: str, identity: Identity) -> dict[str, Any]:
    return open_arrays(store)


def run_tile(store: str, identity: Identity, kernel: KernelFunction, x1: np.ndarray, x2: np.ndarray | None,
             params: Any, i: int, j: int, device: Any = None) -> tuple[int, int]:
    """Computes tile `(i, j)` and writes it to `store` (in this process: a worker's task, or the local loop), on
    `device` when given (the inputs are placed there, so the compiled program runs there)."""
    if jnp.asarray(x1[:1]).dtype != x1.dtype:
        raise RuntimeError(f"this job's inputs are {x1.dtype} but JAX here runs without 64-bit types: start the "
                           "process (every Dask worker) with JAX_ENABLE_X64=1.")
    a, b = identity.tiles().inputs(x1, x2, i, j)
    if device is not None:
        a, b = jax.device_put((a, b), device)
    blocks = _program(kernel)(params, a, b)
    write_tile(_arrays(store, identity), identity, i, j, blocks)
    return i, j


def _run_on_devices(devices: list[Any], store: str, identity: Identity, kernel: KernelFunction, x1: np.ndarray,
                    x2: np.ndarray | None, params: Any, missing: list[tuple[int, int]], bar: Any) -> None:
    """The missing tiles in order on one device, or taken in turn by one thread per device (XLA releases the GIL
    while it computes); the first error stops every thread and is raised."""
    if not devices:
        raise ValueError("`devices` must name at least one JAX device.")
    if len(devices) == 1 or len(missing) <= 1:
        placed = jax.device_put(params, devices[0]) if params is not None else None
        for i, j in missing:
            run_tile(store, identity, kernel, x1, x2, placed, i, j, device=devices[0])
            bar.update()
        return
    _program(kernel)  # compiled-program cache filled before the threads read it
    tiles: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    for tile in missing:
        tiles.put(tile)
    failed = threading.Event()

    def work(device: Any) -> None:
        placed = jax.device_put(params, device) if params is not None else None
        while not failed.is_set():
            try:
                i, j = tiles.get_nowait()
            except queue.Empty:
                return
            try:
                run_tile(store, identity, kernel, x1, x2, placed, i, j, device=device)
            except BaseException:
                failed.set()
                raise
            bar.update()

    with ThreadPoolExecutor(len(devices), thread_name_prefix="ntkit-tiles") as pool:
        for future in [pool.submit(work, d) for d in devices]:
            future.result()


def _run_on_cluster(client: Any, store: str, identity: Identity, kernel: KernelFunction, x1: np.ndarray,
                    x2: np.ndarray | None, params: Any, missing: list[tuple[int, int]], bar: Any) -> None:
    """The missing tiles as Dask tasks (retried where a worker dies), the data scattered once to every worker."""
    from distributed import as_completed

    if not missing:
        return
    [kernel_f, x1_f, x2_f, params_f] = client.scatter([kernel, x1, x2, params], broadcast=True, hash=False)
    prefix = f"ntkit-tile-{identity.kernel_fingerprint[:8]}-{identity.x1[:8]}"
    futures = [client.submit(run_tile, store, identity, kernel_f, x1_f, x2_f, params_f, i, j, key=f"{prefix}-{i}-{j}",
                             retries=3, pure=False) for i, j in missing]
    try:
        for future in as_completed(futures):
            future.result()  # raises the task's error
            bar.update()
    finally:
        client.cancel(futures)
