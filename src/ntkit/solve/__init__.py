"""Kernel ridge regression at scale: `(K + ridge·I) α = y` for kernels too large to factorize or even to store.

* `kernel_ridge`: solves by Cholesky (small N) or by conjugate gradients with a Nyström preconditioner from randomly
  pivoted Cholesky (Falkon, EigenPro), on an array, a lazy 2-D array read by blocks (Zarr, `ntkit.jobs.open`), or a
  kernel function evaluated tile by tile;
* `KernelOperator`: a kernel function and its inputs as a matrix-free operator;
* `matmul`: `K V` streamed, for predictions `K(x, X) α`;
* `SolverOptions`: the solver's options as one value (`ntkit.predict`'s `solver=`).
"""

from ._operator import KernelOperator as KernelOperator
from ._operator import matmul as matmul
from ._ridge import KernelRidgeResult as KernelRidgeResult
from ._ridge import Method as Method
from ._ridge import SolverInfo as SolverInfo
from ._ridge import SolverOptions as SolverOptions
from ._ridge import kernel_ridge as kernel_ridge
