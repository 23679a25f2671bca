"""`stax.Aggregate` (graph aggregation, neural-tangents' `Aggregate` with `pattern=`): the finite layer against
NumPy, the kernel against NumPy closed forms (the arc-cosine kernel of `Dense → Relu`, then the patterns applied),
sparse edge lists against dense patterns, tiling, and Monte Carlo averages of finite graph networks.

Run under `jax_numpy_rank_promotion="raise"`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
from ntkit import nn as stax
from tests.nn.test_nt_compat import rank_promotion_raise  # noqa: F401
from tests.tolerance import assert_close

pytestmark = pytest.mark.usefixtures("rank_promotion_raise")


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _graphs(key, n, v, dtype, p=0.4):
    """`n` random weighted directed graphs on `v` vertices, `(n, v, v)`."""
    k1, k2 = jax.random.split(jax.random.key(key))
    edges = jax.random.bernoulli(k1, p, (n, v, v))
    return edges.astype(dtype) * jax.random.uniform(k2, (n, v, v), dtype, minval=0.5, maxval=1.5)


def test_apply_is_x_times_pattern(dtype):
    """`z[n, ..., j, ..., c] = Σ_i P[n, i, j] x[n, ..., i, ..., c]` (NumPy), for all spatial axes, one axis of two,
    and two axes (pattern `(N, A, B, A, B)`); `pattern=None` is the identity."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 5, 2), dtype)
    xn = np.asarray(x, np.float64)
    p_a = _graphs(1, 3, 4, dtype)
    p_b = _graphs(2, 3, 5, dtype)
    p_ab = jax.random.normal(jax.random.key(3), (3, 4, 5, 4, 5), dtype)
    cases = [(1, p_a, "nabc,naj->njbc"), (-2, p_b, "nabc,nbj->najc"), ((1, 2), p_ab, "nabc,nabij->nijc"),
             ((2, 1), jnp.transpose(p_ab, (0, 2, 1, 4, 3)), "nabc,nabij->nijc")]
    for axis, p, subscripts in cases:
        out = stax.Aggregate(axis).apply((), x, pattern=p)
        reference = p_ab if axis == (2, 1) else p
        expected = np.einsum(subscripts.replace(" ", ""), xn, np.asarray(reference, np.float64))
        assert_close(out, expected, dtype)
    assert stax.Aggregate().apply((), x) is x
    init_fn, _, _ = stax.Aggregate(1)
    assert init_fn(jax.random.key(0), x.shape) == (x.shape, ())


def _relu_kernels(x1, x2, w_std, b_std):
    """NumPy: NNGP and NTK after `Dense(w_std, b_std) → Relu` for every pair of positions, `(N1, N2, V, V')`
    (Cho & Saul 2009 arc-cosine kernel; NTK parameterization)."""
    c = x1.shape[-1]
    s12 = w_std ** 2 * np.einsum("aic,bjc->abij", x1, x2) / c + b_std ** 2
    s11 = w_std ** 2 * np.einsum("aic,aic->ai", x1, x1) / c + b_std ** 2
    s22 = w_std ** 2 * np.einsum("bjc,bjc->bj", x2, x2) / c + b_std ** 2
    norm = np.sqrt(s11[:, None, :, None] * s22[None, :, None, :])
    theta = np.arccos(np.clip(s12 / norm, -1, 1))
    nngp = norm / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    ntk = s12 * (np.pi - theta) / (2 * np.pi)  # Θ of Dense is Σ; Relu multiplies it by E[φ'φ']
    return nngp, ntk


