"""Kernels computed in tiles of examples: which tiles, and the whole kernel assembled from them.

A kernel `K(x1, x2)` with `N1 × N2` example pairs is cut into tiles of at most `size` examples per side. With
`x2=None` (`K(x1, x1)`, symmetric) only tiles on and above the diagonal are computed and the others mirrored; for
a batch-diagonal kernel (only `K(x_i, x_i)`) only the diagonal tiles exist. Assembly works on concrete arrays
and on tracers under an outer `jax.jit` alike (in-place updates of one buffer), so tiled kernels can be jitted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from tqdm.auto import tqdm


def chunks(n: int, size: int | None) -> list[slice]:
    """`[0, n)` cut into consecutive slices of `size` (the last may be shorter); one slice when `size` is None."""
    size = n if size is None else min(size, n)
    return [slice(i, min(i + size, n)) for i in range(0, n, max(size, 1))]


def interleaved_mirror(ndim: int) -> tuple[int, ...]:
    """The permutation `K(x_a, x_b) -> K(x_b, x_a)` of a kernel laid out `(N1, N2, S_1, S_1', S_2, S_2', ...)`."""
    perm = [1, 0]
    for a in range(2, ndim, 2):
        perm += [a + 1, a]
    return tuple(perm)


@dataclass(frozen=True)
class Tiles:
    """The tiles of one kernel computation.

    Attributes:
      rows, cols: example slices of `x1` and of `x2` (of `x1` when `symmetric`).
      symmetric: `x2` is `x1`: tiles below the diagonal are mirrored, not computed.
      batch_diagonal: only the diagonal `K(x_i, x_i)` is wanted: only tiles `(i, i)`.
    """

    rows: tuple[slice, ...]
    cols: tuple[slice, ...]
    symmetric: bool
    batch_diagonal: bool = False

    @classmethod
    def build(cls, n1: int, n2: int | None, size: int | None, batch_diagonal: bool = False) -> Tiles:
        """Tiles of `size` examples per side; `n2=None` means `x2` is `x1`."""
        rows = tuple(chunks(n1, size))
        cols = rows if n2 is None else tuple(chunks(n2, size))
        return cls(rows, cols, n2 is None, batch_diagonal)

    @property
    def single(self) -> bool:
        """Whether one tile covers everything (no tiling needed)."""
        return len(self.rows) == 1 and len(self.cols) == 1

    def pairs(self) -> list[tuple[int, int]]:
        """Indices `(i, j)` of the tiles to compute."""
        if self.batch_diagonal:
            return [(i, i) for i in range(len(self.rows))]
        if self.symmetric:
            return [(i, j) for i in range(len(self.rows)) for j in range(i, len(self.cols))]
        return [(i, j) for i in range(len(self.rows)) for j in range(len(self.cols))]

    def progress(self) -> Iterator[tuple[int, int]]:
        """`pairs()` with a progress bar (shown on a terminal only)."""
        return iter(tqdm(self.pairs(), desc="kernel tiles", disable=None, leave=False))

    def inputs(self, x1: Any, x2: Any, i: int, j: int) -> tuple[Any, Any]:
        """The inputs of tile `(i, j)`: a diagonal tile of a symmetric kernel is `(x1[rows[i]], None)`."""
        if self.symmetric and i == j:
            return x1[self.rows[i]], None
        return x1[self.rows[i]], (x1 if x2 is None else x2)[self.cols[j]]

    def assembly(self, mirror: tuple[int, ...] | None = None) -> Assembly:
        """Collects this computation's tiles into the whole kernel (see `Assembly`)."""
        return Assembly(self, mirror)


class Assembly:
    """The whole kernel, filled tile by tile as tiles arrive.

    Each tile is written into one JAX buffer in place (`dynamic_update_slice` on a donated buffer) and, for a
    symmetric kernel, mirrored there too, so no tile is kept and nothing is copied at the end: the peak is the
    kernel plus the tiles in flight (a host buffer converted at the end took three times the kernel). The same
    code runs under an outer `jit`, where the tiles are tracers. A tile `(i, j)` never added is tile `(j, i)`
    transposed by `mirror`.
    """

    def __init__(self, tiles: Tiles, mirror: tuple[int, ...] | None):
        self.tiles = tiles
        self.mirror = mirror
        self._buffer: jax.Array | None = None

    def add(self, i: int, j: int, block: Any) -> None:
        tiles = self.tiles
        if self._buffer is None:
            lead = (tiles.rows[-1].stop,) if tiles.batch_diagonal else (tiles.rows[-1].stop, tiles.cols[-1].stop)
            self._buffer = jnp.zeros(lead + block.shape[len(lead):], block.dtype)
        if tiles.batch_diagonal:
            self._buffer = _place(self._buffer, block, tiles.rows[i].start, 0, None, True)
        else:
            mirror = self.mirror if tiles.symmetric and i != j else None
            self._buffer = _place(self._buffer, block, tiles.rows[i].start, tiles.cols[j].start, mirror, False)

    def result(self) -> jax.Array:
        assert self._buffer is not None, "no tile was added"
        out, self._buffer = self._buffer, None
        return out


@functools.partial(jax.jit, donate_argnums=0, static_argnums=(4, 5))
def _place(buffer: jax.Array, block: jax.Array, row: Any, col: Any, mirror: tuple[int, ...] | None,
           batch_diagonal: bool) -> jax.Array:
    """`buffer` with `block` at `(row, col)` (and its mirror image at `(col, row)`), updated in place."""
    if batch_diagonal:
        return lax.dynamic_update_slice(buffer, block, (row,) + (0,) * (buffer.ndim - 1))
    rest = (0,) * (buffer.ndim - 2)
    buffer = lax.dynamic_update_slice(buffer, block, (row, col) + rest)
    if mirror is not None:
        buffer = lax.dynamic_update_slice(buffer, jnp.transpose(block, mirror), (col, row) + rest)
    return buffer
