"""Gradients through the analytic kernel: learning a small support set (kernel inducing points, KIP).

The neural-tangents workflow "kernel inducing points" / dataset distillation (Nguyen et al. 2021, "Dataset
meta-learning from kernel ridge-regression"): the infinite-width `kernel_fn` is differentiable in its inputs, so a
few support points `x_s` can be trained so that kernel ridge regression from them (the infinite ensemble's
prediction, `predict.gradient_descent_mse_ensemble` at `t = ∞`) fits a larger target set. The gradient with respect
to `x_s` is checked against central finite differences in float64, and gradient descent lowers the loss.

Run: `python examples/kernel_gradients.py` (always float64: it enables `jax_enable_x64` itself).
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import ntkit as nt  # noqa: E402
from ntkit import nn as stax  # noqa: E402

_, _, kernel_fn = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(),
                              stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(),
                              stax.Dense(1, W_std=1.5, b_std=0.1))
kernel_fn = jax.jit(kernel_fn, static_argnames="get")

# Target: 200 points of a smooth function on the circle (as 2-D inputs); support: 8 learnable points.
key_t, key_s = jax.random.split(jax.random.PRNGKey(4))
angle = jax.random.uniform(key_t, (200,), minval=0.0, maxval=2 * jnp.pi)
x_target = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
y_target = jnp.stack([jnp.sin(3 * angle), jnp.cos(2 * angle)], axis=1)
x_support_0 = 0.5 * jax.random.normal(key_s, (8, 2))
y_support = jnp.zeros((8, 2)).at[:, 0].set(jnp.linspace(-1.0, 1.0, 8)).at[:, 1].set(jnp.linspace(1.0, -1.0, 8))
DIAG_REG = 1e-3


def kip_loss(x_support):
    """Mean squared error on the target set of kernel ridge regression (NTK) from the support set."""
    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_support, y_support, diag_reg=DIAG_REG)
    return 0.5 * jnp.mean((predict_fn(x_test=x_target, get="ntk") - y_target) ** 2)


def kip_loss_explicit(x_support):
    """The same loss written out: `K_ts (K_ss + ε mean(diag K_ss) I)⁻¹ y_s`."""
    k_ss = kernel_fn(x_support, None, "ntk")
    k_ts = kernel_fn(x_target, x_support, "ntk")
    reg = DIAG_REG * jnp.trace(k_ss) / k_ss.shape[0]
    return 0.5 * jnp.mean((k_ts @ jnp.linalg.solve(k_ss + reg * jnp.eye(8), y_support) - y_target) ** 2)


loss_0 = float(kip_loss(x_support_0))
assert abs(loss_0 - float(kip_loss_explicit(x_support_0))) <= 1e-10 * loss_0

# The gradient against central differences along random directions. Truncation error ~ ε² |L'''| / 6 (here about
# 1e-10 of ‖∇L‖ ‖v‖ at ε = 1e-6: it measures 1e-5 at ε = 1e-3 and falls as ε²) plus rounding ~ eps |L| / ε ~ 1e-10;
# allow 1e-8.
loss_fn = jax.jit(kip_loss)
value_and_grad = jax.jit(jax.value_and_grad(kip_loss))
_, grad = value_and_grad(x_support_0)
step = 1e-6
for i, key in enumerate(jax.random.split(jax.random.PRNGKey(5), 3)):
    v = jax.random.normal(key, x_support_0.shape)
    fd = (loss_fn(x_support_0 + step * v) - loss_fn(x_support_0 - step * v)) / (2 * step)
    exact = jnp.vdot(grad, v)
    rel = float(jnp.abs(fd - exact) / (jnp.linalg.norm(grad) * jnp.linalg.norm(v)))
    print(f"direction {i}: autodiff {float(exact):+.10f}, finite differences {float(fd):+.10f} (rel. diff {rel:.1e})")
    assert rel <= 1e-8, rel

# A few steps of gradient descent on the support inputs (backtracking: halve the step until the loss drops).
x_support, loss, learning_rate = x_support_0, loss_0, 1.0
for _ in range(30):
    _, grad = value_and_grad(x_support)
    while True:
        candidate = x_support - learning_rate * grad
        candidate_loss = float(loss_fn(candidate))
        if candidate_loss < loss:
            x_support, loss, learning_rate = candidate, candidate_loss, 2 * learning_rate
            break
        learning_rate /= 2
print(f"KIP loss on the target set: {loss_0:.4f} at initialization -> {loss:.4f} after 30 steps")
assert loss <= 0.5 * loss_0, (loss_0, loss)
