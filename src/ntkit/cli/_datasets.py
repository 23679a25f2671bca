"""Small data sets that ship with scikit-learn (no download), standardised for kernels."""

from __future__ import annotations

import numpy as np

_LOADERS = ("digits", "iris", "wine", "breast_cancer")


def load_dataset(name: str, n_train: int, n_test: int, seed: int = 0):
    """Returns `(x_train, y_train, x_test, y_test, n_classes)` with one-hot, zero-mean targets.

    Inputs are standardised per feature and scaled so that `‖x‖² = d` on average (docs/theory.md §2's convention);
    targets are one-hot minus `1/k`, so that the mean output is zero, as for a network at initialisation.
    """
    from sklearn import datasets

    if name not in _LOADERS:
        raise ValueError(f"`dataset` must be one of {_LOADERS}, got {name!r}.")
    bunch = getattr(datasets, f"load_{name}")()
    x, labels = np.asarray(bunch.data, np.float64), np.asarray(bunch.target)
    if n_train < 2 or n_test < 1:
        raise ValueError(f"`n_train` must be ≥ 2 and `n_test` ≥ 1, got {n_train} and {n_test}.")
    if n_train + n_test > len(x):
        raise ValueError(f"`{name}` has {len(x)} examples; `n_train + n_test` = {n_train + n_test} is too many.")
    order = np.random.default_rng(seed).permutation(len(x))
    x, labels = x[order], labels[order]
    x_train, x_test = x[:n_train], x[n_train:n_train + n_test]
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n_classes = int(labels.max()) + 1
    eye = np.eye(n_classes) - 1.0 / n_classes
    return x_train, eye[labels[:n_train]], x_test, eye[labels[n_train:n_train + n_test]], n_classes
