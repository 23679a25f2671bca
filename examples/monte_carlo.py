"""Monte Carlo estimate of the infinite-width kernels from finite networks, and batched kernel computation.

The neural-tangents workflow "Monte Carlo kernels" (`nt.monte_carlo_kernel_fn`) with `nt.batch`: the empirical
NNGP and NTK of randomly initialized finite networks, averaged over initializations, converge to the analytic
kernels of the same `stax.serial` network. `n_samples` given as a list returns the running averages, from which
the script recovers each network's kernel and so the Monte Carlo standard error of the average; the analytic kernel
must lie within a few standard errors (plus an O(1/width) finite-width bias). The analytic kernel itself is computed
in tiles with `nt.batch` and must equal the untiled one.

Run: `python examples/monte_carlo.py` (float64: `JAX_ENABLE_X64=1`).
"""

import jax
import jax.numpy as jnp
import numpy as np

import ntkit as nt
from ntkit import nn as stax

WIDTH, N_SAMPLES = 256, 128

init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Dense(WIDTH, W_std=1.5, b_std=0.05), stax.Erf(),
    stax.Dense(WIDTH, W_std=1.5, b_std=0.05), stax.Relu(),
    stax.Dense(4, W_std=1.5, b_std=0.05),
)
key_x, key_nets = jax.random.split(jax.random.PRNGKey(7))
x = jax.random.normal(key_x, (6, 8))

# The analytic kernels, in tiles of 2 examples per side, and in one piece: the same numbers.
batched_kernel_fn = nt.batch(kernel_fn, batch_size=2)
analytic = batched_kernel_fn(x, None, ("nngp", "ntk"))
whole = kernel_fn(x, None, ("nngp", "ntk"))
eps = float(jnp.finfo(x.dtype).eps)
for name in ("nngp", "ntk"):
    tiled, full = np.asarray(getattr(analytic, name)), np.asarray(getattr(whole, name))
    assert np.max(np.abs(tiled - full)) <= 10 * eps * np.max(np.abs(full)), name

# Running averages over the first n = 1, ..., N_SAMPLES networks; the n-th network's kernel is
# n avg_n - (n - 1) avg_{n-1}.
mc_kernel_fn = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key_nets, list(range(1, N_SAMPLES + 1)))
for name in ("nngp", "ntk"):
    averages = np.stack([np.asarray(k, np.float64) for k in mc_kernel_fn(x, None, name)])  # (N_SAMPLES, 6, 6)
    counts = np.arange(1, N_SAMPLES + 1)[:, None, None]
    samples = counts * averages - np.concatenate([np.zeros_like(averages[:1]), (counts * averages)[:-1]])
    mean, std_error = samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(N_SAMPLES)
    reference = np.asarray(getattr(analytic, name), np.float64)
    # 5 standard errors (36 correlated entries: the largest |z| of Gaussian noise stays below 5) plus the finite-
    # width bias of the mean kernel, O(depth / WIDTH) of its scale.
    bias = 2 / WIDTH * np.max(np.abs(reference))
    gap = np.abs(mean - reference)
    print(f"{name}: max |MC mean ({N_SAMPLES} networks of width {WIDTH}) - analytic| = {gap.max():.4f} "
          f"(kernel scale {np.max(np.abs(reference)):.3f}, largest gap in standard errors "
          f"{np.max(gap / std_error):.1f})")
    assert np.all(gap <= 5 * std_error + bias), name
    np.testing.assert_allclose(averages[-1], mean, rtol=1e3 * eps, atol=1e3 * eps * np.max(np.abs(reference)))
