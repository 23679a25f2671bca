"""The demo's report: PNG plots (matplotlib, no pyplot state), `report.md`, `metrics.json` and a text summary."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

INFINITE_LABELS = {
    "ntk_network_t_inf": "one infinitely wide network, t = ∞ (NTK regression from a GP draw of f₀)",
    "ntk_ensemble_t_inf": "infinite ensemble mean, t = ∞",
    "ntk_ensemble_t_steps": "infinite ensemble mean, t = steps",
    "nngp_posterior": "Bayesian NNGP posterior mean",
}


def curve_gap(real: list, predicted: list) -> float | None:
    """`max_t |L_real(t) − L_pred(t)| / L_real(0)`: how far a predicted loss curve strays, relative to the start."""
    if any(v is None for v in real + predicted):
        return None
    return float(np.max(np.abs(np.subtract(real, predicted))) / real[0])


def add_gaps(metrics: dict) -> None:
    """Adds `train_loss_gap_*` (see `curve_gap`) to every finite width's metrics."""
    for entry in metrics["finite_width"].values():
        for kind in ("empirical_ntk", "analytic_ntk"):
            entry[f"train_loss_gap_{kind}"] = curve_gap(entry["real"]["train_loss"],
                                                        entry[f"predicted_{kind}"]["train_loss"])


def _figure(n_panels: int = 1, width: float = 5.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, 4.0), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, axes


def plot_training_curves(metrics: dict, path: Path) -> None:
    """One panel per width: real train/test loss next to the empirical- and analytic-NTK predictions."""
    steps = np.asarray(metrics["checkpoints"], np.float64)
    widths = list(metrics["finite_width"])
    fig, axes = _figure(len(widths), 4.2)
    for ax, width in zip(axes, widths, strict=True):
        entry = metrics["finite_width"][width]
        for split, color in (("train_loss", "C0"), ("test_loss", "C3")):
            name = split.split("_")[0]
            ax.plot(steps, _nan(entry["real"][split]), color=color, lw=2.2, alpha=0.6, label=f"{name}: real")
            ax.plot(steps, _nan(entry["predicted_empirical_ntk"][split]), color=color, ls="--",
                    label=f"{name}: empirical NTK at init")
            ax.plot(steps, _nan(entry["predicted_analytic_ntk"][split]), color="k" if name == "train" else "0.5",
                    ls=":", label=f"{name}: analytic NTK")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("gradient-descent step")
        ax.set_title(f"width {width}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"loss $\frac{1}{2nk}\sum\|f-y\|^2$")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Real vs predicted training curves ({metrics['config']['dataset']}, "
                 f"η = {metrics['learning_rate']['value']:.3g})")
    fig.savefig(path, dpi=110)


