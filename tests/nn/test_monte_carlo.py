"""Every analytic layer against Monte Carlo averages of the matching finite networks.

Each check states its width and sample count. The readout has `width` outputs and the kernels are traced over
them, so the Monte Carlo error is `O(1/√(width · n_samples))`, 2–4% here; the bounds are set so that a formula off
by 15% (see `test_wrong_formula_is_caught`) fails. Keys are fixed, so the checks are deterministic.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
import ntkit.nn as stax
from ntkit.nn._state import input_state

WIDTH = 256
N_SAMPLES = 32


def _inputs(dtype, shape=(4, 5), seed=0):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check_mc(net, x, n_samples, bound, x2=None, gets=("nngp", "ntk"), implementation="auto", **kwargs):
    init_fn, apply_fn, kernel_fn = net
    analytic = kernel_fn(x, x2, gets)
    mc = ntkit.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(42), n_samples,
                                    implementation=implementation)(x, x2, gets, **kwargs)
    for g in gets:
        a, m = getattr(analytic, g), getattr(mc, g)
        assert a.shape == m.shape, (g, a.shape, m.shape)
        assert a.dtype == x.dtype
        err = _rel(m, a)
        assert err < bound, f"{g}: relative error {err:.3f} >= {bound}"
    return analytic, mc


ACTIVATIONS = {
    "relu": stax.Relu, "leaky_relu": lambda: stax.LeakyRelu(0.2), "abs": stax.Abs,
    "abrelu": lambda: stax.ABRelu(-0.5, 1.5), "erf": lambda: stax.Erf(1.2, 0.8, 0.1),
    "sigmoid_like": stax.Sigmoid_like, "gelu": stax.Gelu, "sin": lambda: stax.Sin(1.0, 1.3, 0.2),
    "cos": stax.Cos, "exp": lambda: stax.Exp(0.8, 0.5), "gaussian": stax.Gaussian, "rbf": stax.Rbf,
    "sign": stax.Sign, "monomial2": lambda: stax.Monomial(2), "rect_monomial2": lambda: stax.RectifiedMonomial(2),
    "polynomial": lambda: stax.Polynomial([0.1, 1.0, -0.5]), "tanh_quadrature": lambda: stax.Elementwise(jnp.tanh),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_vs_monte_carlo(name, dtype):
    """One hidden layer, width 256, 32 networks (128 for the polynomial, whose quadratic term makes the NNGP
    estimate noisier: over 8 keys its error at 32 networks spread over 2-8%, at 128 networks 2-4%)."""
    net = stax.serial(stax.Dense(WIDTH, W_std=1.1, b_std=0.2), ACTIVATIONS[name](), stax.Dense(WIDTH, b_std=0.1))
    check_mc(net, _inputs(dtype), 4 * N_SAMPLES if name == "polynomial" else N_SAMPLES, 0.08)


def test_deep_mlp_vs_monte_carlo(dtype):
    """Three hidden layers, width 256, 32 networks, x1 != x2."""
    net = stax.serial(stax.Dense(WIDTH, W_std=1.5, b_std=0.1), stax.Relu(),
                      stax.Dense(WIDTH, W_std=1.5, b_std=0.1), stax.Erf(),
                      stax.Dense(WIDTH, W_std=1.5), stax.Relu(), stax.Dense(WIDTH))
    check_mc(net, _inputs(dtype), N_SAMPLES, 0.08, x2=_inputs(dtype, (3, 5), seed=1))


def test_wrong_formula_is_caught(dtype):
    """The bound used above rejects a ReLU kernel off by 15%: the Monte Carlo tests can fail."""
    relu = stax.Relu()
    wrong = stax.Elementwise(lambda x: jnp.maximum(x, 0), nngp_fn=lambda c, a, b: 1.15 * relu.nngp_fn(c, a, b),
                             d_nngp_fn=relu.d_nngp_fn)
    net = stax.serial(stax.Dense(WIDTH, b_std=0.2), wrong, stax.Dense(WIDTH, b_std=0.1))
    with pytest.raises(AssertionError, match="relative error"):
        check_mc(net, _inputs(dtype), N_SAMPLES, 0.08)


def test_standard_parameterization_vs_monte_carlo(dtype):
    """Standard parameterization: same NNGP as NTK parameterization, NTK growing with width (width 256, 32 networks)."""
    width = WIDTH
    standard = stax.serial(stax.Dense(width, W_std=1.3, b_std=0.2, parameterization="standard"), stax.Relu(),
                           stax.Dense(width, W_std=1.1, b_std=0.1, parameterization="standard"))
    ntk_net = stax.serial(stax.Dense(width, W_std=1.3, b_std=0.2), stax.Relu(), stax.Dense(width, W_std=1.1,
                                                                                         b_std=0.1))
    x = _inputs(dtype)
    analytic, _ = check_mc(standard, x, N_SAMPLES, 0.08)
    ref = ntk_net.kernel(x, None, ("nngp", "ntk"))
    np.testing.assert_allclose(analytic.nngp, ref.nngp, rtol=1e-5)
    assert float(jnp.trace(analytic.ntk)) > 10 * float(jnp.trace(ref.ntk))


CONV_NETS = {
    "same_flatten": lambda w: stax.serial(
        stax.Conv(w, (3, 3), padding="SAME", b_std=0.1), stax.Relu(),
        stax.Conv(w, (3, 3), padding="SAME", W_std=1.4), stax.Relu(), stax.Flatten(), stax.Dense(w)),
    "valid_strided_gap": lambda w: stax.serial(
        stax.Conv(w, (3, 2), strides=(2, 1), padding="VALID"), stax.Erf(),
        stax.Conv(w, (2, 2), padding="VALID", b_std=0.2), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(w)),
    "circular_avgpool": lambda w: stax.serial(
        stax.Conv(w, (3, 3), padding="CIRCULAR"), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
        stax.Conv(w, (2, 2), padding="SAME", W_std=1.3), stax.Relu(), stax.Flatten(), stax.Dense(w)),
    "sumpool_globalsum": lambda w: stax.serial(
        stax.Conv(w, (3, 3), padding="SAME"), stax.Relu(), stax.SumPool((2, 2), padding="SAME"),
        stax.Dense(w, W_std=0.5), stax.Abs(), stax.GlobalSumPool(), stax.Dense(w, W_std=0.5)),
}


def check_mc_split(nets, x, n_samples, bound):
    """`check_mc` with the NNGP and the NTK estimated apart. `nets[g]` and `n_samples[g]` are the network and the
    number of networks for `g` in ("nngp", "ntk"); the analytic kernels do not depend on the width. The NNGP needs
    forward passes only and affords many more networks; the NTK uses the structured implementation, the cheapest
    for convolutions (~5x faster than "jacobian" here). Returns `(analytic, mc)`, both `Kernel`s."""
    analytic = nets["nngp"].kernel(x, None, ("nngp", "ntk"))
    mc = {}
    for g in ("nngp", "ntk"):
        init_fn, apply_fn, _ = nets[g]
        mc[g] = ntkit.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(42), n_samples[g],
                                           implementation="structured" if g == "ntk" else "auto")(x, None, g)
        a = getattr(analytic, g)
        assert a.shape == mc[g].shape and a.dtype == x.dtype, (g, a.shape, mc[g].shape, a.dtype)
        err = _rel(mc[g], a)
        assert err < bound, f"{g}: relative error {err:.3f} >= {bound}"
    return analytic, ntkit.Kernel(**mc)


def _conv_no_readout(width):
    return stax.serial(stax.Conv(width, (3, 3), padding="SAME"), stax.Relu(), stax.Conv(width, (3, 3), padding="SAME"))


def test_conv_spatial_output_vs_monte_carlo(dtype):
    """No readout: the full `(N1, N2, H, H', W, W')` kernel of two 4x3x2 images (`H ≠ W`, so swapped spatial axes
    cannot pass).

    One nonlinearity, so each layer's input is exactly Gaussian given the layers before and the Monte Carlo mean has
    no finite-width bias: the error is statistical alone. NNGP: 64 channels, 512 networks; NTK: 32 channels, 64
    networks. Measured over 8 keys: 1.9% (max 2.4%) and 1.7% (max 2.4%) relative error. The pairs of distinct
    positions carry ~70% of the NNGP's norm and ~50% of the NTK's, and a formula 15% off on them alone is ~11% and
    ~8% away from these estimates: the bound 0.05 rejects it.
    """
    x = _inputs(dtype, (2, 4, 3, 2))
    bound = 0.05
    analytic, mc = check_mc_split({"nngp": _conv_no_readout(64), "ntk": _conv_no_readout(32)}, x,
                                  {"nngp": 512, "ntk": 64}, bound)
    assert analytic.nngp.shape == (2, 2, 4, 4, 3, 3)
    same_position = np.einsum("hH,wW->hHwW", np.eye(4), np.eye(3))
    for g in ("nngp", "ntk"):
        wrong = getattr(analytic, g) * (same_position + 0.85 * (1 - same_position))[None, None]
        assert _rel(getattr(mc, g), wrong) > bound, g


@pytest.mark.parametrize("name", sorted(CONV_NETS))
def test_conv_vs_monte_carlo(name, dtype):
    """2-D convolution nets on 6x5x3 images, 64 channels, 32 networks (64 for `circular_avgpool`, whose NNGP
    estimate is the noisiest: over 6 keys its error at 32 networks spread over 4-11%, at 64 networks 2-5%)."""
    n_samples = 2 * N_SAMPLES if name == "circular_avgpool" else N_SAMPLES
    check_mc(CONV_NETS[name](64), _inputs(dtype, (3, 6, 5, 3)), n_samples, 0.1)


def _conv_gap(dims, width, padding="CIRCULAR"):
    return stax.serial(stax.Conv(width, (3,) * dims, padding="SAME", b_std=0.1), stax.Relu(),
                       stax.Conv(width, (2,) * dims, padding=padding), stax.Relu(), stax.GlobalAvgPool(),
                       stax.Dense(width))


@pytest.mark.parametrize("dims", [1, 3])
def test_conv_1d_3d_vs_monte_carlo(dims, dtype):
    """1-D (5x2 inputs) and 3-D (3x2x2x2) convolutions, 64 channels, 64 networks (structured NTK, the cheapest here).

    Measured over 8 keys, the relative error is 2.7% (max 5.9%) for the NNGP and 2.7% (max 4.9%) for the NTK in 1-D,
    2.8% (max 5.1%) and 2.4% (max 4.2%) in 3-D, finite-width bias included (two nonlinearities). The kernel with the
    circular convolution zero-padded instead (a boundary bug) differs by 18% (1-D) and 61% (3-D), and the same bound
    rejects it.
    """
    x = _inputs(dtype, (3, 5, 2) if dims == 1 else (2, 3, 2, 2, 2))
    bound = 0.1
    _, mc = check_mc(_conv_gap(dims, 64), x, 64, bound, implementation="structured")
    wrong = _conv_gap(dims, 64, padding="SAME").kernel(x, None, ("nngp", "ntk"))
    assert _rel(mc.nngp, wrong.nngp) > bound and _rel(mc.ntk, wrong.ntk) > bound


def test_residual_fan_in_sum_vs_monte_carlo(dtype):
    """Residual block x + Dense(Relu(Dense(x))), width 256, 32 networks."""
    block = stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), stax.Dense(WIDTH, W_std=1.2)),
                                                      stax.Identity()), stax.FanInSum())
    net = stax.serial(stax.Dense(WIDTH, b_std=0.1), block, stax.Relu(), stax.Dense(WIDTH))
    check_mc(net, _inputs(dtype), N_SAMPLES, 0.08)


def test_fan_in_concat_and_prod_vs_monte_carlo(dtype):
    """Concatenation of branches of widths 128 and 384, then a product of two branches; 32 networks."""
    concat = stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Dense(128), stax.Relu()),
                                                       stax.serial(stax.Dense(384, W_std=2.0), stax.Erf())),
                         stax.FanInConcat(), stax.Dense(WIDTH))
    check_mc(concat, _inputs(dtype), N_SAMPLES, 0.08)
    prod = stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Dense(WIDTH), stax.Relu()),
                                                     stax.serial(stax.Dense(WIDTH, b_std=0.5), stax.Sin())),
                       stax.FanInProd(), stax.Dense(WIDTH))
    check_mc(prod, _inputs(dtype), N_SAMPLES, 0.1)


def test_layer_norm_vs_monte_carlo(dtype):
    """LayerNorm after an affine layer, width 256, 32 networks; inputs of different norms."""
    x = _inputs(dtype) * jnp.arange(1, 5, dtype=dtype)[:, None]
    net = stax.serial(stax.Dense(WIDTH, W_std=1.5, b_std=0.3), stax.LayerNorm(), stax.Relu(), stax.Dense(WIDTH))
    analytic, _ = check_mc(net, x, N_SAMPLES, 0.08)
    unnormalized = stax.serial(stax.Dense(WIDTH, W_std=1.5, b_std=0.3), stax.Relu(), stax.Dense(WIDTH))
    assert _rel(unnormalized.kernel(x, None, "nngp"), analytic.nngp) > 0.3


def test_dropout_vs_monte_carlo(dtype):
    """Dropout (rate 0.3) in train mode scales only each example's own variance; width 256, 32 networks."""
    net = stax.serial(stax.Dense(WIDTH, b_std=0.1), stax.Relu(), stax.Dropout(0.3), stax.Dense(WIDTH))
    analytic, _ = check_mc(net, _inputs(dtype), N_SAMPLES, 0.08, implementation="structured", rng=jax.random.key(7))
    test_mode = stax.serial(stax.Dense(WIDTH, b_std=0.1), stax.Relu(), stax.Dropout(0.3, "test"), stax.Dense(WIDTH))
    k = test_mode.kernel(_inputs(dtype), None, "nngp")
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(np.asarray(analytic.nngp)[off], np.asarray(k)[off], rtol=1e-5)
    assert np.all(np.diag(analytic.nngp) > 1.3 * np.diag(k))


