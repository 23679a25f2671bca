"""`ntkit.solve.kernel_ridge` against a float64 SciPy solve: dense, lazy (counted reads, Zarr), matrix-free, errors."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ntkit.nn as stax
from ntkit.solve import KernelOperator, SolverOptions, kernel_ridge, matmul
from ntkit.solve._operator import Lazy
from tests.tolerance import cond_rtol

N = 300


def _relu_net():
    return stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1))[2]


@pytest.fixture(scope="module")
def problem():
    """A ReLU NTK on N random points (computed in float64 by NumPy from the arc-cosine closed form, independent of
    ntkit), two target columns, and the float64 SciPy solution for a ridge of 1e-3 of the mean diagonal."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 5))
    k = _arccos_ntk(x, x)
    y = np.stack([np.sin(x.sum(1)), np.cos(x[:, 0])], axis=1)
    ridge = 1e-3 * float(np.mean(np.diag(k)))
    a = k + ridge * np.eye(N)
    exact = scipy.linalg.solve(a, y, assume_a="pos")
    cond = float(np.linalg.cond(a))
    return x, k, y, ridge, exact, cond


def _arccos_ntk(x1, x2, w=1.5, b=0.1):
    """NTK of Dense(W_std=w, b_std=b) → ReLU → Dense(w, b), with the NNGP recursion of Cho & Saul (2009)."""
    d = x1.shape[1]
    k12 = w**2 * x1 @ x2.T / d + b**2
    k11 = w**2 * np.sum(x1 * x1, 1) / d + b**2
    k22 = w**2 * np.sum(x2 * x2, 1) / d + b**2
    norm = np.sqrt(np.outer(k11, k22))
    c = np.clip(k12 / norm, -1, 1)
    theta = np.arccos(c)
    if x1 is x2:
        np.fill_diagonal(theta, 0.0)  # exactly: arccos loses √eps near c = 1
    nngp = norm * (np.sin(theta) + (np.pi - theta) * c) / (2 * np.pi)
    dot = (np.pi - theta) / (2 * np.pi)
    return w**2 * nngp + b**2 + w**2 * dot * k12


def _rtol(dtype, cond, tol):
    """Normwise error bound of α from a relative residual `tol`: `cond · tol`, plus the rounding of a solve."""
    return 2 * cond * tol + cond_rtol(dtype, cond)


def _check(result, exact, dtype, cond, tol):
    w = np.asarray(result.weights, np.float64)
    err = np.linalg.norm(w - exact) / np.linalg.norm(exact)
    assert err <= _rtol(dtype, cond, tol), (err, _rtol(dtype, cond, tol), result.info)


def test_ntk_matches_independent_closed_form(dtype):
    x = np.random.default_rng(1).normal(size=(7, 5))
    got = np.asarray(_relu_net()(jnp.asarray(x, dtype), None, "ntk"))
    want = _arccos_ntk(x, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=cond_rtol(dtype, 1.0, 100) * np.abs(want).max())


@pytest.mark.parametrize("preconditioner", ["nystrom", "none"])
def test_cg_matches_scipy(problem, dtype, preconditioner):
    _, k, y, ridge, exact, cond = problem
    tol = 1e-9 if dtype == jnp.float64 else 1e-4
    out = kernel_ridge(jnp.asarray(k, dtype), jnp.asarray(y, dtype), ridge, method="cg", tol=tol,
                       preconditioner=preconditioner, rank=100)
    assert out.info.method == "cg" and out.info.converged and out.weights.dtype == dtype
    assert out.info.residuals[-1] == out.info.residual <= tol and len(out.info.residuals) == out.info.iterations + 1
    assert out.info.rank == (100 if preconditioner == "nystrom" else 0)
    _check(out, exact, dtype, cond, tol)


