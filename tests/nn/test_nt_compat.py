"""neural-tangents code runs on ntkit with only the imports changed: one test per public name or calling convention,
each checking the number against a closed form (the references below) or a brute-force Jacobian.

Run under `jax_numpy_rank_promotion="raise"`, as strict user code would.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit as nt
from ntkit import nn as stax
from tests.tolerance import assert_close

pytestmark = pytest.mark.usefixtures("rank_promotion_raise")

# Independent float64 NumPy references (closed forms of docs/theory.md §2) and the strict rank-promotion fixture,
# shared with the other neural-tangents compatibility tests (tests/nn/test_nt_*.py, tests/empirical/test_nt_*.py).


@pytest.fixture
def rank_promotion_raise():
    """`jax_numpy_rank_promotion="raise"` for the test, restored after."""
    previous = jax.config.jax_numpy_rank_promotion
    jax.config.update("jax_numpy_rank_promotion", "raise")
    yield
    jax.config.update("jax_numpy_rank_promotion", previous)


def abrelu_moments(cov12, var1, var2, a, b):
    """`E[φ(u)φ(v)]`, `E[φ'(u)φ'(v)]` for `φ = a·min(x, 0) + b·max(x, 0)` (Cho & Saul 2009)."""
    norm = np.sqrt(var1 * var2)
    cos = np.clip(cov12 / norm, -1.0, 1.0)
    theta = np.arccos(cos)
    nngp = a * b * cov12 + (b - a) ** 2 / (2 * math.pi) * norm * (np.sin(theta) + (math.pi - theta) * cos)
    d_nngp = a * b + (b - a) ** 2 / (2 * math.pi) * (math.pi - theta)
    return nngp, d_nngp


def dense_abrelu_dense(x1, x2, w1, b1, w2, b2, a=0.0, b=1.0):
    """NNGP and NTK (NTK parameterization) of `Dense(W1, b1) -> ABRelu(a, b) -> Dense(W2, b2)`, and the
    per-example variances of `x1` at the output."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    d = x1.shape[1]
    s12 = w1 ** 2 * x1 @ x2.T / d + b1 ** 2
    v1 = w1 ** 2 * np.sum(x1 * x1, 1) / d + b1 ** 2
    v2 = w1 ** 2 * np.sum(x2 * x2, 1) / d + b1 ** 2
    e, de = abrelu_moments(s12, v1[:, None], v2[None, :], a, b)
    nngp = w2 ** 2 * e + b2 ** 2
    ntk = nngp + w2 ** 2 * s12 * de
    e11, _ = abrelu_moments(v1, v1, v1, a, b)
    return nngp, ntk, w2 ** 2 * e11 + b2 ** 2


def _x(dtype, n=4, d=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d), dtype)


def _as_float(value) -> float:
    """The Python float a 0-d array holds (what the layer computes with)."""
    return float(np.asarray(value))


def test_array_hyperparameters_give_hashable_layers_and_the_closed_form(dtype):
    """`Dense(512, W_std=jnp.sqrt(2.0), b_std=jnp.array(0.1))`, `LeakyRelu(jnp.array(0.1))`: neural-tangents
    style array hyperparameters; the layers hash (so their compiled steps are cached) and the kernel is the closed
    form of a leaky-ReLU network."""
    w1, b1, alpha, w2, b2 = jnp.sqrt(2.0), jnp.array(0.1), jnp.array(0.1), jnp.array(1.3), jnp.array(0.2)
    net = stax.serial(stax.Dense(512, W_std=w1, b_std=b1), stax.LeakyRelu(alpha), stax.Dense(1, w2, b2))
    hash(net)
    assert isinstance(net.layers[0].W_std, float)
    x1, x2 = _x(dtype), _x(dtype, 3, seed=1)
    k = net.kernel(x1, x2, ("nngp", "ntk"))
    nngp, ntk, _ = dense_abrelu_dense(x1, x2, *map(_as_float, (w1, b1, w2, b2)), a=_as_float(alpha), b=1.0)
    assert_close(k.nngp, nngp, dtype, scale=10)
    assert_close(k.ntk, ntk, dtype, scale=10)