def test_elementwise_on_inputs_raises(dtype):
    net = stax.serial(stax.Relu(), stax.Dense(1))
    with pytest.raises(ValueError, match="Gaussian input"):
        net.kernel(_inputs(dtype), None, "nngp")
    with pytest.raises(ValueError, match="Gaussian input"):
        stax.serial(stax.Dense(4), stax.Relu(), stax.Elementwise(jnp.tanh)).kernel(_inputs(dtype), None, "nngp")
    assert math.isfinite(float(stax.serial(stax.Dense(4), stax.Relu()).kernel(_inputs(dtype), None, "nngp")[0, 0]))


def test_global_self_attention_vs_monte_carlo(dtype):
    """Attention over 5 positions, 2 heads, 128 key/value/out channels, 32 networks; 1/n_k logit scaling."""
    net = stax.serial(stax.Conv(128, (2,), padding="SAME"),
                      stax.GlobalSelfAttention(128, 128, 128, 2, W_out_std=1.2, b_std=0.1), stax.Relu(),
                      stax.GlobalAvgPool(), stax.Dense(128))
    check_mc(net, _inputs(dtype, (3, 5, 3)), N_SAMPLES, 0.1)
    with pytest.raises(NotImplementedError, match="linear_scaling"):
        stax.serial(stax.Conv(4, (2,)), stax.GlobalSelfAttention(4, 4, 4, 1, linear_scaling=False)).kernel(
            _inputs(dtype, (3, 5, 3)), None, "nngp")


