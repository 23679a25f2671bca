"""`ntkit analyze`'s data: reading NumPy/CSV/bundled data, task inference, encoding, split, standardisation, errors."""

import numpy as np
import pytest

from ntkit.cli._analyze_data import MIN_ROWS, infer_task, prepare, read_data


def _csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return str(path)


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -3.0]
    labels = np.where(x[:, 0] > 0, "cat", "dog")
    rows = [[*(repr(float(v)) for v in r), label] for r, label in zip(x, labels, strict=True)]
    return _csv(tmp_path / "t.csv", ["a", "b", "c", "animal"], rows), x, labels


def test_csv_classification_one_hot_and_standardised(table):
    path, x, labels = table
    raw = read_data(data=path, target="animal")
    assert raw.x.shape == (40, 3) and raw.y.dtype.kind == "U"
    data = prepare(raw, n_train=30, n_test=10, seed=1)
    assert data.task == "classification" and data.classes == ("cat", "dog")
    # one-hot minus 1/k, rows of the training split match the labels of the permuted rows
    order = np.random.default_rng(1).permutation(40)
    expected = (labels[order[:30]] == "dog").astype(float)
    np.testing.assert_allclose(data.y_train[:, 1], expected - 0.5)
    np.testing.assert_allclose(data.y_train.sum(1), 0.0, atol=1e-12)
    # standardised with the training split's statistics (not the test split's)
    train = x[order[:30]]
    np.testing.assert_allclose(data.x_train, (train - train.mean(0)) / train.std(0), atol=1e-12)
    np.testing.assert_allclose(data.x_test, (x[order[30:]] - train.mean(0)) / train.std(0), atol=1e-12)


def test_csv_target_by_index_and_semicolons(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"{v:.6f}" for v in rng.normal(size=3)] for _ in range(20)]
    path = tmp_path / "s.csv"
    path.write_text("x;y;z\n" + "\n".join(";".join(r) for r in rows) + "\n")
    raw = read_data(data=str(path), target="2")
    np.testing.assert_allclose(raw.y, [float(r[2]) for r in rows])
    assert infer_task(raw.y) == "regression"


def test_npy_pair_regression_targets_standardised(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 2)) * 3.0 + 7.0
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    data = prepare(read_data(data=str(tmp_path / "x.npy"), targets=str(tmp_path / "y.npy")), None, None)
    assert data.task == "regression" and data.classes == ()
    assert len(data.x_train) == 40 and len(data.x_test) == 10  # capped: a fifth of the rows for testing
    np.testing.assert_allclose(data.y_train.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(data.y_train.std(0), 1.0)
    order = np.random.default_rng(0).permutation(50)
    np.testing.assert_allclose(data.y_test * data.target_std + data.target_mean, y[order[40:]])


def test_npz_keys_and_forced_task(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2, 3)), rng.integers(0, 3, 30)
    np.savez(tmp_path / "d.npz", images=x, labels=y, extra=np.zeros(3))
    with pytest.raises(ValueError, match="--features KEY"):
        read_data(data=str(tmp_path / "d.npz"), targets="labels")
    raw = read_data(data=str(tmp_path / "d.npz"), targets="labels", features="images")
    assert prepare(raw, 20, 10).task == "classification"
    assert prepare(raw, 20, 10).x_train.shape == (20, 6)  # flattened for the MLP
    assert prepare(raw, 20, 10, flatten=False).x_train.shape == (20, 2, 3)
    reg = prepare(raw, 20, 10, task="regression")
    assert reg.task == "regression" and reg.y_train.shape == (20, 1)


def test_zero_variance_feature_is_zero(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(20, 2)), np.full((20, 1), 4.0)], 1)
    x[np.random.default_rng(0).permutation(20)[15:], 2] = 9.0  # constant on the training rows only
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.normal(size=20))
    data = prepare(read_data(data=str(tmp_path / "x.npy"), targets=str(tmp_path / "y.npy")), 15, 5)
    assert data.constant_features == 1
    assert np.all(data.x_train[:, 2] == 0) and np.all(data.x_test[:, 2] == 0)
    assert np.all(np.isfinite(data.x_train)) and np.all(data.x_test[:, :2] != 0)


