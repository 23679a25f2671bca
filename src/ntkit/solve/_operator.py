"""Kernel matrices as operators: an array in memory, a lazy 2-D array read by blocks, or a kernel function.

The solvers see a matrix only through four operations: its product with a block of vectors (`matmul`), a few of its
rows (`rows`), its diagonal (`diagonal`) and, for a direct solve, the whole matrix (`dense`). A lazy array (a Zarr
array, `ntkit.jobs.open(...)`, anything with `.shape`, `.dtype` and 2-D slicing `a[i0:i1, j0:j1]`) is read in row
blocks of bounded size and never whole; a `KernelOperator` computes tiles from a kernel function as they are needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._memory import memory_budget_bytes

BLOCK_BYTES = 256 * 2**20
"""Default size of one block read from a lazy array or computed by a kernel function (256 MiB)."""


def working_dtype(dtype: Any, name: str) -> np.dtype:
    """float64 for float64 data, float32 for narrower floats and integers; `TypeError` for anything else."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dtype
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer) or dtype.name == "bfloat16":
        return np.dtype(np.float32)
    raise TypeError(f"`{name}` must hold real numbers, got dtype {dtype}.")


def _check_block(block: np.ndarray, name: str, where: str) -> np.ndarray:
    if not np.all(np.isfinite(block)):
        raise ValueError(f"`{name}` contains NaN or Inf (in {where}).")
    return block


