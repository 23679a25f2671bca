"""Masked inputs (`mask_constant`, neural-tangents' masking) through `ntkit.nn` networks.

References, none of them the masking code: the same network on each sequence cut to its valid length (padding with
the mask constant is then the same as not having the padding), the flat kernel of the position-wise part of a
network averaged by NumPy, and Monte Carlo averages of the masked finite network. Run under
`jax_numpy_rank_promotion="raise"`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
import ntkit.nn as stax
from tests.tolerance import assert_close

PAD = -7.0
LENGTHS = (6, 4, 4, 2)  # sequences padded to 6 positions; examples 1 and 2 have the same length


@pytest.fixture(autouse=True)
def rank_promotion_raise():
    previous = jax.config.jax_numpy_rank_promotion
    jax.config.update("jax_numpy_rank_promotion", "raise")
    yield
    jax.config.update("jax_numpy_rank_promotion", previous)


def _sequences(dtype, lengths=LENGTHS, channels=3, pad=PAD, seed=0):
    """`(x, padded)`: random sequences `(N, L, C)` and the same with positions past each length set to `pad`."""
    x = np.asarray(jax.random.normal(jax.random.key(seed), (len(lengths), max(lengths), channels), dtype))
    padded = x.copy()
    for i, n in enumerate(lengths):
        padded[i, n:] = pad
    return jnp.asarray(x), jnp.asarray(padded)


def _sequence_net(attention: bool = True):
    """Position-wise layers, a SAME convolution and average pool (odd windows, stride 1: on a cut sequence their
    zero padding is the masked positions), attention, global average pooling and a readout."""
    layers = [stax.Dense(8, 1.3, 0.2), stax.Relu(), stax.Conv(8, (3,), padding="SAME", W_std=1.2, b_std=0.1),
              stax.AvgPool((3,), padding="SAME"), stax.LayerNorm()]
    if attention:
        layers += [stax.GlobalSelfAttention(8, 8, 8, 2, W_out_std=1.2, b_std=0.2)]
    return stax.serial(*layers, stax.Erf(), stax.GlobalAvgPool(), stax.Dense(1, 0.9, 0.1))


def test_apply_equals_the_network_on_cut_sequences(dtype):
    """`apply_fn(params, padded, mask_constant=c)` on each example equals `apply_fn(params, x[:, :n])`, its valid
    part alone: for global average pooling (a `MaskedArray`, masked where a whole sequence is) and, without it,
    position by position (zeros at the masked positions); `unmask_fn` returns the arrays."""
    x, padded = _sequences(dtype)
    net = _sequence_net()
    _, params = net.init(jax.random.key(1), x.shape)
    apply_fn = jax.jit(net.apply)  # jitted: one compile per shape is faster than running op by op
    out = jax.jit(functools.partial(net.apply, mask_constant=PAD))(params, padded)
    assert isinstance(out, stax.MaskedArray) and out.masked_value.shape == (4, 1) and out.mask.shape == (4, 1)
    assert not np.asarray(out.mask).any()
    for i, n in enumerate(LENGTHS):
        assert_close(out.masked_value[i], apply_fn(params, x[i:i + 1, :n])[0], dtype, scale=10)
    unmasked = stax.unmask_fn(jax.jit(functools.partial(net.apply, mask_constant=PAD)))(params, padded)
    assert isinstance(unmasked, jax.Array)
    assert_close(unmasked, out.masked_value, dtype)

    body = stax.serial(*net.layers[:-2])  # up to the last nonlinearity: one output per position
    params = params[:-2]
    apply_fn = jax.jit(body.apply)
    out = jax.jit(functools.partial(body.apply, mask_constant=PAD))(params, padded)
    assert out.mask.shape == (4, 6, 1)
    for i, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(np.asarray(out.mask[i, :, 0]), np.arange(6) >= n)
        assert_close(out.masked_value[i, :n], apply_fn(params, x[i:i + 1, :n])[0], dtype, scale=10)
        assert not np.asarray(out.masked_value[i, n:]).any()


def test_kernel_equals_the_kernel_of_cut_sequences(dtype):
    """`kernel_fn(padded, mask_constant=c)[i, j]` equals the kernel of the cut sequences `x_i[:n], x_j[:n]` for
    every pair of equal lengths (the diagonal and the pair (1, 2)), NNGP and NTK, with `x2` given or not, tiled or
    not; the state carries the masks."""
    x, padded = _sequences(dtype)
    net = _sequence_net()
    k = net.kernel(padded, None, ("nngp", "ntk"), mask_constant=PAD)
    pairs = [(i, i) for i in range(4)] + [(1, 2), (2, 1)]
    for i, j in pairs:
        n = LENGTHS[i]
        ref = net.kernel(x[i:i + 1, :n], x[j:j + 1, :n], ("nngp", "ntk"))
        for g in ("nngp", "ntk"):
            assert_close(getattr(k, g)[i, j], getattr(ref, g)[0, 0], dtype, scale=20, err_msg=f"{g} {i} {j}")
    state = net.kernel(padded, padded[1:3], None, batch_size=2, mask_constant=PAD)
    assert state.mask1.shape == (4, 1) and state.mask2.shape == (2, 1)
    assert_close(state.ntk, k.ntk[:, 1:3], dtype, scale=20)


def test_kernel_of_unequal_lengths_against_flat_kernel(dtype):
    """Position-wise layers then `GlobalAvgPool`: `Σ[i, j] = σ_w² mean_{p < n_i, q < n_j} K(x_i[p], x_j[q]) + σ_b²`
    with `K` the kernel of the position-wise part on single positions (flat inputs, a different code path), and
    `Θ[i, j] = Σ[i, j] + σ_w² mean Θ_K` (Dense readout in NTK parameterization); all pairs, unequal lengths too.
    A NaN mask constant works the same."""
    x, padded = _sequences(dtype, pad=np.nan)
    body = stax.serial(stax.Dense(8, 1.4, 0.3), stax.Gelu(), stax.Dense(8, 1.2, 0.1), stax.LayerNorm(), stax.Erf(),
                       stax.Dense(8, 0.8))
    net = stax.serial(body, stax.GlobalAvgPool(), stax.Dense(1, 1.3, 0.2))
    k = net.kernel(padded, None, ("nngp", "ntk"), mask_constant=np.nan)
    flat = np.asarray(x, np.float64).reshape(-1, 3)
    ref = body.kernel(jnp.asarray(flat, dtype), None, ("nngp", "ntk"))
    nngp, ntk = (np.asarray(a, np.float64).reshape(4, 6, 4, 6) for a in ref)
    for i, n in enumerate(LENGTHS):
        for j, m in enumerate(LENGTHS):
            s = 1.3 ** 2 * nngp[i, :n, j, :m].mean() + 0.2 ** 2
            assert_close(k.nngp[i, j], s, dtype, scale=20)
            assert_close(k.ntk[i, j], s + 1.3 ** 2 * ntk[i, :n, j, :m].mean(), dtype, scale=20)


def test_flatten_counts_masked_positions_as_zeros(dtype):
    """`Flatten` then `Dense`: the readout sees `L·C` features, masked ones zero, so `Σ = σ_w² Σ_{p < n} K[p, p] / L
    + σ_b²` (the position-wise kernel `K` of the cut sequences); the mask of `Flatten`'s output is per feature."""
    x, padded = _sequences(dtype)
    body = stax.serial(stax.Dense(8, 1.4, 0.3), stax.Relu())
    net = stax.serial(body, stax.Flatten(), stax.Dense(1, 1.1, 0.2))
    k = net.kernel(padded, None, "nngp", mask_constant=PAD)
    for i, j in [(0, 0), (1, 2), (3, 3)]:
        n = LENGTHS[i]
        diag = np.diagonal(np.asarray(body.kernel(x[i:i + 1, :n], x[j:j + 1, :n], "nngp"), np.float64)[0, 0])
        assert_close(k[i, j], 1.1 ** 2 * diag.sum() / 6 + 0.2 ** 2, dtype, scale=10)
    _, params = body.init(jax.random.key(0), x.shape)
    out = stax.serial(body, stax.Flatten()).apply((params, ()), padded, mask_constant=PAD)
    assert out.mask.shape == (4, 6 * 8)
    np.testing.assert_array_equal(np.asarray(out.mask[3]), np.repeat(np.arange(6) >= 2, 8))


