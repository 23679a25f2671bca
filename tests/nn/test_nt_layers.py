"""neural-tangents' `stax` arguments and names added for compatibility (`s`, `normalize_edges`, layout arguments,
option enums), each against an exact reference or a Monte Carlo average of finite networks.

Run under `jax_numpy_rank_promotion="raise"`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit as nt
from ntkit import nn as stax
from tests.nn.test_nt_compat import rank_promotion_raise  # noqa: F401
from tests.tolerance import assert_close

pytestmark = pytest.mark.usefixtures("rank_promotion_raise")


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_dense_standard_parameterization_width_scales(dtype):
    """`Dense(out, W_std, b_std, parameterization="standard", s=(2, 3))`: `z = W x/√2 + b` with `3·out` units, so
    the empirical NTK of any draw is exactly `x·x'/2 + 1` (the analytic one: fan-in `d/s_in`), and the NNGP
    `σ_w² x·x'/d + σ_b²` (Monte Carlo: 1536 units x 8 draws, ~1% error)."""
    x = jax.random.normal(jax.random.key(0), (4, 6), dtype)
    init_fn, apply_fn, kernel_fn = stax.Dense(512, 1.3, 0.4, parameterization="standard", s=(2, 3))
    out_shape, params = init_fn(jax.random.key(1), x.shape)
    assert out_shape == (4, 1536) and params[0].shape == (6, 1536)
    xn = np.asarray(x, np.float64)
    expected_ntk = xn @ xn.T / 2 + 1
    assert_close(nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation="jacobian")(x, None, params),
                 expected_ntk, dtype, scale=10)
    k = kernel_fn(x, None, ("nngp", "ntk"))
    assert_close(k.ntk, expected_ntk, dtype, scale=10)
    expected_nngp = 1.3 ** 2 * xn @ xn.T / 6 + 0.4 ** 2
    assert_close(k.nngp, expected_nngp, dtype, scale=10)
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(2), 8, vmap_axes=0)(x, None, "nngp")
    assert _rel(mc, expected_nngp) < 0.05
    # NTK parameterization ignores `s`, as in neural-tangents
    assert stax.Dense(8, s=(2, 3)).init(jax.random.key(0), (1, 6))[0] == (1, 8)
    # ntkit's earlier positional order (parameterization fourth) still works
    assert stax.Dense(8, 1.0, 0.1, "standard").parameterization == "standard"
    assert stax.Conv(8, (2,), None, "VALID", 1.0, 0.1, "standard").parameterization == "standard"


@pytest.mark.slow
def test_avg_pool_normalize_edges_vs_monte_carlo(dtype):
    """`AvgPool(window, strides, "SAME", normalize_edges=True)` divides by the positions a window covers, not its
    size. Conv(64) -> Relu -> AvgPool((3, 2), (2, 1), SAME, True) -> Flatten -> Dense(64), 5x4 images; 64 networks
    (structured NTK): measured 3.2% (NNGP) and 0.7% (NTK) error, while ignoring `normalize_edges` is 43% off."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2), dtype)
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Conv(64, (2, 2), padding="SAME"), stax.Relu(), stax.AvgPool((3, 2), (2, 1), stax.Padding.SAME, True),
        stax.Flatten(), stax.Dense(64))
    k = kernel_fn(x, None, ("nngp", "ntk"))
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(1), 64, vmap_axes=0,
                                  implementation="structured")(x, None, ("nngp", "ntk"))
    assert _rel(mc.nngp, k.nngp) < 0.08
    assert _rel(mc.ntk, k.ntk) < 0.08


def test_avg_pool_normalize_edges_on_raw_inputs_is_exact(dtype):
    """On raw inputs the pooled kernel is exact: `Σ'[p, p'] = Σ_{i ∈ w(p), i' ∈ w(p')} x_i·x'_i' / (C c(p) c(p'))`
    with `c` the covered positions; 1-D, 4 positions, window 3, SAME: `c = (2, 3, 3, 2)`."""
    x = jax.random.normal(jax.random.key(3), (2, 4, 3), dtype)
    pool = stax.AvgPool((3,), None, "SAME", normalize_edges=True)
    xn = np.asarray(x, np.float64)
    pooled = np.stack([xn[:, max(p - 1, 0):p + 2].mean(1) for p in range(4)], 1)  # (N, 4, C)
    assert_close(pool.apply((), x), pooled, dtype)
    expected = np.einsum("apc,bqc->abpq", pooled, pooled) / 3
    assert_close(pool.kernel(x, None, "nngp"), expected, dtype)


