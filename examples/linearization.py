"""Weight-space linearization vs function-space NTK prediction, and a real wide network vs its linearization.

The neural-tangents workflow "linearized networks": `nt.linearize(apply_fn, params)` is the first-order Taylor
expansion `f_lin(p, x) = f(params, x) + J(x) (p - params)` of a finite network around its initial parameters.
Trained by gradient flow on the mean squared loss, its outputs are given in closed form by
`predict.gradient_descent_mse` with the empirical NTK `J Jᵀ` of the same network. Here the linearized model is
trained in weight space (a Runge-Kutta integration of gradient flow) and the two must agree up to the integrator's
and the floating-point error; the real network, trained the same way, stays close to its linearization because it
is wide (Lee et al. 2019), and closer still to its second-order expansion (`nt.taylor_expand`).

Run: `python examples/linearization.py` (float64: `JAX_ENABLE_X64=1`).
"""

import jax
import jax.numpy as jnp
import numpy as np

import ntkit as nt
from ntkit import nn as stax

WIDTH, TIME, RK_STEPS = 512, 10.0, 400

key = jax.random.PRNGKey(3)
key_x, key_test, key_net = jax.random.split(key, 3)
x_train = jax.random.normal(key_x, (12, 4))
y_train = jnp.sin(x_train[:, :2]) * jnp.cos(x_train[:, 2:])  # 2 outputs
x_test = jax.random.normal(key_test, (6, 4))

init_fn, apply_fn, _ = stax.serial(
    stax.Dense(WIDTH, W_std=1.5, b_std=0.1), stax.Erf(),
    stax.Dense(WIDTH, W_std=1.5, b_std=0.1), stax.Erf(),
    stax.Dense(2, W_std=1.5, b_std=0.1),
)
_, params_0 = init_fn(key_net, x_train.shape)
f_lin = nt.linearize(apply_fn, params_0)

# Function space: the empirical NTK of the finite network at initialization, and the closed-form outputs. A finite
# network's NTK couples its outputs, so keep the output axes (trace_axes=()): `(N1, N2, 2, 2)`. (The default traced
# kernel, averaged over outputs, is the infinite-width limit's `Θ ⊗ I` and describes this network only roughly.)
ntk_fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)
k_train_train = ntk_fn(x_train, None, params_0)
k_test_train = ntk_fn(x_test, x_train, params_0)
# learning_rate 1: t is the flow's time
predict_fn = nt.predict.gradient_descent_mse(k_train_train, y_train, trace_axes=())
fx_train_0, fx_test_0 = apply_fn(params_0, x_train), apply_fn(params_0, x_test)
fx_train_t, fx_test_t = predict_fn(TIME, fx_train_0, fx_test_0, k_test_train)


def gradient_flow(f):
    """Parameters after gradient flow `dp/dt = -∇L(p)` on `L = mean((f(p, x) - y)²) / 2` for TIME, by classical
    Runge-Kutta (RK4) in RK_STEPS steps."""
    grad = jax.grad(lambda p: 0.5 * jnp.mean((f(p, x_train) - y_train) ** 2))
    h = TIME / RK_STEPS

    def axpy(a, x, y):
        return jax.tree_util.tree_map(lambda xi, yi: yi + a * xi, x, y)

    def step(p, _):
        k1 = grad(p)
        k2 = grad(axpy(-h / 2, k1, p))
        k3 = grad(axpy(-h / 2, k2, p))
        k4 = grad(axpy(-h, k3, p))
        increment = jax.tree_util.tree_map(lambda a, b, c, d: (a + 2 * b + 2 * c + d) / 6, k1, k2, k3, k4)
        return axpy(-h, increment, p), None

    return jax.jit(lambda p: jax.lax.scan(step, p, None, length=RK_STEPS)[0])(params_0)


params_lin = gradient_flow(f_lin)
lin_train, lin_test = f_lin(params_lin, x_train), f_lin(params_lin, x_test)

# 1. Weight space and function space describe the same model: they agree to the RK4 error plus rounding. The flow
# contracts the train error along each NTK eigenvalue λ of k_train_train / y_train.size at rate λ; RK4 has relative
# error ~ (hλ)^5 / 120 per step, so the accumulated error is at most RK_STEPS (hλ_max)^5 / 120 of the initial error.
# Rounding: a few hundred ulps of the outputs' scale per unit of the flow's contraction TIME λ_max.
dtype = fx_train_t.dtype
eps = float(jnp.finfo(dtype).eps)
n_flat = y_train.size
lam_max = float(jnp.linalg.eigvalsh(k_train_train.transpose(0, 2, 1, 3).reshape(n_flat, n_flat))[-1]) / n_flat
h = TIME / RK_STEPS
scale = float(jnp.max(jnp.abs(jnp.concatenate([fx_train_0 - y_train, fx_test_0]))))
rk_error = RK_STEPS * (h * lam_max) ** 5 / 120 * scale
tol = rk_error + 100 * eps * scale * (1 + TIME * lam_max)
err = max(float(jnp.max(jnp.abs(lin_train - fx_train_t))), float(jnp.max(jnp.abs(lin_test - fx_test_t))))
print(f"linearized (weight space) vs NTK prediction (function space): max |diff| = {err:.2e} (tolerance {tol:.1e})")
assert err <= tol, (err, tol)
# Not vacuous: training moved the outputs by O(scale).
moved = float(jnp.max(jnp.abs(fx_train_t - fx_train_0)))
assert moved > 0.3 * scale, (moved, scale)

# 2. The real network, trained by the same flow, stays within O(1/sqrt(WIDTH)) of its linearization (Lee et al.
# 2019, Theorem 2.1): allow 1 / sqrt(WIDTH) of the distance the outputs travelled.
params_net = gradient_flow(apply_fn)
net_test = apply_fn(params_net, x_test)
gap = float(jnp.max(jnp.abs(net_test - lin_test)))
travelled = float(jnp.max(jnp.abs(lin_test - fx_test_0)))
print(f"real network (width {WIDTH}) vs its linearization on test points: max |diff| = {gap:.4f} "
      f"(test outputs moved by up to {travelled:.3f})")
assert gap <= travelled / np.sqrt(WIDTH), (gap, travelled)

# 3. `nt.taylor_expand(apply_fn, params_0, degree)`: degree 1 is the linearization; at the trained network's
# parameters (a displacement δ of order 1/sqrt(WIDTH) per unit of output) the remainder falls from O(δ²) to O(δ³),
# so degree 2 is closer to the real network than degree 1.
taylor_1 = nt.taylor_expand(apply_fn, params_0, 1)
taylor_2 = nt.taylor_expand(apply_fn, params_0, 2)
assert float(jnp.max(jnp.abs(taylor_1(params_lin, x_test) - lin_test))) <= 100 * eps * scale
error_1 = float(jnp.max(jnp.abs(taylor_1(params_net, x_test) - net_test)))
error_2 = float(jnp.max(jnp.abs(taylor_2(params_net, x_test) - net_test)))
print(f"Taylor expansion at the trained network's parameters: degree 1 off by {error_1:.4f}, degree 2 by {error_2:.4f}")
assert error_2 < error_1, (error_1, error_2)
