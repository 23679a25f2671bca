"""The plots run without a display (Agg) and draw the spectrum's data."""

import io
import sys

import numpy as np
import pytest

from ntkit.analysis import plot_spectrum, plot_target_power, spectrum

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _case():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    lam = np.array([8.0, 4.0, 2.0, 1.0, 0.0])
    coef = np.array([0.0, 3.0, 0.0, 4.0, 0.0])
    return lam, (q * lam) @ q.T, q @ coef


def test_plot_spectrum_draws_the_positive_eigenvalues_on_a_log_scale():
    lam, k, _ = _case()
    s = spectrum(np.asarray(k))
    ax = plot_spectrum(s)
    line = ax.lines[0]
    keep = s.eigenvalues > 0
    np.testing.assert_allclose(line.get_ydata(), s.eigenvalues[keep])
    np.testing.assert_allclose(line.get_ydata()[:4], lam[:4], rtol=1e-5)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 6)[keep])
    assert ax.get_yscale() == "log"
    ax.figure.savefig(io.BytesIO(), format="png")
    ax = plot_spectrum(spectrum(np.diag([3.0, 1.0, 0.0])))  # a singular kernel: 0 has no place on a log scale
    assert ax.lines[0].get_ydata().tolist() == [3.0, 1.0] and "1 eigenvalue(s) ≤ 0 not shown" in ax.get_title()


def test_plot_target_power_draws_the_cumulative_fraction():
    _, k, y = _case()
    ax = plot_target_power(spectrum(np.asarray(k), np.asarray(y)))
    # ‖y‖² = 9 + 16 along modes 2 and 4 (of 5, descending eigenvalues).
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0, 9 / 25, 9 / 25, 1, 1], atol=1e-6)
    ax.figure.savefig(io.BytesIO(), format="png")


def test_plots_draw_on_given_axes_and_check_inputs(monkeypatch):
    from matplotlib.figure import Figure

    _, k, y = _case()
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    s = spectrum(np.asarray(k), np.asarray(y))
    assert plot_spectrum(s, ax=ax1) is ax1 and plot_target_power(s, ax=ax2) is ax2
    with pytest.raises(ValueError, match=r"spectrum\(k, y\)"):
        plot_target_power(spectrum(np.asarray(k)))
    with pytest.raises(TypeError, match="Spectrum"):
        plot_spectrum(np.ones(3))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'ntkit\[plot\]'"):
        plot_spectrum(s)
