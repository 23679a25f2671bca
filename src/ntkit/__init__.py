"""ntkit: Neural Tangent Kernels for real models and real data.

The whole public API is re-exported here.
"""

from . import predict as predict
from ._empirical import Kernel as Kernel
from ._empirical import empirical_kernel_fn as empirical_kernel_fn
from ._empirical import empirical_nngp_fn as empirical_nngp_fn
from ._empirical import empirical_ntk_fn as empirical_ntk_fn
from ._empirical import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from ._linearize import linearize as linearize
from ._linearize import taylor_expand as taylor_expand

__version__ = "0.1.0"