def test_layout_arguments_accept_the_default_layout_only(dtype):
    """`batch_axis`/`channel_axis`/`dimension_numbers` naming ntkit's layout (batch first, channels last) work; any
    other raises `NotImplementedError` naming the argument."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 3), dtype)
    same = stax.serial(stax.Conv(4, (2,), None, "VALID", 1.0, 0.1, ("NWC", "WIO", "NWC")), stax.Relu(),
                       stax.GlobalAvgPool(batch_axis=0, channel_axis=2), stax.Dense(3, 1.0, None, 0, 1))
    plain = stax.serial(stax.Conv(4, (2,), b_std=0.1), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(3))
    assert_close(same.kernel(x, None, "ntk"), plain.kernel(x, None, "ntk"), dtype)
    for layer in (stax.Dense(3, channel_axis=0), stax.GlobalAvgPool(channel_axis=1),
                  stax.AvgPool((2,), batch_axis=1), stax.SumPool((2,), channel_axis=1)):
        with pytest.raises(NotImplementedError, match="_axis"):
            layer.kernel(x, None, "nngp")
    with pytest.raises(NotImplementedError, match="dimension_numbers"):
        stax.Conv(4, (2,), dimension_numbers=("NCW", "OIW", "NCW"))


def test_padding_and_attention_enums():
    """`stax.Padding` and `stax.AttentionMechanism` members are accepted wherever the strings are."""
    assert [p.name for p in stax.Padding] == ["CIRCULAR", "SAME", "VALID"]
    assert stax.Conv(2, (3,), padding=stax.Padding.CIRCULAR).padding == "CIRCULAR"
    attention = stax.GlobalSelfAttention(4, 4, 4, 2, attention_mechanism=stax.AttentionMechanism.IDENTITY)
    assert attention.attention_mechanism == "IDENTITY"
    with pytest.raises(ValueError, match="attention_mechanism"):
        stax.GlobalSelfAttention(4, 4, 4, 2, attention_mechanism=stax.AttentionMechanism.RELU)


def test_index_on_raw_inputs_is_the_indexed_closed_form(dtype):
    """`Index(Slice[:, 1:4, 2])` after one Conv on raw inputs: `Σ'[p, p'] = Σ[idx(p), idx(p')]` with the Conv's
    closed form `Σ[i, i'] = σ_w²/q Σ_j x_pad[i+j]·x'_pad[i'+j]/C + σ_b²` (1x1 filter here: `q = 1`)."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2), dtype)
    net = stax.serial(stax.Conv(8, (1, 1), W_std=1.3, b_std=0.2), stax.Index(idx=stax.Slice[:, 1:4, 2]))
    xn = np.asarray(x, np.float64)[:, 1:4, 2]  # (N, 3, C)
    expected = 1.3 ** 2 * np.einsum("aic,bjc->abij", xn, xn) / 2 + 0.2 ** 2
    k = net.kernel(x, None, ("nngp", "ntk"))
    assert_close(k.nngp, expected, dtype)
    assert_close(k.ntk, expected, dtype)
    assert net.init(jax.random.key(0), x.shape)[0] == (3, 3, 8)
    assert stax.Index(stax.Slice[..., :4]).init(None, (2, 5, 8))[0] == (2, 5, 4)
    with pytest.raises(NotImplementedError, match="batch axis"):
        stax.Index(stax.Slice[0]).kernel(x, None, "nngp")
    with pytest.raises(NotImplementedError, match="channel axis"):
        stax.Index(stax.Slice[..., 0]).kernel(x, None, "nngp")
    # a channel subset of the inputs has another kernel than all of them: refused (it was silently all channels)
    with pytest.raises(ValueError, match="selecting channels"):
        stax.serial(stax.Index(stax.Slice[..., :1]), stax.Conv(4, (1, 1))).kernel(x, None, "nngp")


