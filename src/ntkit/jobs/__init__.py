"""Resumable tiled kernel jobs: kernels too large for one sitting, computed tile by tile into a Zarr store.

* `kernel_job(kernel_fn, x1, x2=None, store=..., get=..., tile=None, memory_limit=None, params=None, client=None)`
  computes the kernel into `store` (locally, or on a Dask cluster with `client=`); running it again resumes;
* `status(store)` says what is done; `load(store, get)` returns the whole kernel; `open(store, get)` a lazy
  read-only array sliced 2-D.

The command line has the same: `ntkit kernel --arch FILE.py:NAME --x1 X.npy --out STORE`. Needs `zarr` (and
`dask[distributed]` for clusters): `pip install 'ntkit[dask]'`.
"""

from ._job import MAX_TILE as MAX_TILE
from ._job import kernel_job as kernel_job
from ._read import JobStatus as JobStatus
from ._read import KernelArray as KernelArray
from ._read import load as load
from ._read import open as open
from ._read import status as status
from ._store import Identity as Identity
