"""`stax.ConvTranspose` (neural-tangents' transposed convolution): output shapes, the exact kernel of one layer
against the finite layer's own Jacobian, and Monte Carlo averages of finite `ConvTranspose → Relu → ConvTranspose`
networks.

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


@pytest.mark.parametrize("k, s, padding", [(3, 1, "VALID"), (3, 2, "SAME"), (1, 3, "VALID"), (4, 2, "VALID"),
                                           (2, 3, "SAME"), (4, 2, "SAME")])
def test_output_shape(k, s, padding, dtype):
    """Outputs `n·s + max(k − s, 0)` positions (`VALID`) or `n·s` (`SAME`), as neural-tangents; `init` agrees with
    `apply` and with the kernel's shape."""
    x = jnp.ones((2, 5, 3), dtype)
    init_fn, apply_fn, kernel_fn = stax.ConvTranspose(4, (k,), (s,), padding)
    n_out = 5 * s + (max(k - s, 0) if padding == "VALID" else 0)
    out_shape, params = init_fn(jax.random.key(0), x.shape)
    assert out_shape == (2, n_out, 4)
    assert apply_fn(params, x).shape == out_shape
    assert kernel_fn(x, None, "nngp").shape == (2, 2, n_out, n_out)


def _jacobian_ntk(apply_fn, params, x1, x2):
    """`Σ_θ ∂f(x1)[o, 0]/∂θ ∂f(x2)[o', 0]/∂θ` of the finite layer (channel 0), laid out `(N1, N2, S_1, S_1', ...)`."""
    def flat(x):
        jac = jax.jit(jax.jacrev(lambda p: apply_fn(p, x)[..., 0]))(params)
        leaves = [np.asarray(j, np.float64) for j in jax.tree_util.tree_leaves(jac)]
        return np.concatenate([j.reshape(j.shape[:x.ndim - 1] + (-1,)) for j in leaves], -1)

    j1, j2 = flat(x1), flat(x2)
    n = x1.ndim - 2
    s1, s2 = "hwd"[:n], "HWD"[:n]
    out = "ab" + "".join(a + b for a, b in zip(s1, s2, strict=True))
    return np.einsum(f"a{s1}p,b{s2}p->{out}", j1, j2)


CASES = {  # filter, strides, padding, input spatial shape
    "1d_s1_valid": ((3,), (1,), "VALID", (5,)),
    "1d_s2_same": ((3,), (2,), "SAME", (4,)),
    "1d_s3_valid_k2": ((2,), (3,), "VALID", (3,)),
    "2d_s21_same": ((2, 3), (2, 1), "SAME", (3, 4)),
    "2d_s2_valid": ((3, 2), (2, 2), "VALID", (2, 3)),
}


@pytest.mark.parametrize("name, parameterization", [(name, "ntk") for name in sorted(CASES)]
                         + [("1d_s2_same", "standard"), ("2d_s2_valid", "standard")])
def test_single_layer_kernel_is_exact(name, parameterization, dtype):
    """A single layer is linear in its parameters `θ = (W, b)`, so its kernels are exact at any width: the
    Jacobian `J` of the finite layer (automatic differentiation of `jax.lax.conv_transpose`) gives
    `E_θ[f(x) f(x')] = Σ' = σ_w²/n J_W J_W'ᵀ + σ_b²` and `Θ' = J Jᵀ` (`n = q·C`; NTK parameterization: `J_W` already
    carries `σ_w/√n` and `Θ' = Σ'`; standard: `Θ' = J_W J_W'ᵀ + 1`)."""
    filter_shape, strides, padding, spatial = CASES[name]
    c, w_std, b_std = 3, 1.3, 0.4
    x1 = jax.random.normal(jax.random.key(0), (3,) + spatial + (c,), dtype)
    x2 = jax.random.normal(jax.random.key(1), (2,) + spatial + (c,), dtype)
    init_fn, apply_fn, kernel_fn = stax.ConvTranspose(2, filter_shape, strides, padding, w_std, b_std,
                                                      parameterization=parameterization)
    _, params = init_fn(jax.random.key(2), x1.shape)
    jjt = _jacobian_ntk(apply_fn, params, x1, x2)
    fan_in = c * int(np.prod(filter_shape))
    if parameterization == "ntk":
        nngp = ntk = jjt
    else:  # J_W J_W'ᵀ is `jjt - 1` (the bias contributes 1)
        nngp = w_std ** 2 / fan_in * (jjt - 1) + b_std ** 2
        ntk = jjt
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    assert_close(k.nngp, nngp, dtype, scale=10)
    assert_close(k.ntk, ntk, dtype, scale=10)
    # neural-tangents' `diagonal_spatial=True`: the equal-position entries
    diag = kernel_fn(x1, x2, "nngp", diagonal_spatial=True)
    expected = np.einsum("abhh->abh" if len(spatial) == 1 else "abhhww->abhw", nngp)
    assert_close(diag, expected, dtype, scale=10)


