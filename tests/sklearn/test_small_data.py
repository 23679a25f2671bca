"""Kernel SVMs with `NTKernel` against random forests on scikit-learn's bundled data sets (Arora et al. 2020,
"Harnessing the power of infinitely wide deep nets on small-data tasks"), under nested cross-validation."""

import numpy as np
import pytest
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ntkit.sklearn import NTKernel


def _nested_accuracy(model, grid, X, y):
    inner = StratifiedKFold(3, shuffle=True, random_state=1)
    outer = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(np.mean(cross_val_score(GridSearchCV(model, grid, cv=inner), X, y, cv=outer)))


@pytest.mark.slow
def test_ntk_svm_at_least_as_accurate_as_a_random_forest_on_average():
    svm, forest = [], []
    for name in ("iris", "wine", "breast_cancer", "digits"):
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        svm.append(_nested_accuracy(
            make_pipeline(StandardScaler(), SVC(kernel=NTKernel(b_std=0.1))),
            {"svc__C": [0.1, 1.0, 10.0], "svc__kernel": [NTKernel(depth=d, b_std=0.1) for d in (1, 3)]}, X, y))
        forest.append(_nested_accuracy(RandomForestClassifier(random_state=0), {"n_estimators": [100, 300]}, X, y))
    assert min(svm) > 0.9
    assert np.mean(svm) >= np.mean(forest)
