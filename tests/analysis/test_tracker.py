"""`KernelTracker` against direct NumPy computations from explicit Jacobians, lazy vs rich training, and the
Flax, Equinox and Optax integrations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntkit.nn as stax
from ntkit.analysis import KernelTracker, plot_tracker


def _jacobian_fn(apply_fn, params, x):
    """`params -> (N, k, P)` explicit Jacobian of the outputs in the flattened parameters, float64 NumPy."""
    unravel = ravel_pytree(params)[1]
    jac = jax.jit(jax.jacobian(lambda v: apply_fn(unravel(v), x)))
    return lambda p: np.asarray(jac(ravel_pytree(p)[0]), np.float64)


def _reference(apply_fn, params_list, x, y):
    """The tracker's quantities by NumPy: Θ = (1/k) Σ_o J_o J_oᵀ, f_lin = f₀ + J₀ (θ − θ₀)."""
    jacobian = _jacobian_fn(apply_fn, params_list[0], x)
    j0 = jacobian(params_list[0])
    theta0 = np.einsum("nkp,mkp->nm", j0, j0) / j0.shape[1]
    flat0 = np.asarray(ravel_pytree(params_list[0])[0], np.float64)
    f0 = np.asarray(apply_fn(params_list[0], x), np.float64)
    h = np.eye(x.shape[0]) - 1 / x.shape[0]
    yy = h @ np.asarray(y, np.float64) @ np.asarray(y, np.float64).T @ h
    out = {k: [] for k in ("distance", "alignment", "weight", "gap", "moved", "kernels")}
    for p in params_list:
        j = jacobian(p)
        theta = np.einsum("nkp,mkp->nm", j, j) / j.shape[1]
        out["kernels"].append(theta)
        out["distance"].append(1 - np.sum(theta * theta0) / np.linalg.norm(theta) / np.linalg.norm(theta0))
        hk = h @ theta @ h
        out["alignment"].append(np.sum(hk * yy) / np.linalg.norm(hk) / np.linalg.norm(yy))
        flat = np.asarray(ravel_pytree(p)[0], np.float64)
        out["weight"].append(np.linalg.norm(flat - flat0) / np.linalg.norm(flat0))
        f = np.asarray(apply_fn(p, x), np.float64)
        f_lin = f0 + np.einsum("nkp,p->nk", j0, flat - flat0)
        out["gap"].append(np.sqrt(np.mean((f - f_lin) ** 2)))
        out["moved"].append(np.sqrt(np.mean((f - f0) ** 2)))
    return out


def _tiny():
    def apply_fn(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"][None]) @ p["w2"]

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(k1, (3, 6)), "b1": jnp.zeros(6), "w2": jax.random.normal(k2, (6, 2)) / 2}
    x = jax.random.normal(k3, (5, 3))
    y = jnp.stack([jnp.sin(x[:, 0]), jnp.cos(x[:, 1])], axis=1)
    return apply_fn, params, x, y


def test_quantities_against_numpy(dtype):
    apply_fn, params, x, y = _tiny()
    grad = jax.grad(lambda p: 0.5 * jnp.mean((apply_fn(p, x) - y) ** 2))
    tracker = KernelTracker(apply_fn, x, params, probe_y=y, every=3)
    recorded = [params]
    for step in range(1, 10):
        params = jax.tree_util.tree_map(lambda a, g: a - 0.5 * g, params, grad(params))
        if tracker.update(step, params):
            recorded.append(params)
    h = tracker.history
    np.testing.assert_array_equal(h.step, [0, 3, 6, 9])
    ref = _reference(apply_fn, recorded, x, y)
    # Float32 rounding of the kernels: distances of order ulp·cond are noise; 1e-5 absolute covers them.
    atol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(h.kernel_distance, ref["distance"], rtol=1e-3, atol=atol)
    velocity = [math.nan] + [(1 - np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b)) / 3
                             for a, b in zip(ref["kernels"][1:], ref["kernels"][:-1], strict=True)]
    np.testing.assert_allclose(h.kernel_velocity, velocity, rtol=1e-3, atol=atol)
    np.testing.assert_allclose(h.alignment, ref["alignment"], rtol=1e-4 if dtype == jnp.float32 else 1e-10)
    np.testing.assert_allclose(h.weight_change, ref["weight"], rtol=1e-4 if dtype == jnp.float32 else 1e-10,
                               atol=atol)
    np.testing.assert_allclose(h.linearization_gap, ref["gap"], rtol=1e-3, atol=10 * atol)
    np.testing.assert_allclose(h.output_change, ref["moved"], rtol=1e-4 if dtype == jnp.float32 else 1e-10,
                               atol=atol)
    assert h.kernel_distance[-1] > 100 * atol  # the test would see a wrong formula: the kernel did move
    np.testing.assert_allclose(tracker.kernel, ref["kernels"][-1], rtol=1e-4 if dtype == jnp.float32 else 1e-10)


def test_schedule_is_cheap_off_schedule():
    apply_fn, params, x, _ = _tiny()
    tracker = KernelTracker(apply_fn, x, params, every=[5, 7])
    assert not tracker.update(3, None)  # off schedule: params are not even looked at
    assert tracker.update(5, params) and not tracker.update(5, params)  # recorded once
    assert tracker.update(7, params)
    np.testing.assert_array_equal(tracker.history.step, [0, 5, 7])
    assert math.isnan(tracker.history.alignment[0])  # no probe targets


