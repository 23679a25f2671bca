"""Benchmark of `ntkit.solve.kernel_ridge`: CG + Nyström against a float64 Cholesky, and a matrix-free large-N solve.

Cases:
  dense   N training points (default 20,000) and 2,000 test points of a synthetic regression task (x ~ N(0, I_16),
          y = sin(x·w) + 0.1 noise), the analytic NTK of a fully-connected ReLU network (`ntkit.nn`, depth 2) in
          float64, ridge 1e-3 × mean diagonal. Times `kernel_ridge(method="cholesky")` (SciPy float64 Cholesky)
          and `kernel_ridge(method="cg")` (Nyström preconditioner from randomly pivoted Cholesky) on the same
          in-memory kernel, and the relative difference of their test predictions `K(x_test, X) α`.
  large   N (default 100,000) points of the same task, float32, solved matrix-free: a `KernelOperator` recomputes
          the kernel tile by tile at every CG product (nothing N × N is ever stored). Reports time, iterations
          and peak memory (`resource.getrusage`).
  store   N (default 100,000) points of the same task, float32: the kernel computed once by `ntkit.jobs.kernel_job`
          into a Zarr store on disk (only tiles on and above the diagonal), then solved by CG reading the store
          (`ntkit.jobs.open`; each stored tile read once per product). Reports the job's time and store size, the
          solve's time, iterations and residual history, the true relative residual `‖y − (K + μI) α‖ / ‖y‖`
          (one more product, float64) and the peak memory of the process.

The kernel computation is timed apart from the solves. Runs in float64 (`jax_enable_x64`, set here for the
benchmark process only).

Usage: python benchmarks/kernel_ridge.py --out benchmarks/results [--cases dense,large,store] [--n 20000]
       [--n-large 100000] [--rank 1000] [--maxiter 300] [--store-dir DIR] [--store PATH] [--ridge-factor F] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from _report import machine, write

CASES = ("dense", "large", "store")
D = 16


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def _task(n: int, n_test: int, dtype):
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.normal(size=D) / np.sqrt(D)
    x = rng.normal(size=(n + n_test, D))
    y = np.sin(x @ w) + 0.1 * rng.normal(size=n + n_test)
    return x[:n].astype(dtype), y[:n], x[n:].astype(dtype), y[n:]


def _kernel_fn():
    import ntkit.nn as stax

    return stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(512, W_std=1.5, b_std=0.1),
                       stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1))[2]


def _dense(n: int, n_test: int, rank: int, tol: float) -> dict:
    import numpy as np

    from ntkit.solve import kernel_ridge

    kernel_fn = _kernel_fn()
    x, y, x_test, y_test = _task(n, n_test, np.float64)
    start = time.perf_counter()
    k = np.asarray(kernel_fn(x, None, "ntk"))
    k_test = np.asarray(kernel_fn(x_test, x, "ntk"))
    kernel_s = time.perf_counter() - start
    ridge = 1e-3 * float(np.mean(np.diag(k)))
    start = time.perf_counter()
    chol = kernel_ridge(k, y, ridge, method="cholesky")
    chol_s = time.perf_counter() - start
    start = time.perf_counter()
    cg = kernel_ridge(k, y, ridge, method="cg", rank=rank, tol=tol)
    cg_s = time.perf_counter() - start
    pred_chol, pred_cg = k_test @ chol.weights, k_test @ cg.weights
    rel = float(np.linalg.norm(pred_cg - pred_chol) / np.linalg.norm(pred_chol))
    return {"n_train": n, "n_test": n_test, "dtype": "float64", "ridge": ridge, "kernel_s": round(kernel_s, 2),
            "cholesky_s": round(chol_s, 2), "cg_s": round(cg_s, 2), "speedup": round(chol_s / cg_s, 2),
            "cg_iterations": cg.info.iterations, "cg_rank": cg.info.rank, "cg_tol": tol,
            "cg_converged": cg.info.converged, "test_prediction_rel_diff": rel,
            "test_mse_cholesky": float(np.mean((pred_chol - y_test) ** 2)),
            "test_mse_cg": float(np.mean((pred_cg - y_test) ** 2)), "peak_rss_gb": round(_peak_rss_gb(), 2)}


def _large(n: int, n_test: int, rank: int, block: int, maxiter: int) -> dict:
    import numpy as np

    from ntkit.solve import KernelOperator, kernel_ridge, matmul

    kernel_fn = _kernel_fn()
    x, y, x_test, y_test = _task(n, n_test, np.float32)
    op = KernelOperator(kernel_fn, x, get="ntk", block_size=block)
    start = time.perf_counter()
    ridge = 1e-3 * float(np.mean(op.diagonal()))
    result = kernel_ridge(op, y, ridge, method="cg", rank=rank, maxiter=maxiter, not_converged="warn")
    solve_s = time.perf_counter() - start
    pred = np.asarray(matmul(KernelOperator(kernel_fn, x_test, x, get="ntk", block_size=block), result.weights))
    total_s = time.perf_counter() - start
    return {"n_train": n, "n_test": n_test, "dtype": "float32", "ridge": ridge, "block_size": block,
            "solve_s": round(solve_s, 1), "total_s": round(total_s, 1), "iterations": result.info.iterations,
            "rank": result.info.rank, "tol": result.info.tol, "converged": result.info.converged,
            "residual": result.info.residual, "test_mse": float(np.mean((pred - y_test) ** 2)),
            "peak_rss_gb": round(_peak_rss_gb(), 2)}


def _store(n: int, n_test: int, rank: int, tile: int, maxiter: int, store_dir: str, keep: str | None = None,
           ridge_factor: float = 1e-3) -> dict:
    import shutil
    import tempfile

    import numpy as np

    from ntkit import jobs
    from ntkit.solve import KernelOperator, kernel_ridge, matmul

    kernel_fn = _kernel_fn()
    x, y, x_test, y_test = _task(n, n_test, np.float32)
    folder = tempfile.mkdtemp(prefix="ntkit-kernel-ridge-", dir=store_dir) if keep is None else None
    store = os.path.join(folder, "k.zarr") if keep is None else keep
    reused = keep is not None and os.path.exists(keep) and jobs.status(keep).complete
    try:
        start = time.perf_counter()
        jobs.kernel_job(kernel_fn, x, store=store, get="ntk", tile=tile, progress=False)  # resumes a kept store
        job_s = time.perf_counter() - start
        size_gb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store) for f in fs) / 2**30
        k = jobs.open(store, get="ntk")
        start = time.perf_counter()
        # the mean diagonal from 1,000 examples (single entries of the store would each read a whole tile)
        ridge = ridge_factor * float(np.mean(np.diag(np.asarray(kernel_fn(x[::max(1, n // 1000)], None, "ntk")))))
        result = kernel_ridge(k, y, ridge, method="cg", rank=rank, maxiter=maxiter, not_converged="warn",
                              progress=True)
        solve_s = time.perf_counter() - start
        # the residual CG tracks is a recurrence: check it with one more product, in float64
        alpha = result.weights
        true = y - (matmul(k, alpha).astype(np.float64) + ridge * alpha.astype(np.float64))
        true_residual = float(np.linalg.norm(true) / np.linalg.norm(y))
        pred = np.asarray(matmul(KernelOperator(kernel_fn, x_test, x, get="ntk", block_size=4096), result.weights))
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return {"n_train": n, "n_test": n_test, "dtype": "float32", "ridge": ridge, "ridge_factor": ridge_factor,
            "tile": tile, "store_reused": reused, "job_s": round(job_s, 1), "store_gb": round(size_gb, 2),
            "solve_s": round(solve_s, 1),
            "iterations": result.info.iterations, "rank": result.info.rank, "tol": result.info.tol,
            "converged": result.info.converged, "residual": result.info.residual, "true_residual": true_residual,
            "residuals": [float(f"{r:.3g}") for r in result.info.residuals],
            "test_mse": float(np.mean((pred - y_test) ** 2)), "peak_rss_gb": round(_peak_rss_gb(), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--n", type=int, default=20_000, help="training points of the dense case")
    parser.add_argument("--n-large", type=int, default=100_000, help="training points of the matrix-free case")
    parser.add_argument("--rank", type=int, default=1000, help="largest Nyström rank")
    parser.add_argument("--tol", type=float, default=1e-6, help="CG tolerance of the dense case")
    parser.add_argument("--block", type=int, default=4096, help="tile size of the matrix-free case")
    parser.add_argument("--maxiter", type=int, default=300, help="CG iterations of the matrix-free case at most")
    parser.add_argument("--tile", type=int, default=4096, help="tile of the store case's kernel job")
    parser.add_argument("--store-dir", default=None, help="where the store case writes its Zarr store (a temporary "
                                                         "folder in it, deleted after; default the system's)")
    parser.add_argument("--store", default=None, help="the store case's Zarr store, kept after (a finished one is "
                                                     "reused: its job time is then only the check)")
    parser.add_argument("--ridge-factor", type=float, default=1e-3, help="ridge of the store case, times the mean "
                                                                         "diagonal")
    parser.add_argument("--quick", action="store_true", help="N = 2,000 and 5,000")
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)  # the float64 reference; this benchmark process only
    if args.quick:
        args.n, args.n_large = 2000, 5000
    results = {"machine": machine(),
               "quick": args.quick}
    for case in args.cases.split(","):
        print(f"{case} ...", flush=True)
        if case == "dense":
            results[case] = _dense(args.n, 2000, args.rank, args.tol)
        elif case == "large":
            results[case] = _large(args.n_large, 2000, args.rank, args.block, args.maxiter)
        elif case == "store":
            results[case] = _store(args.n_large, 2000, args.rank, args.tile, args.maxiter, args.store_dir,
                                   args.store, args.ridge_factor)
        else:
            raise SystemExit(f"unknown case {case!r}; choose from {CASES}")
        print(json.dumps(results[case], indent=1), flush=True)
    write(args.out, "kernel_ridge", results)


if __name__ == "__main__":
    main()