def test_narrow_float_hyperparameters_become_floats():
    """bfloat16 / float16 0-d arrays (which NumPy does not call floating) become Python floats too: the layer
    hashes and keeps the value the array holds."""
    for dtype in (jnp.bfloat16, jnp.float16):
        layer = stax.Dense(4, W_std=jnp.asarray(1.5, dtype), b_std=jnp.asarray(0.1, dtype))
        hash(layer)
        assert isinstance(layer.W_std, float) and layer.W_std == 1.5
        assert isinstance(layer.b_std, float) and layer.b_std == float(jnp.asarray(0.1, dtype))


def test_array_hyperparameters_of_abrelu_and_conv(dtype):
    """`ABRelu(jnp.array(a), jnp.array(b))`; `Conv(.., W_std=jnp.array(.))` on two positions, VALID, filter 2: one
    output position, `Σ' = σ_w²/2 (Σ[0,0] + Σ[1,1]) + σ_b²` (the same offset on both sides)."""
    a, b = jnp.array(-0.5), jnp.array(1.5)
    net = stax.serial(stax.Dense(8, W_std=jnp.array(1.2), b_std=0.3), stax.ABRelu(a, b), stax.Dense(1))
    hash(net)
    x1 = _x(dtype)
    nngp, ntk, _ = dense_abrelu_dense(x1, x1, 1.2, 0.3, 1.0, 0.0, a=-0.5, b=1.5)
    assert_close(net.kernel(x1, None, "nngp"), nngp, dtype, scale=10)
    assert_close(net.kernel(x1, None, "ntk"), ntk, dtype, scale=10)

    conv = stax.Conv(4, (2,), W_std=jnp.array(1.5), b_std=jnp.array(0.5))
    hash(conv)
    x = jax.random.normal(jax.random.key(2), (3, 2, 5), dtype)
    xn = np.asarray(x, np.float64)
    gram = sum(xn[:, i] @ xn[:, i].T for i in range(2)) / 5
    expected = 1.5 ** 2 / 2 * gram + 0.5 ** 2
    k = conv.kernel(x, None, ("nngp", "ntk"))
    assert_close(k.nngp[..., 0, 0], expected, dtype)
    assert_close(k.ntk[..., 0, 0], expected, dtype)


def test_traced_hyperparameters_still_differentiate(dtype):
    """`jax.grad` with respect to `W_std` is not canonicalised away: `∂Θ/∂σ_w = 2σ_w x·x'/d` for one Dense layer."""
    x = _x(dtype)
    w = jnp.asarray(1.3, dtype)
    grad = jax.jacrev(lambda s: stax.Dense(2, W_std=s).kernel(x, None, "ntk"))(w)
    assert_close(grad, 2 * 1.3 * np.asarray(x, np.float64) @ np.asarray(x, np.float64).T / 3, dtype, scale=2)


def test_kernel_fn_positional_get_in_any_case_and_state_fields(dtype):
    """`kernel_fn(x1, x2, get)` positionally, `get` in any case, and neural-tangents' `Kernel` fields
    (`"cov1"`, `"cov2"`, `"shape1"`, ...) as `get`: a tuple gives a named tuple with those fields in that order."""
    _, _, kernel_fn = stax.serial(stax.Dense(16, 1.4, 0.2), stax.Relu(), stax.Dense(2, 0.9, 0.1))
    x1, x2 = _x(dtype), _x(dtype, 3, seed=1)
    nngp, ntk, var1 = dense_abrelu_dense(x1, x2, 1.4, 0.2, 0.9, 0.1)
    _, _, var2 = dense_abrelu_dense(x2, x2, 1.4, 0.2, 0.9, 0.1)
    assert_close(kernel_fn(x1, x2, "NTK"), ntk, dtype, scale=10)
    k = kernel_fn(x1, x2, ("Cov2", "nngp", "cov1"))
    assert k._fields == ("cov2", "nngp", "cov1")
    assert_close(k.nngp, nngp, dtype, scale=10)
    assert_close(k.cov1, var1, dtype, scale=10)
    assert_close(k.cov2, var2, dtype, scale=10)
    assert kernel_fn(x1, x2, "shape1") == (4, 2)
    assert kernel_fn(x1, None, ("x1_is_x2", "is_gaussian")) == (True, True)
    assert kernel_fn(x1, None, "cov2") is None
    with pytest.raises(ValueError, match="get"):
        kernel_fn(x1, None, "covariance")


