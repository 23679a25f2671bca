"""A low-rank Nyström approximation `K ≈ F Fᵀ` by randomly pivoted Cholesky, and the preconditioner built on it.

Randomly pivoted Cholesky (Chen, Epperly, Tropp, Webber 2023, "Randomly pivoted Cholesky: practical approximation
of a kernel matrix with few entry evaluations") picks pivot rows at random with probability proportional to the
diagonal of the residual `K − F Fᵀ`, a block of pivots at a time, and reads only those rows of `K`. The
preconditioner is that of Nyström PCG (Frangella, Tropp, Udell 2023, "Randomized Nyström preconditioning"), the
idea behind Falkon (Rudi, Carratino, Rosasco 2017) and EigenPro (Ma, Belkin 2017): with `F Fᵀ = U Λ Uᵀ`,

    P⁻¹ = (λ_r + μ) U (Λ + μI)⁻¹ Uᵀ + (I − U Uᵀ),

which makes `P⁻¹ (K + μI)` well conditioned once the residual's trace is small against the ridge `μ`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


class Nystrom(NamedTuple):
    """`F` `(N, r)` with `K ≈ F Fᵀ`, the `r` pivots, and the trace of the residual `K − F Fᵀ`."""

    factor: np.ndarray
    pivots: np.ndarray
    residual_trace: float


def rp_cholesky(op: Any, rank: int, stop_trace: float, rng: np.random.Generator, block: int | None = None,
                name: str = "k", on_columns: Callable[[int], None] | None = None) -> Nystrom:
    """Block randomly pivoted Cholesky of the square operator `op` up to `rank` columns, stopping early once the
    residual trace falls below `stop_trace`. Checks on the way what is cheap to see: a negative diagonal, and
    asymmetry of the pivot block `K[S, S]`. `on_columns(c)` is told of every `c` columns added (progress)."""
    n = op.shape[0]
    diag = op.diagonal().astype(np.float64)
    scale = float(np.max(np.abs(diag))) if n else 0.0
    eps = np.finfo(op.dtype).eps
    if n and diag.min() < -np.sqrt(eps) * scale:
        i = int(np.argmin(diag))
        raise ValueError(f"`{name}` has a negative diagonal entry ({name}[{i}, {i}] = {diag[i]:.3g}): it is not "
                         "positive semi-definite, so (K + ridge·I) α = y is not a kernel ridge problem.")
    resid = np.maximum(diag, 0.0)
    trace = float(resid.sum())
    block = max(1, min(rank, 128 if block is None else block))
    factor = np.zeros((n, rank), np.float64)
    pivots: list[np.ndarray] = []
    k = 0
    while k < rank and trace > stop_trace and trace > 0:
        m = min(block, rank - k)
        idx = np.unique(rng.choice(n, size=m, replace=True, p=resid / trace))
        rows = op.rows(idx).astype(np.float64)  # K[S, :]
        sub = rows[:, idx]
        gap = float(np.max(np.abs(sub - sub.T)))
        if gap > np.sqrt(eps) * max(scale, 1e-300):
            raise ValueError(f"`{name}` is not symmetric: |K[i, j] - K[j, i]| reaches {gap:.3g} for diagonal "
                             f"entries up to {scale:.3g} (checked on the {len(idx)} sampled pivots).")
        g = rows.T - factor[:, :k] @ factor[idx, :k].T  # residual columns (N, m)
        h = g[idx]
        h = (h + h.T) / 2
        w, v = np.linalg.eigh(h)
        keep = w > max(w.max(initial=0.0), 0.0) * len(idx) * 1e-12 + 1e-300
        if not np.any(keep):
            break
        new = g @ (v[:, keep] / np.sqrt(w[keep]))
        c = new.shape[1]
        factor[:, k:k + c] = new
        k += c
        if on_columns is not None:
            on_columns(c)
        pivots.append(idx)
        resid = np.maximum(resid - np.einsum("ij,ij->i", new, new), 0.0)
        resid[idx] = 0.0
        trace = float(resid.sum())
    piv = np.concatenate(pivots) if pivots else np.zeros((0,), int)
    return Nystrom(factor[:, :k], piv, trace)


class Preconditioner:
    """`P⁻¹` of Nyström PCG for `K + μI` from `K ≈ F Fᵀ` (see the module docstring); identity for `r = 0`."""

    def __init__(self, factor: np.ndarray, ridge: float, dtype: Any) -> None:
        self.rank = 0
        self.u = np.zeros((factor.shape[0], 0), dtype)
        self.scale = np.zeros((0,), dtype)
        if factor.shape[1] == 0:
            return
        gram = factor.T @ factor
        w, v = np.linalg.eigh((gram + gram.T) / 2)
        keep = w > w.max() * 1e-10
        if ridge <= 0:  # no ridge: P⁻¹ is only defined on the range of F
            keep &= w > w.max() * np.sqrt(np.finfo(dtype).eps)
        w, v = w[keep], v[:, keep]
        if w.size == 0:
            return
        # U = F V Λ^{-1/2}, by row blocks straight into the kernel's dtype (no float64 copy of U's size)
        basis = v / np.sqrt(w)
        self.u = np.empty((factor.shape[0], w.size), dtype)
        step = max(1, 2**25 // max(1, factor.shape[1]))
        for i in range(0, factor.shape[0], step):
            self.u[i:i + step] = factor[i:i + step] @ basis
        lam_r = float(w.min())
        self.scale = ((lam_r + ridge) / (w + ridge) - 1.0).astype(dtype)
        self.rank = int(w.size)

    def __call__(self, r: np.ndarray) -> np.ndarray:
        if self.rank == 0:
            return r
        return r + self.u @ (self.scale[:, None] * (self.u.T @ r))