@pytest.mark.parametrize("same", [False, True])
def test_kernel_closed_form(same, dtype):
    """`Dense → Relu → Aggregate → Dense` against NumPy: the arc-cosine kernels `K` of `Dense → Relu`, then
    `P1ᵀ K P2` per pair of graphs (NNGP and NTK alike), then the last `Dense`: `Σ = σ_w² A(K) + σ_b²`,
    `Θ = Σ + σ_w² A(Θ_relu)`. Also the per-example covariance `cov1 = P1ᵀ K(x, x) P1`."""
    x1 = jax.random.normal(jax.random.key(0), (3, 5, 2), dtype)
    x2 = None if same else jax.random.normal(jax.random.key(1), (2, 5, 2), dtype)
    p1 = _graphs(2, 3, 5, dtype)
    p2 = p1 if same else _graphs(3, 2, 5, dtype)
    net = stax.serial(stax.Dense(8, 1.3, 0.2), stax.Relu(), stax.Aggregate(), stax.Dense(4, 0.9, 0.3))
    k = net.kernel(x1, x2, None, pattern=(p1, None if same else p2))
    xn1 = np.asarray(x1, np.float64)
    xn2 = xn1 if same else np.asarray(x2, np.float64)
    pn1, pn2 = np.asarray(p1, np.float64), np.asarray(p2, np.float64)
    nngp, ntk = _relu_kernels(xn1, xn2, 1.3, 0.2)
    agg = lambda a, l, r: np.einsum("aij,abik,bkl->abjl", l, a, r)  # noqa: E731
    expected_nngp = 0.81 * agg(nngp, pn1, pn2) + 0.09
    assert_close(k.nngp, expected_nngp, dtype, scale=10)
    assert_close(k.ntk, expected_nngp + 0.81 * agg(ntk, pn1, pn2), dtype, scale=10)
    self_nngp, _ = _relu_kernels(xn1, xn1, 1.3, 0.2)
    assert_close(k.cov1, 0.81 * np.einsum("aij,aaik,akl->ajl", pn1, self_nngp, pn1) + 0.09, dtype, scale=10)


def test_kernel_one_of_two_spatial_axes(dtype):
    """Aggregating axis 2 of `(N, A, B, C)` inputs leaves axis 1 alone: `Σ'[.., a, a', j, j'] = Σ_{i, i'}
    P1[i, j] Σ[.., a, a', i, i'] P2[i', j']` (NumPy, on the closed-form Relu kernel)."""
    x1 = jax.random.normal(jax.random.key(0), (2, 3, 4, 2), dtype)
    x2 = jax.random.normal(jax.random.key(1), (3, 3, 4, 2), dtype)
    p1, p2 = _graphs(2, 2, 4, dtype), _graphs(3, 3, 4, dtype)
    net = stax.serial(stax.Dense(8, 1.3, 0.2), stax.Relu(), stax.Aggregate(aggregate_axis=2))
    k = net.kernel(x1, x2, ("nngp", "ntk"), pattern=(p1, p2))
    flat = lambda x: np.asarray(x, np.float64).reshape(x.shape[0], 12, 2)  # noqa: E731
    nngp, ntk = _relu_kernels(flat(x1), flat(x2), 1.3, 0.2)
    pn1, pn2 = np.asarray(p1, np.float64), np.asarray(p2, np.float64)
    for got, ref in ((k.nngp, nngp), (k.ntk, ntk)):
        ref = ref.reshape(2, 3, 3, 4, 3, 4)  # (N1, N2, a, i, a', i')
        expected = np.einsum("nij,mkl,nmaibk->nmabjl", pn1, pn2, ref)
        assert_close(got, expected, dtype, scale=10)


def _edge_list(dense):
    """An integer edge list `(N, n_edges, 1, 2)` with each edge of an integer-weighted dense pattern repeated by its
    weight, and padding edges (`-1`) appended."""
    n = dense.shape[0]
    lists = [[(i, j) for i, j in zip(*np.nonzero(d), strict=True) for _ in range(int(d[i, j]))] for d in dense]
    size = max(len(e) for e in lists) + 2
    out = -np.ones((n, size, 1, 2), np.int32)
    for b, e in enumerate(lists):
        out[b, :len(e), 0] = np.array(e, np.int32).reshape(-1, 2)
    return out


