"""Order-to-chaos phase diagrams over `(σ_w, σ_b)`, their plot, and the NTK's conditioning against depth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ._signal import CRITICAL_TOL, mean_field

TRAINABLE_DEPTH_FACTOR = 6.0
"""Networks deeper than about `6 ξ_c` are not trainable (Schoenholz et al. 2017, Fig. 5)."""


class PhaseDiagram(NamedTuple):
    """`signal_propagation` on a grid: each field is `(len(b_std), len(W_std))` (rows `σ_b`, columns `σ_w`).

    Attributes:
      W_std: `(len(W_std),)` grid of `σ_w`.
      b_std: `(len(b_std),)` grid of `σ_b`.
      q_star, chi_1, c_star, chi_c, xi_c, phase: as in `SignalPropagation`.
      trainable_depth: `6 ξ_c` (`inf` at criticality, `nan` where the variance is unbounded), the depth beyond which
        Schoenholz et al. 2017 found networks untrainable.
    """

    W_std: np.ndarray
    b_std: np.ndarray
    q_star: np.ndarray
    chi_1: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_c: np.ndarray
    phase: np.ndarray
    trainable_depth: np.ndarray


def _grid(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of values, got shape {arr.shape}.")
    return arr


def phase_diagram(activation: Any, W_std: Any, b_std: Any, *, q_init: float = 1.0, max_depth: int = 1000,
                  critical_tol: float = CRITICAL_TOL) -> PhaseDiagram:
    """Mean-field phase diagram of deep `Dense(W_std, b_std)` + `activation` networks on a grid.

    Each grid point is `signal_propagation(activation, σ_w, σ_b)` (Poole et al. 2016; Schoenholz et al. 2017),
    computed for the whole grid at once; the same assumptions apply. `trainable_depth = 6 ξ_c` is the empirical
    trainability bound of Schoenholz et al. 2017 ("Deep information propagation", §5): deeper networks failed to
    train on MNIST and CIFAR-10 away from the critical line `χ₁ = 1`.

    Args:
      activation: an `ntkit.nn` activation layer.
      W_std: 1-D grid of `σ_w ≥ 0`.
      b_std: 1-D grid of `σ_b ≥ 0`.
      q_init: as in `signal_propagation`.
      max_depth: as in `signal_propagation`.
      critical_tol: as in `signal_propagation`.

    Returns:
      A `PhaseDiagram` of NumPy arrays `(len(b_std), len(W_std))`.

    Example:
      >>> import numpy as np, ntkit.nn as stax
      >>> from ntkit.analysis import phase_diagram
      >>> pd = phase_diagram(stax.Relu(), W_std=np.sqrt([1.0, 2.0, 3.0]), b_std=[0.0])
      >>> pd.phase.tolist()
      [['ordered', 'critical', 'unbounded']]
    """
    w, b = _grid(W_std, "W_std"), _grid(b_std, "b_std")
    ww, bb = np.meshgrid(w, b)
    r = mean_field(activation, ww, bb, q_init, max_depth, critical_tol)
    with np.errstate(invalid="ignore"):
        depth = TRAINABLE_DEPTH_FACTOR * r.xi_c
    return PhaseDiagram(w, b, *r, trainable_depth=depth)


_COLOURS = {"ordered": "#4c72b0", "chaotic": "#dd8452", "critical": "#2ca02c", "unbounded": "#bbbbbb"}


def plot_phase_diagram(result: PhaseDiagram, ax: Any = None, depth_levels: Sequence[float] = (10, 30, 100, 300)):
    """Draw a `PhaseDiagram`: ordered and chaotic regions, the critical line `χ₁ = 1`, contours of trainable depth.

    Needs matplotlib (`pip install 'ntkit[plot]'`).

    Args:
      result: from `phase_diagram` (at least 2 values of each of `W_std` and `b_std`).
      ax: a matplotlib `Axes`, or `None` for a new figure's.
      depth_levels: the trainable depths `6 ξ_c` to draw contours at.

    Returns:
      The `Axes`.
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("plot_phase_diagram needs matplotlib: pip install 'ntkit[plot]'") from err
    if not isinstance(result, PhaseDiagram):
        raise TypeError(f"`result` must be a PhaseDiagram from `phase_diagram`, got {type(result).__name__}.")
    if result.W_std.size < 2 or result.b_std.size < 2:
        raise ValueError("plot_phase_diagram needs at least 2 values of `W_std` and of `b_std` to draw regions.")
    if ax is None:
        _, ax = plt.subplots()
    names = list(_COLOURS)
    codes = np.vectorize(names.index)(result.phase)
    ax.pcolormesh(result.W_std, result.b_std, codes, cmap=ListedColormap(list(_COLOURS.values())), vmin=-0.5,
                  vmax=len(names) - 0.5, shading="nearest", alpha=0.6)
    chi = np.where(np.isfinite(result.chi_1), result.chi_1, np.nan)
    if np.nanmin(chi, initial=np.inf) < 1 < np.nanmax(chi, initial=-np.inf):
        ax.contour(result.W_std, result.b_std, chi, levels=[1.0], colors="k", linewidths=2)
    depth = np.where(np.isfinite(result.trainable_depth), result.trainable_depth, np.nan)
    levels = sorted(float(d) for d in depth_levels if np.nanmin(depth, initial=np.inf) < d < np.nanmax(
        depth, initial=-np.inf))
    if levels:
        lines = ax.contour(result.W_std, result.b_std, depth, levels=levels, colors="k", linewidths=0.8,
                           linestyles="dashed")
        ax.clabel(lines, fmt="%g")
    handles: list[Any] = [Patch(color=_COLOURS[n], alpha=0.6) for n in names if np.any(result.phase == n)]
    labels = [n for n in names if np.any(result.phase == n)]
    handles.append(Line2D([], [], color="k", linewidth=2))
    labels.append("χ₁ = 1")
    ax.legend(handles, labels, loc="upper left", fontsize="small")
    ax.set_xlabel("σ_w (W_std)")
    ax.set_ylabel("σ_b (b_std)")
    ax.set_title("phase diagram; dashed: trainable depth 6ξ_c")
    return ax