def plot_kernel_change(metrics: dict, path: Path) -> None:
    """Log-log: relative kernel change during training, and distance from the analytic NTK at init, vs width."""
    widths = np.asarray([int(w) for w in metrics["finite_width"]], np.float64)
    fig, axes = _figure(1, 6.0)
    ax = axes[0]
    series = (("kernel_change", "kernel_change_slope", r"$\|\Theta_T-\Theta_0\|_F/\|\Theta_0\|_F$ (training)"),
              ("init_deviation_from_analytic", "init_deviation_slope",
               r"$\|\hat\Theta_0-\Theta\|_F/\|\Theta\|_F$ (init vs analytic)"))
    for color, (key, slope_key, label) in zip(("C0", "C2"), series, strict=True):
        values = np.asarray(_nan([metrics["finite_width"][w][key] for w in metrics["finite_width"]]))
        ok = np.isfinite(values) & (values > 0)
        ax.plot(widths[ok], values[ok], "o", color=color, label=label)
        slope = metrics[slope_key]
        if slope is not None:
            intercept = np.mean(np.log(values[ok]) - slope * np.log(widths[ok]))
            ax.plot(widths, np.exp(intercept) * widths ** slope, "-", color=color, alpha=0.6,
                    label=f"fit: slope {slope:.2f}")
    anchor = np.asarray(_nan([metrics["finite_width"][w]["kernel_change"] for w in metrics["finite_width"]]))
    if np.isfinite(anchor[0]) and anchor[0] > 0:
        ax.plot(widths, anchor[0] * (widths / widths[0]) ** -0.5, "k:", lw=1, label="slope −1/2 (reference)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullLocator

    ax.set_xticks(widths, [str(int(w)) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("width")
    ax.set_ylabel("relative change")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("NTK change vs width")
    fig.savefig(path, dpi=110)


def plot_spectrum(metrics: dict, path: Path) -> None:
    """Sorted eigenvalues of the analytic NTK and of each width's empirical NTK at init."""
    fig, axes = _figure(1, 6.0)
    ax = axes[0]
    for i, (width, entry) in enumerate(metrics["finite_width"].items()):
        values = np.asarray(entry["empirical_eigenvalues"], np.float64)
        ax.plot(np.arange(1, len(values) + 1), np.where(values > 0, values, np.nan), color=f"C{i}", alpha=0.7,
                label=f"empirical, width {width}")
    values = np.asarray(metrics["analytic_eigenvalues"], np.float64)
    ax.plot(np.arange(1, len(values) + 1), np.where(values > 0, values, np.nan), "k--", label="analytic (∞ width)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel(r"eigenvalue $\lambda_i$ of the train-train NTK")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(f"NTK spectrum (n = {metrics['config']['n_train']}), "
                 f"η_crit = 2nk/λ_max = {metrics['analytic_spectrum']['max_learning_rate']:.3g}")
    fig.savefig(path, dpi=110)


def _nan(values: list) -> list:
    return [np.nan if v is None else v for v in values]


def _fmt(value, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def summary_lines(metrics: dict) -> list[str]:
    """The text summary: configuration, spectrum, infinite-width accuracies, a per-width table, the slope."""
    c, lr, spec = metrics["config"], metrics["learning_rate"], metrics["analytic_spectrum"]
    widest = list(metrics["finite_width"])[-1]
    emp = metrics["finite_width"][widest]["empirical_spectrum"]
    lines = [
        f"ntkit demo: {c['dataset']}, {c['n_train']} train / {c['n_test']} test, {c['n_classes']} classes, "
        f"{c['dtype']}",
        f"network: {c['network']}",
        "",
        f"Empirical NTK at init (width {widest}): λ_max = {emp['lambda_max']:.4g}   λ_min = {emp['lambda_min']:.4g}"
        f"   condition number = {_fmt(emp['condition_number'])}   effective rank = {emp['effective_rank']:.2f}",
        f"Analytic NTK:                  λ_max = {spec['lambda_max']:.4g}   λ_min = {spec['lambda_min']:.4g}"
        f"   condition number = {_fmt(spec['condition_number'])}   effective rank = {spec['effective_rank']:.2f}",
        f"suggested maximum learning rate 2nk/λ_max = {emp['max_learning_rate']:.4g} (empirical, width {widest}), "
        f"{spec['max_learning_rate']:.4g} (analytic)",
        f"learning rate used: η = {lr['value']:.4g}"
        + (f" ({lr['fraction']} × the smallest critical rate)" if lr["default"] else " (given)"),
    ]
    if lr["above_critical"]:
        lines.append(f"WARNING: η is at or above the critical rate of widths {lr['above_critical']}: "
                     "their training may diverge.")
    lines += ["", "Infinite width (analytic kernels), test accuracy / test loss:"]
    for key, label in INFINITE_LABELS.items():
        r = metrics["infinite_width"][key]
        lines.append(f"  {label:<75} {r['test_accuracy']:7.1%}  {r['test_loss']:.4g}")
    lines += ["", f"Finite networks after {c['steps']} steps of full-batch gradient descent:",
              f"  {'width':>6} {'params':>10} {'train loss':>11} {'(emp. NTK)':>11} {'(analytic)':>11} "
              f"{'test acc':>9} {'(emp. NTK)':>11} {'ΔΘ/Θ':>8} {'Θ̂₀ vs Θ':>9}"]
    for width, e in metrics["finite_width"].items():
        real, pe, pa = e["real"], e["predicted_empirical_ntk"], e["predicted_analytic_ntk"]
        lines.append(f"  {width:>6} {e['n_params']:>10,} {_fmt(real['train_loss'][-1], '11.3e')} "
                     f"{_fmt(pe['train_loss'][-1], '11.3e')} {_fmt(pa['train_loss'][-1], '11.3e')} "
                     f"{_fmt(real['test_accuracy'][-1], '9.1%')} {_fmt(pe['test_accuracy'][-1], '11.1%')} "
                     f"{_fmt(e['kernel_change'], '8.4f')} {_fmt(e['init_deviation_from_analytic'], '9.4f')}")
    lines += ["", f"log-log slope of the kernel change ‖Θ_T − Θ_0‖_F/‖Θ_0‖_F vs width: "
                  f"{_fmt(metrics['kernel_change_slope'], '.3f')} "
                  "(docs/theory.md §4: −1/2 or steeper; Dyer & Gur-Ari 2019: −1)",
              f"log-log slope of ‖Θ̂_0 − Θ‖_F/‖Θ‖_F vs width: {_fmt(metrics['init_deviation_slope'], '.3f')} "
              "(theory: −1/2)",
              f"total time {metrics['seconds']:.1f} s"]
    return lines


def _markdown(metrics: dict, plots: list[str]) -> str:
    c = metrics["config"]
    lines = [f"# ntkit demo report: {c['dataset']}", "",
             "Infinitely wide and finite ReLU networks (NTK parameterization, `ntkit.nn`) trained by full-batch "
             "gradient descent on the mean squared loss `1/(2nk) Σ‖f − y‖²`. Predicted curves come from "
             "`ntkit.predict.gradient_descent_mse` (gradient flow at time t in steps) with each network's own "
             "empirical NTK at initialization and with the analytic NTK, both from the network's own outputs at "
             f"initialization. Ridge `diag_reg = {c['diag_reg']}` (relative) in the infinite-width predictors.", "",
             "```", *summary_lines(metrics), "```", ""]
    lines += ["| width | train-loss gap, empirical NTK | train-loss gap, analytic NTK |", "|---:|---:|---:|"]
    for width, e in metrics["finite_width"].items():
        lines.append(f"| {width} | {_fmt(e['train_loss_gap_empirical_ntk'], '.3g')} | "
                     f"{_fmt(e['train_loss_gap_analytic_ntk'], '.3g')} |")
    lines += ["", "Gap: `max_t |L_real(t) − L_predicted(t)| / L_real(0)` over the recorded steps.", "",
              "docs/theory.md §4 bounds the kernel's change during training by `O(n^{-1/2})`; the finer analysis of "
              "Dyer & Gur-Ari (2019, \"Asymptotics of wide networks from Feynman diagrams\") gives `O(1/n)` for it, "
              "while the deviation of the empirical NTK from the analytic one at initialization is `O(n^{-1/2})`. "
              "The fitted slopes above are reported as measured, over the widths run.", ""]
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    lines.append("All numbers are in `metrics.json`.")
    return "\n".join(lines) + "\n"


def check_writable(out: str | Path) -> Path:
    """`out` as a path after checking a report can be written there (before any computation): not empty, not an
    existing file, and its parent folder creatable and writable."""
    if not str(out).strip():
        raise ValueError("`--out` must name a report folder, got an empty path.")
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` {str(out)!r} is a file, not a folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent):
        pass
    return out


def write_folder(out: str | Path, write_files: Callable[[Path], list[str]]) -> list[Path]:
    """Runs `write_files(folder) -> file names` on a new folder that then replaces `out` as a unit; returns the paths.

    Everything is written into a new folder beside `out`, which then replaces `out` by two renames (the previous
    report moved aside, the new one moved in, the previous one deleted): a process killed at any moment leaves the
    previous report whole (at `out`, or for the instant between the renames beside it), never a mix of old and new
    or a truncated file.
    """
    out = check_writable(out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # a folder as `mkdir` would make it, not mkdtemp's owner-only one
    try:
        names = write_files(stage)
        previous = None
        if out.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, previous / out.name)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return [out / name for name in names]


def write_report(metrics: dict, out: str | Path) -> list[Path]:
    """Writes the demo's `metrics.json`, `report.md` and PNG plots into the folder `out` as a unit (`write_folder`);
    returns the paths."""
    return write_folder(out, lambda folder: _write_files(metrics, folder))


def _write_files(metrics: dict, out: Path) -> list[str]:
    add_gaps(metrics)
    plots: list[str] = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # pragma: no cover - matplotlib is in the `plot` and `dev` extras
        pass
    else:
        for name, plot in (("training_curves.png", plot_training_curves), ("kernel_change.png", plot_kernel_change),
                           ("spectrum.png", plot_spectrum)):
            plot(metrics, out / name)
            plots.append(name)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(_markdown(metrics, plots))
    return ["metrics.json", "report.md", *plots]