def test_identity_attention_vs_monte_carlo(dtype):
    """`1/√n_k` logits, identity attention: conv width 1024, 32 heads of 8 key/value channels, 32 networks.

    The kernel is cubic in the input covariance, so the layer before is wide (its fluctuations enter cubed). The
    NTK term carried from the input's NTK (`M' Θ S`, ~14% of the NTK here) is dropped in a wrong variant, which
    the same bound rejects.
    """
    conv = stax.Conv(1024, (2,), padding="SAME", b_std=0.2)
    attention = stax.GlobalSelfAttention(128, 8, 8, 32, linear_scaling=False, attention_mechanism="IDENTITY",
                                         W_query_std=1.3, W_key_std=0.9, W_out_std=1.2, b_std=0.1)
    net = stax.serial(conv, attention, stax.Flatten(), stax.Dense(128))
    x = _inputs(dtype, (3, 5, 3))
    analytic, mc = check_mc(net, x, N_SAMPLES, 0.1)
    assert _rel(mc.ntk, analytic.ntk) < 0.06
    k = conv.transform(input_state(x, None, diagonal_spatial=False, compute_ntk=True))
    squares = jnp.mean(k.nngp * k.nngp, (2, 3), keepdims=True)
    theta_term = (1.2 * 1.3 * 0.9) ** 2 * k.ntk * squares
    wrong = analytic.ntk - jnp.mean(jnp.diagonal(theta_term, axis1=2, axis2=3), -1)
    assert _rel(mc.ntk, wrong) > 0.06


def test_identity_attention_with_linear_scaling_vanishes(dtype):
    """With `1/n_k` logits the identity attention output tends to 0: only the bias is left."""
    attention = stax.GlobalSelfAttention(8, 8, 8, 2, attention_mechanism="identity", b_std=0.3)
    k = stax.serial(stax.Conv(8, (2,)), attention).kernel(_inputs(dtype, (3, 5, 3)), None)
    np.testing.assert_allclose(k.nngp, 0.09, rtol=1e-6)
    np.testing.assert_allclose(k.ntk, 0.09, rtol=1e-6)
    with pytest.raises(ValueError, match="attention_mechanism"):
        stax.GlobalSelfAttention(8, 8, 8, 2, attention_mechanism="RELU")