@pytest.mark.slow
@pytest.mark.parametrize("idx", [stax.Slice[:, 1:4, 2], stax.Slice[:, 0]])
def test_index_vs_monte_carlo(idx, dtype):
    """Conv(64, SAME) -> Relu -> Index -> Conv(64, SAME) -> GlobalAvgPool -> Dense(64) on 5x4 images, 64 networks
    (one nonlinearity: no finite-width bias): measured 4.0% / 3.0% and 2.5% / 1.8% (NNGP / NTK)."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2), dtype)
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Conv(64, (2, 2), padding="SAME"), stax.Relu(), stax.Index(idx), stax.Conv(64, (2,), padding="SAME"),
        stax.GlobalAvgPool(), stax.Dense(64))
    k = kernel_fn(x, None, ("nngp", "ntk"))
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(1), 64, vmap_axes=0,
                                  implementation="structured")(x, None, ("nngp", "ntk"))
    assert _rel(mc.nngp, k.nngp) < 0.08
    assert _rel(mc.ntk, k.ntk) < 0.08


def test_layer_norm_flatten_attention_accept_neural_tangents_arguments(dtype):
    """`LayerNorm(axis, eps, batch_axis, channel_axis)`, `Flatten(batch_axis, batch_axis_out)`,
    `GlobalSelfAttention(..., pos_emb_type="NONE", batch_axis, channel_axis)` work (identity attention:
    `Σ'(x, x')[i, i'] = σ_o²σ_v²σ_q²σ_k² Σ(x, x')[i, i'] mean_{j, j'} Σ(x, x')[j, j']²` on the Conv's closed form
    of raw inputs); other layouts and positional embeddings raise."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 2), dtype)
    attention = stax.GlobalSelfAttention(4, 4, 4, 2, False, attention_mechanism=stax.AttentionMechanism.IDENTITY,
                                         pos_emb_type=stax.PositionalEmbedding.NONE, batch_axis=0, channel_axis=-1)
    net = stax.serial(stax.Conv(4, (1,), W_std=1.2), attention)
    xn = np.asarray(x, np.float64)
    sigma = 1.2 ** 2 * np.einsum("aic,bjc->abij", xn, xn) / 2
    expected = sigma * np.mean(sigma ** 2, (2, 3), keepdims=True)
    assert_close(net.kernel(x, None, "nngp"), expected, dtype, scale=10)
    flat = stax.serial(stax.Conv(4, (1,)), stax.LayerNorm(-1, 1e-12, 0, 2), stax.Flatten(0, 0), stax.Dense(1))
    plain = stax.serial(stax.Conv(4, (1,)), stax.LayerNorm(), stax.Flatten(), stax.Dense(1))
    assert_close(flat.kernel(x, None, "ntk"), plain.kernel(x, None, "ntk"), dtype)
    with pytest.raises(NotImplementedError, match="pos_emb_type"):
        stax.GlobalSelfAttention(4, 4, 4, 2, pos_emb_type="SUM")
    for layer in (stax.LayerNorm(channel_axis=1), stax.Flatten(batch_axis=1)):
        with pytest.raises(NotImplementedError, match="axis"):
            layer.kernel(x, None, "nngp")


def _gauss_2d(f, g, cov12, var1, var2, degree=200):
    """`E[f(u) g(v)]` by NumPy Gauss–Hermite quadrature, float64, elementwise over arrays."""
    z, w = np.polynomial.hermite.hermgauss(degree)
    z, w = z * np.sqrt(2), w / np.sqrt(np.pi)
    s1 = np.sqrt(var1)[..., None, None]
    a = (cov12 / np.sqrt(var1))[..., None, None]
    b = np.sqrt(var2 - cov12 ** 2 / var1)[..., None, None]
    u = s1 * z[:, None]
    v = a * z[:, None] + b * z[None, :]
    return np.sum(w[:, None] * w[None, :] * f(u) * g(v), (-2, -1))


def _dense_covariances(x, w_std, b_std):
    xn = np.asarray(x, np.float64)
    cov = w_std ** 2 * xn @ xn.T / xn.shape[1] + b_std ** 2
    var = np.diagonal(cov)
    return cov, var[:, None] * np.ones_like(cov), var[None, :] * np.ones_like(cov)


