"""Layouts, tiling, parameterizations, protocol and errors of `ntkit.nn`."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
import ntkit.nn as stax
from ntkit.nn._state import COV_DIAGONAL, COV_FULL, COV_NONE, input_state
from tests.tolerance import assert_close


def _images(dtype, shape=(3, 6, 5, 2), seed=0):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _conv_body():
    return stax.serial(stax.Conv(8, (3, 3), padding="SAME", b_std=0.1), stax.Relu(),
                       stax.Conv(8, (2, 3), strides=(2, 1), padding="CIRCULAR", W_std=1.3), stax.Erf(),
                       stax.Conv(8, (2, 2), padding="VALID"), stax.Relu())


def test_diagonal_and_full_layouts_agree(dtype):
    """A Flatten network carries diagonal covariances; forcing the full layout gives the same kernel."""
    net = stax.serial(_conv_body(), stax.Flatten(), stax.Dense(1, b_std=0.1))
    assert not net.needs_full(True)
    x1, x2 = _images(dtype), _images(dtype, (2, 6, 5, 2), seed=1)
    run = jax.jit(lambda a, b, diagonal: net.transform(input_state(a, b, diagonal, True)), static_argnums=2)
    diag, full = run(x1, x2, True), run(x1, x2, False)
    assert diag.diagonal_spatial and not full.diagonal_spatial
    assert_close(diag.nngp, full.nngp, dtype, scale=10)
    assert_close(diag.ntk, full.ntk, dtype, scale=10)
    assert_close(net.kernel(x1, x2, "ntk"), full.ntk, dtype, scale=10)


def test_full_layout_diagonal_matches_diagonal_layout(dtype):
    body = _conv_body()
    x = _images(dtype)
    diag = jax.jit(lambda a: body.transform(input_state(a, None, True, True)))(x)
    full = body.kernel(x, None, None)
    assert full.nngp.shape == (3, 3, 2, 2, 4, 4)
    from ntkit.nn._state import spatial_diagonal
    assert_close(spatial_diagonal(full.nngp, 2, 2), diag.nngp, dtype, scale=10)
    assert_close(spatial_diagonal(full.cov1, 1, 2), diag.cov1, dtype, scale=10)


def test_layout_decision():
    assert stax.serial(stax.Conv(1, (3, 3)), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1)).needs_full(True)
    assert stax.serial(stax.Conv(1, (3, 3)), stax.AvgPool((2, 2)), stax.Flatten()).needs_full(True)
    assert not stax.serial(stax.Conv(1, (3, 3)), stax.Relu(), stax.Flatten(), stax.Dense(1)).needs_full(True)


@pytest.mark.parametrize("with_x2", [False, True])
def test_tiled_equals_untiled(with_x2, dtype):
    net = stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
                      stax.Dropout(0.2), stax.Conv(4, (2, 2)), stax.Relu())
    x1 = _images(dtype, (7, 6, 5, 2))
    x2 = _images(dtype, (5, 6, 5, 2), seed=3) if with_x2 else None
    whole = net.kernel(x1, x2, ("nngp", "ntk"))
    tiled = net.kernel(x1, x2, ("nngp", "ntk"), batch_size=3)
    assert whole.nngp.shape == (7, 7 if x2 is None else 5, 2, 2, 1, 1)
    assert_close(tiled.nngp, whole.nngp, dtype, scale=10)
    assert_close(tiled.ntk, whole.ntk, dtype, scale=10)


@pytest.mark.parametrize("readout", ["gap", "flatten"])
@pytest.mark.parametrize("with_x2", [False, True])
def test_tiled_state_equals_untiled_state(readout, with_x2, dtype):
    """`get=None` with tiles assembles the whole state: kernels, per-example covariances, shapes and flags."""
    head = stax.GlobalAvgPool() if readout == "gap" else stax.Flatten()
    net = stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(), stax.Conv(4, (2, 2)), head, stax.Dense(3))
    x1 = _images(dtype, (7, 5, 4, 2))
    x2 = _images(dtype, (5, 5, 4, 2), seed=3) if with_x2 else None
    whole = net.kernel(x1, x2, None)
    tiled = net.kernel(x1, x2, None, batch_size=3)
    for field in ("nngp", "ntk", "cov1", "cov2"):
        a, b = getattr(tiled, field), getattr(whole, field)
        assert (a is None) == (b is None), field
        if b is not None:
            assert_close(a, b, dtype, scale=10)
    static = ("shape1", "shape2", "diagonal_spatial", "is_gaussian", "is_input", "x1_is_x2", "cov_diagonal")
    assert [getattr(tiled, f) for f in static] == [getattr(whole, f) for f in static]


def _residual_gap():
    block = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(
        stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(), stax.Conv(4, (3, 3), padding="SAME"))), stax.FanInSum())
    return stax.serial(stax.Conv(4, (3, 3), padding="SAME"), block, stax.LayerNorm(), stax.Relu(),
                       stax.Dropout(0.3, mode="train"), stax.GlobalAvgPool(), stax.Dense(1))


COV_NETWORKS = {
    # (network, covariance level the input carries when only nngp/ntk are returned)
    "conv_relu_gap": (lambda: stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(), stax.Conv(4, (2, 2)),
                                          stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1)), COV_DIAGONAL),
    "residual_layernorm_dropout_gap": (_residual_gap, COV_DIAGONAL),
    "pool_then_relu": (lambda: stax.serial(stax.Conv(4, (3, 3)), stax.Relu(), stax.AvgPool((2, 2)),
                                           stax.Conv(4, (2, 2)), stax.Erf(), stax.GlobalAvgPool(), stax.Dense(1)),
                       COV_FULL),
    "attention": (lambda: stax.serial(stax.Conv(4, (2, 2)), stax.Relu(), stax.GlobalSelfAttention(
        4, 4, 4, 1, linear_scaling=False, attention_mechanism="IDENTITY"), stax.GlobalAvgPool()), COV_DIAGONAL),
    "pooled_branch": (lambda: stax.serial(  # the pooled branch drops the diagonal covariances, the sum follows
        stax.Conv(4, (3, 3)), stax.Relu(), stax.FanOut(2),
        stax.parallel(stax.Conv(4, (1, 1)), stax.serial(stax.AvgPool((3, 3), padding="SAME"), stax.Conv(4, (1, 1)))),
        stax.FanInSum(), stax.GlobalAvgPool(), stax.Dense(1)), COV_DIAGONAL),
    "flatten": (lambda: stax.serial(stax.Conv(4, (3, 3)), stax.Relu(), stax.Flatten(), stax.Dense(1)),
                COV_DIAGONAL),
    "gap_then_relu": (lambda: stax.serial(stax.Conv(4, (3, 3)), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(4),
                                          stax.Relu(), stax.Dense(1)), COV_FULL),
}


@pytest.mark.parametrize("name", sorted(COV_NETWORKS))
@pytest.mark.parametrize("with_x2", [False, True])
def test_covariances_carried_only_as_far_as_read(name, with_x2, dtype):
    """Returning nngp/ntk carries per-example covariances only as needed; the kernels equal those computed with full
    covariances (`get=None` returns the whole state and carries them all)."""
    make, level = COV_NETWORKS[name]
    net = make()
    assert net.cov_needs(COV_NONE) == level
    assert net.cov_needs(COV_FULL) == (COV_DIAGONAL if name == "flatten" else COV_FULL)  # Flatten reads variances
    x1 = _images(dtype, (3, 6, 5, 2))
    x2 = _images(dtype, (2, 6, 5, 2), seed=3) if with_x2 else None
    kwargs = {"rng": jax.random.key(5)}
    lean = net.kernel(x1, x2, ("nngp", "ntk"), **kwargs)
    state = net.kernel(x1, x2, None, **kwargs)
    assert state.cov1 is not None and state.cov1.shape[0] == 3
    assert_close(lean.nngp, state.nngp, dtype, scale=10)
    assert_close(lean.ntk, state.ntk, dtype, scale=10)


@pytest.mark.parametrize("with_x2", [False, True])
def test_memory_limit_tiles_within_the_limit(with_x2, dtype, monkeypatch):
    """`memory_limit` picks the largest even tiles whose estimated peak fits, and gives the untiled result."""
    from ntkit.nn import _driver

    net = stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
                      stax.Flatten(), stax.Dense(1))
    x1 = _images(dtype, (9, 6, 6, 2))
    x2 = _images(dtype, (7, 6, 6, 2), seed=3) if with_x2 else None
    whole = net.kernel(x1, x2, ("nngp", "ntk"))
    # nngp and ntk carry 36 x 36 positions per pair of examples; cov1 and cov2 only the 36 variances per example
    # (no pooled covariance feeds a nonlinearity); 4x overhead. A b x b tile holds 2 b² 1296 + 2 b 36 entries.
    def tile_bytes(b):
        return 4 * (2 * b * b * 36 ** 2 + 2 * b * 36) * np.dtype(dtype).itemsize

    pair = tile_bytes(1)
    sizes = []
    tiled = _driver._tiled
    monkeypatch.setattr(_driver, "_tiled", lambda run, a, b, size, gets: sizes.append(size) or tiled(run, a, b, size,
                                                                                                  gets))
    out = net.kernel(x1, x2, ("nngp", "ntk"), memory_limit=tile_bytes(2))  # a 2 x 2 tile fits, 3 x 3 does not
    assert sizes == [2]
    assert_close(out.nngp, whole.nngp, dtype, scale=10)
    assert_close(out.ntk, whole.ntk, dtype, scale=10)
    net.kernel(x1, x2, "nngp", memory_limit=1e12)  # everything fits: no tiles
    assert sizes == [2]
    with pytest.raises(ValueError, match="one pair of examples"):
        net.kernel(x1, x2, "nngp", memory_limit=pair / 4)
    with pytest.raises(ValueError, match="not both"):
        net.kernel(x1, x2, "nngp", memory_limit=1e9, batch_size=2)
    with pytest.raises(ValueError, match="memory_limit"):
        net.kernel(x1, x2, "nngp", memory_limit=-1)
    state = net.kernel(x1, x2, None, memory_limit=pair * 4)  # the whole state, tiled
    assert_close(state.nngp, whole.nngp, dtype, scale=10)


def test_large_symmetric_calls_compute_one_triangle(dtype, monkeypatch):
    """Untiled `x2=None` calls above `_SPLIT_BYTES` compute 3 of 4 blocks; the result is unchanged, also in jit."""
    from ntkit.nn import _driver

    net = stax.serial(stax.Dense(16, b_std=0.1), stax.Relu(), stax.Dense(1))
    x = _images(dtype, (7, 4))
    reference = net.kernel(x, x, ("nngp", "ntk"))
    sizes = []
    tiled = _driver._tiled
    monkeypatch.setattr(_driver, "_tiled", lambda run, a, b, size, gets: sizes.append(size) or tiled(run, a, b, size,
                                                                                                  gets))
    monkeypatch.setattr(_driver, "_SPLIT_BYTES", 0)
    out = net.kernel(x, None, ("nngp", "ntk"))
    assert sizes == [4]
    assert_close(out.nngp, reference.nngp, dtype, scale=10)
    assert_close(out.ntk, reference.ntk, dtype, scale=10)
    traced = jax.jit(lambda a: net.kernel(a, None, "ntk"))(x)  # traced inputs are split as plain ones are
    assert sizes == [4, 4]
    assert_close(traced, reference.ntk, dtype, scale=10)
    # closed-over inputs under an outer jit: the tiles are tracers and are assembled as such
    scaled = jax.jit(lambda s: s * net.kernel(x, None, "ntk"))(jnp.asarray(2.0, dtype))
    assert sizes == [4, 4, 4]
    assert_close(scaled, 2 * reference.ntk, dtype, scale=10)
    tiled_in_jit = jax.jit(lambda s: s * net.kernel(x, x, "nngp", batch_size=3))(jnp.asarray(1.0, dtype))
    assert_close(tiled_in_jit, reference.nngp, dtype, scale=10)


def test_errors_name_the_layer_on_every_path():
    x = jnp.ones((4, 3))
    net = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(4), stax.Relu(), stax.Relu(), stax.Dense(1))
    for x2, kwargs in [(x, {}), (None, {}), (None, {"memory_limit": 1e9}), (x, {"batch_size": 2})]:
        with pytest.raises(ValueError, match="serial: layer 4"):
            net.kernel(x, x2, "nngp", **kwargs)


def test_symmetric_when_x2_is_none(dtype):
    net = stax.serial(stax.Dense(8, b_std=0.1), stax.Erf(), stax.Dense(1))
    x = _images(dtype, (5, 4))
    k = net.kernel(x, None, ("nngp", "ntk"))
    assert_close(k.nngp, k.nngp.T, dtype)
    assert_close(net.kernel(x, x, "ntk"), k.ntk, dtype, scale=10)


def test_input_kernel_is_mean_over_channels(dtype):
    x1, x2 = _images(dtype), _images(dtype, (2, 6, 5, 2), seed=1)
    k = stax.Identity().kernel(x1, x2, "nngp")
    assert_close(k, jnp.einsum("ahwc,bHWc->abhHwW", x1, x2) / 2, dtype)


def test_matches_empirical_layout_for_spatial_outputs(dtype):
    """A linear conv net's kernels equal, in the empirical layout `(N1, N2, H, H', W, W')`, those of one finite
    network whose weights have exactly their expected second moments (no Monte Carlo).

    With the filter and bias stacked as `M = [W; bᵀ]`, `(q·C + 1, C')`, orthogonal rows of squared norm `C'` (what
    `W, b ~ N(0, 1)` give on average) make the conv output's NNGP, traced over its `C'` channels, exactly
    `σ_w²/q Σ_j Σ[i + j, i' + j] + σ_b²` (docs/theory.md §2: the cross terms vanish with `W b = 0`); its NTK is that
    for every draw. Average pooling is linear and averages both sides alike.
    """
    net = stax.serial(stax.Conv(24, (3, 3), padding="SAME", W_std=1.3, b_std=0.5), stax.AvgPool((2, 2), (1, 1)))
    init_fn, apply_fn, kernel_fn = net
    x = _images(dtype, (2, 4, 4, 2))
    _, ((w, _), pool) = init_fn(jax.random.key(0), x.shape)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((24, 3 * 3 * 2 + 1)))
    m = math.sqrt(24) * q.T
    params = ((jnp.asarray(m[:-1].reshape(w.shape), dtype), jnp.asarray(m[-1], dtype)), pool)
    kernel_of = ntkit.empirical_kernel_fn(apply_fn)
    empirical = kernel_of(x, None, ("nngp", "ntk"), params)
    analytic = kernel_fn(x, None, ("nngp", "ntk"))
    assert analytic.nngp.shape == empirical.nngp.shape == empirical.ntk.shape == (2, 2, 3, 3, 3, 3)
    assert_close(empirical.nngp, analytic.nngp, dtype)
    assert_close(empirical.ntk, analytic.ntk, dtype)
    # A random draw is not exact: the match above is not a property of any weights.
    _, random_params = init_fn(jax.random.key(0), x.shape)
    assert float(np.max(np.abs(kernel_of(x, None, "nngp", random_params) - analytic.nngp))) > 1e-2


def test_unpacks_as_stax_triple_and_kernel_state_is_pytree(dtype):
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(2))
    out_shape, params = init_fn(jax.random.key(0), (4, 5))
    x = _images(dtype, (4, 5))
    assert out_shape == (4, 2) and apply_fn(params, x).shape == (4, 2)
    state = kernel_fn(x)
    assert isinstance(state, stax.KernelState) and state.shape1 == (4, 2)
    leaves = jax.tree_util.tree_leaves(state)
    assert len(leaves) == 3  # nngp, ntk, cov1 (cov2 is None when x2 is None)
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, state)
    assert_close(doubled.nngp, 2 * state.nngp, dtype)
    assert state.replace(is_gaussian=True).is_gaussian
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.nngp = None
    # Continue from a state: Dense then Relu equals the composed network.
    first = stax.Dense(3).kernel(x, None, None)
    assert_close(stax.serial(stax.Relu(), stax.Dense(2)).kernel(first, None, "ntk"), kernel_fn(x, None, "ntk"),
                 dtype)
    k = kernel_fn(x, None, ("ntk",))
    assert isinstance(k, ntkit.Kernel) and k.nngp is None


def test_kernel_is_jittable_and_differentiable(dtype):
    net = stax.serial(stax.Dense(4, b_std=0.1), stax.Erf(), stax.Dense(1))
    x = _images(dtype, (3, 2))
    f = jax.jit(lambda x: net.kernel(x, None, "ntk"))
    assert_close(f(x), net.kernel(x, None, "ntk"), dtype)
    g = jax.grad(lambda x: jnp.sum(net.kernel(x, None, "nngp")))(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


def test_errors(dtype):
    x = _images(dtype)
    with pytest.raises(ValueError, match="padding"):
        stax.Conv(1, (3, 3), padding="REFLECT")
    with pytest.raises(ValueError, match="parameterization"):
        stax.Dense(1, parameterization="mup")
    with pytest.raises(ValueError, match="window_shape"):
        stax.serial(stax.Conv(2, (3, 3)), stax.AvgPool((7, 7))).kernel(x, None, "nngp")
    with pytest.raises(ValueError, match="window_shape"):
        stax.AvgPool((7, 2)).init(None, x.shape)
    with pytest.raises(ValueError, match="filter_shape"):
        stax.Conv(2, (3,)).kernel(x, None, "nngp")
    with pytest.raises(ValueError, match="layer 2"):
        stax.serial(stax.Conv(2, (3, 3)), stax.Flatten(), stax.Conv(2, (3, 3))).init(jax.random.key(0), x.shape)
    with pytest.raises(ValueError, match="branch shapes"):
        stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(2), stax.Dense(3)), stax.FanInSum()).kernel(
            x, None, "nngp")
    with pytest.raises(ValueError, match="get"):
        stax.Dense(1).kernel(x, None, "cov")
    with pytest.raises(ValueError, match="batch_size"):
        stax.Dense(1).kernel(x, None, "nngp", batch_size=0)
    with pytest.raises(ValueError, match="rng"):
        stax.Dropout(0.5).apply((), x)
    with pytest.raises(ValueError, match="LayerNorm"):
        stax.serial(stax.Dense(2), stax.Relu(), stax.LayerNorm()).kernel(x, None, "nngp")
    with pytest.raises(ValueError, match="degree"):
        stax.RectifiedMonomial(-1)