def test_sparse_edge_lists_match_dense(dtype):
    """`implementation="SPARSE"`: edge lists (repeated edges add up, `-1` edges are padding; also the `(N, E, 2)`
    shape for one axis) give the same finite layer and kernel as the dense pattern of edge counts;
    `to_dense` decodes a pattern for `"DENSE"`."""
    counts = np.random.default_rng(0).integers(0, 3, (3, 5, 5))
    x = jax.random.normal(jax.random.key(0), (3, 5, 2), dtype)
    dense = jnp.asarray(counts, dtype)
    edges = _edge_list(counts)
    sparse = stax.Aggregate(implementation=stax.AggregateImplementation.SPARSE)
    assert sparse.implementation == "SPARSE"
    expected = np.einsum("nic,nij->njc", np.asarray(x, np.float64), counts)
    assert_close(sparse.apply((), x, pattern=jnp.asarray(edges)), expected, dtype)
    assert_close(sparse.apply((), x, pattern=jnp.asarray(edges[:, :, 0])), expected, dtype)
    body = [stax.Dense(8, 1.2), stax.Relu()]
    k_dense = stax.serial(*body, stax.Aggregate()).kernel(x, None, ("nngp", "ntk"), pattern=dense)
    k_sparse = stax.serial(*body, sparse).kernel(x, None, ("nngp", "ntk"), pattern=jnp.asarray(edges))
    assert_close(k_sparse.nngp, k_dense.nngp, dtype, scale=10)
    assert_close(k_sparse.ntk, k_dense.ntk, dtype, scale=10)
    decoded = stax.Aggregate(to_dense=lambda p: jnp.asarray(p, dtype) * 2)
    k_decoded = stax.serial(*body, decoded).kernel(x, None, "nngp", pattern=jnp.asarray(counts, jnp.int32))
    assert_close(k_decoded, 4 * np.asarray(k_dense.nngp), dtype, scale=10)


def test_tiled_kernel_cuts_patterns_with_examples(dtype):
    """With `batch_size` (and `memory_limit`) each tile gets the graphs of its own examples: tiled and whole
    kernels agree, for `x2=None` (triangle of tiles) and for `x2` given."""
    x1 = jax.random.normal(jax.random.key(0), (3, 4, 2), dtype)
    x2 = jax.random.normal(jax.random.key(1), (4, 4, 2), dtype)
    p1, p2 = _graphs(2, 3, 4, dtype), _graphs(3, 4, 4, dtype)
    net = stax.serial(stax.Dense(8, 1.2, 0.1), stax.Relu(), stax.Aggregate(), stax.GlobalSumPool())
    for b, pattern in ((None, p1), (x2, (p1, p2))):
        whole = net.kernel(x1, b, ("nngp", "ntk"), pattern=pattern)
        tiled = net.kernel(x1, b, ("nngp", "ntk"), batch_size=2, pattern=pattern)
        assert_close(tiled.nngp, whole.nngp, dtype, scale=10)
        assert_close(tiled.ntk, whole.ntk, dtype, scale=10)
    limited = net.kernel(x1, x2, "ntk", memory_limit=3e3, pattern=(p1, p2))  # tiles of 2 examples
    assert_close(limited, whole.ntk, dtype, scale=10)


