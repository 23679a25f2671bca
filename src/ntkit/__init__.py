"""ntkit: Neural Tangent Kernels for real models and real data.

The whole public API is re-exported here; the stages of the data path are subpackages:

* `ntkit.empirical`: the empirical NTK and NNGP of any finite JAX model (its names are also here);
* `ntkit.nn`: layers with analytic infinite-width kernels and matching finite networks (`import ntkit.nn as stax`);
* `ntkit.predict`: training dynamics and Bayesian inference from kernels;
* `ntkit.analysis`: what the NTK is used for (convergence, initialization, learning rate, generalization, lazy vs
  rich);
* `ntkit.solve`: kernel ridge regression at scale (Cholesky, or CG with a Nyström preconditioner; lazy and
  matrix-free kernels);
* `ntkit.jobs`: kernels larger than memory, tile by tile into resumable Zarr stores, locally or on Dask;
* `ntkit.cli`: the `ntkit` command-line application.
"""

from . import analysis as analysis
from . import empirical as empirical
from . import jobs as jobs
from . import nn as nn
from . import predict as predict
from . import solve as solve
from ._kernel import Kernel as Kernel
from .empirical import NtkImplementation as NtkImplementation
from .empirical import batch as batch
from .empirical import empirical_kernel_fn as empirical_kernel_fn
from .empirical import empirical_nngp_fn as empirical_nngp_fn
from .empirical import empirical_ntk_fn as empirical_ntk_fn
from .empirical import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from .empirical import linearize as linearize
from .empirical import monte_carlo_kernel_fn as monte_carlo_kernel_fn
from .empirical import taylor_expand as taylor_expand

__version__ = "0.1.0"
