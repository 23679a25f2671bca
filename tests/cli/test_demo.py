"""`ntkit demo` end to end in `--quick` mode: report files, metrics and their sanity."""

import json

import numpy as np
import pytest

from ntkit.cli import main
from ntkit.cli._demo import QUICK, spectrum_summary
from ntkit.cli._report import curve_gap
from ntkit.cli._training import checkpoints

FILES = ("metrics.json", "report.md", "training_curves.png", "kernel_change.png", "spectrum.png")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_report_files(quick_report):
    out, _ = quick_report
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "![kernel_change.png](kernel_change.png)" in report
    assert "suggested maximum learning rate" in report


def test_metrics_keys(quick_report):
    _, m = quick_report
    assert set(m) >= {"config", "checkpoints", "analytic_spectrum", "learning_rate", "infinite_width", "finite_width",
                      "kernel_change_slope", "init_deviation_slope", "seconds"}
    assert m["config"]["widths"] == list(QUICK["widths"])
    assert m["checkpoints"][0] == 0 and m["checkpoints"][-1] == QUICK["steps"]
    assert set(m["infinite_width"]) == {"ntk_network_t_inf", "ntk_ensemble_t_inf", "ntk_ensemble_t_steps",
                                        "nngp_posterior"}
    for entry in m["finite_width"].values():
        for kind in ("real", "predicted_empirical_ntk", "predicted_analytic_ntk"):
            assert set(entry[kind]) == {"train_loss", "test_loss", "test_accuracy"}
            assert len(entry[kind]["train_loss"]) == len(m["checkpoints"])


def test_accuracies_above_chance(quick_report):
    _, m = quick_report
    chance = 1.0 / m["config"]["n_classes"]
    accuracies = [r["test_accuracy"] for r in m["infinite_width"].values()]
    accuracies += [e[k]["test_accuracy"][-1] for e in m["finite_width"].values()
                   for k in ("real", "predicted_empirical_ntk", "predicted_analytic_ntk")]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    # 48 test digits: a kernel predictor at chance would score ~10%; these reach 50-75%.
    assert m["infinite_width"]["ntk_ensemble_t_inf"]["test_accuracy"] > 3 * chance
    assert m["infinite_width"]["nngp_posterior"]["test_accuracy"] > 3 * chance
    assert all(e["real"]["test_accuracy"][-1] > 2 * chance for e in m["finite_width"].values())


def test_training_and_prediction_agree_for_the_widest_net(quick_report):
    _, m = quick_report
    # the default learning rate (half the smallest critical rate) trains every width without diverging
    assert m["learning_rate"]["default"]
    assert not any(e["diverged"] for e in m["finite_width"].values())
    widest = m["finite_width"][str(max(m["config"]["widths"]))]
    real = widest["real"]["train_loss"]
    assert real[-1] < 0.05 * real[0]  # it trains
    # Same outputs at step 0, then loss curves within 15% of the starting loss at every recorded step. Most of the
    # gap is the first steps: gradient descent at half the critical rate removes the top eigenmode's error in one step
    # (factor 1 − ηλ/(nk) = 0) where gradient flow leaves e^{-1} of it.
    assert widest["predicted_empirical_ntk"]["train_loss"][0] == pytest.approx(real[0], rel=1e-4)
    assert widest["train_loss_gap_empirical_ntk"] < 0.15
    assert widest["train_loss_gap_analytic_ntk"] < 0.15
    narrowest = m["finite_width"][str(min(m["config"]["widths"]))]
    assert widest["train_loss_gap_empirical_ntk"] <= narrowest["train_loss_gap_empirical_ntk"]


def test_kernel_change_shrinks_with_width(quick_report):
    _, m = quick_report
    changes = [m["finite_width"][str(w)]["kernel_change"] for w in m["config"]["widths"]]
    assert all(c > 0 for c in changes) and changes[-1] < changes[0]
    assert m["kernel_change_slope"] < 0
    assert m["init_deviation_slope"] < 0


def test_checkpoints_and_curve_gap():
    at = checkpoints(1000)
    assert at[0] == 0 and at[-1] == 1000 and np.all(np.diff(at) > 0)
    assert curve_gap([2.0, 1.0, 0.5], [2.0, 1.5, 0.5]) == pytest.approx(0.25)
    assert curve_gap([2.0, None], [2.0, 1.0]) is None


def test_spectrum_summary_on_a_known_matrix():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    ntk = q @ np.diag([8.0, 4.0, 2.0, 1.0]) @ q.T
    summary = spectrum_summary(ntk, n_outputs=3)
    assert summary["lambda_max"] == pytest.approx(8.0)
    assert summary["condition_number"] == pytest.approx(8.0)
    assert summary["effective_rank"] == pytest.approx(15.0 ** 2 / 85.0)
    assert summary["max_learning_rate"] == pytest.approx(2 * 4 * 3 / 8.0)


_WRITER = """
import io, json, sys, time
from matplotlib.figure import Figure
from ntkit.cli._report import write_report

def slow_savefig(fig, path, **kwargs):  # widens the moments a kill can hit a half-written file
    buffer = io.BytesIO()
    fig.canvas.print_figure(buffer, format="png", **kwargs)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(0.2)
        f.write(data[len(data) // 2:])

Figure.savefig = slow_savefig
metrics = json.loads(open(sys.argv[1]).read())
print("ready", flush=True)
while True:
    write_report(json.loads(json.dumps(metrics)), sys.argv[2])
"""


def test_report_survives_kill_9_at_random_moments(quick_report, tmp_path):
    """A writer killed at any moment leaves the previous report whole: at `out`, or (between the two renames)
    moved aside beside it; never a truncated file or a mix of two reports."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src, _ = quick_report
    out = tmp_path / "report"
    rng = np.random.default_rng(0)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(src / "metrics.json"), str(out)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 2.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        reports = [out] if out.exists() else [p / "report" for p in tmp_path.glob(".report.old-*")]
        assert len(reports) == 1
        json.loads((reports[0] / "metrics.json").read_text())
        for name in FILES:
            if name.endswith(".png"):  # complete: the IEND chunk last
                assert (reports[0] / name).read_bytes()[-8:] == b"IEND\xaeB`\x82", name


def test_unwritable_or_empty_out_fails_before_computing(tmp_path, capsys, monkeypatch):
    import ntkit.cli._demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: pytest.fail("computed before checking --out"))
    assert main(["demo", "--quick", "--out", ""]) == 2
    assert "empty path" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--quick", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
