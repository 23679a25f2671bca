"""Empirical (finite-width) NTK and NNGP of any JAX model: plain functions, Flax, Equinox.

Four implementations compute the same kernel (`"jacobian"`, `"ntvp"`, `"structured"`, and `"auto"` choosing among
them by a cost model); `linearize` and `taylor_expand` give the models whose training the NTK describes exactly;
`monte_carlo_kernel_fn` averages empirical kernels of randomly initialized networks. Everything here is also
re-exported from `ntkit`.
"""

from ._api import EmpiricalKernelFn as EmpiricalKernelFn
from ._api import EmpiricalNNGPFn as EmpiricalNNGPFn
from ._api import EmpiricalNTKFn as EmpiricalNTKFn
from ._api import Implementation as Implementation
from ._api import NtkImplementation as NtkImplementation
from ._api import empirical_kernel_fn as empirical_kernel_fn
from ._api import empirical_nngp_fn as empirical_nngp_fn
from ._api import empirical_ntk_fn as empirical_ntk_fn
from ._api import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from ._batch import BatchedKernelFn as BatchedKernelFn
from ._batch import batch as batch
from ._linearize import linearize as linearize
from ._linearize import taylor_expand as taylor_expand
from ._monte_carlo import monte_carlo_kernel_fn as monte_carlo_kernel_fn