def test_bundled_and_task_inference():
    raw = read_data(dataset="diabetes")
    assert raw.task == "regression" and prepare(raw, 64, 32).task == "regression"
    assert prepare(read_data(dataset="iris"), 64, 32).classes == ("0", "1", "2")
    assert infer_task(np.array([0, 1, 1, 2])) == "classification"
    assert infer_task(np.array([0.0, 1.0, 2.0])) == "classification"
    assert infer_task(np.array([0.5, 1.0, 2.0])) == "regression"
    assert infer_task(np.arange(100)) == "regression"
    assert infer_task(np.array([True, False])) == "classification"


def _bad_csv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, target, message", [
    ("a,b,y\n1,2,3\n", "z", "not a column"),
    ("a,b,y\n1,,3\n", "y", "missing value '' in feature column 'b'"),
    ("a,b,y\n1,nan,3\n", "y", "missing value 'nan'"),
    ("a,b,y\n1,red,3\n", "y", "column 'b' must be numeric, got 'red'"),
    ("a,b,y\n1,2\n", "y", "line 2 has 2 fields"),
    ("a,b,y\n1,2,\n", "y", "missing target"),
    ("y\n1\n2\n", "y", "no feature columns"),
])
def test_bad_csv(tmp_path, text, target, message):
    with pytest.raises(ValueError, match=message):
        read_data(data=_bad_csv(tmp_path, "bad.csv", text), target=target)


def test_bad_files_and_options(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y19.npy", np.zeros(19))
    np.save(tmp_path / "xnan.npy", np.where(x > 1.5, np.nan, x))
    np.save(tmp_path / "xs.npy", np.array([["a", "b"]] * 20))
    np.save(tmp_path / "y.npy", np.arange(20) % 2)
    (tmp_path / "x.txt").write_text("1 2 3")
    cases = [
        (dict(), "exactly one of --data FILE or --dataset NAME"),
        (dict(data="x.npy", dataset="iris"), "exactly one"),
        (dict(dataset="mnist"), "must be one of digits"),
        (dict(data="nope.npy", targets="y.npy"), "no file"),
        (dict(data="x.txt"), r"\.npy, \.npz or \.csv"),
        (dict(data="x.npy"), "--targets FILE.npy"),
        (dict(data="x.npy", targets="y19.npy"), "20 rows but the targets 19"),
        (dict(data="xnan.npy", targets="y.npy"), "NaN or infinite"),
        (dict(data="xs.npy", targets="y.npy"), "must be numbers"),
        (dict(data="x.npy", targets="y.npy", target="y"), "--target COLUMN goes with a .csv"),
        (dict(dataset="iris", targets="y.npy"), "go with --data"),
        (dict(data="x.csv"), "no file"),
    ]
    for kwargs, message in cases:
        kwargs = {k: str(tmp_path / v) if k in ("data", "targets") else v for k, v in kwargs.items()}
        with pytest.raises(ValueError, match=message):
            read_data(**kwargs)
    (tmp_path / "t.csv").write_text("a,y\n1,2\n")
    with pytest.raises(ValueError, match="--target COLUMN"):
        read_data(data=str(tmp_path / "t.csv"))


def test_bad_splits_and_targets(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    raw = read_data(dataset="iris")
    with pytest.raises(ValueError, match="leaves no test rows"):
        prepare(raw, 150, None)
    with pytest.raises(ValueError, match="more than the 150 rows"):
        prepare(raw, 100, 100)
    with pytest.raises(ValueError, match="at least 8"):
        prepare(raw, 4, None)
    np.save(tmp_path / "x.npy", x[:MIN_ROWS - 1])
    np.save(tmp_path / "y.npy", np.arange(MIN_ROWS - 1))
    with pytest.raises(ValueError, match=f"at least {MIN_ROWS} are needed"):
        prepare(read_data(data=str(tmp_path / "x.npy"), targets=str(tmp_path / "y.npy")), None, None)
    for y, task, message in [(np.zeros(30), None, "at least two classes"),
                             (np.array(["a", "b"] * 15), "regression", "regression needs numeric targets"),
                             (np.ones(30) * 2.5, "regression", "constant"),
                             (rng.normal(size=30), "classification", "too many classes")]:
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        with pytest.raises(ValueError, match=message):
            prepare(read_data(data=str(tmp_path / "x.npy"), targets=str(tmp_path / "y.npy")), 20, 10, task=task)
