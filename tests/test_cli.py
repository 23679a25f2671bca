"""The `ntkit` command line and its demo."""

import json

import numpy as np
import pytest

from ntkit._cli import main
from ntkit._demo import spectrum_summary


def test_demo_json(capsys):
    assert main(["demo", "--n-train", "40", "--width", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_train"] == 40
    assert summary["lambda_max"] >= summary["lambda_min"] > 0
    assert summary["max_learning_rate"] == pytest.approx(2 * 40 * 10 / summary["lambda_max"])


def test_demo_text(capsys):
    assert main(["demo", "--dataset", "iris", "--n-train", "30", "--width", "16"]) == 0
    out = capsys.readouterr().out
    assert "suggested maximum learning rate" in out


def test_demo_bad_options(capsys):
    assert main(["demo", "--dataset", "iris", "--n-train", "500"]) == 2
    assert "too many" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--width", "0"])


def test_spectrum_summary_on_a_known_matrix():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    ntk = q @ np.diag([8.0, 4.0, 2.0, 1.0]) @ q.T
    summary = spectrum_summary(ntk, n_outputs=3)
    assert summary["lambda_max"] == pytest.approx(8.0)
    assert summary["condition_number"] == pytest.approx(8.0)
    assert summary["effective_rank"] == pytest.approx(15.0 ** 2 / 85.0)
    assert summary["max_learning_rate"] == pytest.approx(2 * 4 * 3 / 8.0)
