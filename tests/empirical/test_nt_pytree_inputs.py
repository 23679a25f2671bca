"""Inputs that are pytrees (a tuple per example of a two-input network), as neural-tangents accepted them in the
empirical and Monte Carlo kernels; each NTK against `J Jᵀ` from `jax.jacrev` on the same tuple inputs."""

import jax
import numpy as np
import pytest

import ntkit as nt
from ntkit import nn as stax
from tests.nn.test_nt_compat import abrelu_moments, rank_promotion_raise  # noqa: F401
from tests.tolerance import assert_close

pytestmark = pytest.mark.usefixtures("rank_promotion_raise")


def _net():
    return stax.serial(stax.parallel(stax.Dense(16, b_std=0.1), stax.Dense(16, W_std=1.5)), stax.FanInSum(),
                       stax.Relu(), stax.Dense(2))


def _inputs(dtype, n, seed):
    ka, kb = jax.random.split(jax.random.key(seed))
    return jax.random.normal(ka, (n, 2), dtype), jax.random.normal(kb, (n, 5), dtype)


def _brute_ntk(apply_fn, params, x1, x2):
    def flat(x):
        leaves = jax.tree_util.tree_leaves(jax.jacrev(apply_fn)(params, x))
        return np.concatenate([np.asarray(j, np.float64).reshape(x[0].shape[0], 2, -1) for j in leaves], -1)
    return np.einsum("iap,jap->ij", flat(x1), flat(x2)) / 2


@pytest.mark.parametrize("implementation", ["jacobian", "ntvp", "auto"])
def test_monte_carlo_on_tuple_inputs_is_the_mean_brute_force_ntk(implementation, dtype):
    init_fn, apply_fn, _ = _net()
    x1, x2 = _inputs(dtype, 4, 0), _inputs(dtype, 2, 1)
    key = jax.random.key(5)
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, 2, 2, vmap_axes=0, implementation=implementation)
    shapes = [x.shape for x in x1]
    expected = np.mean([_brute_ntk(apply_fn, init_fn(jax.random.fold_in(key, s), shapes)[1], x1, x2)
                        for s in range(2)], 0)
    assert_close(mc(x1, x2, "ntk"), expected, dtype, scale=10)


def test_empirical_ntk_on_dict_inputs(dtype):
    """A dict of inputs; `structured` falls back to the Jacobian for pytrees and still gives `J Jᵀ`."""
    init_fn, apply_fn, _ = _net()
    xa, xb = _inputs(dtype, 3, 2)
    _, params = init_fn(jax.random.key(0), [xa.shape, xb.shape])

    def f(p, x):
        return apply_fn(p, (x["a"], x["b"]))

    ntk_fn = nt.empirical_ntk_fn(f, implementation="structured")
    assert_close(ntk_fn({"a": xa, "b": xb}, None, params), _brute_ntk(apply_fn, params, (xa, xb), (xa, xb)),
                 dtype, scale=10)
    with pytest.raises(ValueError, match="same number of examples"):
        ntk_fn({"a": xa, "b": xb[:2]}, None, params)


def test_analytic_kernel_fn_on_tuple_inputs_is_the_closed_form(dtype):
    """`parallel(Dense_a, Dense_b) -> FanInSum -> Relu -> Dense`: `Σ = σ_a² x_a·x_a'/2 + σ_b,a² + σ_b² x_b·x_b'/5`,
    then the arc-cosine kernel."""
    _, _, kernel_fn = _net()
    x = _inputs(dtype, 3, 3)
    xa, xb = (np.asarray(v, np.float64) for v in x)
    s = xa @ xa.T / 2 + 0.1 ** 2 + 1.5 ** 2 * xb @ xb.T / 5
    v = np.diagonal(s)
    e, de = abrelu_moments(s, v[:, None], v[None, :], 0.0, 1.0)
    k = kernel_fn(x, None, ("nngp", "ntk"))
    assert_close(k.nngp, e, dtype, scale=10)
    assert_close(k.ntk, e + s * de, dtype, scale=10)
