"""`ntkit fit`: kernel ridge on a `.npy` kernel and on a Zarr store of `ntkit.jobs.kernel_job`, against NumPy."""

import json

import numpy as np
import pytest

from ntkit.cli._main import main


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(60, 3)), rng.normal(size=(15, 3))
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 4)
    k_test = np.exp(-((x_test[:, None] - x[None]) ** 2).sum(-1) / 4)
    labels = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    labels_test = (x_test[:, 0] > 0).astype(np.int64) + (x_test[:, 1] > 0)
    paths = {}
    for name, value in dict(k=k, k_test=k_test, labels=labels, labels_test=labels_test,
                            y=np.sin(x.sum(1)), y_test=np.sin(x_test.sum(1))).items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], value)
    return x, x_test, k, k_test, labels, labels_test, paths


def test_fit_npy_classes(data, tmp_path, capsys):
    _, _, k, k_test, labels, labels_test, p = data
    out = tmp_path / "out"
    rc = main(["fit", "--kernel", p["k"], "--y", p["labels"], "--test-kernel", p["k_test"], "--y-test",
               p["labels_test"], "--ridge", "0.01", "--method", "cg", "--tol", "1e-10", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    onehot = (labels[:, None] == np.arange(3)).astype(float)
    want = k_test @ np.linalg.solve(k + 0.01 * np.eye(60), onehot)
    pred = np.load(out / "predictions.npy")
    np.testing.assert_allclose(pred, want, rtol=1e-6, atol=1e-8)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["solver"]["method"] == "cg" and metrics["solver"]["converged"]
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean(np.argmax(want, 1) == labels_test))
    assert metrics["test"]["mse"] == pytest.approx(np.mean((want - (labels_test[:, None] == np.arange(3))) ** 2))
    assert metrics["train"]["accuracy"] > 0.9


def test_fit_zarr_store_regression(data, tmp_path, capsys):
    pytest.importorskip("zarr")
    import ntkit.jobs
    import ntkit.nn as stax

    x, x_test, _, _, _, _, p = data
    _, _, kernel_fn = stax.serial(stax.Dense(64, b_std=0.1), stax.Relu(), stax.Dense(1, b_std=0.1))
    ntkit.jobs.kernel_job(kernel_fn, x, store=str(tmp_path / "train.zarr"), get=("ntk",), tile=16, progress=False)
    ntkit.jobs.kernel_job(kernel_fn, x_test, x, store=str(tmp_path / "test.zarr"), get=("ntk",), tile=16,
                          progress=False)
    k, k_test = ntkit.jobs.load(str(tmp_path / "train.zarr")), ntkit.jobs.load(str(tmp_path / "test.zarr"))
    out = tmp_path / "out"
    rc = main(["fit", "--kernel", str(tmp_path / "train.zarr"), "--y", p["y"], "--test-kernel",
               str(tmp_path / "test.zarr"), "--y-test", p["y_test"], "--ridge", "0.1", "--method", "cholesky",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    y, y_test = np.load(p["y"]), np.load(p["y_test"])
    eps = np.finfo(k.dtype).eps  # the store's precision (float32 without jax_enable_x64)
    k, k_test = np.asarray(k, np.float64), np.asarray(k_test, np.float64)
    want = k_test @ np.linalg.solve(k + 0.1 * np.eye(60), y)
    cond = np.linalg.cond(k + 0.1 * np.eye(60))
    err = np.linalg.norm(np.load(out / "predictions.npy") - want) / np.linalg.norm(want)
    assert err <= 10 * cond * eps
    metrics = json.loads((out / "metrics.json").read_text())
    assert "accuracy" not in metrics["test"] and metrics["test"]["mse"] == pytest.approx(np.mean((want - y_test) ** 2),
                                                                                           rel=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["--kernel", "missing.npy", "--y", "{y}", "--ridge", "1"], "does not exist"),
    (["--kernel", "{k_test}", "--y", "{y}", "--ridge", "1"], "must be (60, 60)"),
    (["--kernel", "{k}", "--y", "{y}", "--ridge", "1", "--y-test", "{y_test}"], "--y-test needs --test-kernel"),
    (["--kernel", "{k}", "--y", "{y}", "--test-kernel", "{k_test}", "--y-test", "{labels_test}", "--ridge", "1"],
     "both be class labels"),
    (["--kernel", "{k}", "--y", "{k_test}", "--ridge", "1"], "--y has 15 examples"),
])
def test_fit_errors(data, tmp_path, capsys, argv, message):
    p = data[-1]
    rc = main(["fit", *[a.format(**p) for a in argv], "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("ntkit fit: error:") and message in err, err


def test_fit_bad_ridge_is_an_argparse_error(data, capsys):
    p = data[-1]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--kernel", p["k"], "--y", p["y"], "--ridge", "-1"])
    assert exc.value.code == 2 and "non-negative" in capsys.readouterr().err
