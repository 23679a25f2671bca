"""The data of `ntkit analyze`: NumPy/CSV files or a scikit-learn bundled data set, checked, split and standardised.

Reading (`read_data`) gives raw features and targets; `prepare` infers the task, encodes the targets, splits the rows
at random and standardises the features on the training split. Every problem with the user's files is a
`ValueError` whose message names the file, the column or the row, and what was expected.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

BUNDLED = {"digits": "classification", "iris": "classification", "wine": "classification",
           "breast_cancer": "classification", "diabetes": "regression", "linnerud": "regression"}
"""scikit-learn's bundled data sets (no download) and their task."""

TASKS = ("classification", "regression")
MIN_ROWS = 10
"""Fewest rows accepted: enough for a training split of 8 and a test split of 2."""
MAX_INFERRED_CLASSES = 20
"""Integer targets with at most this many distinct values are read as classes unless `task` says otherwise."""
_MISSING = {"", "nan", "na", "n/a", "null", "none", "?"}


class RawData(NamedTuple):
    """Features `(N, ...)` (float64) and targets `(N,)` or `(N, k)` (numbers or strings) as read."""
    x: np.ndarray
    y: np.ndarray
    source: str
    task: str | None  # known for bundled data sets, else inferred by `prepare`


class Dataset(NamedTuple):
    """Training and test splits ready for the kernels.

    Attributes:
      x_train, x_test: features standardised with the training split's mean and standard deviation (float64).
      y_train, y_test: `(n, k)` float64. Classification: one-hot minus `1/k` (mean output zero, as for a network
        at initialization). Regression: each target column standardised with the training split's statistics.
      task: `"classification"` or `"regression"`.
      classes: the class labels, in the order of the one-hot columns (empty for regression).
      source: where the data came from, for the report.
      n_rows: rows read.
      constant_features: features with zero variance on the training split (set to 0).
      target_mean, target_std: the regression targets' training statistics (empty for classification).
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    classes: tuple[str, ...]
    source: str
    n_rows: int
    constant_features: int
    target_mean: tuple[float, ...]
    target_std: tuple[float, ...]


def read_data(data: str | None = None, dataset: str | None = None, targets: str | None = None,
              target: str | None = None, features: str | None = None) -> RawData:
    """Reads features and targets from exactly one of `data` (a `.npy`, `.npz` or `.csv` file) or `dataset`.

    Args:
      data: `.npy` of features with `targets` a second `.npy` file; `.npz` with `targets` the key of the targets
        (and `features` the key of the features when the archive holds more than two arrays) or a second file;
        `.csv` with a header row and `target` the name (or 0-based index) of the target column.
      dataset: a scikit-learn bundled data set (`BUNDLED`).
    """
    if (data is None) == (dataset is None):
        raise ValueError("give the data as exactly one of --data FILE or --dataset NAME"
                         + ("" if data is None else f", got both {data!r} and {dataset!r}"))
    if dataset is not None:
        if targets is not None or target is not None or features is not None:
            raise ValueError("--targets, --target and --features go with --data, not --dataset")
        return _bundled(dataset)
    assert data is not None
    path = Path(data).expanduser()
    if not path.is_file():
        raise ValueError(f"--data: no file {data!r}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if targets is not None or features is not None:
            raise ValueError("--data FILE.csv takes --target COLUMN (the target column), not --targets/--features")
        if target is None:
            raise ValueError(f"--data {data!r} is a CSV file: name its target column with --target COLUMN")
        return _csv(path, target)
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"--data must be a .npy, .npz or .csv file, got {data!r}")
    if target is not None:
        raise ValueError("--target COLUMN goes with a .csv file; for .npy/.npz data use --targets FILE_OR_KEY")
    if targets is None:
        raise ValueError(f"--data {data!r} holds the features only: give the targets with --targets "
                         + ("FILE.npy" if suffix == ".npy" else "KEY (an array of the archive) or FILE.npy"))
    if suffix == ".npy":
        if features is not None:
            raise ValueError("--features KEY goes with a .npz archive")
        x = _load_npy(path, "--data")
        y = _load_npy(Path(targets).expanduser(), "--targets")
        return _checked(x, y, f"{path.name} + {Path(targets).name}")
    return _npz(path, targets, features)


def _bundled(name: str) -> RawData:
    from sklearn import datasets

    if name not in BUNDLED:
        raise ValueError(f"--dataset must be one of {', '.join(BUNDLED)} (scikit-learn's bundled data sets), "
                         f"got {name!r}")
    bunch = getattr(datasets, f"load_{name}")()
    return RawData(np.asarray(bunch.data, np.float64), np.asarray(bunch.target), f"scikit-learn {name}",
                   BUNDLED[name])


def _load_npy(path: Path, option: str) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{option}: no file {str(path)!r}")
    if path.suffix.lower() == ".npz":
        with _open_npz(path, option) as archive:
            if len(archive.files) != 1:
                raise ValueError(f"{option} {str(path)!r} holds {len(archive.files)} arrays "
                                 f"({', '.join(archive.files)}); give a .npy file or an archive of one array")
            return archive[archive.files[0]]
    if path.suffix.lower() != ".npy":
        raise ValueError(f"{option} must be a .npy file, got {str(path)!r}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{option}: cannot read {str(path)!r} as a NumPy array (object arrays are not "
                         f"loaded): {err}") from None


def _open_npz(path: Path, option: str):
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{option}: cannot read {str(path)!r} as a NumPy .npz archive: {err}") from None


def _npz(path: Path, targets: str, features: str | None) -> RawData:
    with _open_npz(path, "--data") as archive:
        keys = list(archive.files)
        if targets in keys:
            y = archive[targets]
            if features is None:
                rest = [k for k in keys if k != targets]
                if len(rest) != 1:
                    raise ValueError(f"--data {path.name!r} holds {len(keys)} arrays ({', '.join(keys)}): name the "
                                     "features with --features KEY")
                features = rest[0]
            source = f"{path.name}[{features!r}, {targets!r}]"
        elif Path(targets).suffix.lower() in (".npy", ".npz"):
            y = _load_npy(Path(targets).expanduser(), "--targets")
            if features is None:
                if len(keys) != 1:
                    raise ValueError(f"--data {path.name!r} holds {len(keys)} arrays ({', '.join(keys)}): name the "
                                     "features with --features KEY")
                features = keys[0]
            source = f"{path.name}[{features!r}] + {Path(targets).name}"
        else:
            raise ValueError(f"--targets {targets!r} is neither an array of {path.name!r} ({', '.join(keys)}) nor "
                             "a .npy file")
        if features not in keys:
            raise ValueError(f"--features {features!r} is not an array of {path.name!r} ({', '.join(keys)})")
        x = archive[features]
    return _checked(x, y, source)


def _checked(x: np.ndarray, y: np.ndarray, source: str) -> RawData:
    """Numeric, finite features `(N, ...)` and targets `(N,)`/`(N, k)` with the same `N`."""
    if x.dtype.kind not in "biuf":
        raise ValueError(f"the features must be numbers, got an array of dtype {x.dtype} ({source})")
    if x.ndim < 2:
        raise ValueError(f"the features must have a row per example, shape (N, d) or (N, ...), got shape "
                         f"{x.shape} ({source})")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise ValueError(f"the targets must have shape (N,) or (N, k), got {y.shape} ({source})")
    if len(x) != len(y):
        raise ValueError(f"the features have {len(x)} rows but the targets {len(y)} ({source})")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"the features hold {int(bad.sum())} NaN or infinite values, the first at row {row}, "
                         f"feature {col} ({source}); remove or impute them first")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        row = int(np.argwhere(~np.isfinite(y.reshape(len(y), -1)))[0][0])
        raise ValueError(f"the targets hold NaN or infinite values, the first at row {row} ({source})")
    if y.dtype.kind not in "biufUS":
        raise ValueError(f"the targets must be numbers or strings, got an array of dtype {y.dtype} ({source})")
    return RawData(x, y, source, None)


def _csv(path: Path, target: str) -> RawData:
    text = path.read_text(encoding="utf-8-sig")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [row for row in csv.reader(text.splitlines(), dialect) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"--data {path.name!r} is empty")
    header = [name.strip() for name in rows[0]]
    if target in header:
        column = header.index(target)
    elif target.isdigit() and int(target) < len(header):
        column = int(target)
    else:
        raise ValueError(f"--target {target!r} is not a column of {path.name!r}; its columns are "
                         f"{', '.join(header)}")
    if len(header) < 2:
        raise ValueError(f"{path.name!r} has no feature columns besides the target {header[column]!r}")
    body = rows[1:]
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path.name!r} line {i} has {len(row)} fields, the header {len(header)}")
    x = np.empty((len(body), len(header) - 1), np.float64)
    features = [j for j in range(len(header)) if j != column]
    for i, row in enumerate(body):
        for out, j in enumerate(features):
            x[i, out] = _number(row[j], path.name, header[j], i + 2)
    labels = [row[column].strip() for row in body]
    for i, label in enumerate(labels):
        if label.lower() in _MISSING:
            raise ValueError(f"{path.name!r} line {i + 2}: missing target {label!r} in column {header[column]!r}")
    try:
        y: np.ndarray = np.asarray([float(label) for label in labels], np.float64)
    except ValueError:
        y = np.asarray(labels, dtype=str)
    return _checked(x, y, f"{path.name}, target column {header[column]!r}")


def _number(cell: str, file: str, column: str, line: int) -> float:
    cell = cell.strip()
    if cell.lower() in _MISSING:
        raise ValueError(f"{file!r} line {line}: missing value {cell!r} in feature column {column!r}; remove or "
                         "impute missing values first")
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{file!r} line {line}: feature column {column!r} must be numeric, got {cell!r} (encode "
                         "categorical features as numbers, or drop the column)") from None
    if not math.isfinite(value):
        raise ValueError(f"{file!r} line {line}: feature column {column!r} holds {cell!r}; it must be finite")
    return value


def infer_task(y: np.ndarray) -> str:
    """`"classification"` for string/boolean targets or one column of at most `MAX_INFERRED_CLASSES` distinct
    integers, else `"regression"`."""
    if y.dtype.kind in "USb":
        return "classification"
    if y.ndim == 1 and np.all(np.mod(y, 1) == 0) and len(np.unique(y)) <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def prepare(raw: RawData, n_train: int | None, n_test: int | None, seed: int = 0, task: str | None = None,
            flatten: bool = True, default_n_train: int = 256, default_n_test: int = 256) -> Dataset:
    """Infers or checks the task, encodes the targets, splits the rows at random and standardises.

    Args:
      raw: from `read_data`.
      n_train, n_test: rows in the two splits; `None` takes `default_n_*`, capped to leave a test split of
        about a fifth of the rows.
      seed: seeds the split.
      task: force `"classification"` or `"regression"`; `None` infers it (`infer_task`).
      flatten: reshape features to `(N, d)` (for the default MLP).
    """
    x, y = raw.x, raw.y
    n_rows = len(x)
    if n_rows < MIN_ROWS:
        raise ValueError(f"{raw.source} has {n_rows} rows; at least {MIN_ROWS} are needed")
    if task is not None and task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {task!r}")
    task = task or raw.task or infer_task(y)
    n_train, n_test = _sizes(n_rows, n_train, n_test, default_n_train, default_n_test)
    if flatten:
        x = x.reshape(n_rows, -1)
    order = np.random.default_rng(seed).permutation(n_rows)[:n_train + n_test]
    x, y = x[order], y[order]
    x_train, x_test = x[:n_train], x[n_train:]
    mean, std = x_train.mean(0), x_train.std(0)
    constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    if constant.all():
        raise ValueError(f"no feature of {raw.source} varies over the {n_train} training rows")
    std = np.where(constant, 1.0, std)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    x_train[..., constant], x_test[..., constant] = 0.0, 0.0
    if task == "classification":
        y_train, y_test, classes = _one_hot(y, n_train, raw.source)
        moments: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    else:
        y_train, y_test, moments = _standardised(y, n_train, raw.source)
        classes = ()
    return Dataset(x_train, y_train, x_test, y_test, task, classes, raw.source, n_rows, int(constant.sum()),
                   *moments)


def _sizes(n_rows, n_train, n_test, default_n_train, default_n_test) -> tuple[int, int]:
    if n_train is not None and n_train < 8:
        raise ValueError(f"--n-train must be at least 8, got {n_train}")
    if n_train is not None and n_train >= n_rows:
        raise ValueError(f"--n-train {n_train} leaves no test rows: the data has {n_rows} rows")
    if n_train is None:
        n_train = min(default_n_train, n_rows - max(2, n_rows // 5))
    if n_test is None:
        n_test = min(default_n_test, n_rows - n_train)
    if n_train + n_test > n_rows:
        raise ValueError(f"--n-train + --n-test = {n_train + n_test} is more than the {n_rows} rows of the data")
    return n_train, n_test


def _one_hot(y: np.ndarray, n_train: int, source: str):
    if y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and np.all(y.sum(1) == 1)):
            raise ValueError(f"classification targets must be one label per row (or one-hot rows), got shape "
                             f"{y.shape} ({source}); use --task regression for several real-valued targets")
        y = np.argmax(y, 1)
    if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    classes, labels = np.unique(y.astype(str) if y.dtype.kind in "US" else y, return_inverse=True)
    k = len(classes)
    if k < 2:
        raise ValueError(f"classification needs at least two classes, the targets hold one ({classes[0]!r}) "
                         f"({source})")
    if k > n_train // 2:
        raise ValueError(f"{k} classes for {n_train} training rows: too many classes (is this a regression "
                         f"target? use --task regression) ({source})")
    if len(np.unique(labels[:n_train])) < 2:
        raise ValueError(f"the training split holds a single class ({source}); use more training rows")
    eye = np.eye(k) - 1.0 / k
    return eye[labels[:n_train]], eye[labels[n_train:]], tuple(str(c) for c in classes)


def _standardised(y: np.ndarray, n_train: int, source: str):
    if y.dtype.kind in "US":
        raise ValueError(f"regression needs numeric targets, got strings such as {str(y.flat[0])!r} ({source}); "
                         "use --task classification")
    y = y.astype(np.float64).reshape(len(y), -1)
    mean, std = y[:n_train].mean(0), y[:n_train].std(0)
    if np.any(std == 0):
        raise ValueError(f"a regression target is constant over the training rows ({source})")
    y = (y - mean) / std
    return y[:n_train], y[n_train:], (tuple(float(m) for m in mean), tuple(float(s) for s in std))