def test_gabor_closed_form_vs_quadrature(dtype):
    """`Gabor()`, `φ = e^{−x²} sin x`: NNGP and `E[φ'φ']` (the NTK factor, `φ' = e^{−x²}(cos x − 2x sin x)`) against
    200x200-node NumPy quadrature after a Dense layer (variances below ~2, where it resolves `e^{−2u²}`)."""
    x = jax.random.normal(jax.random.key(0), (4, 3), dtype)
    k = stax.serial(stax.Dense(8, 0.7, 0.2), stax.Gabor()).kernel(x, None, ("nngp", "ntk"))
    cov, v1, v2 = _dense_covariances(x, 0.7, 0.2)
    assert np.max(v1) < 2
    phi = lambda t: np.exp(-t * t) * np.sin(t)  # noqa: E731
    dphi = lambda t: np.exp(-t * t) * (np.cos(t) - 2 * t * np.sin(t))  # noqa: E731
    assert_close(k.nngp, _gauss_2d(phi, phi, cov, v1, v2), dtype, scale=10)
    assert_close(k.ntk, cov * _gauss_2d(dphi, dphi, cov, v1, v2), dtype, scale=10)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_hermite_on_unit_variances_is_rho_to_the_n(degree, dtype):
    """`Hermite(n)` on unit-variance pre-activations (inputs of norm √d, `σ_w = 1`, no bias): neural-tangents'
    `Σ' = ρⁿ`, `Θ' = n ρⁿ⁻¹ Θ`; then a Dense readout adds `Σ'` to the NTK. The finite layer is `He_n/√n!`."""
    x = jax.random.normal(jax.random.key(1), (4, 5), dtype)
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True) * jnp.sqrt(jnp.asarray(5.0, dtype))
    k = stax.serial(stax.Dense(8), stax.Hermite(degree), stax.Dense(1)).kernel(x, None, ("nngp", "ntk"))
    xn = np.asarray(x, np.float64)
    rho = xn @ xn.T / 5
    assert_close(k.nngp, rho ** degree, dtype, scale=10)
    assert_close(k.ntk, (1 + degree) * rho ** degree, dtype, scale=10)
    he3 = stax.Hermite(3).apply((), jnp.asarray([2.0], dtype))
    assert_close(he3, [(8 - 6) / np.sqrt(6)], dtype)


def test_exp_normalized_is_its_kernel_map(dtype):
    """`ExpNormalized(γ, shift)`: `Σ' = q exp(γ(ρ + shift))`, `Θ' = γ Θ exp(γ(ρ + shift))`, `q = √(Σ₁₁Σ₂₂)`."""
    x = jax.random.normal(jax.random.key(2), (4, 3), dtype)
    k = stax.serial(stax.Dense(8, 1.3, 0.2), stax.ExpNormalized(1.5, -1.0)).kernel(x, None, ("nngp", "ntk"))
    cov, v1, v2 = _dense_covariances(x, 1.3, 0.2)
    q = np.sqrt(v1 * v2)
    e = np.exp(1.5 * (cov / q - 1))
    assert_close(k.nngp, q * e, dtype, scale=10)
    assert_close(k.ntk, 1.5 * cov * e, dtype, scale=10)
    with pytest.raises(NotImplementedError):
        stax.ExpNormalized().apply((), x)


@pytest.mark.parametrize("method", ["linear", "nearest", "cubic"])
def test_image_resize_kernel_is_the_gram_of_resized_inputs(method, dtype):
    """On raw inputs the kernel of `ImageResize` (resize applied to the covariance) equals the Gram matrix of the
    resized inputs, `y·y'/C` with `y = R x` (resize applied to the data), position pairs interleaved."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2), dtype)
    layer = stax.ImageResize((-1, 7, 3, -1), method)
    y = np.asarray(layer.apply((), x), np.float64)
    assert y.shape == (3, 7, 3, 2)
    assert_close(layer.kernel(x, None, "nngp"), np.einsum("aijc,bklc->abikjl", y, y) / 2, dtype, scale=10)
    with pytest.raises(NotImplementedError, match="batch and channel"):
        stax.ImageResize((-1, 7, 3, 4), method).kernel(x, None, "nngp")


@pytest.mark.slow
def test_image_resize_vs_monte_carlo(dtype):
    """Conv(64, SAME) -> Relu -> ImageResize(7x3, linear) -> Conv(64) -> GlobalAvgPool -> Dense(64) on 5x4 images,
    64 networks (one nonlinearity): measured 1.5% / 1.4% (NNGP / NTK)."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2), dtype)
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Conv(64, (2, 2), padding="SAME"), stax.Relu(), stax.ImageResize((-1, 7, 3, -1), "linear"),
        stax.Conv(64, (2, 2)), stax.GlobalAvgPool(), stax.Dense(64))
    k = kernel_fn(x, None, ("nngp", "ntk"))
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(1), 64, vmap_axes=0,
                                  implementation="structured")(x, None, ("nngp", "ntk"))
    assert _rel(mc.nngp, k.nngp) < 0.06
    assert _rel(mc.ntk, k.ntk) < 0.06


