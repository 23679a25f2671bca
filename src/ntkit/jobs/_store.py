"""The Zarr store of a kernel job: one array per kernel, one chunk per tile, and a done marker per tile.

Layout of the group at `store` (a local path or an fsspec URL):

* attributes `ntkit_kernel_job`: the job's `Identity` as a dict (written first, when the group is created);
* `nngp`, `ntk`: `(N1, N2)` arrays of the kernel dtype, chunked `(tile, tile)`; with `x2=None` the chunks below the
  diagonal are never written (readers mirror them from above);
* `done`: `(R, C)` uint8 flags, one chunk per tile, set to 1 only after the tile's kernel chunks are written.

Zarr writes every chunk whole, through a temporary file and a rename on a local disk and as a single object put on
an object store, so a process killed at any moment leaves each chunk either old or new: a tile is done exactly when
its flag is 1, and a tile whose flag is 0 is computed (and its chunks overwritten) again.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .._tiling import Tiles

ATTRIBUTE = "ntkit_kernel_job"
DONE = "done"


@dataclass(frozen=True)
class Identity:
    """Everything the numbers in a store depend on (compared field by field when a store is reopened).

    Attributes:
      kind: `"analytic"`, `"empirical"` or `"function"` (see `KernelFunction`).
      kernel: the architecture's `repr` (or the kernel function's type).
      kernel_fingerprint: SHA-256 of the program the kernel function traces to.
      get: the kernels stored, in order.
      x1, x2: SHA-256 of the inputs' shape, dtype and bytes (`x2` None: the kernel of `x1` with itself).
      params: SHA-256 of the parameters of an empirical kernel (None for analytic ones).
      shape: `(N1, N2)`.
      dtype: the kernel's dtype.
      tile: examples per tile side.
      ntkit_version: the version of ntkit that computed the tiles.
    """

    kind: str
    kernel: str
    kernel_fingerprint: str
    get: tuple[str, ...]
    x1: str
    x2: str | None
    params: str | None
    shape: tuple[int, int]
    dtype: str
    tile: int
    ntkit_version: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["get"], out["shape"] = list(self.get), list(self.shape)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Identity:
        data = dict(data)
        data["get"], data["shape"] = tuple(data["get"]), tuple(data["shape"])
        return cls(**data)

    @property
    def symmetric(self) -> bool:
        return self.x2 is None

    def tiles(self) -> Tiles:
        n1, n2 = self.shape
        return Tiles.build(n1, None if self.symmetric else n2, self.tile)

    def differences(self, other: Identity) -> list[str]:
        """`field: stored ... , this job ...` for every field that differs."""

        def short(v: Any) -> str:
            text = repr(v)
            return text if len(text) <= 80 else text[:77] + "..."

        mine, theirs = self.to_json(), other.to_json()
        return [f"{k}: store has {short(mine[k])}, this job has {short(theirs[k])}" for k in mine
                if mine[k] != theirs[k]]


def normalize(store: Any) -> str:
    """`store` as a string: a local path (made absolute, so that workers in other directories find it; `file://`
    URLs become paths) or another fsspec URL."""
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str) or not store:
        raise TypeError(f"`store` must be a path or an fsspec URL (a string), got {store!r}.")
    if store.startswith("file://"):
        store = store[len("file://"):]
    return os.path.abspath(os.path.expanduser(store)) if "://" not in store else store


def open_group(store: str, mode: Literal["r", "r+"] = "r") -> Any:
    """The job's Zarr group, opened `mode` (`"r"` or `"r+"`); a clear error where there is no job."""
    import zarr

    try:
        group = zarr.open_group(store, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeNotFoundError):
        raise ValueError(f"no kernel job store at {store!r} (run `ntkit.jobs.kernel_job` or `ntkit kernel` "
                         "first).") from None
    except zarr.errors.ContainsArrayError:
        raise ValueError(f"{store!r} is a Zarr array, not a kernel job store.") from None
    if ATTRIBUTE not in group.attrs:
        raise ValueError(f"{store!r} is a Zarr group but not a kernel job store (no {ATTRIBUTE!r} attribute).")
    return group


def read_identity(group: Any) -> Identity:
    return Identity.from_json(group.attrs[ATTRIBUTE])


def create_or_reopen(store: str, identity: Identity) -> Any:
    """The store's group opened for writing: created for `identity`, or reopened after checking that it holds
    the same job (`ValueError` listing what differs). Arrays missing after an interrupted creation are added."""
    import zarr

    try:
        group = zarr.open_group(store, mode="r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeNotFoundError):
        group = None
    if group is None:
        if "://" not in store:  # a local path (`normalize`)
            path = store
            if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
                raise ValueError(f"`store` {store!r} exists and is not a kernel job store; choose a new path.")
        group = zarr.create_group(store, attributes={ATTRIBUTE: identity.to_json()})
    elif ATTRIBUTE not in group.attrs:
        raise ValueError(f"`store` {store!r} is a Zarr group but not a kernel job store; choose a new path.")
    else:
        stored = read_identity(group)
        differences = stored.differences(identity)
        if differences:
            raise ValueError(f"`store` {store!r} holds another kernel job; refusing to mix them. Differences: "
                             + "; ".join(differences) + ". Use a new store for this job, or rerun the stored one.")
    tiles = identity.tiles()
    members = set(group.array_keys())
    for g in identity.get:
        if g not in members:
            # uncompressed: kernel entries barely compress (zstd saved 12% on a float32 ReLU NTK) and solvers read
            # the store once per iteration, where decompressing cost 50% more read time (measured, N = 10,000)
            group.create_array(g, shape=identity.shape, chunks=(identity.tile, identity.tile), dtype=identity.dtype,
                               fill_value=0, compressors=None)
    if DONE not in members:
        group.create_array(DONE, shape=(len(tiles.rows), len(tiles.cols)), chunks=(1, 1), dtype="uint8",
                           fill_value=0)
    return group


def done_flags(group: Any) -> np.ndarray:
    """`(R, C)` booleans: which tiles are done."""
    return np.asarray(group[DONE][...]) == 1


def open_arrays(store: str) -> dict[str, Any]:
    """The job's arrays (its kernels and `done`) opened for writing."""
    group = open_group(store, "r+")
    return {name: group[name] for name in (*read_identity(group).get, DONE)}


def write_tile(arrays: dict[str, Any], identity: Identity, i: int, j: int, blocks: tuple[Any, ...]) -> None:
    """Writes tile `(i, j)`'s kernels (one chunk each), then marks it done."""
    tiles = identity.tiles()
    rows, cols = tiles.rows[i], tiles.cols[j]
    for g, block in zip(identity.get, blocks, strict=True):
        arrays[g][rows, cols] = np.asarray(block)
    arrays[DONE][i, j] = 1
