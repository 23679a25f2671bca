"""`ntkit.batch` (neural-tangents' `nt.batch`) and `monte_carlo_kernel_fn`'s neural-tangents call shape.

References are independent: the closed form of a ReLU network (tests/nn/test_nt_compat.py) and `J Jᵀ` from
`jax.jacrev`. Run under `jax_numpy_rank_promotion="raise"`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit as nt
from ntkit import nn as stax
from tests.nn.test_nt_compat import dense_abrelu_dense, rank_promotion_raise  # noqa: F401
from tests.tolerance import assert_close

pytestmark = pytest.mark.usefixtures("rank_promotion_raise")

NET = (stax.Dense(16, 1.4, 0.2), stax.Relu(), stax.Dense(2, 0.9, 0.1))
HYPER = (1.4, 0.2, 0.9, 0.1)


def _x(dtype, n, seed):
    return jax.random.normal(jax.random.key(seed), (n, 3), dtype)


def _brute_ntk(apply_fn, params, x1, x2):
    """`J(x1) J(x2)ᵀ / O` from `jax.jacrev`, float64."""
    def flat(x):
        jac = jax.jacrev(apply_fn)(params, x)
        leaves = [np.asarray(j, np.float64).reshape(x.shape[0], 2, -1) for j in jax.tree_util.tree_leaves(jac)]
        return np.concatenate(leaves, -1)
    return np.einsum("iap,jap->ij", flat(x1), flat(x2)) / 2


@pytest.mark.parametrize("same", [True, False])
def test_batch_of_an_analytic_kernel_fn_is_the_closed_form(same, dtype):
    """`nt.batch(kernel_fn, batch_size=2)` on 4 x 2 examples: tiles of 2."""
    _, _, kernel_fn = stax.serial(*NET)
    x1, x2 = _x(dtype, 4, 0), _x(dtype, 2, 1)
    nngp, ntk, var1 = dense_abrelu_dense(x1, x1 if same else x2, *HYPER)
    batched = nt.batch(kernel_fn, batch_size=2)
    k = batched(x1, None if same else x2, ("nngp", "ntk"))
    assert_close(k.nngp, nngp, dtype, scale=10)
    assert_close(k.ntk, ntk, dtype, scale=10)
    state = nt.batch(kernel_fn, 2, -1, True)(x1, None if same else x2)  # positional, get=None: the state
    assert_close(state.cov1, var1, dtype, scale=10)
    assert_close(nt.batch(kernel_fn, 0)(x1, None if same else x2, "ntk"), ntk, dtype, scale=10)
    jitted = nt.batch(jax.jit(kernel_fn, static_argnames="get"), batch_size=2)  # neural-tangents' usual order
    assert_close(jitted(x1, None if same else x2, "ntk"), ntk, dtype, scale=10)


def test_batch_of_empirical_kernel_fns_is_the_brute_force_ntk(dtype):
    init_fn, apply_fn, _ = stax.serial(*NET)
    x1, x2 = _x(dtype, 4, 0), _x(dtype, 2, 1)
    _, params = init_fn(jax.random.key(2), x1.shape)
    expected = _brute_ntk(apply_fn, params, x1, x2)
    ntk_fn = nt.batch(nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation="jacobian"), batch_size=2)
    assert_close(ntk_fn(x1, x2, params), expected, dtype, scale=10)
    kernel_fn = nt.batch(nt.empirical_kernel_fn(apply_fn, implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION),
                         batch_size=2)
    assert_close(kernel_fn(x1, x2, "ntk", params), expected, dtype, scale=10)


def test_batch_of_any_function_assembles_tiles(dtype):
    """A plain (jitted) function without `batch_size`: every tile is computed and placed, pytree outputs too."""
    calls = []

    def kernel_fn(a, b):
        calls.append((a.shape[0], None if b is None else b.shape[0]))
        b = a if b is None else b
        return nt.Kernel(nngp=a @ b.T, ntk=jnp.exp(-(a[:, None, 0] - b[None, :, 0]) ** 2))

    x1, x2 = _x(dtype, 5, 0), _x(dtype, 3, 1)
    x1n, x2n = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    out = nt.batch(kernel_fn, batch_size=2)(x1, x2)
    assert_close(out.nngp, x1n @ x2n.T, dtype)
    assert_close(out.ntk, np.exp(-(x1n[:, None, 0] - x2n[None, :, 0]) ** 2), dtype)
    assert len(calls) == 3 * 2
    calls.clear()
    out = nt.batch(jax.jit(lambda a, b: kernel_fn(a, b).nngp), batch_size=2)(x1, None)
    assert_close(out, x1n @ x1n.T, dtype)


def test_batch_store_on_device_false_returns_host_arrays(dtype):
    _, _, kernel_fn = stax.serial(*NET)
    out = nt.batch(kernel_fn, batch_size=2, store_on_device=False)(_x(dtype, 3, 0), None, "ntk")
    assert out.devices() == {jax.devices("cpu")[0]}


@pytest.mark.parametrize("kwargs", [{"batch_size": -1}, {"batch_size": 1.5}, {"device_count": -2},
                                    {"store_on_device": 1}])
def test_batch_rejects_bad_arguments(kwargs):
    _, _, kernel_fn = stax.serial(*NET)
    with pytest.raises((ValueError, TypeError)):
        nt.batch(kernel_fn, **kwargs)


def test_batch_refuses_a_second_batch_size(dtype):
    _, _, kernel_fn = stax.serial(*NET)
    with pytest.raises(TypeError, match="batch_size"):
        nt.batch(kernel_fn, 2)(_x(dtype, 3, 0), None, "ntk", batch_size=1)


def test_monte_carlo_positional_arguments_and_a_list_of_sample_counts(dtype):
    """neural-tangents' positional order `(init_fn, apply_fn, key, n_samples, batch_size, device_count,
    store_on_device, trace_axes, diagonal_axes, vmap_axes, implementation)`; `n_samples=[1, 3]` gives a generator
    of the averages over the first 1 and 3 networks (network `s` from `fold_in(key, s)`), each `J Jᵀ` by
    `jax.jacrev`."""
    init_fn, apply_fn, _ = stax.serial(*NET)
    key = jax.random.key(7)
    x1, x2 = _x(dtype, 4, 0), _x(dtype, 2, 1)
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, [3, 1], 2, -1, True, (-1,), (), 0,
                                  nt.NtkImplementation.JACOBIAN_CONTRACTION)
    estimates = list(mc(x1, x2, "ntk"))
    per_net = [_brute_ntk(apply_fn, init_fn(jax.random.fold_in(key, s), x1.shape)[1], x1, x2) for s in range(3)]
    assert len(estimates) == 2
    assert_close(estimates[0], per_net[0], dtype, scale=10)
    assert_close(estimates[1], np.mean(per_net, 0), dtype, scale=10)
    one = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, 3, store_on_device=False,
                                   implementation="jacobian")(x1, x2, None)
    assert isinstance(one, nt.Kernel) and one.ntk.devices() == {jax.devices("cpu")[0]}
    assert_close(one.ntk, np.mean(per_net, 0), dtype, scale=10)


@pytest.mark.parametrize("n_samples", [0, [], [2, 0], "3", 2.0])
def test_monte_carlo_rejects_bad_sample_counts(n_samples):
    init_fn, apply_fn, _ = stax.serial(*NET)
    with pytest.raises(ValueError, match="n_samples"):
        nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), n_samples)


def test_batch_of_a_multi_input_network(dtype):
    """A list of inputs (a multi-input `ntkit.nn` network) is tiled by `batch` itself, not refused; against the
    untiled kernel."""
    _, _, kernel_fn = stax.serial(stax.parallel(stax.Dense(4), stax.Dense(4)), stax.FanInSum(), stax.Relu(),
                                  stax.Dense(1))
    keys = jax.random.split(jax.random.key(7), 2)
    x = [jax.random.normal(keys[0], (5, 3), dtype), jax.random.normal(keys[1], (5, 2), dtype)]
    assert_close(nt.batch(kernel_fn, batch_size=2)(x, None, "ntk"), kernel_fn(x, None, "ntk"), dtype)
