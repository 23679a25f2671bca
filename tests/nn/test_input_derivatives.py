"""Derivatives of analytic kernels with respect to the inputs (dataset distillation, kernel inducing points).

Forward (`jax.jvp`) and reverse (`jax.grad`) mode against central finite differences in float64, an all-zero
input row included (where `√0` and `arccos(±1)` used to give NaN); in float32 only finiteness is checked (finite
differences have no accuracy to spare there).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from tests.tolerance import assert_close

ACTIVATIONS = {
    "Relu": stax.Relu,
    "LeakyRelu": lambda **kw: stax.LeakyRelu(0.2, **kw),
    "ABRelu": lambda **kw: stax.ABRelu(-0.5, 1.5, **kw),
    "Abs": stax.Abs,
}


def _net(act, conv=False, **kw):
    """No bias in the first layer, so an all-zero input row has zero variance there.

    The kernel is then not differentiable at that row (it is `|x|`-like), and central differences measure the part
    odd in the input; that part is linear in the input only up to the first nonlinearity, so the second layer has a
    bias (with two nonlinearities on a zero-variance path, no derivative matches central differences).
    """
    if conv:
        return stax.serial(stax.Conv(3, (2, 2), padding="SAME"), act(**kw),
                           stax.Conv(3, (2, 2), padding="SAME", b_std=0.3), act(**kw), stax.Flatten(),
                           stax.Dense(1))
    return stax.serial(stax.Dense(3), act(**kw), stax.Dense(3, b_std=0.3), act(**kw), stax.Dense(1))


def _inputs(dtype, zero_row: bool, conv=False):
    shape = (3, 3, 3, 2) if conv else (3, 4)
    x = jax.random.normal(jax.random.key(0), shape, dtype)
    y = jax.random.normal(jax.random.key(1), (2,) + shape[1:], dtype)
    return (x.at[0].set(0) if zero_row else x), y


def _central_difference(f, x, v, h):
    """Central difference with one Richardson step against the `O(h)` error that the kink at a zero-variance row
    leaves (`D(h) = D₀ + c h + O(h²)` there, `O(h²)` elsewhere): `2 D(h/2) − D(h)`."""
    d = lambda t: (f(x + t * v) - f(x - t * v)) / (2 * t)  # noqa: E731
    return 2 * d(h / 2) - d(h)


def _loss(net, x2, get):
    weights = None

    def f(x):
        nonlocal weights
        k = net.kernel(x, x2, get)
        if weights is None:  # a fixed, generic linear functional of the kernel
            weights = jnp.cos(jnp.arange(k.size, dtype=k.dtype)).reshape(k.shape)
        return jnp.sum(k * weights)

    return f


def _check_directional(dtype, net, x, x2, key, gets=("nngp", "ntk"), jacfwd=False):
    v = jax.random.normal(jax.random.key(key), x.shape, dtype)
    for get in gets:
        f = _loss(net, x2, get)
        fwd = jax.jvp(f, (x,), (v,))[1]
        rev = jnp.vdot(jax.grad(f)(x), v)
        got_all = [fwd, rev] + ([jnp.vdot(jax.jacfwd(f)(x), v)] if jacfwd else [])
        assert np.isfinite(got_all).all(), (get, got_all)
        if dtype != jnp.float64:
            continue
        fd = _central_difference(f, x, v, 2e-5)
        # truncation O(h²) and rounding O(eps/h) are ~1e-10 relative here
        scale = float(jnp.abs(fd)) + 1.0
        for got in got_all:
            assert abs(float(got) - float(fd)) <= 1e-7 * scale, (get, float(got), float(fd))


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n == "Relu" else [pytest.mark.slow])
                                  for n in sorted(ACTIVATIONS)])
def test_matches_finite_differences(dtype, name):
    """Zero row and `x2=None` (cos θ = ±1 on the diagonal); ordinary rows against a second input."""
    x, y = _inputs(dtype, zero_row=True)
    net = _net(ACTIVATIONS[name])
    _check_directional(dtype, net, x, None, key=2)
    _check_directional(dtype, net, x[1:], y, key=3, gets=("ntk",))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_zero_row_against_second_input(dtype, name):
    x, y = _inputs(dtype, zero_row=True)
    _check_directional(dtype, _net(ACTIVATIONS[name]), x, y, key=4, jacfwd=True)


@pytest.mark.slow
def test_conv_matches_finite_differences(dtype):
    x, y = _inputs(dtype, zero_row=True, conv=True)
    _check_directional(dtype, _net(stax.Relu, conv=True), x, y, key=5, gets=("ntk",))


@pytest.mark.parametrize("name", ["Relu", pytest.param("ABRelu", marks=pytest.mark.slow)])
def test_do_stabilize_same_kernel_and_derivatives(dtype, name):
    """neural-tangents' `do_stabilize` rescales the covariances inside the formulas; the results must not change."""
    x, y = _inputs(dtype, zero_row=True)
    x = x * 1e3  # large covariances, where the rescaling is meant to help
    plain, stable = _net(ACTIVATIONS[name]), _net(ACTIVATIONS[name], do_stabilize=True)
    rtol = 1e-12 if dtype == jnp.float64 else 1e-5
    for get in ("nngp", "ntk"):
        np.testing.assert_allclose(stable.kernel(x, y, get), plain.kernel(x, y, get), rtol=rtol)
    np.testing.assert_allclose(jax.grad(_loss(stable, y, "ntk"))(x), jax.grad(_loss(plain, y, "ntk"))(x),
                               rtol=100 * rtol, atol=100 * rtol * float(jnp.max(jnp.abs(x))))


def test_do_stabilize_is_accepted_by_every_relu_constructor():
    for layer in (stax.Relu(do_stabilize=True), stax.LeakyRelu(0.1, do_stabilize=True),
                  stax.ABRelu(0.0, 2.0, do_stabilize=True), stax.Abs(do_stabilize=True)):
        assert layer.nngp_fn is not None and layer.nngp_fn.args[-1] is True


def test_do_stabilize_with_orthogonal_inputs(dtype):
    """`Σ₁₂ = 0` exactly (orthogonal inputs, no bias): the scale comes from the variances, not from `Σ₁₂` alone
    (which divided the variances by the smallest float: an infinite kernel)."""
    x1, x2 = jnp.array([[3.0, 0.0]], dtype), jnp.array([[0.0, 3.0]], dtype)
    for act in (stax.Relu, stax.Abs):
        plain = stax.serial(stax.Dense(1), act(), stax.Dense(1)).kernel(x1, x2, ("nngp", "ntk"))
        stable = stax.serial(stax.Dense(1), act(do_stabilize=True), stax.Dense(1)).kernel(x1, x2, ("nngp", "ntk"))
        assert_close(stable.nngp, plain.nngp, dtype)
        assert_close(stable.ntk, plain.ntk, dtype)
    # ReLU of independent inputs of variance 4.5: E[relu(u)] E[relu(v)] = (√4.5 / √(2π))² = 4.5 / (2π)
    relu = stax.serial(stax.Dense(1), stax.Relu(do_stabilize=True), stax.Dense(1)).kernel(x1, x2, "nngp")
    assert_close(relu, np.array([[4.5 / (2 * np.pi)]]), dtype)