class Dense:
    """A matrix held in memory (a NumPy or JAX array)."""

    def __init__(self, k: Any, name: str = "k") -> None:
        dtype = working_dtype(k.dtype, name)
        self.k = np.asarray(k).astype(dtype, copy=False)
        self.name = name
        self.shape: tuple[int, ...] = tuple(self.k.shape)
        self.dtype = dtype
        step = max(1, 2**24 // max(1, self.k[0].size if self.k.ndim else 1))
        for i in range(0, max(len(self.k), 1) if self.k.ndim else 1, step):  # by blocks: no N² temporary
            _check_block(self.k[i:i + step] if self.k.ndim else self.k, name, "the matrix")

    def matmul(self, v: np.ndarray) -> np.ndarray:
        return self.k @ v.astype(self.dtype, copy=False)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.k[idx]

    def diagonal(self) -> np.ndarray:
        return np.diagonal(self.k).copy()

    def dense(self) -> np.ndarray:
        return np.array(self.k, copy=True)


class Lazy:
    """A 2-D array-like read through `a[i0:i1, j0:j1]`, by row blocks of at most `block_bytes`."""

    def __init__(self, k: Any, name: str = "k", block_bytes: float | None = None) -> None:
        self.k = k
        self.name = name
        self.shape = tuple(int(s) for s in k.shape)
        self.dtype = working_dtype(k.dtype, name)
        budget = BLOCK_BYTES if block_bytes is None else block_bytes
        self.block_elements = max(1, int(budget // self.dtype.itemsize))
        self.block_rows = max(1, int(budget // max(1, self.shape[1] * self.dtype.itemsize)))
        self._passes = 0
        # pivot rows read together in one pass of randomly pivoted Cholesky (float64, within one block's bytes):
        # each pass reads the whole matrix, however few rows it needs
        self.pivot_block = max(128, int(budget // (8 * max(1, self.shape[1]))))

    def _read(self, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        block = np.asarray(self.k[i0:i1, j0:j1]).astype(self.dtype, copy=False)
        if block.shape != (i1 - i0, j1 - j0):
            raise ValueError(f"`{self.name}[{i0}:{i1}, {j0}:{j1}]` returned shape {block.shape}; a 2-D array-like "
                             f"must return ({i1 - i0}, {j1 - j0}).")
        return _check_block(block, self.name, f"rows {i0}:{i1}, columns {j0}:{j1}")

    def matmul(self, v: np.ndarray) -> np.ndarray:
        n1, n2 = self.shape
        v = v.astype(self.dtype, copy=False)
        tile = getattr(self.k, "upper_tile", None)
        if isinstance(tile, int) and tile > 0 and n1 == n2:
            return self._symmetric_matmul(v, tile)
        out = np.empty((n1,) + v.shape[1:], self.dtype)
        for i0 in range(0, n1, self.block_rows):
            i1 = min(i0 + self.block_rows, n1)
            out[i0:i1] = self._read(i0, i1, 0, n2) @ v
        return out

    def _upper_tiles(self, tile: int, wanted: np.ndarray | None = None) -> list[tuple[int, int, int, int]]:
        """The stored tiles `(i0, i1, j0, j1)` (on and above the diagonal), only those touching the row tiles
        `wanted` (booleans) when given; in reverse order on every other pass, so that a store larger than the page
        cache starts each pass on the tiles the previous one read last (still cached), rather than evicting every
        tile just before it is needed again."""
        n = self.shape[0]
        starts = range(0, n, tile)
        out = [(i0, min(i0 + tile, n), j0, min(j0 + tile, n)) for i0 in starts for j0 in starts
               if j0 >= i0 and (wanted is None or wanted[i0 // tile] or wanted[j0 // tile])]
        self._passes += 1
        return out if self._passes % 2 else out[::-1]

    def _symmetric_matmul(self, v: np.ndarray, tile: int) -> np.ndarray:
        """`K V` for a store holding only the tiles on and above the diagonal (`k.upper_tile`): each stored tile is
        read once and used for its block and the mirrored one, half the reading of a pass by row blocks."""
        out = np.zeros((self.shape[0],) + v.shape[1:], self.dtype)
        for i0, i1, j0, j1 in self._upper_tiles(tile):
            block = self._read(i0, i1, j0, j1)
            out[i0:i1] += block @ v[j0:j1]
            if j0 != i0:
                out[j0:j1] += block.T @ v[i0:i1]
        return out

    def _symmetric_rows(self, idx: np.ndarray, tile: int) -> np.ndarray:
        """`K[idx, :]` from the stored upper tiles, each read at most once: a row of `K` runs through a row of
        stored tiles and, mirrored, down a column of them, so reading whole row blocks would read the mirrored
        tiles once per row block (the store's full size for every few pivots)."""
        n = self.shape[0]
        out = np.zeros((len(idx), n), self.dtype)
        which = idx // tile
        wanted = np.zeros(-(-n // tile), bool)
        wanted[which] = True
        for i0, i1, j0, j1 in self._upper_tiles(tile, wanted):
            block = self._read(i0, i1, j0, j1)
            in_i = np.flatnonzero(which == i0 // tile)
            if in_i.size:
                out[in_i, j0:j1] = block[idx[in_i] - i0]
            in_j = np.flatnonzero(which == j0 // tile)
            if j0 != i0 and in_j.size:
                out[in_j, i0:i1] = block[:, idx[in_j] - j0].T
        return out

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """`K[idx, :]`, reading for each row block that holds some of `idx` the rows from the first to the last of
        them in one slice: at most one pass over the matrix, whatever its chunks (a single row of a store chunked
        in square tiles would decompress whole tiles). A store of upper tiles is read tile by tile instead."""
        idx = np.asarray(idx, dtype=np.int64)
        tile = getattr(self.k, "upper_tile", None)
        if isinstance(tile, int) and tile > 0 and self.shape[0] == self.shape[1]:
            return self._symmetric_rows(idx, tile)
        out = np.zeros((len(idx), self.shape[1]), self.dtype)
        blocks = idx // self.block_rows
        for b in np.unique(blocks):
            where = np.flatnonzero(blocks == b)
            lo, hi = int(idx[where].min()), int(idx[where].max()) + 1
            out[where] = self._read(lo, hi, 0, self.shape[1])[idx[where] - lo]
        return out

    def diagonal(self) -> np.ndarray:
        n = min(self.shape)
        size = min(max(1, math.isqrt(self.block_elements)), n)  # diagonal blocks of at most `block_bytes`
        tile = getattr(self.k, "upper_tile", None)
        if isinstance(tile, int) and tile > 0:
            size = tile  # the stored diagonal tiles, each read whole
        return np.concatenate([np.diagonal(self._read(i, min(i + size, n), i, min(i + size, n)))
                               for i in range(0, n, size)])

    def dense(self) -> np.ndarray:
        n1, n2 = self.shape
        out = np.empty((n1, n2), self.dtype)
        for i0 in range(0, n1, self.block_rows):
            i1 = min(i0 + self.block_rows, n1)
            out[i0:i1] = self._read(i0, i1, 0, n2)
        return out


class KernelOperator:
    """A kernel matrix `K(x1, x2)` that is never stored: tiles are computed from `kernel_fn` when needed.

    It is a lazy 2-D array (`shape`, `dtype`, `op[i0:i1, j0:j1]`), and its products `op.matmul(V) = K V` compute
    the kernel tile by tile, `block_size` examples per side, keeping one tile at a time; for `x2=None` (`K(x1, x1)`,
    symmetric) only the tiles on and above the diagonal are computed and each is used twice. Memory is
    `O(block_size² + N·k)`; every product recomputes the kernel, so a solve costs one kernel evaluation per
    iteration.

    Args:
      kernel_fn: `kernel_fn(x1, x2, get)` returning an `(n1, n2)` array or a named tuple with a `get` field (an
        `ntkit.nn` or empirical kernel function); with `get=None`, `kernel_fn(x1, x2)` returning an array.
        It must accept `x2=None` for `K(x1, x1)`.
      x1: inputs `(N1, ...)`.
      x2: inputs `(N2, ...)`, or `None` for the symmetric `K(x1, x1)`.
      get: the kernel to take (`"ntk"`, `"nngp"`), or `None` (see `kernel_fn`).
      block_size: examples per side of a tile.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> from ntkit.solve import KernelOperator
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))
      >>> x = jnp.linspace(-1, 1, 10).reshape(5, 2)
      >>> op = KernelOperator(kernel_fn, x, get="ntk", block_size=2)
      >>> op.shape, bool(jnp.allclose(op[0:5, 0:5], kernel_fn(x, None, "ntk"), rtol=1e-5))
      ((5, 5), True)
    """

    def __init__(self, kernel_fn: Callable[..., Any], x1: Any, x2: Any = None, get: str | None = None,
                 block_size: int = 2048) -> None:
        if not callable(kernel_fn):
            raise TypeError(f"`kernel_fn` must be callable, got {type(kernel_fn).__name__}.")
        if not hasattr(x1, "shape") or len(x1.shape) < 1 or x1.shape[0] == 0:
            raise ValueError("`x1` must be an array of inputs with at least one example (batch axis first).")
        if x2 is not None and (not hasattr(x2, "shape") or len(x2.shape) < 1 or x2.shape[0] == 0):
            raise ValueError("`x2` must be None or an array of inputs with at least one example.")
        if not isinstance(block_size, int | np.integer) or isinstance(block_size, bool) or block_size < 1:
            raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
        self.kernel_fn = kernel_fn
        self.x1 = x1
        self.x2 = x2
        self.get = get
        self.block_size = int(block_size)
        self.name = "kernel_fn"
        self.shape = (int(x1.shape[0]), int((x1 if x2 is None else x2).shape[0]))
        probe = self._tile(slice(0, 1), slice(0, 1), raw=True)
        self.dtype = working_dtype(probe.dtype, "kernel_fn(x1, x2)")

    @property
    def symmetric(self) -> bool:
        return self.x2 is None

    def _tile(self, rows: slice | np.ndarray, cols: slice | np.ndarray, raw: bool = False) -> np.ndarray:
        xa = self.x1[rows]
        same = self.symmetric and isinstance(rows, slice) and isinstance(cols, slice) and rows == cols
        xb = None if same else (self.x1 if self.x2 is None else self.x2)[cols]
        out = self.kernel_fn(xa, xb) if self.get is None else self.kernel_fn(xa, xb, self.get)
        if self.get is not None and not hasattr(out, "shape"):
            out = getattr(out, self.get, None)
            if out is None:
                raise ValueError(f"`kernel_fn` returned no `{self.get}` kernel.")
        tile = np.asarray(jax.device_get(out))
        want = (xa.shape[0], (xa if xb is None else xb).shape[0])
        if tile.shape != want:
            raise ValueError(f"`kernel_fn` must return an ({want[0]}, {want[1]}) kernel for {want[0]} x {want[1]} "
                             f"inputs, got shape {tile.shape} (kernels with output axes need `trace_axes` that "
                             "trace them all).")
        if raw:
            return tile
        return _check_block(tile.astype(self.dtype, copy=False), "kernel_fn(x1, x2)", "a tile")

    def __getitem__(self, index: Any) -> np.ndarray:
        if not (isinstance(index, tuple) and len(index) == 2 and all(isinstance(s, slice) for s in index)):
            raise TypeError("a KernelOperator is indexed by two slices, `op[i0:i1, j0:j1]`.")
        rows = slice(*index[0].indices(self.shape[0]))
        cols = slice(*index[1].indices(self.shape[1]))
        if rows.step != 1 or cols.step != 1:
            raise ValueError("a KernelOperator takes slices with step 1.")
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return np.zeros((max(0, rows.stop - rows.start), max(0, cols.stop - cols.start)), self.dtype)
        return self._tile(rows, cols)

    def _slices(self, n: int) -> list[slice]:
        return [slice(i, min(i + self.block_size, n)) for i in range(0, n, self.block_size)]

    def matmul(self, v: Any) -> np.ndarray:
        """`K V` for `V` of shape `(N2,)` or `(N2, k)`, tile by tile."""
        v = np.asarray(v).astype(self.dtype, copy=False)
        if v.shape[:1] != self.shape[1:]:
            raise ValueError(f"`v` must have {self.shape[1]} rows, got shape {v.shape}.")
        out = np.zeros((self.shape[0],) + v.shape[1:], self.dtype)
        rows, cols = self._slices(self.shape[0]), self._slices(self.shape[1])
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if self.symmetric and j < i:
                    continue
                tile = self._tile(r, c)
                out[r] += tile @ v[c]
                if self.symmetric and j != i:
                    out[c] += tile.T @ v[r]
        return out

    def rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        m = len(idx)
        if m == 0:
            return np.zeros((0, self.shape[1]), self.dtype)
        # padded to a power of two, so a compiled kernel function sees few distinct shapes
        padded = np.concatenate([idx, np.full(1 << (m - 1).bit_length(), idx[0])[:(1 << (m - 1).bit_length()) - m]])
        return np.concatenate([self._tile(padded, c) for c in self._slices(self.shape[1])], axis=1)[:m]

    def diagonal(self) -> np.ndarray:
        if not self.symmetric:
            raise ValueError("the diagonal of a KernelOperator needs `x2=None`.")
        return np.concatenate([np.diagonal(self._tile(s, s)) for s in self._slices(self.shape[0])])

    def dense(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        for r in self._slices(self.shape[0]):
            for c in self._slices(self.shape[1]):
                out[r, c] = self._tile(r, c)
        return out


def as_operator(k: Any, name: str = "k", block_bytes: float | None = None) -> Any:
    """`k` as `Dense`, `Lazy` or a `KernelOperator` (also from a `(kernel_fn, x)` or `(kernel_fn, x, get)` tuple)."""
    if isinstance(k, KernelOperator):
        return k
    if isinstance(k, tuple) and k and callable(k[0]):
        if len(k) not in (2, 3):
            raise TypeError(f"`{name}` as a kernel function must be `(kernel_fn, x)` or `(kernel_fn, x, get)`, got "
                            f"a tuple of {len(k)}.")
        return KernelOperator(k[0], k[1], get=k[2] if len(k) == 3 else None)
    if isinstance(k, np.ndarray | jax.Array):
        return Dense(k, name)
    if hasattr(k, "shape") and hasattr(k, "dtype") and hasattr(k, "__getitem__"):
        if len(k.shape) != 2:
            raise ValueError(f"`{name}` must be 2-D, got shape {tuple(k.shape)}.")
        return Lazy(k, name, block_bytes)
    if isinstance(k, list | tuple):
        return Dense(np.asarray(k), name)
    raise TypeError(f"`{name}` must be an array, a 2-D array-like with `.shape`, `.dtype` and slicing, a "
                    f"`KernelOperator` or a `(kernel_fn, x)` tuple; got {type(k).__name__}.")


def fits_in_memory(n: int, dtype: np.dtype, copies: float = 3.0) -> bool:
    """Whether `copies` dense `(n, n)` matrices of `dtype` fit in this process's memory budget."""
    return copies * n * n * np.dtype(dtype).itemsize <= memory_budget_bytes()


def matmul(k: Any, v: Any, block_bytes: float | None = None) -> np.ndarray:
    """`K V` for any kernel `k` that `kernel_ridge` accepts (an array, a lazy 2-D array read by row blocks, a
    `KernelOperator`), e.g. test predictions `K(x_test, X) α` from a test-train kernel too large to load.

    Args:
      k: `(N1, N2)` kernel.
      v: `(N2,)` or `(N2, k)`.
      block_bytes: size of one block read from a lazy array (default 256 MiB).

    Returns:
      `(N1,)` or `(N1, k)`, a NumPy array in the kernel's precision (float64 for a float64 kernel).

    Example:
      >>> import numpy as np
      >>> from ntkit.solve import matmul
      >>> matmul(np.eye(3), np.arange(3.0)).shape
      (3,)
    """
    op = as_operator(k, "k", block_bytes)
    v = np.asarray(v)
    if v.ndim not in (1, 2) or v.shape[0] != op.shape[1]:
        raise ValueError(f"`v` must have shape ({op.shape[1]},) or ({op.shape[1]}, k) for `k` of shape "
                         f"{op.shape}, got {v.shape}.")
    if not np.all(np.isfinite(v)):
        raise ValueError("`v` contains NaN or Inf.")
    return op.matmul(v)