@stax.layer
@stax.supports_masking(remask_kernel=True)
def _Shift(c):
    """A custom layer `x -> x + c` (covariances `+ c²`) declared with `supports_masking`."""
    def kernel_fn(k, **kwargs):
        add = lambda a: None if a is None else a + c ** 2  # noqa: E731
        return k.replace(nngp=add(k.nngp), ntk=k.ntk, cov1=add(k.cov1), cov2=add(k.cov2))

    return (lambda key, shape: (shape, ()), lambda params, x, mask=None, **kw: x + c, kernel_fn)


def test_custom_layer_with_supports_masking(dtype):
    """A `supports_masking(remask_kernel=True)` layer takes masks in a network: kernel and outputs equal those
    of the cut sequences (its `+ c` at masked positions is zeroed, as remasking zeroes the covariances)."""
    x, padded = _sequences(dtype)
    net = stax.serial(stax.Dense(8, 1.2, 0.1), _Shift(0.5), stax.Relu(), stax.Dense(8), stax.GlobalAvgPool(),
                      stax.Dense(1))
    k = net.kernel(padded, None, "ntk", mask_constant=PAD)
    _, params = net.init(jax.random.key(3), x.shape)
    out = jax.jit(functools.partial(net.apply, mask_constant=PAD))(params, padded).masked_value
    apply_fn = jax.jit(net.apply)
    for i, n in enumerate(LENGTHS):
        assert_close(k[i, i], net.kernel(x[i:i + 1, :n], None, "ntk")[0, 0], dtype, scale=10)
        assert_close(out[i], apply_fn(params, x[i:i + 1, :n])[0], dtype, scale=10)


