"""What the NTK is used for: convergence, hyperparameters and initialization, generalization, lazy vs rich.

* Convergence: `spectrum`, `convergence`;
* hyperparameters and initialization: `signal_propagation`, `phase_diagram`, `catapult_window`,
  `learning_rate_sweep`;
* generalization: `generalization_bound`, `kernel_alignment`, `learning_curve`;
* lazy vs rich: `KernelTracker`, for the user's own training loop.

Each function cites the published result it implements and states its assumptions; kernels have the layout of
`ntkit.empirical_ntk_fn` (docs/theory.md).
"""

# Public names, one block per module (keep each module's imports together).
from ._catapult import CatapultWindow as CatapultWindow
from ._catapult import LearningRateSweep as LearningRateSweep
from ._catapult import catapult_window as catapult_window
from ._catapult import learning_rate_sweep as learning_rate_sweep
from ._convergence import Convergence as Convergence
from ._convergence import convergence as convergence
from ._generalization import Alignment as Alignment
from ._generalization import generalization_bound as generalization_bound
from ._generalization import kernel_alignment as kernel_alignment
from ._learning_curve import LearningCurve as LearningCurve
from ._learning_curve import learning_curve as learning_curve
from ._phase import DepthConditioning as DepthConditioning
from ._phase import PhaseDiagram as PhaseDiagram
from ._phase import ntk_condition_vs_depth as ntk_condition_vs_depth
from ._phase import phase_diagram as phase_diagram
from ._phase import plot_phase_diagram as plot_phase_diagram
from ._plots import plot_spectrum as plot_spectrum
from ._plots import plot_target_power as plot_target_power
from ._signal import SignalPropagation as SignalPropagation
from ._signal import signal_propagation as signal_propagation
from ._spectrum import Spectrum as Spectrum
from ._spectrum import spectrum as spectrum
from ._tracker import KernelTracker as KernelTracker
from ._tracker import TrackerHistory as TrackerHistory
from ._tracker import plot_tracker as plot_tracker
