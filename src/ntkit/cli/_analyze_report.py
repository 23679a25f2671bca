"""The report of `ntkit analyze`: the answers in plain words, PNG plots, `report.md` and `metrics.json`.

Written into the report folder as a unit, with the folder swap of `ntkit demo`'s `_report.write_report` (whose
writer of files is the demo's own, hence the copy of its dozen lines in `write_analysis_report`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ._report import write_folder


def _fmt(value, spec: str = ".4g") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return format(value, spec)


def _nan(values) -> np.ndarray:
    return np.asarray(values, np.float64)  # None (a non-finite value in JSON) becomes NaN


def _figure(n_panels: int = 1, width: float = 5.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, 4.0), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def answers(m: dict) -> list[str]:
    """The report's opening: one plain-words paragraph per question."""
    c, conv, cat, init, gen, fin = (m["config"], m["convergence"], m["catapult"], m["initialization"],
                                    m["generalization"], m["finite"])
    lines = [
        f"Learning rate: gradient descent on the loss 1/(2nk)·Σ‖f − y‖² (n = {c['n_train']} examples, "
        f"k = {c['n_outputs']} outputs) is stable below η_crit = 2nk/λ_max = {conv['max_learning_rate']:.4g} "
        f"(λ_max = {conv['lambda_max']:.4g}, the analytic NTK's largest eigenvalue; "
        f"{m['finite']['critical_empirical']:.4g} for the finite network's own NTK at initialization).",
        _catapult_words(cat),
        _phase_words(init, c),
        _generalization_words(gen, c),
        _lazy_words(fin, c),
    ]
    return lines


def _catapult_words(cat: dict) -> str:
    lo, hi = cat["measured"]
    sweep = cat["sweep"]
    tried = ", ".join(f"{f:g}" for f in sweep["factors"])
    measured = (f"In short real runs of the finite network ({sweep['steps']} steps at {tried} × its η_crit), the "
                f"loss spiked and still converged from η = {lo:.4g}, and training converged up to η = {hi:.4g}."
                if lo is not None and hi is not None else
                f"In short real runs of the finite network ({sweep['steps']} steps at {tried} × its η_crit) "
                + ("no rate catapulted (spiked, then converged)" if hi is not None else "no rate converged")
                + (f"; training converged up to η = {hi:.4g}." if hi is not None else "."))
    return (f"Catapult window: from its NTK at initialization the finite network is lazy below η_crit = "
            f"{cat['lower']:.4g}, catapults (the loss spikes, the kernel's top eigenvalue drops below 2nk/η, then "
            f"training converges) up to about η_max = {cat['upper']:.4g} ({cat['max_factor']:g}nk/λ_max; up to "
            f"{cat['upper_relu_measured']:.4g} = {cat['relu_max_factor']:g}nk/λ_max as measured for ReLU networks), "
            f"and diverges above it (Lewkowycz et al. 2020). {measured}")


def _phase_words(init: dict, c: dict) -> str:
    if not init["available"]:
        return f"Initialization: {init['reason']}."
    which = ("the network is a plain MLP" if init["plain_mlp"] else
             f"your architecture is not a plain MLP ({c['architecture']}): the phase below is that of a deep MLP "
             f"made of its activation {init['activation']} and its first Dense layer's σ_w, σ_b")
    phase = init["phase"]
    text = (f"Initialization: {which}; at σ_w = {init['W_std']:.4g}, σ_b = {init['b_std']:.4g} the "
            f"{init['activation']} network is in the {phase.upper()} phase (χ₁ = {init['chi_1']:.4f}")
    if phase == "ordered":
        text += (f" < 1: inputs' correlations converge to 1 and gradients vanish, depth scale ξ_c = "
                 f"{_fmt(init['xi_c'], '.3g')} layers). It trains up to about "
                 f"{_fmt(init['trainable_depth'], '.0f')} layers ({init['trainable_depth_factor']:.0f} ξ_c).")
    elif phase == "chaotic":
        text += (f" > 1: nearby inputs decorrelate and gradients explode, depth scale ξ_c = "
                 f"{_fmt(init['xi_c'], '.3g')} layers). It trains up to about "
                 f"{_fmt(init['trainable_depth'], '.0f')} layers ({init['trainable_depth_factor']:.0f} ξ_c).")
    elif phase == "critical":
        text += " ≈ 1, the edge of chaos): signal propagation sets no depth limit; deep networks stay trainable."
    elif init["chi_1"] <= 1 + 1e-3:
        text += ("): χ₁ = 1 but the bias makes the pre-activations' variance grow with depth, so the length map has "
                 "no fixed point; correlations still propagate as at the edge of chaos.")
    else:
        text += ("): the pre-activations' variance grows exponentially with depth (no fixed point of the length "
                 "map); lower σ_w.")
    if init.get("hidden_layers"):
        text += f" Yours has {init['hidden_layers']} hidden layers."
    return text