def test_nystrom_cuts_iterations(problem):
    _, k, y, ridge, _, _ = problem
    plain = kernel_ridge(k, y, ridge, method="cg", preconditioner="none", tol=1e-8)
    pre = kernel_ridge(k, y, ridge, method="cg", rank=100, tol=1e-8)
    assert pre.info.iterations * 3 < plain.info.iterations, (pre.info.iterations, plain.info.iterations)


def test_cholesky_and_auto_match_scipy(problem, dtype):
    _, k, y, ridge, exact, cond = problem
    for method in ("cholesky", "auto"):
        out = kernel_ridge(jnp.asarray(k, dtype), jnp.asarray(y[:, 0], dtype), ridge, method=method)
        assert out.info.method == "cholesky" and out.weights.shape == (N,)  # small: auto picks Cholesky
        _check(out, exact[:, 0], dtype, cond, 0.0)


class CountingArray:
    """A NumPy-backed lazy 2-D array recording every read (the slicing contract of Zarr / `ntkit.jobs.open`)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.reads = a, a.shape, a.dtype, []

    def __getitem__(self, index):
        rows, cols = index
        assert isinstance(rows, slice) and isinstance(cols, slice)
        block = self.a[rows, cols]
        self.reads.append(block.size)
        return block.copy()


def test_lazy_array_is_streamed(problem):
    _, k, y, ridge, exact, cond = problem
    lazy = CountingArray(k)
    block_bytes = 40 * N * 8  # 40 rows per block
    out = kernel_ridge(lazy, y, ridge, method="cg", rank=50, tol=1e-9, block_bytes=block_bytes)
    _check(out, exact, np.float64, cond, 1e-9)
    assert max(lazy.reads) <= 40 * N < N * N  # never read whole at once
    # one pass per product, at most one for the pivot rows (one round of RPCholesky for rank ≤ 128), and the
    # diagonal blocks (N × 40 elements)
    passes = sum(lazy.reads) / (N * N)
    assert passes <= out.info.iterations + 1 + 40 / N, passes


class UpperTiles(CountingArray):
    """A store holding only the tiles on and above the diagonal (`ntkit.jobs`' symmetric jobs). Strict: only whole
    stored tiles may be read (lower ones read as NaN), so a product must mirror them itself, reading each stored
    tile once. Otherwise it reads any block, as `ntkit.jobs.open` does by mirroring."""

    def __init__(self, a, tile, strict):
        super().__init__(a)
        self.upper_tile, self.strict = tile, strict

    def __getitem__(self, index):
        block = super().__getitem__(index)
        if self.strict:
            rows, cols = index
            assert rows.start % self.upper_tile == 0 and cols.start % self.upper_tile == 0, "reads whole tiles"
            if rows.start > cols.start:
                block[:] = np.nan
        return block


def test_symmetric_store_is_read_once_per_product(problem):
    _, k, y, ridge, exact, cond = problem
    tile = 64  # N = 300: a ragged last tile
    upper = UpperTiles(k, tile, strict=True)
    v = np.random.default_rng(3).normal(size=(N, 2))
    np.testing.assert_allclose(matmul(upper, v), k @ v, rtol=1e-12, atol=1e-12 * np.abs(k).max())
    n_tiles = -(-N // tile)
    assert len(upper.reads) == n_tiles * (n_tiles + 1) // 2  # each stored tile once
    # the whole solve (diagonal, pivot rows, products) reads stored tiles only
    lazy = UpperTiles(k, tile, strict=True)
    out = kernel_ridge(lazy, y, ridge, method="cg", rank=50, tol=1e-9)
    _check(out, exact, np.float64, cond, 1e-9)
    # per product the stored tiles (half the matrix and half the diagonal tiles); besides, the diagonal tiles and
    # one pass over the stored tiles for the pivot rows (one round of RPCholesky for rank ≤ 128)
    diagonal_tiles = sum(min(tile, N - i) ** 2 for i in range(0, N, tile))
    per_product = (N * N + diagonal_tiles) / 2
    assert sum(lazy.reads) <= (out.info.iterations + 1) * per_product + diagonal_tiles + per_product


def test_symmetric_store_rows_read_each_tile_at_most_once(problem):
    k = np.triu(problem[1]) + np.triu(problem[1], 1).T  # exactly symmetric: mirrored entries compare bit for bit
    tile = 64
    n_tiles = -(-N // tile)
    idx = np.array([3, 70, 71, 299, 128])  # in row tiles 0, 1, 4, 2: tile 3 untouched
    upper = UpperTiles(k, tile, strict=True)
    op = Lazy(upper)
    for _ in range(2):  # the second pass runs in reverse order
        np.testing.assert_array_equal(op.rows(idx), k[idx])
    # each time every stored tile but the one, (3, 3), that touches none of the rows, read once
    assert len(upper.reads) == 2 * (n_tiles * (n_tiles + 1) // 2 - 1)
    half = len(upper.reads) // 2
    assert upper.reads[half:] == upper.reads[:half][::-1] != upper.reads[:half]


def test_zarr_array(problem, tmp_path):
    zarr = pytest.importorskip("zarr")
    _, k, y, ridge, exact, cond = problem
    z = zarr.create_array(str(tmp_path / "k.zarr"), shape=k.shape, chunks=(64, 64), dtype="float64")
    z[:] = k
    out = kernel_ridge(zarr.open_array(str(tmp_path / "k.zarr"), mode="r"), y, ridge, method="cg", tol=1e-9,
                       block_bytes=64 * N * 8)
    _check(out, exact, np.float64, cond, 1e-9)
    np.testing.assert_allclose(np.asarray(matmul(z, np.asarray(out.weights))), k @ np.asarray(out.weights),
                               rtol=1e-12)


def test_matrix_free_matches_dense(dtype):
    kernel_fn = _relu_net()
    x = jnp.asarray(np.random.default_rng(2).normal(size=(150, 5)), dtype)
    y = jnp.sin(x.sum(1))
    k = np.asarray(kernel_fn(x, None, "ntk"), np.float64)
    ridge = 1e-2 * float(np.mean(np.diag(k)))
    a = k + ridge * np.eye(150)
    exact, cond = scipy.linalg.solve(a, np.asarray(y, np.float64), assume_a="pos"), float(np.linalg.cond(a))
    op = KernelOperator(kernel_fn, x, get="ntk", block_size=40)
    np.testing.assert_allclose(op.matmul(np.ones(150)), k.sum(1), rtol=cond_rtol(dtype, 1.0, 150))
    tol = 1e-9 if dtype == jnp.float64 else 1e-4
    for kk in (op, (kernel_fn, x, "ntk")):
        out = kernel_ridge(kk, y, ridge, method="cg", tol=tol, rank=30)
        assert out.info.converged
        # the kernel itself is computed in `dtype`: its rounding enters like that of a solve
        _check(out, exact, dtype, cond, tol)
    out = kernel_ridge(op, y, ridge, method="cholesky")
    _check(out, exact, dtype, cond, 0.0)


def test_not_converged_warns_or_raises(problem):
    _, k, y, ridge, _, _ = problem
    with pytest.warns(UserWarning, match="did not converge in 2 iterations"):
        out = kernel_ridge(k, y, ridge, method="cg", preconditioner="none", maxiter=2, tol=1e-12)
    assert not out.info.converged and out.info.iterations == 2
    with pytest.raises(RuntimeError, match="did not converge"):
        kernel_ridge(k, y, ridge, method="cg", preconditioner="none", maxiter=2, tol=1e-12, not_converged="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = kernel_ridge(k, y, ridge, method="cg", rank=5, maxiter=2, tol=1e-12, not_converged="ignore")
    assert not out.info.converged


def test_bad_inputs(problem):
    _, k, y, ridge, _, _ = problem
    with pytest.raises(ValueError, match="`ridge` must be a finite non-negative"):
        kernel_ridge(k, y, -1.0)
    with pytest.raises(ValueError, match="`y` must have shape"):
        kernel_ridge(k, y[:-1], ridge)
    with pytest.raises(ValueError, match="`y` must have shape"):
        kernel_ridge(k, y[:, :, None], ridge)
    with pytest.raises(ValueError, match="square"):
        kernel_ridge(k[:, :-1], y, ridge)
    bad = k.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kernel_ridge(bad, y, ridge)
    with pytest.raises(ValueError, match="NaN"):
        kernel_ridge(CountingArray(bad), y, ridge, method="cg")
    ynan = y.copy()
    ynan[0, 0] = np.inf
    with pytest.raises(ValueError, match="`y` contains NaN"):
        kernel_ridge(k, ynan, ridge)
    asym = k + np.triu(np.full_like(k, 0.1), 1)
    for method in ("cholesky", "cg"):
        with pytest.raises(ValueError, match="symmetric"):
            kernel_ridge(asym, y, ridge, method=method)
    indefinite = k - 2 * np.linalg.eigvalsh(k)[-1] * np.outer(np.ones(N), np.ones(N)) / N
    for method in ("cholesky", "cg"):
        with pytest.raises(ValueError, match="not positive (semi-)?definite"):
            kernel_ridge(indefinite, y, ridge, method=method, preconditioner="none")
    with pytest.raises(ValueError, match="negative diagonal"):
        kernel_ridge(-k, y, ridge, method="cg")
    with pytest.raises(ValueError, match="`method`"):
        kernel_ridge(k, y, ridge, method="lu")
    with pytest.raises(ValueError, match="`preconditioner`"):
        SolverOptions(preconditioner="jacobi")
    with pytest.raises(ValueError, match="`tol`"):
        kernel_ridge(k, y, ridge, tol=0.0)
    with pytest.raises(TypeError, match="`k` must be an array"):
        kernel_ridge("k.npy", y, ridge)


def test_auto_picks_cg_when_the_matrix_does_not_fit(problem, monkeypatch):
    import ntkit.solve._operator as operator

    _, k, y, ridge, exact, cond = problem
    monkeypatch.setattr(operator, "memory_budget_bytes", lambda: 2.9 * N * N * 8)  # < 3 dense copies
    out = kernel_ridge(k, y, ridge, method="auto", tol=1e-9)
    assert out.info.method == "cg"
    _check(out, exact, np.float64, cond, 1e-9)
    monkeypatch.setattr(operator, "memory_budget_bytes", lambda: 3.1 * N * N * 8)
    assert kernel_ridge(k, y, ridge, method="auto").info.method == "cholesky"


def test_rank_reduced_to_the_memory_budget_with_a_warning(problem, monkeypatch):
    import ntkit.solve._ridge as ridge_module

    _, k, y, ridge, exact, cond = problem
    # half the budget holds N × 40 float64 numbers and N × 40 of the kernel's: rank 40 at most
    monkeypatch.setattr(ridge_module, "memory_budget_bytes", lambda: 2 * 40 * N * (8 + k.dtype.itemsize))
    with pytest.warns(UserWarning, match="rank 100 reduced to 40"):
        out = kernel_ridge(k, y, ridge, method="cg", rank=100, tol=1e-9)
    assert out.info.rank == 40
    _check(out, exact, np.float64, cond, 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default rank is reduced quietly
        assert kernel_ridge(k, y, ridge, method="cg", tol=1e-9).info.rank == 40


def test_progress_bars_show_pivots_and_the_residual(problem, capsys):
    _, k, y, ridge, _, _ = problem
    out = kernel_ridge(k, y, ridge, method="cg", rank=50, tol=1e-9, progress=True)
    err = capsys.readouterr().err
    assert "Nyström pivots" in err and "conjugate gradients" in err
    assert f"residual={out.info.residual:.2e}" in err  # the last iteration's, left on screen
    kernel_ridge(k, y, ridge, method="cg", rank=50, tol=1e-9, progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="`progress`"):
        kernel_ridge(k, y, ridge, method="cg", progress="yes")
