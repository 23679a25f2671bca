"""Reading a kernel job's store: its status, the whole kernel, or a lazy array read slice by slice."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._kernel import GETS
from ._chunks import ChunkFiles, chunk_files
from ._store import Identity, done_flags, normalize, open_group, read_identity


class JobStatus(NamedTuple):
    """What a kernel job's store holds.

    Attributes:
      store: the store's path or URL.
      shape: `(N1, N2)`.
      get: the kernels stored.
      tile: examples per tile side.
      symmetric: `x2` was None (tiles below the diagonal are mirrored, not stored).
      tiles_done: tiles computed and marked done.
      tiles_total: tiles the job computes.
      identity: the job's `Identity` (kernel, fingerprints, dtype, ntkit version).
    """

    store: str
    shape: tuple[int, int]
    get: tuple[str, ...]
    tile: int
    symmetric: bool
    tiles_done: int
    tiles_total: int
    identity: Identity

    @property
    def complete(self) -> bool:
        return self.tiles_done == self.tiles_total

    @property
    def tiles_missing(self) -> int:
        return self.tiles_total - self.tiles_done

    def summary(self) -> str:
        """A few lines for people."""
        sym = ", symmetric (upper tiles stored)" if self.symmetric else ""
        return "\n".join([
            f"store: {self.store}",
            f"kernel: {self.identity.kind} {self.identity.kernel}",
            f"get: {', '.join(self.get)}; shape {self.shape[0]} x {self.shape[1]} {self.identity.dtype}{sym}",
            f"tiles: {self.tiles_done}/{self.tiles_total} done (tile {self.tile})"
            + ("" if self.complete else f", {self.tiles_missing} missing: rerun the same job to resume"),
        ])


def status(store: Any) -> JobStatus:
    """What the kernel job at `store` has done: tiles done and total, shape, `get`, identity.

    Raises:
      ValueError: there is no kernel job store at `store`.
    """
    store = normalize(store)
    group = open_group(store, "r")
    identity = read_identity(group)
    pairs = identity.tiles().pairs()
    try:
        flags = done_flags(group)
    except KeyError:  # created, interrupted before its arrays
        flags = np.zeros((len(identity.tiles().rows), len(identity.tiles().cols)), bool)
    done = sum(bool(flags[i, j]) for i, j in pairs)
    return JobStatus(store, identity.shape, identity.get, identity.tile, identity.symmetric, done, len(pairs),
                     identity)


def _complete_status(store: Any, get: Any) -> JobStatus:
    state = status(store)
    if not isinstance(get, str) or get.lower() not in GETS:
        raise ValueError(f"`get` must be 'nngp' or 'ntk', got {get!r}.")
    if get.lower() not in state.get:
        raise ValueError(f"the job at {state.store!r} stored {state.get}, not {get.lower()!r}.")
    if not state.complete:
        raise ValueError(f"the kernel job at {state.store!r} is incomplete: {state.tiles_missing} of "
                         f"{state.tiles_total} tiles missing. Rerun the same job (same arguments) to resume it.")
    return state


class KernelArray:
    """A stored kernel, read lazily: `.shape`, `.dtype`, `.ndim` and 2-D slicing `K[i0:i1, j0:j1]` (NumPy arrays
    back; integers and steps work too). Of a symmetric job, entries below the diagonal tiles are read from the
    stored tiles above, transposed. Picklable (it holds the store's address, not its data)."""

    def __init__(self, store: str, get: str, identity: Identity):
        self.store = store
        self.get = get
        self.identity = identity
        self._array: Any = None
        self._files: ChunkFiles | None | bool = False  # False: not looked at yet

    @property
    def shape(self) -> tuple[int, int]:
        return self.identity.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.identity.dtype)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"KernelArray({self.store!r}, get={self.get!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _array=None, _files=False)

    def _zarr(self) -> Any:
        if self._array is None:
            self._array = open_group(self.store, "r")[self.get]
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 2 or any(k is Ellipsis for k in key):
            raise IndexError(f"a kernel array takes at most 2 indices (integers or slices), got {key!r}.")
        key = key + (slice(None),) * (2 - len(key))
        indices, squeeze = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                indices.append(np.arange(n)[k])
            elif isinstance(k, int | np.integer) and not isinstance(k, bool):
                if not -n <= k < n:
                    raise IndexError(f"index {k} is out of bounds for axis {axis} of size {n}.")
                indices.append(np.array([k % n]))
                squeeze.append(axis)
            else:
                raise IndexError(f"a kernel array takes integers and slices, got {type(k).__name__}.")
        rows, cols = indices
        if rows.size == 0 or cols.size == 0:
            out = np.zeros((rows.size, cols.size), self.dtype)
        else:
            r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
            out = self._read(r0, r1, c0, c1)
            if rows.size != r1 - r0 or cols.size != c1 - c0 or rows[0] != r0 or cols[0] != c0:
                out = out[np.ix_(rows - r0, cols - c0)]
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out

    @property
    def upper_tile(self) -> int | None:
        """The tile size when only the tiles on and above the diagonal are stored (a symmetric job), else None: a
        reader multiplying by the whole matrix can then read each stored tile once and use it twice
        (`ntkit.solve` does)."""
        return self.identity.tile if self.identity.symmetric else None

    def _chunk_files(self) -> ChunkFiles | None:
        if self._files is False:
            self._files = chunk_files(self.store, self.get, self.shape, self.identity.tile, self.dtype)
        return self._files if isinstance(self._files, ChunkFiles) else None

    def _tile(self, ti: int, tj: int, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
        """Rows `a0:a1`, columns `b0:b1` of the stored tile `(ti, tj)`."""
        files = self._chunk_files()
        if files is None:
            return np.asarray(self._zarr()[a0:a1, b0:b1])
        t = self.identity.tile
        return files.read(ti, tj)[a0 - ti * t:a1 - ti * t, b0 - tj * t:b1 - tj * t]

    def _read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """The block `[r0:r1, c0:c1]`, tile by tile; of a symmetric job, tiles below the diagonal are mirrored."""
        t = self.identity.tile
        sym = self.identity.symmetric
        if not sym and self._chunk_files() is None:
            return np.asarray(self._zarr()[r0:r1, c0:c1])
        if (r1 - 1) // t == r0 // t and (c1 - 1) // t == c0 // t and (not sym or r0 // t <= c0 // t):
            return self._tile(r0 // t, c0 // t, r0, r1, c0, c1)  # within one stored tile: no copy into a new block
        out = np.empty((r1 - r0, c1 - c0), self.dtype)
        for ti in range(r0 // t, -(-r1 // t)):
            a0, a1 = max(ti * t, r0), min((ti + 1) * t, r1)
            for tj in range(c0 // t, -(-c1 // t)):
                b0, b1 = max(tj * t, c0), min((tj + 1) * t, c1)
                if not sym or ti <= tj:
                    out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = self._tile(ti, tj, a0, a1, b0, b1)
                else:
                    out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = self._tile(tj, ti, b0, b1, a0, a1).T
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def to_dask(self) -> Any:
        """A `dask.array` of the kernel in chunks of the job's tiles (needs dask)."""
        try:
            import dask.array as da
        except ImportError as err:  # pragma: no cover - dask is an optional dependency
            raise ImportError("`to_dask` needs dask: `pip install 'ntkit[dask]'`.") from err
        t = self.identity.tile
        name = f"ntkit-kernel-{self.get}-{self.identity.kernel_fingerprint[:12]}-{self.identity.x1[:12]}"
        return da.from_array(self, chunks=(t, t), name=name, lock=False, asarray=False,
                             meta=np.empty((0, 0), self.dtype))


def open(store: Any, get: str = "ntk") -> KernelArray:  # noqa: A001 - `ntkit.jobs.open`, as `zarr.open`
    """The stored kernel `get` of a finished job as a lazy read-only `KernelArray` (for kernels larger than memory).

    Raises:
      ValueError: no job at `store`, `get` not stored, or the job incomplete (rerunning it resumes).
    """
    state = _complete_status(store, get)
    return KernelArray(state.store, get.lower(), state.identity)


def load(store: Any, get: str = "ntk") -> np.ndarray:
    """The stored kernel `get` of a finished job as a whole `(N1, N2)` NumPy array (mirrored where only tiles on
    and above the diagonal were computed).

    Raises:
      ValueError: no job at `store`, `get` not stored, or the job incomplete (rerunning it resumes).
    """
    return open(store, get)[:, :]