def _generalization_words(gen: dict, c: dict) -> str:
    lc = gen["learning_curve"]
    measured = (f"; kernel regression with the NTK measured {lc['measured_test_mse'][-1]:.4g} on the "
                f"{c['n_test']} test rows" if lc["measured_test_mse"] else "")
    return (f"Generalization: the eigenlearning theory predicts a test MSE of {lc['predicted_test_mse'][-1]:.4g} "
            f"at n = {lc['n'][-1]} training examples{measured} (targets in the report's units, "
            f"{gen['units']}). Generalization complexity √(2yᵀΘ⁻¹y/n) = {gen['complexity']:.4g} (with the labels "
            f"shuffled: {gen['complexity_shuffled']:.4g}; lower means the targets fit the kernel's top modes); "
            f"kernel-target alignment {gen['alignment']:.3f} (centred {gen['alignment_centered']:.3f}).")


def _lazy_words(fin: dict, c: dict) -> str:
    if fin["diverged"]:
        return (f"Lazy or rich: the finite network ({fin['description']}) diverged at η = "
                f"{fin['learning_rate']:.4g} (η_crit of its NTK at initialization: "
                f"{fin['critical_empirical']:.4g}): no verdict.")
    verdict = {"lazy": "stays LAZY (kernel regime)",
               "borderline": "is BORDERLINE: its loss follows the NTK prediction but its kernel moved noticeably",
               "rich": "is NOT lazy (rich, feature-learning regime): its loss left the NTK prediction"}[fin["regime"]]
    t = fin["tracker"]
    return (f"Lazy or rich: at this width the finite network {verdict}. Over {fin['steps']} steps of gradient "
            f"descent at η = {fin['learning_rate']:.4g} its NTK on {t['probe_size']} training rows moved by "
            f"{fin['kernel_change']:.3g} (relative Frobenius distance ‖Θ_T − Θ_0‖/‖Θ_0‖; kernel distance "
            f"1 − cos = {_fmt(t['kernel_distance'][-1], '.3g')}), its weights by "
            f"{_fmt(t['weight_change'][-1], '.3g')} (‖θ_T − θ_0‖/‖θ_0‖), its outputs differ from its linearization's "
            f"by {_fmt(t['linearization_gap'][-1], '.3g')} (RMS) for a total move of "
            f"{_fmt(t['output_change'][-1], '.3g')}, and its training loss stayed within "
            f"{fin['train_loss_gap']:.3g} (as a fraction of the initial loss) of the curve predicted by its NTK at "
            f"initialization. Lazy means the kernel change and the loss gap both below "
            f"{fin['lazy_thresholds'][0]:g}; wider networks move less (docs/theory.md §4).")


def summary_lines(m: dict) -> list[str]:
    """The text summary printed by `ntkit analyze`: the answers, then the key numbers."""
    c, conv, init, gen, fin = m["config"], m["convergence"], m["initialization"], m["generalization"], m["finite"]
    lines = [f"ntkit analyze: {c['source']}, {c['task']}, {c['n_train']} train / {c['n_test']} test rows, "
             f"{c['n_features']} features, {c['dtype']}",
             f"architecture: {c['architecture']}", ""]
    lines += [f"* {a}" for a in answers(m)]
    lines += ["",
              f"NTK spectrum: λ_max = {conv['lambda_max']:.4g}  λ_min = {conv['lambda_min']:.4g}  condition number "
              f"= {_fmt(conv['condition_number'])}  effective rank = {conv['effective_rank']:.3g}  target power "
              f"in the top 10 modes = {conv['target_fraction_top10']:.1%}",
              f"predicted steps to 1% of the initial loss at η = {conv['predicted']['learning_rate']:.4g}: "
              f"{_fmt(conv['predicted']['steps_to_1_percent'], 'd')}"]
    if init["available"]:
        xi = "∞" if init["phase"] == "critical" else _fmt(init["xi_c"], ".3g")
        lines.append(f"mean field: q* = {_fmt(init['q_star'])}  χ₁ = {init['chi_1']:.4f}  c* = {_fmt(init['c_star'])}"
                     f"  ξ_c = {xi}  phase {init['phase']}")
    lc = gen["learning_curve"]
    lines.append("learning curve (n: predicted / measured test MSE): " + ", ".join(
        f"{n}: {p:.3g} / {_fmt(meas, '.3g')}" for n, p, meas in
        zip(lc["measured_n"], lc["predicted_at_measured"], lc["measured_test_mse"], strict=True)))
    real = fin["real"]["train_loss"]
    predicted = fin["predicted_empirical_ntk"]["train_loss"][-1]
    lines.append(f"finite run: width {_fmt(fin['width'], 'd')}, {fin['n_params']:,} parameters, train loss "
                 f"{_fmt(real[0])} → {_fmt(real[-1])} (predicted {_fmt(predicted)}), test loss → "
                 f"{_fmt(fin['real']['test_loss'][-1])}")
    lines.append(f"total time {m['seconds']:.1f} s")
    return lines


