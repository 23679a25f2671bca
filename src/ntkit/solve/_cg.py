"""Preconditioned conjugate gradients for several right-hand sides at once (Hestenes and Stiefel 1952)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class CGState(NamedTuple):
    """Where conjugate gradients ended: solution `(N, k)`, iterations, max relative residual per iteration."""

    x: np.ndarray
    iterations: int
    history: tuple[float, ...]
    converged: bool


def pcg(matvec: Callable[[np.ndarray], np.ndarray], precond: Callable[[np.ndarray], np.ndarray], b: np.ndarray,
        tol: float, maxiter: int, name: str = "k", callback: Callable[[int, float], None] | None = None) -> CGState:
    """Solves `A X = B` column by column for a symmetric positive definite `A` (`matvec`) with the preconditioner
    `precond` (≈ `A⁻¹`) until every column's relative residual `‖b − A x‖ / ‖b‖ ≤ tol` (recurrence residual) or
    `maxiter` iterations. A curvature `pᵀ A p ≤ 0` proves `A` is not positive definite: `ValueError`."""
    dtype = b.dtype
    x = np.zeros_like(b)
    r = b.copy()
    bnorm = np.linalg.norm(b, axis=0)
    bnorm = np.where(bnorm > 0, bnorm, 1.0)
    z = precond(r)
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    rel = np.linalg.norm(r, axis=0) / bnorm
    history = [float(rel.max())]
    it = 0
    tiny = np.finfo(dtype).tiny
    while it < maxiter and rel.max() > tol:
        active = rel > tol
        ap = matvec(p)
        pap = np.einsum("ij,ij->j", p, ap)
        pnorm = np.einsum("ij,ij->j", p, p)
        if np.any(active & (pap <= 0) & (pnorm > 0)):
            raise ValueError(f"`{name} + ridge·I` is not positive definite: conjugate gradients met a direction p "
                             "with pᵀ(K + ridge·I)p ≤ 0. A kernel is positive semi-definite: check how it was "
                             "computed, or increase `ridge`.")
        alpha = np.where(active, rz / np.where(pap > tiny, pap, 1.0), 0.0).astype(dtype)
        x += alpha * p
        r -= alpha * ap
        z = precond(r)
        rz_new = np.einsum("ij,ij->j", r, z)
        beta = np.where(active, rz_new / np.where(rz != 0, rz, 1.0), 0.0).astype(dtype)
        p = z + beta * p
        rz = rz_new
        rel = np.linalg.norm(r, axis=0) / bnorm
        it += 1
        history.append(float(rel.max()))
        if callback is not None:
            callback(it, history[-1])
    return CGState(x, it, tuple(history), bool(rel.max() <= tol))