def test_kernel_state_has_neural_tangents_fields(dtype):
    """What a custom layer reads of neural-tangents' `Kernel`."""
    state = stax.serial(stax.Conv(4, (2,)), stax.Relu()).kernel(jax.random.normal(jax.random.key(0), (2, 5, 3),
                                                                                    dtype), None)
    assert (state.is_reversed, state.diagonal_batch, state.batch_axis, state.channel_axis) == (False, True, 0, 2)
    assert state.mask1 is None and state.mask2 is None and state.is_input is False
    assert state.replace(is_gaussian=True).is_gaussian is True
    assert state.nngp.shape == (2, 2, 4, 4) and state.cov1.shape == (2, 4, 4)


def test_diagonal_spatial_keyword_returns_equal_positions(dtype):
    """`diagonal_spatial=True` (neural-tangents' keyword) keeps the entries with equal positions: for one Conv
    layer on raw inputs, `Σ'[i, i] = σ_w²/q Σ_j x[i+j]·x'[i+j]/C + σ_b²` (SAME padding counts zeros)."""
    x = jax.random.normal(jax.random.key(3), (3, 4, 2), dtype)
    _, _, kernel_fn = stax.Conv(5, (3,), padding="SAME", W_std=1.2, b_std=0.4)
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (0, 0)))
    expected = np.stack([sum(xp[:, i + j] @ xp[:, i + j].T for j in range(3)) for i in range(4)], -1)
    expected = 1.2 ** 2 / 3 * expected / 2 + 0.4 ** 2
    assert_close(kernel_fn(x, None, "nngp", diagonal_spatial=True), expected, dtype)
    state = kernel_fn(x, None, None, diagonal_spatial=True)
    assert state.diagonal_spatial and state.nngp.shape == (3, 3, 4) and state.cov1.shape == (3, 4)
    assert_close(state.cov1, np.stack([np.diagonal(expected[:, :, i]) for i in range(4)], -1), dtype)
    assert kernel_fn(x, None, "nngp", diagonal_spatial=False).shape == (3, 3, 4, 4)


@pytest.mark.parametrize("kwargs, error", [
    ({"diagonal_batch": False}, NotImplementedError), ({"mask_constant": "0"}, TypeError),
    ({"diagonal_spatial": "yes"}, TypeError),
    ({"channel_axis": 0}, NotImplementedError), ({"batch_axis": 1}, NotImplementedError)])
def test_unsupported_kernel_keywords_raise(kwargs, error, dtype):
    """neural-tangents' `kernel_fn` keywords that ntkit cannot honour raise instead of being ignored; their
    default values are accepted."""
    _, _, kernel_fn = stax.serial(stax.Dense(4), stax.Relu())
    with pytest.raises(error):
        kernel_fn(_x(dtype), None, "nngp", **kwargs)
    defaults = kernel_fn(_x(dtype), None, "nngp", diagonal_batch=True, batch_axis=0, channel_axis=1)
    assert_close(defaults, kernel_fn(_x(dtype), None, "nngp"), dtype)