def test_diagonal_layout_inside_the_network(dtype):
    """Before `Flatten` only the variances `Σ[o, o]` are carried (the diagonal layout, a box filter over the dilated
    variances): the readout kernel equals the mean over positions of the full-layout kernel's diagonal."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 3, 2), dtype)
    body = [stax.ConvTranspose(8, (3, 2), (2, 1), "VALID", 1.2, 0.1), stax.Relu(),
            stax.ConvTranspose(8, (2, 2), (1, 2), "SAME", 1.1, 0.2)]
    full = stax.serial(*body).kernel(x, None, ("nngp", "ntk"))
    flat = stax.serial(*body, stax.Flatten()).kernel(x, None, ("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        f = np.asarray(getattr(full, g), np.float64)
        diag = np.einsum("abhhww->abhw", f)
        assert_close(getattr(flat, g), diag.mean((2, 3)), dtype, scale=10)


def _no_readout(width, strides, padding):
    return stax.serial(stax.ConvTranspose(width, (3,), strides, padding, 1.2, 0.1), stax.Relu(),
                       stax.ConvTranspose(width, (2,), strides, padding, 1.1, 0.2))


MC_CASES = [((1,), "VALID"), ((1,), "SAME"), ((2,), "VALID"), ((2,), "SAME")]


@pytest.mark.parametrize("strides, padding", MC_CASES)
def test_spatial_output_vs_monte_carlo(strides, padding, dtype):
    """No readout: the full `(N1, N2, O, O')` kernel of `ConvTranspose → Relu → ConvTranspose` on 1-D inputs of 3
    positions. One nonlinearity: each layer's input is Gaussian given the layers before, so the error is
    statistical alone. NNGP: 64 channels, 512 networks, measured 0.8-2.4% over 3 keys (bound 0.045); NTK: 32
    channels, 64 networks, 1.2-4.8% (bound 0.07). The NNGP 15% off on the pairs of distinct positions is 6-12%
    away from the estimate, and rejected."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 2), dtype)
    analytic = _no_readout(64, strides, padding).kernel(x, None, ("nngp", "ntk"))
    for g, width, n_samples, bound in (("nngp", 64, 512, 0.045), ("ntk", 32, 64, 0.07)):
        net = _no_readout(width, strides, padding)
        mc = ntkit.monte_carlo_kernel_fn(net.init, net.apply, jax.random.key(1), n_samples, vmap_axes=0)(x, None, g)
        a = getattr(analytic, g)
        assert a.shape == mc.shape and a.dtype == x.dtype
        assert _rel(mc, a) < bound, (g, _rel(mc, a))
        if g == "nngp":
            o = a.shape[-1]
            wrong = np.asarray(a) * (np.eye(o) + 0.85 * (1 - np.eye(o)))
            assert _rel(mc, wrong) > bound


@pytest.mark.slow
@pytest.mark.parametrize("strides, padding", [((2, 1), "VALID"), ((2, 2), "SAME")])
def test_2d_readout_vs_monte_carlo(strides, padding, dtype):
    """2-D: `ConvTranspose → Relu → ConvTranspose → Relu → Flatten → Dense` on 3x2x2 images, 128 channels, 64
    networks (two nonlinearities: finite-width bias included); bound 0.08."""
    x = jax.random.normal(jax.random.key(0), (3, 3, 2, 2), dtype)
    net = stax.serial(stax.ConvTranspose(128, (3, 2), strides, padding, 1.3, 0.1), stax.Relu(),
                      stax.ConvTranspose(128, (2, 2), strides, padding, 1.2), stax.Relu(), stax.Flatten(),
                      stax.Dense(128))
    analytic = net.kernel(x, None, ("nngp", "ntk"))
    mc = ntkit.monte_carlo_kernel_fn(net.init, net.apply, jax.random.key(1), 64, vmap_axes=0)(
        x, None, ("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        assert _rel(getattr(mc, g), getattr(analytic, g)) < 0.08, g


def test_bad_arguments_raise():
    with pytest.raises(NotImplementedError, match="CIRCULAR"):
        stax.ConvTranspose(4, (3,), padding="CIRCULAR")
    with pytest.raises(ValueError, match="padding"):
        stax.ConvTranspose(4, (3,), padding="FULL")
    with pytest.raises(ValueError, match="strides"):
        stax.ConvTranspose(4, (3,), (0,))
    with pytest.raises(NotImplementedError, match="dimension_numbers"):
        stax.ConvTranspose(4, (3, 3), dimension_numbers=("NCHW", "OIHW", "NCHW"))
    with pytest.raises(ValueError, match="ConvTranspose"):
        stax.ConvTranspose(4, (3, 3)).kernel(jnp.ones((2, 5, 3)), None, "nngp")
