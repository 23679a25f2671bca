"""Infinite-width ensemble vs an ensemble of real wide networks trained by gradient descent.

The neural-tangents workflow "train an infinite ensemble in closed form": `stax.serial` gives the finite network
(`init_fn`, `apply_fn`) and its infinite-width kernel (`kernel_fn`); `predict.gradient_descent_mse_ensemble` gives
the mean and covariance of the outputs of infinitely many infinitely wide networks after `t` steps of gradient
descent on the mean squared loss. Here 20 networks of width 512 are trained for real on a 1-D regression problem
and the mean of their test outputs is compared with the closed form.

Run: `python examples/infinite_training.py` (float64: `JAX_ENABLE_X64=1`).
"""

import jax
import jax.numpy as jnp
import numpy as np

import ntkit as nt
from ntkit import nn as stax

N_NETS, WIDTH, STEPS = 20, 512, 300

# A 1-D regression problem: a few noisy samples of sin(x), predictions on a grid.
key = jax.random.PRNGKey(10)
key_x, key_noise, key_nets = jax.random.split(key, 3)
x_train = jnp.sort(jax.random.uniform(key_x, (8, 1), minval=-jnp.pi, maxval=jnp.pi), axis=0)
y_train = jnp.sin(x_train) + 0.1 * jax.random.normal(key_noise, x_train.shape)
x_test = jnp.linspace(-jnp.pi, jnp.pi, 40).reshape(40, 1)

init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Dense(WIDTH, W_std=1.5, b_std=0.05), stax.Erf(),
    stax.Dense(WIDTH, W_std=1.5, b_std=0.05), stax.Erf(),
    stax.Dense(1, W_std=1.5, b_std=0.05),
)

# The step size: a third of the largest stable one for the infinite-width NTK.
k_train_train = kernel_fn(x_train, None, "ntk")
learning_rate = float(nt.predict.max_learning_rate(k_train_train, y_train.size)) / 3

# Closed form: mean and covariance of the infinite ensemble after STEPS steps.
predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=learning_rate)
mean_inf, cov_inf = predict_fn(t=STEPS, x_test=x_test, get="ntk", compute_cov=True)


def loss(params, x, y):
    return 0.5 * jnp.mean((apply_fn(params, x) - y) ** 2)


@jax.jit
@jax.vmap
def train_one(key):
    """One network: initialize, STEPS steps of full-batch gradient descent, test outputs."""
    _, params = init_fn(key, x_train.shape)

    def step(params, _):
        grads = jax.grad(loss)(params, x_train, y_train)
        return jax.tree_util.tree_map(lambda p, g: p - learning_rate * g, params, grads), None

    params, _ = jax.lax.scan(step, params, None, length=STEPS)
    return apply_fn(params, x_test)


outputs = np.asarray(train_one(jax.random.split(key_nets, N_NETS)), np.float64)  # (N_NETS, 40, 1)
mean_emp = outputs.mean(axis=0)

# The empirical mean of N_NETS networks is the infinite-ensemble mean plus Monte Carlo noise of standard deviation
# sqrt(var / N_NETS) (var: the ensemble's predicted variance at each test point), plus an O(1/WIDTH) finite-width
# bias. Allow 5 Monte Carlo standard deviations plus scale / WIDTH for that bias. (Predicting at 0.5 * STEPS or
# 1.5 * STEPS instead puts the gap at 6 to 7 standard deviations: the check sees the time scale.)
std_inf = np.sqrt(np.clip(np.diag(np.asarray(cov_inf, np.float64)), 0.0, None))[:, None]
scale = float(np.max(np.abs(np.asarray(y_train))))
gap = np.abs(mean_emp - np.asarray(mean_inf, np.float64))
bound = 5 * std_inf / np.sqrt(N_NETS) + scale / WIDTH
print(f"{N_NETS} networks of width {WIDTH}, {STEPS} steps of learning rate {learning_rate:.3g}")
print(f"max |empirical mean - infinite-width mean| = {gap.max():.4f} (prediction scale {scale:.3f}, "
      f"Monte Carlo std up to {float(std_inf.max() / np.sqrt(N_NETS)):.4f})")
assert np.all(gap <= bound), f"gap {gap.max():.4f} exceeds its bound at {int(np.argmax(gap - bound))}"

# Not vacuous: training moved the mean far from the prior mean 0, and the ensemble's spread matches the
# predicted variance: a sample variance of N_NETS draws is var * chi2(N_NETS - 1) / (N_NETS - 1), within
# [0.28, 2.3] * var with probability 0.998 (the average over correlated test points is no wider).
assert float(np.max(np.abs(np.asarray(mean_inf)))) > 0.5 * scale
var_ratio = float(outputs.var(axis=0, ddof=1).mean() / (std_inf**2).mean())
print(f"empirical / predicted variance (mean over test points) = {var_ratio:.2f}")
assert 0.28 < var_ratio < 2.3, var_ratio