def test_conv_local_on_raw_inputs_keeps_equal_positions_only(dtype):
    """`ConvLocal` on raw inputs: the Conv closed form `σ_w²/q Σ_j x_pad[i+j]·x'_pad[i'+j]/C + σ_b²` at `i = i'`,
    zero between different positions (no weights shared); the NTK equals the NNGP for one layer."""
    x = jax.random.normal(jax.random.key(3), (3, 4, 2), dtype)
    k = stax.ConvLocal(5, (3,), None, "SAME", 1.2, 0.4).kernel(x, None, ("nngp", "ntk"))
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (0, 0)))
    diag = np.stack([sum(xp[:, i + j] @ xp[:, i + j].T for j in range(3)) for i in range(4)], -1)
    diag = 1.2 ** 2 / 3 * diag / 2 + 0.4 ** 2
    expected = np.einsum("abi,ij->abij", diag, np.eye(4))
    assert_close(k.nngp, expected, dtype)
    assert_close(k.ntk, expected, dtype)


@pytest.mark.slow
def test_conv_local_vs_monte_carlo(dtype):
    """ConvLocal(64, 2x2, SAME) -> Relu -> ConvLocal(64, 2x2, SAME) -> GlobalAvgPool -> Dense(64) on 5x4 images,
    64 networks (one nonlinearity): measured 3.2% / 0.9% (NNGP / NTK); the Conv kernel is 8x off."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2), dtype)
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.ConvLocal(64, (2, 2), (1, 1), "SAME", 1.2, 0.3), stax.Relu(),
        stax.ConvLocal(64, (2, 2), padding="SAME", b_std=0.1), stax.GlobalAvgPool(), stax.Dense(64))
    k = kernel_fn(x, None, ("nngp", "ntk"))
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(1), 64, vmap_axes=0,
                                  implementation="jacobian")(x, None, ("nngp", "ntk"))
    assert _rel(mc.nngp, k.nngp) < 0.08
    assert _rel(mc.ntk, k.ntk) < 0.08


_DOT_GENERALS = {
    "scalar": lambda: stax.DotGeneral(rhs=2.0),
    "rhs_vector": lambda: stax.DotGeneral(rhs=jnp.array([1.0, -1.0]), dimension_numbers=(((1,), (0,)), ((), ()))),
    "lhs_matrix": lambda: stax.DotGeneral(lhs=jax.random.normal(jax.random.key(5), (5, 2)),
                                          dimension_numbers=(((1, 0), (1, 2)), ((), ()))),
}


@pytest.mark.parametrize("name", sorted(_DOT_GENERALS))
def test_dot_general_kernel_is_the_gram_of_its_outputs(name, dtype):
    """On raw inputs the kernel of `DotGeneral` (the constant contracted on both sides of the covariance) equals
    the Gram matrix of `apply`'s outputs (`jax.lax.dot_general` on the data), position pairs interleaved."""
    x = jax.random.normal(jax.random.key(0), (3, 2, 5, 2), dtype)
    layer = _DOT_GENERALS[name]()
    y = np.asarray(layer.apply((), x), np.float64)
    spec = {2: "ac,bc->ab", 3: "aic,bjc->abij", 4: "aijc,bklc->abikjl"}[y.ndim]
    assert layer.init(None, x.shape)[0] == y.shape
    assert_close(layer.kernel(x, None, "nngp"), np.einsum(spec, y, y) / 2, dtype)


def test_dot_general_unsupported_forms_raise():
    with pytest.raises(NotImplementedError, match="contracted"):
        stax.DotGeneral(rhs=jnp.ones((2, 3)), dimension_numbers=(((1,), (0,)), ((), ())))
    with pytest.raises(NotImplementedError, match="batch dimensions"):
        stax.DotGeneral(rhs=jnp.ones((2,)), dimension_numbers=(((), ()), ((0,), (0,))))
    with pytest.raises(NotImplementedError, match="spatial axes"):
        stax.DotGeneral(rhs=jnp.ones((3,)), dimension_numbers=(((2,), (0,)), ((), ()))).init(None, (4, 5, 3))
    with pytest.raises(ValueError, match="at most one"):
        stax.DotGeneral(lhs=1.0, rhs=2.0)