@pytest.mark.parametrize("attention", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_masked_kernel_vs_monte_carlo(attention, dtype):
    """The masked kernel is the limit of the masked finite network (zeros at masked entries): a VALID convolution
    reading past the valid positions, strided average pooling (centre rule of the masks), optionally attention,
    global average pooling; 3 sequences of 6 positions, width 128, 64 networks (attention: 64 heads). Measured
    errors 2-4% (the NNGP fluctuates as a whole with the networks drawn: at width 64, 7-11% for some seeds);
    bound 0.1. The kernel of the same zero-padded inputs without masks (every position averaged, ~50% off) is
    rejected."""
    _, padded = _sequences(dtype, lengths=(6, 3, 2))
    w = 128
    layers = [stax.Dense(w, 1.3, 0.2), stax.Relu(), stax.Conv(w, (2,), padding="VALID", W_std=1.2, b_std=0.1),
              stax.AvgPool((2,), (2,), "SAME")]
    if attention:
        layers += [stax.GlobalSelfAttention(w, w, w, 64, W_out_std=1.2, b_std=0.2)]
    net = stax.serial(*layers, stax.Relu(), stax.Dense(w), stax.GlobalAvgPool(), stax.Dense(w, 0.9, 0.1))
    analytic = net.kernel(padded, None, ("nngp", "ntk"), mask_constant=PAD)
    apply_fn = stax.unmask_fn(functools.partial(net.apply, mask_constant=PAD))
    mc = ntkit.monte_carlo_kernel_fn(net.init, apply_fn, jax.random.key(1), 64, vmap_axes=0)(
        padded, None, ("nngp", "ntk"))
    zeroed = jnp.where(padded == PAD, jnp.zeros((), padded.dtype), padded)
    unmasked = net.kernel(zeroed, None, "nngp")

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    bound = 0.1
    assert rel(mc.nngp, analytic.nngp) < bound, rel(mc.nngp, analytic.nngp)
    assert rel(mc.ntk, analytic.ntk) < bound, rel(mc.ntk, analytic.ntk)
    assert rel(mc.nngp, unmasked) > bound, rel(mc.nngp, unmasked)


def test_continuing_from_a_masked_state(dtype):
    """`kernel_fn(state)` continues a state carrying masks through the masking rules."""
    _, padded = _sequences(dtype)
    head, tail = stax.serial(stax.Dense(8, 1.2), stax.Relu()), stax.serial(stax.Dense(8), stax.GlobalAvgPool())
    state = head.kernel(padded, None, None, mask_constant=PAD)
    assert state.mask1.shape == (4, 6, 1)
    whole = stax.serial(head, tail).kernel(padded, None, "ntk", mask_constant=PAD)
    assert_close(tail.kernel(state, None, "ntk"), whole, dtype)


@pytest.mark.parametrize("layer, name", [
    (stax.Dropout(0.5, mode="train"), "Dropout"), (stax.ConvTranspose(8, (2,)), "ConvTranspose"),
    (stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Identity()), stax.FanInSum()), "FanOut"),
    (stax.ExpNormalized(), "ExpNormalized"), (stax.ImageResize((-1, 3, -1), "linear"), "ImageResize")])
def test_unsupported_layers_raise(layer, name, dtype):
    """A layer without a masking rule raises a `ValueError` naming it, in `kernel_fn` and `apply_fn`."""
    x, padded = _sequences(dtype)
    net = stax.serial(stax.Dense(8), layer, stax.GlobalAvgPool())
    with pytest.raises(ValueError, match=f"masking is not supported by {name}"):
        net.kernel(padded, None, "nngp", mask_constant=PAD)
    _, params = net.init(jax.random.key(0), x.shape)
    with pytest.raises(ValueError, match=f"masking is not supported by {name}"):
        net.apply(params, padded, mask_constant=PAD, rng=jax.random.key(1))


def test_bad_masks_raise(dtype):
    """Masks differing between channels (the inputs' own) cannot be pooled or fed to a nonlinearity; the mask
    constant must be one real number; a custom layer without `supports_masking` raises."""
    _, padded = _sequences(dtype)
    for net in (stax.serial(stax.GlobalAvgPool()), stax.serial(stax.Relu())):
        with pytest.raises(ValueError, match="differ between channels"):
            net.kernel(padded, None, "nngp", mask_constant=PAD)
    net = stax.serial(stax.Dense(8), stax.GlobalAvgPool())
    with pytest.raises(TypeError, match="mask_constant"):
        net.kernel(padded, None, "nngp", mask_constant="pad")
    with pytest.raises(ValueError, match="scalar"):
        net.kernel(padded, None, "nngp", mask_constant=np.zeros(2))

    @stax.layer
    def plain():
        return lambda key, shape: (shape, ()), lambda params, x, **kw: x, lambda k, **kw: k

    with pytest.raises(ValueError, match="masking is not supported by plain"):
        stax.serial(stax.Dense(8), plain()).kernel(padded, None, "nngp", mask_constant=PAD)
