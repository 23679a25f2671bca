"""`ntkit.jobs`: tiled kernels in a Zarr store against the in-memory kernels, resumption, identity, bad inputs."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zarr

import ntkit
import ntkit.nn as stax
from ntkit import jobs
from ntkit.jobs import _job
from tests.tolerance import assert_close

from ._common import inputs, network


def _x(n, dtype, seed=0):
    return inputs(n, dtype=np.dtype(dtype), seed=seed)


def test_symmetric_job_matches_in_memory_kernel(tmp_path, dtype):
    layer, x = network(), _x(13, dtype)
    state = jobs.kernel_job(layer, x, store=tmp_path / "k.zarr", tile=4, progress=False)
    assert state.complete and state.symmetric and state.shape == (13, 13) and state.tile == 4
    assert state.tiles_total == state.tiles_done == 10  # 4 row tiles (4, 4, 4, 1): 4 + 3 + 2 + 1 on and above
    for g in ("nngp", "ntk"):
        k = jobs.load(tmp_path / "k.zarr", g)
        assert k.shape == (13, 13) and k.dtype == np.dtype(dtype)
        assert_close(k, layer.kernel(x, None, g), dtype)
        edges = [0, 4, 8, 12, 13]
        for i in range(4):  # tiles below the diagonal are the ones above, transposed
            for j in range(i):
                np.testing.assert_array_equal(k[edges[i]:edges[i + 1], edges[j]:edges[j + 1]],
                                              k[edges[j]:edges[j + 1], edges[i]:edges[i + 1]].T)
    # only tiles on and above the diagonal were written
    stored = zarr.open_group(str(tmp_path / "k.zarr"), mode="r")["ntk"]
    assert stored.nchunks_initialized == 10
    assert not np.any(np.asarray(stored[4:, :4]))


def test_rectangular_job_matches_in_memory_kernel(tmp_path, dtype):
    layer, x1, x2 = network(), _x(11, dtype), _x(6, dtype, seed=1)
    state = jobs.kernel_job(layer, x1, x2, store=str(tmp_path / "k.zarr"), get="ntk", tile=4, progress=False)
    assert not state.symmetric and state.tiles_total == 6 and state.get == ("ntk",)
    assert_close(jobs.load(tmp_path / "k.zarr"), layer.kernel(x1, x2, "ntk"), dtype)
    with pytest.raises(ValueError, match="stored \\('ntk',\\), not 'nngp'"):
        jobs.load(tmp_path / "k.zarr", "nngp")


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_kernel_fn_from_triple_and_url(tmp_path, dtype, scheme):
    layer, x = network(), _x(7, dtype)
    _, _, kernel_fn = layer
    url = f"{scheme}://{tmp_path}/k.zarr"
    jobs.kernel_job(kernel_fn, x, store=url, get="nngp", tile=3, progress=False)
    assert_close(jobs.load(url, "nngp"), layer.kernel(x, None, "nngp"), dtype)
    # the layer and its kernel_fn are the same job
    assert jobs.kernel_job(layer, x, store=url, get="nngp", progress=False).complete


def test_resume_recomputes_only_missing_tiles_bit_identically(tmp_path, dtype, monkeypatch):
    layer, x = network(), _x(17, dtype)
    whole = jobs.kernel_job(layer, x, store=tmp_path / "a.zarr", tile=3, progress=False)
    jobs.kernel_job(layer, x, store=tmp_path / "b.zarr", tile=3, progress=False)
    # an interruption: some tiles not marked done, their chunks half-written garbage
    group = zarr.open_group(str(tmp_path / "b.zarr"), mode="r+")
    lost = [(0, 0), (1, 4), (2, 5), (5, 5)]
    for i, j in lost:
        group["done"][i, j] = 0
        for g in ("nngp", "ntk"):
            group[g][3 * i:3 * i + 3, 3 * j:3 * j + 3] = np.nan
    assert jobs.status(tmp_path / "b.zarr").tiles_done == whole.tiles_total - len(lost)
    with pytest.raises(ValueError, match=f"{len(lost)} of {whole.tiles_total} tiles missing.*Rerun"):
        jobs.load(tmp_path / "b.zarr")
    with pytest.raises(ValueError, match="incomplete"):
        jobs.open(tmp_path / "b.zarr", "nngp")
    computed = []
    run_tile = _job.run_tile
    monkeypatch.setattr(_job, "run_tile", lambda *a, **kw: computed.append(a[-2:]) or run_tile(*a, **kw))
    assert jobs.kernel_job(layer, x, store=tmp_path / "b.zarr", progress=False).complete  # tile from the store
    assert sorted(computed) == sorted(lost)
    for g in ("nngp", "ntk"):
        np.testing.assert_array_equal(jobs.load(tmp_path / "b.zarr", g), jobs.load(tmp_path / "a.zarr", g))


def test_mismatched_job_refused(tmp_path, dtype):
    layer, x = network(), _x(9, dtype)
    store = tmp_path / "k.zarr"
    jobs.kernel_job(layer, x, store=store, tile=4, progress=False)
    other_x = x.copy()
    other_x[3, 2] += 1
    cases = [
        (dict(kernel_fn=layer, x1=other_x), "x1: store has"),
        (dict(kernel_fn=stax.serial(stax.Dense(64, W_std=1.5, b_std=0.1), stax.Erf(), stax.Dense(1, W_std=1.5)),
              x1=x), "kernel: store has"),
        (dict(kernel_fn=layer, x1=x, get="ntk"), "get: store has"),
        (dict(kernel_fn=layer, x1=x, tile=3), "tile: store has 4, this job has 3"),
        (dict(kernel_fn=layer, x1=x, x2=x), "x2: store has None"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=f"holds another kernel job.*{message}"):
            jobs.kernel_job(**kwargs, store=store, progress=False)
    assert jobs.status(store).complete  # untouched
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a store")
    with pytest.raises(ValueError, match="exists and is not a kernel job store"):
        jobs.kernel_job(layer, x, store=tmp_path / "other", progress=False)
    zarr.create_group(str(tmp_path / "plain.zarr"))
    with pytest.raises(ValueError, match="not a kernel job store"):
        jobs.kernel_job(layer, x, store=tmp_path / "plain.zarr", progress=False)
    with pytest.raises(ValueError, match="no kernel job store"):
        jobs.status(tmp_path / "missing.zarr")


def test_bad_arguments_refused(tmp_path, dtype):
    layer, x = network(), _x(6, dtype)
    store = tmp_path / "k.zarr"
    nan_x = x.copy()
    nan_x[2, 1] = np.nan
    for kwargs, error, message in [
        (dict(get="ntx"), ValueError, "`get` must be one of"),
        (dict(x1=nan_x), ValueError, "`x1` contains NaN"),
        (dict(x2=_x(3, dtype)[:, :4]), ValueError, "same shape past the batch axis"),
        (dict(tile=0), ValueError, "`tile` must be a positive integer"),
        (dict(tile=2.5), ValueError, "`tile` must be a positive integer"),
        (dict(memory_limit=-1.0), ValueError, "`memory_limit` must be a positive number"),
        (dict(memory_limit=10.0), ValueError, "below the"),
        (dict(params={"w": jnp.ones(3)}), ValueError, "analytic `ntkit.nn` kernel takes none"),
        (dict(kernel_fn=ntkit.empirical_kernel_fn(lambda p, x: x @ p)), ValueError, "`params` is required"),
        (dict(kernel_fn=3), TypeError, "`kernel_fn` must be"),
        (dict(kernel_fn=ntkit.empirical_kernel_fn(lambda p, x: x @ p, trace_axes=()), params=jnp.ones((5, 2), dtype)),
         ValueError, "store `\\(N1, N2\\)` kernels.*shape \\(1, 1, 2, 2\\)"),
        (dict(store=3), TypeError, "`store` must be a path"),
    ]:
        args = dict(kernel_fn=layer, x1=x, store=store, progress=False) | kwargs
        with pytest.raises(error, match=message):
            jobs.kernel_job(**args)
    assert not store.exists()


def test_memory_limit_plans_even_tiles(tmp_path, dtype):
    layer, x = network(), _x(24, dtype)
    state = jobs.kernel_job(layer, x, store=tmp_path / "k.zarr", memory_limit=3e3, progress=False)
    small = state.tile
    assert 1 <= small < 24
    assert -(-24 // small) * small - 24 < -(-24 // small)  # evened out: the last tile is at most one short
    assert_close(jobs.load(tmp_path / "k.zarr"), layer.kernel(x, None, "ntk"), dtype)


def test_open_slices_like_the_whole_kernel(tmp_path, dtype):
    layer, x = network(), _x(14, dtype)
    jobs.kernel_job(layer, x, store=tmp_path / "k.zarr", tile=4, progress=False)
    whole = np.asarray(layer.kernel(x, None, "ntk"))
    lazy = jobs.open(tmp_path / "k.zarr", "ntk")
    assert lazy.shape == (14, 14) and lazy.ndim == 2 and lazy.dtype == np.dtype(dtype) and len(lazy) == 14
    full = lazy[:, :]
    assert_close(full, whole, dtype)
    for key in [np.s_[2:11, 0:14], np.s_[5:6, 3:13], np.s_[9:14, 0:3], np.s_[::3, 1::2], np.s_[::-2, 4:1:-1],
                np.s_[7, 2:9], np.s_[3:12, 10], np.s_[-1, -3], np.s_[4:8], np.s_[3:3, :]]:
        np.testing.assert_array_equal(lazy[key], full[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(lazy), full)
    with pytest.raises(IndexError):
        lazy[0, 0, 0]
    with pytest.raises(IndexError):
        lazy[14, 0]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lazy))[1:9, 2:5], full[1:9, 2:5])
    np.testing.assert_array_equal(lazy.to_dask().compute(), full)


def _brute_force_kernels(f, params, x1, x2):
    """NNGP `f fᵀ` and NTK `J Jᵀ` from explicit Jacobians (averaged over the outputs), in NumPy."""
    def jac(x):
        leaves = jax.tree_util.tree_leaves(jax.jacrev(f)(params, x))
        return np.concatenate([np.asarray(leaf).reshape(x.shape[0], f(params, x).shape[1], -1) for leaf in leaves],
                              axis=-1)

    f1, f2 = np.asarray(f(params, x1)), np.asarray(f(params, x2))
    j1, j2 = jac(x1), jac(x2)
    outputs = f1.shape[1]
    return f1 @ f2.T / outputs, np.einsum("aop,bop->ab", j1, j2) / outputs


def test_empirical_kernel_with_params(tmp_path, dtype):
    def f(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"][None]) @ p["w2"]

    keys = jax.random.split(jax.random.key(3), 3)
    params = {"w1": jax.random.normal(keys[0], (5, 32), dtype) / np.sqrt(5).astype(dtype),
              "b1": 0.1 * jax.random.normal(keys[1], (32,), dtype),
              "w2": jax.random.normal(keys[2], (32, 3), dtype) / np.sqrt(32).astype(dtype)}
    x1, x2 = _x(10, dtype), _x(7, dtype, seed=2)
    kernel_fn = ntkit.empirical_kernel_fn(f, vmap_axes=0, implementation="jacobian")
    state = jobs.kernel_job(kernel_fn, x1, x2, store=tmp_path / "e.zarr", params=params, tile=4, progress=False)
    assert state.identity.kind == "empirical" and state.identity.params is not None
    nngp, ntk = _brute_force_kernels(f, params, x1, x2)
    assert_close(jobs.load(tmp_path / "e.zarr", "nngp"), nngp, dtype, scale=5)
    assert_close(jobs.load(tmp_path / "e.zarr", "ntk"), ntk, dtype, scale=5)
    # other parameters are another job
    moved = dict(params, b1=params["b1"] + jnp.asarray(0.5, dtype))
    with pytest.raises(ValueError, match="params: store has"):
        jobs.kernel_job(kernel_fn, x1, x2, store=tmp_path / "e.zarr", params=moved, progress=False)


def test_status_reports_the_job(tmp_path, dtype):
    layer, x = network(), _x(8, dtype)
    state = jobs.kernel_job(layer, x, store=tmp_path / "k.zarr", get="ntk", tile=3, progress=False)
    again = jobs.status(str(tmp_path / "k.zarr"))
    assert again == state
    assert again.identity.dtype == np.dtype(dtype).name and again.identity.x2 is None
    assert again.identity.kind == "analytic" and "Dense(out_dim=64" in again.identity.kernel
    assert "6/6 done (tile 3)" in again.summary()


def test_other_kernel_function_and_large_tile(tmp_path, dtype):
    layer, x1, x2 = network(), _x(7, dtype), _x(4, dtype, seed=5)
    state = jobs.kernel_job(lambda a, b, get: layer.kernel(a, b, get), x1, x2, store=tmp_path / "f.zarr", tile=100,
                            get="nngp", progress=False)
    assert state.identity.kind == "function" and state.tile == 7 and state.tiles_total == 1
    assert_close(jobs.load(tmp_path / "f.zarr", "nngp"), layer.kernel(x1, x2, "nngp"), dtype)
