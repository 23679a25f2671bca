"""The main job: `ntkit demo`. The empirical NTK of a wide ReLU network on a bundled data set."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ._datasets import load_dataset
from ._empirical import empirical_ntk_fn


def init_mlp(key, sizes, dtype=jnp.float32):
    """Parameters of an NTK-parameterised MLP: `W, b ~ N(0, 1)`."""
    keys = jax.random.split(key, 2 * len(sizes))
    return [{"w": jax.random.normal(keys[2 * i], (m, n), dtype), "b": jax.random.normal(keys[2 * i + 1], (n,), dtype)}
            for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=False))]


def mlp_apply(params, x, w_std=2.0 ** 0.5, b_std=0.1):
    """`z = w_std/√n · W x + b_std · b`, ReLU between layers (THEORY.md §1, NTK parameterisation)."""
    for i, layer in enumerate(params):
        n = layer["w"].shape[0]
        x = (x @ layer["w"]) * (w_std / np.sqrt(n)) + b_std * layer["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def spectrum_summary(ntk: np.ndarray, n_outputs: int) -> dict:
    """Eigen-summary of a traced train-train NTK and the largest stable learning rate `2nk/λ_max`."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(ntk, np.float64))[::-1]
    n = ntk.shape[0]
    positive = np.clip(eigenvalues, 0.0, None)
    return {
        "n_train": n,
        "lambda_max": float(eigenvalues[0]),
        "lambda_min": float(eigenvalues[-1]),
        "condition_number": float(eigenvalues[0] / max(eigenvalues[-1], np.finfo(np.float64).tiny)),
        "effective_rank": float(positive.sum() ** 2 / (positive ** 2).sum()),
        "top10_trace_fraction": float(positive[:10].sum() / positive.sum()),
        "max_learning_rate": float(2.0 * n * n_outputs / eigenvalues[0]),
        "top_eigenvalues": [float(v) for v in eigenvalues[:5]],
    }


def run_demo(dataset: str = "digits", n_train: int = 400, width: int = 512, depth: int = 2,
             seed: int = 0) -> dict:
    """Computes the empirical NTK of a width-`width` ReLU MLP on `dataset` and summarises its spectrum."""
    if width < 1 or depth < 1:
        raise ValueError(f"`width` and `depth` must be positive, got {width} and {depth}.")
    x_train, _, _, _, n_classes = load_dataset(dataset, n_train, 1, seed)
    x = jnp.asarray(x_train, jnp.float32)
    params = init_mlp(jax.random.key(seed), [x.shape[1]] + [width] * depth + [n_classes])
    ntk_fn = empirical_ntk_fn(mlp_apply, vmap_axes=0)
    implementation = ntk_fn.implementation_for(x, None, params)
    start = time.perf_counter()
    ntk = np.asarray(ntk_fn(x, None, params, batch_size=200))
    seconds = time.perf_counter() - start
    summary = spectrum_summary(ntk, n_classes)
    summary.update(dataset=dataset, width=width, depth=depth, implementation=implementation,
                   seconds=round(seconds, 3), n_params=int(sum(p.size for p in jax.tree_util.tree_leaves(params))))
    return summary
