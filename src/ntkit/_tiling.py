"""Kernels computed in tiles of examples: which tiles, and the whole kernel assembled from them.

A kernel `K(x1, x2)` with `N1 × N2` example pairs is cut into tiles of at most `size` examples per side. With
`x2=None` (`K(x1, x1)`, symmetric) only tiles on and above the diagonal are computed and the others mirrored; for
a batch-diagonal kernel (only `K(x_i, x_i)`) only the diagonal tiles exist. Assembly works on concrete arrays
(one preallocated buffer) and on tracers under an outer `jax.jit` (concatenation), so tiled kernels can be jitted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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

    def assemble(self, blocks: Mapping[tuple[int, int], Any], mirror: tuple[int, ...] | None = None) -> jax.Array:
        """The whole kernel from its tiles; a missing tile `(i, j)` is tile `(j, i)` transposed by `mirror`."""
        if self.batch_diagonal:
            return jnp.concatenate([blocks[i, i] for i in range(len(self.rows))], axis=0)
        if any(isinstance(b, jax.core.Tracer) for b in blocks.values()):  # under an outer `jit`: stay traced
            def tile(i: int, j: int) -> Any:
                return blocks[i, j] if (i, j) in blocks else jnp.transpose(blocks[j, i], mirror)

            return jnp.concatenate([jnp.concatenate([tile(i, j) for j in range(len(self.cols))], axis=1)
                                    for i in range(len(self.rows))], axis=0)
        first = np.asarray(next(iter(blocks.values())))
        out = np.empty((self.rows[-1].stop, self.cols[-1].stop) + first.shape[2:], dtype=first.dtype)
        for (i, j), block in blocks.items():
            block = np.asarray(block)
            out[self.rows[i], self.cols[j]] = block
            if (j, i) not in blocks:
                out[self.cols[j], self.rows[i]] = np.transpose(block, mirror)
        return jnp.asarray(out)
