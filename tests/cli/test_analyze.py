"""`ntkit analyze` end to end on small data: a bundled data set, a CSV file with a user architecture, a `.npy`
pair; report files, metrics checked against independent NumPy computations, and each bad input's error."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from ntkit.cli import main
from ntkit.cli._analyze_data import prepare, read_data

FILES = ("metrics.json", "report.md", "spectrum.png", "catapult.png", "phase_diagram.png", "learning_curve.png",
         "training.png", "tracker.png")
TINY = ["--n-train", "32", "--n-test", "16", "--steps", "30", "--no-progress"]

USER_NET = """
import ntkit.nn as stax

def net():
    # not a plain MLP: a residual block around an Erf and a Dense layer
    block = stax.serial(stax.Erf(), stax.Dense(128, W_std=1.2, b_std=0.1))
    return stax.serial(stax.Dense(128, W_std=1.2, b_std=0.1),
                       stax.FanOut(2), stax.parallel(block, stax.Identity()), stax.FanInSum(),
                       stax.Erf(), stax.Dense(3, W_std=1.2, b_std=0.1))
"""


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    assert main(["analyze", "--quick", "--dataset", "digits", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_report_files(digits):
    out, m = digits
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    answers = report.split("## Answers")[1].split("## Summary")[0]
    for words in ("stable below η_crit = 2nk/λ_max", "Catapult window", "phase", "Generalization", "Lazy or rich"):
        assert words in answers, words
    for name in FILES[2:]:
        assert f"![{name}]({name})" in report
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # nothing else, no temporary files
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _digits_data(m):
    c = m["config"]
    data = prepare(read_data(dataset="digits"), c["n_train"], c["n_test"], seed=c["seed"])
    x = jnp.concatenate([jnp.asarray(data.x_train), jnp.asarray(data.x_test)]).astype(jnp.zeros(()).dtype)
    return data, x


def test_max_learning_rate_is_2nk_over_numpy_lambda_max(digits):
    _, m = digits
    c = m["config"]
    assert c["n_train"] == 64 and c["depth"] == 2 and c["activation"] == "relu"
    data, x = _digits_data(m)
    # the default MLP, written out here, and its NTK eigendecomposed by NumPy
    net = stax.serial(stax.Dense(1, W_std=2 ** 0.5, b_std=0.0), stax.Relu(), stax.Dense(1, W_std=2 ** 0.5, b_std=0.0),
                      stax.Relu(), stax.Dense(1, W_std=2 ** 0.5, b_std=0.0))
    ntk = np.asarray(net.kernel(x, None, "ntk"), np.float64)[:64, :64]
    eigenvalues = np.linalg.eigvalsh((ntk + ntk.T) / 2)
    n, k = data.y_train.shape
    rtol = 1e-3 if jnp.zeros(()).dtype == jnp.float32 else 1e-9
    assert m["convergence"]["lambda_max"] == pytest.approx(eigenvalues[-1], rel=rtol)
    assert m["convergence"]["max_learning_rate"] == pytest.approx(2 * n * k / eigenvalues[-1], rel=rtol)
    assert m["convergence"]["n_targets"] == n * k == 640
    # the generalization numbers, from the same kernel by their formulas
    y = data.y_train
    ridge = m["generalization"]["ridge"]
    assert ridge == pytest.approx(1e-6 * np.trace(ntk) / n, rel=rtol)
    quad = np.trace(y.T @ np.linalg.solve(ntk + ridge * np.eye(n), y))
    assert m["generalization"]["complexity"] == pytest.approx(np.sqrt(2 * quad / y.size), rel=20 * rtol)
    h = np.eye(n) - 1.0 / n
    kc = h @ ntk @ h
    align = np.mean([(c_ @ kc @ c_) / (np.linalg.norm(kc) * (c_ @ c_)) for c_ in (h @ y).T])
    assert m["generalization"]["alignment_centered"] == pytest.approx(align, rel=rtol)
    # true labels are simpler than shuffled ones for this kernel (Arora et al. 2019)
    assert m["generalization"]["complexity"] < 0.8 * m["generalization"]["complexity_shuffled"]


def test_phase_of_relu_at_he_initialization_is_critical(digits):
    _, m = digits
    init = m["initialization"]
    # closed form: ReLU has χ₁ = σ_w²/2, so σ_w = √2, σ_b = 0 is the edge of chaos
    assert init["available"] and init["plain_mlp"] and init["phase"] == "critical"
    assert init["chi_1"] == pytest.approx(1.0, abs=1e-5)
    assert init["hidden_layers"] == 2
    assert "edge of chaos" in (digits[0] / "report.md").read_text()


def test_learning_curve_measured_points_are_kernel_regression(digits):
    _, m = digits
    data, x = _digits_data(m)
    lc = m["generalization"]["learning_curve"]
    assert lc["measured_n"][-1] == 64 and lc["n"][-1] == 64
    # the full training set has no subset to draw: NTK regression on all 64 rows, tested on the test rows
    net = stax.serial(*[stax.Dense(1, W_std=2 ** 0.5), stax.Relu()] * 2, stax.Dense(1, W_std=2 ** 0.5))
    ntk = np.asarray(net.kernel(x, None, "ntk"), np.float64)
    ridge = m["generalization"]["ridge"]
    f = ntk[64:, :64] @ np.linalg.solve(ntk[:64, :64] + ridge * np.eye(64), data.y_train)
    rtol = 1e-3 if jnp.zeros(()).dtype == jnp.float32 else 1e-8
    assert lc["measured_test_mse"][-1] == pytest.approx(np.mean((f - data.y_test) ** 2), rel=rtol)
    # a learning curve: more data, lower predicted test error, and the prediction near the measurement
    assert np.all(np.diff(lc["predicted_test_mse"]) <= 1e-12)
    # (asymptotic theory, one test set: 14% apart here; without the held-out correction 57%)
    assert lc["predicted_at_measured"][-1] == pytest.approx(lc["measured_test_mse"][-1], rel=0.3)


def test_finite_run_is_lazy_and_matches_its_prediction(digits):
    _, m = digits
    fin = m["finite"]
    assert fin["width"] == 256 and fin["steps"] == 100 and not fin["diverged"]
    assert fin["learning_rate"] == pytest.approx(0.5 * fin["critical_empirical"])
    real, predicted = fin["real"]["train_loss"], fin["predicted_empirical_ntk"]["train_loss"]
    # same outputs at step 0 (the prediction starts from the network's own f₀), then it trains
    assert predicted[0] == pytest.approx(real[0], rel=1e-4)
    assert real[-1] < 0.2 * real[0]
    assert fin["train_loss_gap"] == pytest.approx(np.max(np.abs(np.subtract(real, predicted))) / real[0])
    # the loss follows the prediction: lazy or borderline (width 256 moves its kernel by ~20% in 100 steps)
    assert fin["train_loss_gap"] < 0.1 and fin["regime"] in ("lazy", "borderline")
    assert fin["regime"] == ("lazy" if fin["kernel_change"] < 0.1 else "borderline")
    tracked = fin["tracker"]
    assert tracked["steps"][0] == 0 and tracked["steps"][-1] == 100 and tracked["probe_size"] == 64
    assert tracked["relative_change"][-1] == fin["kernel_change"] > 0
    assert len(tracked["relative_change"]) == len(tracked["steps"]) == len(tracked["weight_change"])
    assert 0 < tracked["weight_change"][-1] < 0.5 and tracked["kernel_distance"][0] == 0


def test_catapult_sweep_brackets_the_critical_rate(digits):
    _, m = digits
    cat = m["catapult"]
    assert cat["lower"] == pytest.approx(m["finite"]["critical_empirical"], rel=1e-5)
    assert cat["upper"] == pytest.approx(2 * cat["lower"])  # 4nk/λ_max
    sweep = cat["sweep"]
    rates = np.asarray(sweep["learning_rates"])
    np.testing.assert_allclose(rates / cat["lower"], sweep["factors"], rtol=1e-6)
    assert {"lazy", "catapult"} <= set(sweep["regime"])  # the sweep spans the window's lower edge
    below = rates < cat["lower"]
    # below η_crit the loss never rises (a constant kernel would shrink every mode each step)
    assert not any(np.asarray(sweep["spiked"])[below]) and not any(np.asarray(sweep["diverged"])[below])
    # every run that converged ended where gradient descent is stable, λ_max(Θ_T) < 2nk/η: above η_crit the
    # kernel's top eigenvalue had to drop (the catapult mechanism, Lewkowycz et al. 2020)
    nk = m["convergence"]["n_targets"]
    for rate, lam, diverged in zip(rates, sweep["lambda_max_final"], sweep["diverged"], strict=True):
        if not diverged:
            assert lam < 2 * nk / rate
            if rate > cat["lower"]:
                assert lam < cat["lambda_max_init"]
    # the measured window as read off the loss curves
    losses = [np.asarray(curve, np.float64) for curve in sweep["losses"]]
    converged = [np.isfinite(c[-1]) and c[-1] < c[0] for c in losses]
    spiked = [np.nanmax(c) > c[0] for c in losses]
    assert cat["measured"][0] == min(r for r, c, s in zip(rates, converged, spiked, strict=True) if c and s)
    assert cat["measured"][1] == max(r for r, c in zip(rates, converged, strict=True) if c)


@pytest.fixture
def user_net(tmp_path):
    path = tmp_path / "resnet.py"
    path.write_text(USER_NET)
    return path


def test_csv_with_user_architecture(tmp_path, user_net, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    labels = np.array(["setosa", "versicolor", "virginica"])[np.argmax(x[:, :3], 1)]
    lines = ["a,b,species,c,d"] + [f"{r[0]},{r[1]},{lab},{r[2]},{r[3]}" for r, lab in zip(x, labels, strict=True)]
    (tmp_path / "flowers.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    argv = ["analyze", "--data", str(tmp_path / "flowers.csv"), "--target", "species", "--arch", f"{user_net}:net",
            "--quick", *TINY, "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    c = m["config"]
    assert c["task"] == "classification" and c["classes"] == ["setosa", "versicolor", "virginica"]
    assert c["n_features"] == 4 and not c["plain_mlp"] and c["width"] is None
    init = m["initialization"]
    assert init["available"] and not init["plain_mlp"] and init["activation"] == "Erf"
    assert init["W_std"] == pytest.approx(1.2) and init["b_std"] == pytest.approx(0.1)
    assert "not a plain MLP" in printed and "not a plain MLP" in (out / "report.md").read_text()
    for name in FILES:
        assert (out / name).is_file(), name


def test_npy_pair_regression_json(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(48, 3))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    argv = ["analyze", "--data", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy"), "--activation", "erf",
            "--W-std", "1.5", "--b-std", "0.2", "--depth", "1", "--width", "64", *TINY, "--out",
            str(tmp_path / "r"), "--json", "--learning-rate", "1e4"]
    assert main(argv) == 0
    m = json.loads(capsys.readouterr().out)
    assert m == json.loads((tmp_path / "r" / "metrics.json").read_text())  # strict JSON, NaN/inf as null
    assert m["config"]["task"] == "regression" and m["config"]["n_outputs"] == 1
    # far above the critical rate the real run diverges: the report says so instead of a verdict
    fin = m["finite"]
    assert fin["learning_rate"] == 1e4 and not fin["learning_rate_default"] and fin["learning_rate"] > fin[
        "critical_empirical"]
    assert fin["diverged"] and fin["regime"] == "diverged" and fin["real"]["train_loss"][-1] is None
    assert "diverged at η = 1e+04" in (tmp_path / "r" / "report.md").read_text()
    assert m["initialization"]["phase"] in ("ordered", "chaotic") and m["initialization"]["xi_c"] > 0
    assert m["initialization"]["trainable_depth"] == pytest.approx(6 * m["initialization"]["xi_c"])


def _fails(argv, capsys, message):
    assert main(["analyze", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntkit analyze: error:"), err
    assert message in err, err


def test_bad_inputs_are_clear_errors(tmp_path, user_net, capsys):
    out = ["--out", str(tmp_path / "never")]
    (tmp_path / "t.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    (tmp_path / "nan.csv").write_text("a,b,y\n" + "".join(f"{i},{'nan' if i == 5 else i},1\n" for i in range(20)))
    (tmp_path / "text.csv").write_text("a,b,y\n" + "".join(f"{i},{'big' if i == 7 else i},1\n" for i in range(20)))
    (tmp_path / "few.csv").write_text("a,b,y\n1,2,0\n2,3,1\n3,1,0\n")
    np.save(tmp_path / "x.npy", np.zeros((20, 2)))
    np.save(tmp_path / "y.npy", np.zeros(21))
    (tmp_path / "wide.py").write_text("import ntkit.nn as stax\nnet = stax.serial(stax.Dense(8), stax.Relu(), "
                                      "stax.Dense(5))\n")
    cases = [
        (["--data", str(tmp_path / "t.csv"), "--target", "label"], "not a column"),
        (["--data", str(tmp_path / "t.csv")], "--target COLUMN"),
        (["--data", str(tmp_path / "nan.csv"), "--target", "y"], "missing value 'nan' in feature column 'b'"),
        (["--data", str(tmp_path / "text.csv"), "--target", "y"], "column 'b' must be numeric, got 'big'"),
        (["--data", str(tmp_path / "few.csv"), "--target", "y"], "has 3 rows; at least 10"),
        (["--data", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy")], "20 rows but the targets 21"),
        (["--data", str(tmp_path / "x.npy")], "--targets"),
        (["--data", str(tmp_path / "data.parquet")], "no file"),
        ([], "exactly one of --data FILE or --dataset NAME"),
        (["--dataset", "mnist"], "must be one of digits"),
        (["--dataset", "iris", "--arch", f"{tmp_path / 'wide.py'}:net"],
         "to outputs of shape (120, 5); the targets need (120, 3)"),
        (["--dataset", "iris", "--arch", f"{user_net}:nope"], "defines no 'nope'"),
        (["--dataset", "iris", "--arch", f"{user_net}:net", "--width", "64"], "--width describe the default MLP"),
        (["--dataset", "iris", "--n-train", "200"], "leaves no test rows"),
        (["--dataset", "diabetes", "--task", "classification"], "too many classes"),
    ]
    for argv, message in cases:
        _fails([*argv, *out, "--no-progress"], capsys, message)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("argv", [["--width", "0"], ["--W-std", "-1"], ["--b-std", "nan"], ["--activation", "swish"],
                                  ["--task", "ranking"], ["--steps", "1.5"], ["--learning-rate", "0"]])
def test_bad_options_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", "--dataset", "iris", *argv])
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


def test_failed_run_leaves_the_previous_report(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("previous")
    _fails(["--dataset", "iris", "--n-train", "500", "--out", str(out), "--no-progress"], capsys, "leaves no test")
    assert [p.name for p in tmp_path.iterdir()] == ["report"] and (out / "report.md").read_text() == "previous"
    (tmp_path / "file").write_text("")
    _fails(["--dataset", "iris", "--out", str(tmp_path / "file")], capsys, "is a file, not a folder")


def test_report_write_is_atomic(tmp_path, monkeypatch, digits):
    from ntkit.cli import _analyze_report

    _, metrics = digits
    out = tmp_path / "report"
    _analyze_report.write_analysis_report(metrics, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(m, path):  # a crash half-way through writing the plots
        path.write_bytes(b"\x89PNG")
        raise RuntimeError("disk full")

    monkeypatch.setattr(_analyze_report, "PLOTS", (("spectrum.png", _analyze_report.plot_spectrum),
                                                   ("half.png", broken)))
    with pytest.raises(RuntimeError, match="disk full"):
        _analyze_report.write_analysis_report(metrics, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # the staging folder is gone


def test_help_lists_the_options_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-m", "ntkit.cli._main", "analyze", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for option in ("--data", "--targets", "--target", "--dataset", "--task", "--arch", "--depth", "--width",
                   "--activation", "--W-std", "--b-std", "--out", "--n-train", "--seed", "--learning-rate", "--quick",
                   "--json", "--no-progress"):
        assert option in result.stdout, option


def test_activation_names_match_the_layers():
    from ntkit.cli._analyze import activation_layer
    from ntkit.cli._analyze_command import ACTIVATIONS

    x = jnp.linspace(-2.0, 2.0, 9)
    expected = {"relu": jax.nn.relu(x), "erf": jax.scipy.special.erf(x), "gelu": jax.nn.gelu(x, approximate=False),
                "leaky_relu": jnp.where(x > 0, x, 0.1 * x), "abs": jnp.abs(x),
                "sigmoid_like": 0.5 * (1 + jax.scipy.special.erf(x / 2.4020563531719796))}
    assert set(ACTIVATIONS) == set(expected)
    for name in ACTIVATIONS:
        np.testing.assert_allclose(activation_layer(name).apply((), x), expected[name], rtol=1e-5, atol=1e-6)


def test_missing_extras_are_a_clear_error(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    _fails(["--dataset", "iris", "--out", str(tmp_path / "r")], capsys, "needs matplotlib")
    assert not (tmp_path / "r").exists()