class DepthConditioning(NamedTuple):
    """The NTK's spectrum extremes against depth.

    Attributes:
      depths: `(D,)` the depths.
      lambda_max, lambda_min: `(D,)` largest and smallest eigenvalues of the `(N, N)` NTK on `x`.
      condition: `(D,)` `λ_max/λ_min` (`inf` when `λ_min ≤ 0` to rounding).
    """

    depths: np.ndarray
    lambda_max: np.ndarray
    lambda_min: np.ndarray
    condition: np.ndarray


def ntk_condition_vs_depth(layer_factory: Callable[[int], Any], depths: Sequence[int], x: Any,
                           **kernel_kwargs: Any) -> DepthConditioning:
    """Condition number of the infinite-width NTK on `x` against depth (Xiao, Pennington & Schoenholz 2020).

    In the ordered phase the NTK tends to a constant matrix with depth (all inputs look alike), so `λ_min → 0` and
    the condition number grows without bound, which makes deep networks untrainable by gradient descent; in the
    chaotic phase it tends to a multiple of the identity plus a constant, trainable but generalizing poorly; on
    the critical line it degrades only polynomially ("Disentangling trainability and generalization in deep neural
    networks", §3-4).

    Args:
      layer_factory: `depth -> layer`, an `ntkit.nn` network of that depth (e.g.
        `lambda d: stax.serial(stax.serial(stax.Dense(1, 1.5, 0.1), stax.Erf()) ** d ... , stax.Dense(1))`, or with
        `stax.repeat`); each depth's kernel is compiled and computed on its own.
      depths: positive integers.
      x: inputs `(N, ...)`, `N ≥ 2`.
      **kernel_kwargs: passed to the layer's `kernel` (e.g. `batch_size`).

    Returns:
      A `DepthConditioning` of NumPy float64 arrays.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> from ntkit.analysis import ntk_condition_vs_depth
      >>> def net(depth):
      ...     return stax.serial(*[stax.serial(stax.Dense(1, 0.8, 0.3), stax.Erf())] * depth, stax.Dense(1))
      >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
      >>> out = ntk_condition_vs_depth(net, [1, 4, 16], x)
      >>> bool(out.condition[0] < out.condition[1] < out.condition[2])   # ordered phase: degenerates with depth
      True
    """
    if not callable(layer_factory):
        raise TypeError(f"`layer_factory` must be a function depth -> ntkit.nn layer, got {layer_factory!r}.")
    ds = [int(d) for d in depths]
    if not ds or any(d < 1 or d != e for d, e in zip(ds, depths, strict=True)):
        raise ValueError(f"`depths` must be a non-empty sequence of positive integers, got {depths!r}.")
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"`x` must be a batch of at least 2 inputs (N, ...), got shape {x.shape}.")
    lam_max, lam_min = [], []
    for d in ds:
        ntk = np.asarray(layer_factory(d).kernel(x, None, "ntk", **kernel_kwargs), dtype=np.float64)
        if ntk.shape != (x.shape[0], x.shape[0]):
            raise ValueError(f"The network of depth {d} gives an NTK of shape {ntk.shape}: it needs one output per "
                             "input (a flat readout), shape (N, N).")
        evals = np.linalg.eigvalsh((ntk + ntk.T) / 2)
        lam_max.append(evals[-1])
        lam_min.append(evals[0])
    hi, lo = np.asarray(lam_max), np.asarray(lam_min)
    floor = hi * x.shape[0] * float(jnp.finfo(x.dtype).eps)
    cond = np.where(lo > floor, hi / np.where(lo > floor, lo, 1), np.inf)
    return DepthConditioning(np.asarray(ds), hi, lo, cond)
