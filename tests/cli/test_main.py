"""The `ntkit` command line: help, options, errors."""

import json

import pytest

from ntkit.cli import main

TINY = ["--dataset", "iris", "--n-train", "24", "--n-test", "12", "--widths", "8,16", "--steps", "5",
        "--no-progress"]


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--dataset", "--n-train", "--n-test", "--widths", "--depth", "--steps", "--learning-rate", "--out",
                   "--seed", "--quick"):
        assert option in out


def test_demo_text_with_explicit_learning_rate(tmp_path, capsys):
    argv = ["demo", *TINY, "--learning-rate", "0.5", "--depth", "2", "--widths", "16", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "suggested maximum learning rate 2nk/λ_max" in out
    assert "log-log slope" in out and "η = 0.5 (given)" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["learning_rate"]["value"] == 0.5 and not metrics["learning_rate"]["default"]
    assert metrics["config"]["depth"] == 2 and metrics["config"]["widths"] == [16]
    assert metrics["kernel_change_slope"] is None and "slope" in out  # one width: no slope to fit


def test_demo_json_learning_rate_above_critical(tmp_path, capsys):
    assert main(["demo", *TINY, "--learning-rate", "1e4", "--out", str(tmp_path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["learning_rate"]["above_critical"] == [8, 16]
    assert any(e["diverged"] for e in metrics["finite_width"].values())
    assert json.loads((tmp_path / "metrics.json").read_text())["config"] == metrics["config"]  # strict JSON


@pytest.mark.parametrize("argv", [
    ["--widths", "0,8"], ["--widths", "8,x"], ["--widths", "8,8"], ["--widths", ","], ["--n-train", "0"],
    ["--steps", "-3"], ["--depth", "two"], ["--learning-rate", "0"], ["--learning-rate", "nan"],
    ["--dataset", "mnist"], ["--seed", "1.5"],
])
def test_bad_options_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *argv])
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


def test_data_set_too_small_is_a_clean_error(tmp_path, capsys):
    assert main(["demo", "--dataset", "iris", "--n-train", "500", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntkit demo: error:") and "too many" in err


def test_no_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