def write_analysis_report(metrics: dict, out: str | Path) -> list[Path]:
    """Writes `metrics.json`, `report.md` and the PNG plots into the folder `out` as a unit; returns the paths.

    Through `write_folder`, as `ntkit demo`'s report: a process killed at any moment leaves the previous report
    whole.
    """
    return write_folder(out, lambda folder: _write_files(metrics, folder))


def plot_spectrum(m: dict, path: Path) -> None:
    """The analytic NTK's eigenvalues with the learning-rate bound, and the cumulative target power along them."""
    conv = m["convergence"]
    values = _nan(conv["eigenvalues"])
    index = np.arange(1, len(values) + 1)
    fig, (ax, bx) = _figure(2, 4.8)
    ax.plot(index, np.where(values > 0, values, np.nan), "k.-", ms=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mode i")
    ax.set_ylabel(r"eigenvalue $\lambda_i$ of the train-train NTK")
    ax.set_title(f"η_crit = 2nk/λ_max = {conv['max_learning_rate']:.3g}")
    ax.grid(alpha=0.3, which="both")
    bx.plot(index, np.cumsum(_nan(conv["target_fraction"])), "C0-")
    bx.set_xscale("log")
    bx.set_ylim(0, 1.02)
    bx.set_xlabel("top modes kept")
    bx.set_ylabel("fraction of ‖y‖² along them")
    bx.set_title("target power in the top modes")
    bx.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=110)


