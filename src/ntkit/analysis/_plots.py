"""Plots of an NTK's spectrum and of where the targets' power lies in it (matplotlib, the `[plot]` extra)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._spectrum import Spectrum


def _axes(ax: Any) -> Any:
    """`ax`, or the axes of a new figure (a `matplotlib.figure.Figure`, no pyplot state); clear error without
    matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("Plotting needs matplotlib, an optional dependency of ntkit: "
                          "pip install 'ntkit[plot]'.") from err
    return Figure(figsize=(5.0, 3.5), layout="constrained").subplots() if ax is None else ax


def _check(result: Any) -> Spectrum:
    if not isinstance(result, Spectrum):
        raise TypeError(f"`result` must be the `Spectrum` returned by `ntkit.analysis.spectrum`, got "
                        f"{type(result).__name__}.")
    return result


def plot_spectrum(result: Spectrum, ax: Any = None) -> Any:
    """Eigenvalues of a kernel against their rank, on a logarithmic scale.

    A straight line on these axes is a power-law decay `λ_i ∝ i^{-α}`; the ratio of the first to the last point is
    the condition number. Eigenvalues `≤ 0` (rounding noise of a singular kernel) cannot be drawn on a log scale and
    are left out; the title says how many.

    Args:
      result: a `Spectrum` from `ntkit.analysis.spectrum`.
      ax: matplotlib `Axes` to draw on; `None` makes a new figure (`ax.figure`).

    Returns:
      The matplotlib `Axes`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import plot_spectrum, spectrum
      >>> ax = plot_spectrum(spectrum(jnp.diag(jnp.array([4.0, 2.0, 1.0]))))
      >>> ax.get_yscale(), ax.lines[0].get_ydata().tolist()
      ('log', [4.0, 2.0, 1.0])
    """
    result = _check(result)
    ax = _axes(ax)
    lam = np.asarray(result.eigenvalues)
    rank = np.arange(1, lam.size + 1)
    keep = lam > 0
    ax.plot(rank[keep], lam[keep], marker=".", linestyle="-")
    ax.set_yscale("log")
    ax.set_xlabel("rank i")
    ax.set_ylabel("eigenvalue λ_i")
    dropped = int(np.sum(~keep))
    ax.set_title(f"NTK spectrum (condition number {result.condition_number:.3g})"
                 + (f"; {dropped} eigenvalue(s) ≤ 0 not shown" if dropped else ""))
    return ax


def plot_target_power(result: Spectrum, ax: Any = None) -> Any:
    """Cumulative fraction of `‖y‖²` in the top eigenmodes of the kernel, against the number of modes.

    Targets whose power sits in the top modes are learned fastest by gradient descent and generalize best (Arora et
    al. 2019, §4); a curve that rises late means labels the kernel finds hard (random labels give a straight
    diagonal on average).

    Args:
      result: a `Spectrum` from `ntkit.analysis.spectrum` computed with targets `y`.
      ax: matplotlib `Axes` to draw on; `None` makes a new figure.

    Returns:
      The matplotlib `Axes`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import plot_target_power, spectrum
      >>> s = spectrum(jnp.diag(jnp.array([4.0, 2.0, 1.0])), y=jnp.array([1.0, 1.0, 0.0]))
      >>> plot_target_power(s).lines[0].get_ydata().tolist()
      [0.5, 1.0, 1.0]
    """
    result = _check(result)
    if result.target_fraction is None:
        raise ValueError("`result` has no target power: compute it with `spectrum(k, y)`.")
    ax = _axes(ax)
    cumulative = np.cumsum(result.target_fraction)
    modes = np.arange(1, cumulative.size + 1)
    ax.plot(modes, cumulative, marker=".", linestyle="-", label="targets")
    ax.plot(modes, modes / modes.size, linestyle=":", color="gray", label="uniform (random labels)")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("number of top eigenmodes")
    ax.set_ylabel("cumulative fraction of ‖y‖²")
    ax.set_title("Target power in the top NTK modes")
    ax.legend(loc="lower right")
    return ax