def _train_mlp(width, lr, steps, key):
    init_fn, apply_fn, _ = stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(1))
    x = jax.random.normal(jax.random.key(10), (16, 4))
    y = jnp.sign(x[:, :1] * x[:, 1:2])
    params = init_fn(key, x.shape)[1]
    tracker = KernelTracker(apply_fn, x, params, probe_y=y, every=steps // 4)
    step_fn = jax.jit(lambda p: jax.tree_util.tree_map(
        lambda a, g: a - lr * g, p, jax.grad(lambda q: 0.5 * jnp.mean((apply_fn(q, x) - y) ** 2))(p)))
    for step in range(1, steps + 1):
        params = step_fn(params)
        tracker.update(step, params)
    return tracker.history


def test_wide_is_lazy_narrow_is_rich():
    # NTK parameterization, 16 points, 200 full-batch steps. Width 1024 at η = 1 (below η_crit), width 8 at η = 4.
    # Measured (float32 / float64 draws): kernel distance 2.7e-4 / 1.4e-4 vs 0.30 / 0.15; weight change 0.11 / 0.075
    # vs 1.19 / 1.04; linearization gap over output change 0.043 / 0.027 vs 0.84 / 0.74. Thresholds sit between.
    wide = _train_mlp(1024, 1.0, 200, jax.random.key(1))
    narrow = _train_mlp(8, 4.0, 200, jax.random.key(1))
    assert wide.kernel_distance[-1] < 0.01 and narrow.kernel_distance[-1] > 0.05
    assert narrow.kernel_distance[-1] > 100 * wide.kernel_distance[-1]
    assert narrow.weight_change[-1] > 5 * wide.weight_change[-1]
    assert wide.linearization_gap[-1] < 0.1 * wide.output_change[-1]
    assert narrow.linearization_gap[-1] > 0.3 * narrow.output_change[-1]


def test_flax_and_optax():
    flax_nn = pytest.importorskip("flax.linen")
    optax = pytest.importorskip("optax")

    class MLP(flax_nn.Module):
        @flax_nn.compact
        def __call__(self, x):
            return flax_nn.Dense(1)(jnp.tanh(flax_nn.Dense(32)(x)))

    model = MLP()
    x = jax.random.normal(jax.random.key(0), (12, 3), jnp.float32)  # Flax's parameters are float32 in both modes
    y = jnp.sin(x[:, :1])
    variables = model.init(jax.random.key(1), x)
    tracker = KernelTracker(model.apply, x, variables, probe_y=y, every=5)
    opt = optax.adam(1e-2)
    state = opt.init(variables)
    grad = jax.jit(jax.grad(lambda v: jnp.mean((model.apply(v, x) - y) ** 2)))
    recorded = [variables]
    for step in range(1, 11):
        with jax.numpy_dtype_promotion("standard"):  # Optax's Adam mixes its int32 count with floats
            updates, state = opt.update(grad(variables), state, variables)
            variables = optax.apply_updates(variables, updates)
        if tracker.update(step, variables):
            recorded.append(variables)
    ref = _reference(model.apply, recorded, x, y)
    np.testing.assert_allclose(tracker.history.weight_change, ref["weight"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tracker.history.kernel_distance, ref["distance"], rtol=1e-2, atol=1e-5)


def test_equinox():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 1, 16, 1, activation=jnp.tanh, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def apply_fn(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    x = jax.random.normal(jax.random.key(1), (10, 3))
    y = jnp.cos(x[:, :1])
    tracker = KernelTracker(apply_fn, x, params, probe_y=y, every=4)
    grad = jax.jit(jax.grad(lambda p: jnp.mean((apply_fn(p, x) - y) ** 2)))
    recorded = [params]
    for step in range(1, 9):
        params = jax.tree_util.tree_map(lambda a, g: a - 0.2 * g, params, grad(params))
        if tracker.update(step, params):
            recorded.append(params)
    ref = _reference(apply_fn, recorded, x, y)
    np.testing.assert_allclose(tracker.history.weight_change, ref["weight"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tracker.history.alignment, ref["alignment"], rtol=1e-4)
    np.testing.assert_allclose(tracker.history.linearization_gap, ref["gap"], rtol=1e-2, atol=1e-5)


def test_plot_tracker_shows_history():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    apply_fn, params, x, y = _tiny()
    tracker = KernelTracker(apply_fn, x, params, probe_y=y, every=1)
    tracker.update(1, jax.tree_util.tree_map(lambda a: a * 1.1, params))
    h = tracker.history
    axes = plot_tracker(h)
    try:
        np.testing.assert_array_equal(axes[0].lines[0].get_ydata(), h.kernel_distance)
        np.testing.assert_array_equal(axes[1].lines[0].get_ydata(), h.alignment)
        np.testing.assert_array_equal(axes[2].lines[0].get_ydata(), h.weight_change)
        np.testing.assert_array_equal(axes[2].lines[1].get_ydata(), h.linearization_gap)
    finally:
        plt.close("all")
    with pytest.raises(TypeError, match="TrackerHistory"):
        plot_tracker(h.kernel_distance)


def test_bad_inputs():
    apply_fn, params, x, y = _tiny()
    with pytest.raises(ValueError, match="every"):
        KernelTracker(apply_fn, x, params, every=0)
    with pytest.raises(ValueError, match="probe_size"):
        KernelTracker(apply_fn, x, params, probe_size=1)
    with pytest.raises(ValueError, match="probe_y"):
        KernelTracker(apply_fn, x, params, probe_y=y[:3])
    with pytest.raises(TypeError, match="params0"):
        KernelTracker(apply_fn, x, {"w": jnp.ones(3, dtype=jnp.int32)})