def plot_learning_curve(m: dict, path: Path) -> None:
    """Predicted test MSE against training-set size, with kernel regression measured on subsets."""
    gen = m["generalization"]
    lc = gen["learning_curve"]
    fig, (ax,) = _figure(1, 6.0)
    ax.plot(lc["n"], _nan(lc["predicted_test_mse"]), "C3-", label="predicted test MSE (eigenlearning)")
    if lc["measured_test_mse"]:
        ax.plot(lc["measured_n"], _nan(lc["measured_test_mse"]), "ko", label="measured: NTK regression, test rows")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training examples n")
    ax.set_ylabel("test MSE, mean of (f − y)²")
    ax.set_title(f"Learning curve (pool of {lc['n_pool']} rows)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def plot_training(m: dict, path: Path) -> None:
    """The finite network's real loss curves against the NTK predictions, and its kernel's distance from init."""
    fin = m["finite"]
    steps = np.asarray(fin["checkpoints"], np.float64)
    fig, (ax, bx) = _figure(2, 4.8)
    for split, color in (("train_loss", "C0"), ("test_loss", "C3")):
        name = split.split("_")[0]
        ax.plot(steps, _nan(fin["real"][split]), color=color, lw=2.2, alpha=0.6, label=f"{name}: real")
        ax.plot(steps, _nan(fin["predicted_empirical_ntk"][split]), color=color, ls="--",
                label=f"{name}: predicted, its NTK at init")
        ax.plot(steps, _nan(fin["predicted_analytic_ntk"][split]), color="k" if name == "train" else "0.5", ls=":",
                label=f"{name}: predicted, analytic NTK")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel(r"loss $\frac{1}{2nk}\sum\|f-y\|^2$")
    ax.set_title(f"width {_fmt(fin['width'], 'd')}, η = {fin['learning_rate']:.3g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    tracked = fin["tracker"]
    bx.plot(_nan(tracked["steps"]), _nan(tracked["kernel_distance"]), "C2o-",
            label=r"kernel distance $1-\langle\Theta_t,\Theta_0\rangle/\|\Theta_t\|\|\Theta_0\|$")
    bx.plot(_nan(tracked["steps"]), _nan(tracked["relative_change"]), "C4s-",
            label=r"$\|\Theta_t-\Theta_0\|_F/\|\Theta_0\|_F$")
    bx.axhline(fin["lazy_thresholds"][0], color="0.5", ls=":", label="lazy threshold")
    bx.set_xscale("symlog", linthresh=1.0)
    bx.set_xlim(left=0)
    bx.set_xlabel("gradient-descent step")
    bx.set_title("NTK movement during training")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def plot_sweep(m: dict, path: Path) -> None:
    """The learning-rate sweep's loss curves, coloured by rate, with the predicted regime of each rate."""
    cat = m["catapult"]
    sweep = cat["sweep"]
    fig, (ax,) = _figure(1, 6.5)
    for i, (rate, factor, losses, regime) in enumerate(zip(sweep["learning_rates"], sweep["factors"],
                                                          sweep["losses"], sweep["regime"], strict=True)):
        values = _nan(losses)
        ax.plot(np.arange(len(values)), np.where(values > 0, values, np.nan), color=f"C{i % 10}",
                label=f"η = {rate:.3g} ({factor:g} η_crit, predicted {regime})")
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel(r"train loss $\frac{1}{2nk}\sum\|f-y\|^2$")
    ax.set_title(f"Learning-rate sweep: η_crit = {cat['lower']:.3g}, η_max ≈ {cat['upper']:.3g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def plot_phase(m: dict, path: Path) -> None:
    """The mean-field phase diagram around the network's `σ_w, σ_b` (marked), and the NTK's condition number
    against depth."""
    from ..analysis import PhaseDiagram, plot_phase_diagram

    init = m["initialization"]
    grid = init["phase_diagram"]
    fields = {name: np.asarray(grid[name], dtype=str if name == "phase" else np.float64)  # None (JSON) → NaN
              for name in PhaseDiagram._fields}
    fig, (ax, bx) = _figure(2, 5.0)
    plot_phase_diagram(PhaseDiagram(**fields), ax=ax)
    ax.plot([init["W_std"]], [init["b_std"]], "r*", ms=14, mec="k", label="your initialization")
    ax.set_title(f"{init['activation']}: {init['phase']} (χ₁ = {init['chi_1']:.3f})")
    dc = init["depth_conditioning"]
    bx.plot(dc["depths"], _nan(dc["condition_number"]), "ko-")
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("hidden layers")
    bx.set_ylabel("condition number of the analytic NTK")
    bx.set_title(f"NTK conditioning vs depth ({dc['n_inputs']} training inputs)")
    bx.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=110)


def plot_kernel_tracker(m: dict, path: Path) -> None:
    """`ntkit.analysis.plot_tracker` of the real run's `KernelTracker` history."""
    from ..analysis import TrackerHistory, plot_tracker

    t = m["finite"]["tracker"]
    fields = {name: np.asarray(t["steps" if name == "step" else name], np.int64 if name == "step" else np.float64)
              for name in TrackerHistory._fields}
    fig, axes = _figure(3, 4.0)
    plot_tracker(TrackerHistory(**fields), axes=axes)
    fig.suptitle(f"Kernel tracker on {t['probe_size']} training rows")
    fig.savefig(path, dpi=110)


PLOTS = (("spectrum.png", plot_spectrum), ("catapult.png", plot_sweep), ("phase_diagram.png", plot_phase),
         ("learning_curve.png", plot_learning_curve), ("training.png", plot_training),
         ("tracker.png", plot_kernel_tracker))


def _markdown(m: dict, plots: list[str]) -> str:
    c, cat, init, gen, fin = m["config"], m["catapult"], m["initialization"], m["generalization"], m["finite"]
    lines = [f"# ntkit analyze report: {c['source']}", "",
             f"{c['task'].capitalize()}, {c['n_train']} training and {c['n_test']} test rows of {c['n_rows']}, "
             f"{c['n_features']} features standardised on the training split"
             + (f" ({c['constant_features']} constant, set to 0)" if c["constant_features"] else "")
             + f"; targets: {c['targets']}. Architecture: {c['architecture']}. Computed in {c['dtype']}.", "",
             "## Answers", ""]
    lines += [f"- {a}" for a in answers(m)]
    lines += ["", "## Summary", "", "```", *summary_lines(m), "```", ""]
    sections = {
        "spectrum.png": ("## Spectrum and learning rate",
                         f"Eigenvalues of the analytic train-train NTK (the infinitely wide network; the finite "
                         f"network's own NTK at initialization gives η_crit = {_fmt(fin['critical_empirical'])}). "
                         "The learning rate is normalised to the loss 1/(2nk)·Σ‖f − y‖² "
                         "(`ntkit.predict.max_learning_rate`): the error along eigenvector i shrinks by "
                         "1 − ηλ_i/(nk) per step. Catapult window: "
                         f"[{_fmt(cat['lower'])}, {_fmt(cat['upper'])}] ({cat['reference']})."),
        "learning_curve.png": ("## Learning curve and generalization",
                               f"Predicted by eigenlearning (`ntkit.analysis.learning_curve`) from the analytic NTK "
                               f"on all {c['n_train'] + c['n_test']} rows standing for the data distribution; "
                               f"measured by NTK kernel regression (gradient descent to convergence) on random "
                               f"subsets of the training rows, tested on the test rows, averaged over "
                               f"{gen['learning_curve']['repeats']} subsets. The theory's test point is drawn from "
                               "the pool, a training point with probability n/N where the error is the training "
                               "residual; the curve shown is the error on the other points, "
                               "(E_pool − (n/N)·E_train)/(1 − n/N), which the held-out test rows measure. The theory "
                               "is asymptotic and describes the average over training sets. "
                               f"MSE in {gen['units']}."),
        "catapult.png": ("## Learning-rate sweep",
                         "Short full-batch gradient-descent runs of the finite network from one initialization at "
                         "multiples of its η_crit (`ntkit.analysis.learning_rate_sweep`); a loss that rises above "
                         "its start and then falls is a catapult."),
        "phase_diagram.png": ("## Phase of the initialization",
                              "Mean-field phase diagram of deep MLPs of the activation (`ntkit.analysis."
                              "phase_diagram`), your σ_w, σ_b marked; dashed: trainable depth 6ξ_c. Right: the "
                              "analytic NTK's condition number against depth for MLPs of width-independent "
                              "(analytic) kernels with the same activation and σ's (`ntk_condition_vs_depth`): it "
                              "grows fast with depth in the ordered phase."),
        "training.png": ("## Lazy or rich: a short real run",
                         f"The finite network ({fin['description']}) trained by full-batch gradient descent; "
                         "predictions by `ntkit.analysis.convergence` with its own NTK at initialization and with "
                         "the analytic NTK, from its own outputs at initialization. The kernel tracked by "
                         "`ntkit.analysis.KernelTracker` on the first training rows."),
        "tracker.png": ("## Kernel tracker",
                        "`ntkit.analysis.plot_tracker`: the kernel's distance from initialization and its velocity "
                        "(Fort et al. 2020), its centred alignment with the targets, the relative weight change, "
                        "and the gap between the network and its linearization at initialization."),
    }
    for name in plots:
        title, text = sections.get(name, (f"## {name}", ""))
        lines += [title, "", text, "", f"![{name}]({name})", ""]
    lines += ["## Method and assumptions", "",
              "- Kernels in the NTK parameterization (`ntkit.nn`); the analytic NTK is the infinite-width limit of "
              "the same definition the finite network is built from.",
              "- Mean-field phase (`ntkit.analysis.signal_propagation`, Poole et al. 2016; Schoenholz et al. "
              f"2017): a deep MLP of one activation; trainable depth ≈ {init.get('trainable_depth_factor', 6):.0f} "
              "ξ_c.",
              "- Generalization complexity √(2yᵀΘ⁻¹y/n) (Arora et al. 2019) with a relative ridge for numerical "
              "stability; shuffled labels give the reference a memorizing fit would reach.",
              "", "All numbers are in `metrics.json`."]
    return "\n".join(lines) + "\n"


def _write_files(metrics: dict, out: Path) -> list[str]:
    plots: list[str] = []
    for name, plot in PLOTS:
        if name == "phase_diagram.png" and not metrics["initialization"]["available"]:
            continue
        plot(metrics, out / name)
        plots.append(name)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(_markdown(metrics, plots))
    return ["metrics.json", "report.md", *plots]