def test_no_pattern_is_identity(dtype):
    """`pattern=None` (neural-tangents: no aggregation) leaves the kernel unchanged."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 2), dtype)
    body = [stax.Dense(8, 1.2, 0.1), stax.Relu()]
    k = stax.serial(*body, stax.Aggregate()).kernel(x, None, ("nngp", "ntk"))
    ref = stax.serial(*body).kernel(x, None, ("nngp", "ntk"))
    assert_close(k.nngp, ref.nngp, dtype)
    assert_close(k.ntk, ref.ntk, dtype)


def _graph_net(width):
    return stax.serial(stax.Dense(width, 1.3, 0.1), stax.Relu(), stax.Aggregate(), stax.Dense(width, 1.2, 0.2),
                       stax.Relu(), stax.GlobalSumPool(), stax.Dense(width))


def test_graph_network_vs_monte_carlo(dtype):
    """`Dense → Relu → Aggregate → Dense → Relu → GlobalSumPool → Dense` on random graphs of 4 vertices (3 and 2
    graphs, `x1 ≠ x2`), width 64; the Monte Carlo kernel feeds `(x, pattern)` pairs to the finite network. NNGP:
    256 networks, measured 0.9-2.8% error over 4 keys and both dtypes (bound 0.06); NTK: 64 networks, 0.9-5.6%
    (bound 0.1). Two nonlinearities: finite-width bias included. Aggregating along the reversed edges (`Pᵀ`, the
    other convention) is 28% (NNGP) and 35% (NTK) away and rejected."""
    x1 = jax.random.normal(jax.random.key(0), (3, 4, 3), dtype)
    x2 = jax.random.normal(jax.random.key(1), (2, 4, 3), dtype)
    p1, p2 = _graphs(2, 3, 4, dtype, 0.5), _graphs(3, 2, 4, dtype, 0.5)
    net = _graph_net(64)
    analytic = net.kernel(x1, x2, ("nngp", "ntk"), pattern=(p1, p2))
    reverse = lambda p: jnp.swapaxes(p, 1, 2)  # noqa: E731
    wrong = net.kernel(x1, x2, ("nngp", "ntk"), pattern=(reverse(p1), reverse(p2)))
    for g, n_samples, bound in (("nngp", 256, 0.06), ("ntk", 64, 0.1)):
        mc = ntkit.monte_carlo_kernel_fn(lambda key, shapes: net.init(key, shapes[0]),
                                         lambda params, xp, **kw: net.apply(params, xp[0], pattern=xp[1]),
                                         jax.random.key(4), n_samples)((x1, p1), (x2, p2), g)
        a = getattr(analytic, g)
        assert a.shape == mc.shape == (3, 2) and a.dtype == x1.dtype
        assert _rel(mc, a) < bound, (g, _rel(mc, a))
        assert _rel(mc, getattr(wrong, g)) > bound, g


def test_bad_inputs_raise(dtype):
    x = jnp.ones((2, 4, 3), dtype)
    p = jnp.ones((2, 4, 4), dtype)
    net = stax.serial(stax.Dense(4), stax.Relu(), stax.Aggregate())
    with pytest.raises(ValueError, match="pattern"):
        net.kernel(x, x, "nngp", pattern=p)  # no graph for x2
    with pytest.raises(ValueError, match="pattern1 is None"):
        net.kernel(x, x, "nngp", pattern=(None, p))
    with pytest.raises(ValueError, match=r"\(batch, \*X, \*X\)"):
        net.kernel(x, None, "nngp", pattern=jnp.ones((2, 4, 5), dtype))
    with pytest.raises(ValueError, match="SPARSE"):
        stax.Aggregate(implementation="SPARSE").apply((), x, pattern=jnp.ones((2, 3, 3), dtype))
    with pytest.raises(ValueError, match="implementation"):
        stax.Aggregate(implementation="CSR")
    with pytest.raises(ValueError, match="aggregate_axis"):
        stax.Aggregate(aggregate_axis=0).apply((), x, pattern=p)
    with pytest.raises(ValueError, match="aggregate_axis"):
        stax.Aggregate(aggregate_axis=(1, 1)).init(jax.random.key(0), (2, 4, 4, 3))
    with pytest.raises(ValueError, match="spatial axes"):
        stax.Aggregate().init(jax.random.key(0), (2, 3))
    with pytest.raises(NotImplementedError, match="channel_axis"):
        stax.Aggregate(channel_axis=1).init(jax.random.key(0), (2, 4, 3))
    state = stax.Dense(4).kernel(x, None, None, diagonal_spatial=True)
    with pytest.raises(ValueError, match="full spatial"):
        stax.Aggregate().kernel(state, pattern=p)
