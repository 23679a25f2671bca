"""Predictions of training dynamics and Bayesian inference from NTK/NNGP kernels (neural-tangents' `predict`).

* `gradient_descent_mse`: closed-form gradient flow on the mean squared loss, train and test outputs at any time;
* `gradient_descent`: the same for any loss (cross-entropy, ...) by integrating the ODE, optionally with momentum;
* `gradient_descent_mse_ensemble`: mean and covariance of an infinite ensemble of infinitely wide networks;
* `gp_inference`: NNGP / NTK / NTK-GP posteriors;
* `max_learning_rate`: the largest stable learning rate of full-batch gradient descent.

Each of the first four returns a small callable object (`MSEPredictor`, `ODEPredictor`, `EnsemblePredictor`,
`GPPredictor`) with neural-tangents' call signature; it is pure under `jax.jit`, `jax.grad` and `jax.vmap` (checks
that need values run on concrete inputs only, and factorizations are kept only when concrete).

Conventions (docs/theory.md §3): loss `1/(2nk) Σ ‖f − y‖²`, time `t` in steps, `τ = η t/(nk)`; kernels have the
layout of `ntkit.empirical_ntk_fn` and stand for `Θ ⊗ I` along `trace_axes`. Reference: Lee et al. 2019, "Wide
neural networks of any depth evolve as linear models under gradient descent".
"""

from ._ensemble import EnsemblePredictor as EnsemblePredictor
from ._ensemble import gradient_descent_mse_ensemble as gradient_descent_mse_ensemble
from ._gp import Gaussian as Gaussian
from ._gp import GPGet as GPGet
from ._gp import GPPredictor as GPPredictor
from ._gp import gp_inference as gp_inference
from ._lr import max_learning_rate as max_learning_rate
from ._mse import MSEPredictor as MSEPredictor
from ._mse import gradient_descent_mse as gradient_descent_mse
from ._ode import ODEPredictor as ODEPredictor
from ._ode import ODEState as ODEState
from ._ode import gradient_descent as gradient_descent
