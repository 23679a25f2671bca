"""Benchmark of `ntkit.sklearn`: estimator and Gaussian-process timings, and NTK-SVM vs random forest accuracy.

Cases:
  classifier  `NTKClassifier` (depth-1 ReLU, b_std=0.1) fit + predict on all 1,797 digits (8x8 images), train on a
              random 80%, accuracy on the other 20%;
  gp          `GaussianProcessRegressor(NTKernel(depth=2, b_std=0.1) + WhiteKernel)` optimising W_std, b_std and
              the noise (exact gradients) on 1,000 points of the diabetes-like `make_friedman1` regression task;
  svm         nested cross-validation accuracy of `SVC(kernel=NTKernel(...))` (C and depth chosen in the inner loop)
              against a random forest (n_estimators chosen likewise) on iris, wine, breast_cancer and digits.

Runs in float64 (`jax_enable_x64`, set here for the benchmark process only). `--quick` shrinks every case.

Usage: python benchmarks/sklearn_estimators.py --out benchmarks/results [--quick] [--cases classifier,gp,svm]
"""

from __future__ import annotations

import argparse
import json
import time

from _report import machine, write

CASES = ("classifier", "gp", "svm")


def _classifier(quick: bool) -> dict:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from ntkit.sklearn import NTKClassifier

    X, y = load_digits(return_X_y=True)
    if quick:
        X, y = X[:300], y[:300]
    X = StandardScaler().fit_transform(X)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    start = time.perf_counter()
    clf = NTKClassifier(depth=1, b_std=0.1).fit(X_train, y_train)
    fitted = time.perf_counter()
    accuracy = float(np.mean(clf.predict(X_test) == y_test))
    done = time.perf_counter()
    return {"n_train": len(y_train), "n_test": len(y_test), "fit_s": round(fitted - start, 3),
            "predict_s": round(done - fitted, 3), "total_s": round(done - start, 3), "test_accuracy": accuracy}


def _gp(quick: bool) -> dict:
    from sklearn.datasets import make_friedman1
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel

    from ntkit.sklearn import NTKernel

    n = 200 if quick else 1000
    X, y = make_friedman1(n_samples=n + 200, noise=0.5, random_state=0)
    kernel = NTKernel(depth=2, W_std=1.0, b_std=0.1) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0)
    start = time.perf_counter()
    gp.fit(X[:n], y[:n])
    fitted = time.perf_counter()
    r2 = float(gp.score(X[n:], y[n:]))
    return {"n_train": n, "fit_s": round(fitted - start, 3), "initial_log_marginal_likelihood":
            float(gp.log_marginal_likelihood(kernel.theta)), "final_log_marginal_likelihood":
            float(gp.log_marginal_likelihood_value_), "kernel": str(gp.kernel_), "test_r2": r2}


def _svm(quick: bool) -> dict:
    import numpy as np
    from sklearn import datasets
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from ntkit.sklearn import NTKernel

    out = {}
    for name in ("iris", "wine", "breast_cancer", "digits"):
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        if quick:
            X, y = X[:150], y[:150]
        outer = StratifiedKFold(5, shuffle=True, random_state=0)
        inner = StratifiedKFold(3, shuffle=True, random_state=1)
        svm = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel=NTKernel(b_std=0.1))),
                           {"svc__C": [0.1, 1.0, 10.0], "svc__kernel": [NTKernel(depth=d, b_std=0.1) for d in (1, 3)]},
                           cv=inner)
        forest = GridSearchCV(RandomForestClassifier(random_state=0), {"n_estimators": [100, 300]}, cv=inner)
        start = time.perf_counter()
        svm_scores = cross_val_score(svm, X, y, cv=outer)
        mid = time.perf_counter()
        forest_scores = cross_val_score(forest, X, y, cv=outer)
        out[name] = {"ntk_svm": float(np.mean(svm_scores)), "random_forest": float(np.mean(forest_scores)),
                     "ntk_svm_s": round(mid - start, 2), "random_forest_s": round(time.perf_counter() - mid, 2)}
    out["mean"] = {k: float(np.mean([v[k] for v in out.values()])) for k in ("ntk_svm", "random_forest")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)  # GPs want float64; this benchmark process only
    results = {"machine": machine(),
               "quick": args.quick}
    for case in args.cases.split(","):
        print(f"{case} ...", flush=True)
        results[case] = {"classifier": _classifier, "gp": _gp, "svm": _svm}[case](args.quick)
        print(json.dumps(results[case], indent=1), flush=True)
    write(args.out, "sklearn_estimators", results)


if __name__ == "__main__":
    main()