def test_ntk_implementation_enum_has_neural_tangents_codes(dtype):
    """`nt.NtkImplementation` members and values as in neural-tangents; each selects an implementation whose NTK
    equals `J Jᵀ` from `jax.jacrev`."""
    codes = {m.name: int(m) for m in nt.NtkImplementation}
    assert codes == {"AUTO": 0, "JACOBIAN_CONTRACTION": 1, "NTK_VECTOR_PRODUCTS": 2, "STRUCTURED_DERIVATIVES": 3}
    init_fn, apply_fn, _ = stax.serial(stax.Dense(8, b_std=0.3), stax.Erf(), stax.Dense(2))
    x = _x(dtype)
    _, params = init_fn(jax.random.key(1), x.shape)
    jac = jax.jacrev(apply_fn)(params, x)
    flat = np.concatenate([np.asarray(j, np.float64).reshape(4, 2, -1) for j in jax.tree_util.tree_leaves(jac)], -1)
    expected = np.einsum("iap,jap->ij", flat, flat) / 2
    for member in nt.NtkImplementation:
        ntk_fn = nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=member)
        assert_close(ntk_fn(x, None, params), expected, dtype, scale=10, err_msg=member.name)
    with pytest.raises(ValueError, match="implementation"):
        nt.empirical_ntk_fn(apply_fn, implementation=4)


@stax.layer
@stax.supports_masking(remask_kernel=False)
def _Scale(c):
    """A neural-tangents style custom layer: `x -> c x`, every covariance times `c²`."""
    def init_fn(key, input_shape):
        return input_shape, ()

    def apply_fn(params, x, **kwargs):
        return c * x

    @stax.requires(diagonal_spatial=stax.Diagonal(), batch_axis=0, channel_axis=-1)
    def kernel_fn(k, **kwargs):
        scale = lambda a: None if a is None else c ** 2 * a  # noqa: E731
        return k.replace(nngp=scale(k.nngp), ntk=scale(k.ntk), cov1=scale(k.cov1), cov2=scale(k.cov2))

    return init_fn, apply_fn, kernel_fn


@stax.layer
def _MeanOverPositions():
    """A custom global average pool reading all pairs of positions (no `requires`: full covariances)."""
    def init_fn(key, input_shape):
        return (input_shape[0], input_shape[-1]), ()

    def apply_fn(params, x, **kwargs):
        return x.mean(axis=tuple(range(1, x.ndim - 1)))

    def kernel_fn(k, **kwargs):
        n = len(k.shape1) - 2
        mean = lambda a, lead: None if a is None else a.mean(tuple(range(lead, lead + 2 * n)))  # noqa: E731
        return k.replace(nngp=mean(k.nngp, 2), ntk=mean(k.ntk, 2), cov1=mean(k.cov1, 1), cov2=mean(k.cov2, 1),
                         shape1=(k.shape1[0], k.shape1[-1]), shape2=(k.shape2[0], k.shape2[-1]))

    return init_fn, apply_fn, kernel_fn


def test_custom_layers_from_decorators(dtype):
    """`@stax.layer`, `@stax.requires`, `@stax.supports_masking`: `Dense(σ_w, σ_b) -> Scale(3)` is
    `Dense(3σ_w, 3σ_b)` (closed form of the ReLU network), and a custom mean over positions (which needs all pairs
    of positions) matches the NumPy mean of the closed-form Conv kernel of raw inputs."""
    _, apply_fn, kernel_fn = stax.serial(stax.Dense(8, 1.4, 0.2), _Scale(3.0), stax.Relu(), stax.Dense(2, 0.9, 0.1))
    x1, x2 = _x(dtype), _x(dtype, 3, seed=1)
    nngp, ntk, _ = dense_abrelu_dense(x1, x2, 3 * 1.4, 3 * 0.2, 0.9, 0.1)
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    assert_close(k.nngp, nngp, dtype, scale=10)
    assert_close(k.ntk, ntk, dtype, scale=10)
    masked = _Scale(2.0).apply((), x1.at[0, 1].set(7.0), mask_constant=7.0)  # entry (0, 1) masked: zero
    assert isinstance(masked, stax.MaskedArray) and np.asarray(masked.mask).sum() == 1 and bool(masked.mask[0, 1])
    assert_close(masked.masked_value, np.where(masked.mask, 0.0, 2 * np.asarray(x1, np.float64)), dtype)

    x = jax.random.normal(jax.random.key(4), (2, 3, 2), dtype)
    net = stax.serial(stax.Conv(4, (1,), W_std=1.1, b_std=0.3), _MeanOverPositions())
    xn = np.asarray(x, np.float64)
    conv = 1.1 ** 2 * np.einsum("aic,bjc->abij", xn, xn) / 2 + 0.3 ** 2
    assert_close(net.kernel(x, None, "nngp"), conv.mean((2, 3)), dtype)
    flat_net = stax.serial(net, stax.Dense(1))  # ends without spatial axes: still given full covariances
    assert_close(flat_net.kernel(x, None, "nngp"), conv.mean((2, 3)), dtype)


def test_quadrature_activations_under_strict_rank_promotion(dtype):
    """`Elementwise(fn)` by Gauss–Hermite quadrature (and `Gelu(approximate=True)`, which uses it) under
    `jax_numpy_rank_promotion="raise"`: the NNGP of `Dense → sin` against the closed form
    `E[sin u sin v] = e^{-(Σ₁₁+Σ₂₂)/2} sinh Σ₁₂` (sin is entire, so 25 nodes are exact to rounding)."""
    x = _x(dtype, n=3, d=3)
    _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2), stax.Elementwise(jnp.sin))
    nngp = kernel_fn(x, None, "nngp")
    xs = np.asarray(x, np.float64)
    cov = 1.3 ** 2 * xs @ xs.T / 3 + 0.2 ** 2
    var = np.diag(cov)
    want = np.exp(-(var[:, None] + var[None, :]) / 2) * np.sinh(cov)
    assert_close(nngp, want, dtype, scale=5)
    _, _, gelu_fn = stax.serial(stax.Dense(8), stax.Gelu(approximate=True))
    assert np.all(np.isfinite(np.asarray(gelu_fn(x, None, "nngp"))))


def test_tuple_get_comes_back_in_the_order_asked(dtype):
    """`ntk, nngp = kernel_fn(x1, x2, ("ntk", "nngp"))` (neural-tangents returns the fields in the order of `get`):
    every kernel function unpacks in that order, checked against the single-kernel calls."""
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(8, b_std=0.3), stax.Relu(), stax.Dense(1))
    x = _x(dtype)
    _, params = init_fn(jax.random.key(1), x.shape)
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(2), 2)
    empirical = nt.empirical_kernel_fn(apply_fn)
    calls = {"analytic": lambda g: kernel_fn(x, None, g), "batch": lambda g: nt.batch(kernel_fn, 2)(x, None, g),
             "empirical": lambda g: empirical(x, None, g, params), "monte_carlo": lambda g: mc(x, None, g)}
    for name, call in calls.items():
        out = call(("ntk", "nngp"))
        assert out._fields == ("ntk", "nngp"), name
        ntk, nngp = out
        np.testing.assert_array_equal(ntk, call("ntk"), err_msg=name)
        np.testing.assert_array_equal(nngp, call("nngp"), err_msg=name)
        assert call(("nngp", "ntk"))._fields == ("nngp", "ntk")


def test_diagonal_spatial_output_carries_only_diagonals(dtype):
    """`diagonal_spatial=True` on a convolutional network: the layers carry only equal-position covariances (a
    convolution's output diagonal needs only its input's), so 64×64 images fit in 20 MB where the full spatial
    covariances need ~0.5 GB per pair; the result equals the diagonal of the full kernel."""
    conv = lambda: stax.Conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.1)  # noqa: E731
    net = stax.serial(conv(), stax.Relu(), conv())
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 1), dtype)
    k = net.kernel(x, None, ("nngp", "ntk"), diagonal_spatial=True, memory_limit=20e6)
    assert k.ntk.shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="memory_limit"):
        net.kernel(x, None, "ntk", memory_limit=20e6)
    small = x[:, :10, :10]
    full = net.kernel(small, None, ("nngp", "ntk"))
    diagonal = net.kernel(small, None, ("nngp", "ntk"), diagonal_spatial=True)
    for g in ("nngp", "ntk"):
        assert_close(getattr(diagonal, g), np.einsum("abiijj->abij", getattr(full, g)), dtype)
