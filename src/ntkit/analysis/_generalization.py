"""Data-dependent generalization measures of a kernel and its targets: Arora et al.'s complexity and alignment."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._checks import check_scalar
from .._layout import KernelLayout
from ._spectrum import TraceAxes, input_eps, rounding_level, symmetric_matrix, target_matrix


def generalization_bound(k_train: Any, y_train: Any, *, ridge: float = 0.0, trace_axes: TraceAxes = None) -> float:
    r"""The data-dependent complexity `√(2 yᵀ K⁻¹ y / n)` of Arora et al. 2019.

    Arora, Du, Hu, Li & Wang 2019, "Fine-grained analysis of optimization and generalization for overparameterized
    two-layer neural networks" (ICML), Theorem 5.1: a two-layer ReLU network `f(x) = 1/√m Σ_r a_r ReLU(w_rᵀx)`,
    first layer trained by gradient descent on the squared loss from a random initialization, large enough width
    `m` and small initialization, has population loss (any 1-Lipschitz loss bounded by 1, e.g. the ramp loss, which
    bounds the 0-1 error) at most `√(2 yᵀ (H^∞)⁻¹ y / n) + O(√(log(n/(λ₀δ))/n))` with probability `1 − δ`, where
    `H^∞_ij = x_iᵀx_j (π − arccos(x_iᵀx_j))/(2π)` is that network's NTK. Assumptions: `n` i.i.d. examples with
    `‖x‖ = 1` and labels `|y| ≤ 1`, no two inputs parallel, so that `λ₀ = λ_min(H^∞) > 0`.

    For any other kernel this is the same measure — `yᵀK⁻¹y` is the squared RKHS norm of the kernel interpolant of
    the labels — and it separates learnable labels from random ones, but the theorem's constant holds only for
    Arora et al.'s `H^∞`; the value scales as `1/√c` when `K` is multiplied by `c`, so compare labels, data sets or
    architectures at a fixed kernel normalization. With `k` outputs per example the result is
    `√(2 tr(Yᵀ K⁻¹ Y)/(n k))`: the scalar complexity for one output, the root mean square over outputs for several
    (a traced kernel stands for `K ⊗ I`). Computed in float64 from one symmetric eigendecomposition.

    Args:
      k_train: train-train kernel `(N, N)` or `(N, N, O_a, O_a', ...)`, positive definite.
      y_train: labels `(N,)` or `(N, O_1, ..., O_d)`.
      ridge: `δ ≥ 0` added to the diagonal of the kernel matrix (absolute), for a kernel that is singular.
      trace_axes: output axes the kernel traced over; `None` infers them (see `spectrum`).

    Returns:
      The complexity as a Python float.

    Raises:
      ValueError: for a kernel that is indefinite (an eigenvalue below `−P·eps·λ_max`) or singular (its smallest
        eigenvalue within rounding, `P·eps·λ_max`, of 0, e.g. repeated inputs): then `yᵀK⁻¹y` is not defined.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import generalization_bound
      >>> round(generalization_bound(2.0 * jnp.eye(4), jnp.array([1.0, -1.0, 1.0, -1.0])), 6)   # √(2 · 2/4)
      1.0
    """
    mat, n, paired = symmetric_matrix(k_train, "k_train")
    ymat = target_matrix(y_train, n, paired, trace_axes, "y_train")
    ridge = check_scalar(ridge, "ridge")
    mat = mat + ridge * np.eye(mat.shape[0])
    evals, evecs = np.linalg.eigh(mat)
    level = rounding_level(evals, input_eps(k_train))
    if evals[0] < -level:
        raise ValueError(f"`k_train` is indefinite: its smallest eigenvalue is {evals[0]:.3g} "
                         f"({evals[0] / evals[-1]:.3g} times the largest); a kernel is positive semi-definite, and "
                         "yᵀK⁻¹y needs it definite.")
    if evals[0] <= level:
        raise ValueError(f"`k_train` is singular: its smallest eigenvalue {evals[0]:.3g} is within rounding "
                         f"({level:.3g}) of 0, so yᵀK⁻¹y is undefined. Remove repeated (or parallel) inputs, or pass "
                         "a `ridge` > 0.")
    proj = evecs.T @ ymat
    quad = float(np.sum(proj**2 / evals[:, None]))
    return float(np.sqrt(2 * quad / ymat.size))


class Alignment(NamedTuple):
    """Kernel–target alignment.

    Attributes:
      per_output: `(O,)` alignment of the kernel with each output's targets, in the order of `y.reshape(N, -1)`'s
        columns (a paired output uses its own diagonal block of the kernel).
      mean: their mean.
    """

    per_output: np.ndarray
    mean: float


def _align(k: np.ndarray, y: np.ndarray, centered: bool, which: str) -> float:
    if centered:
        k = k - k.mean(0, keepdims=True)
        k = k - k.mean(1, keepdims=True)  # H K H, H = I − 11ᵀ/n
        y = y - y.mean()  # H y y ᵀH = (Hy)(Hy)ᵀ
    norm_k = float(np.linalg.norm(k))
    norm_y = float(y @ y)  # ‖y yᵀ‖_F = ‖y‖²
    if norm_k == 0:
        raise ValueError(f"The {'centred ' if centered else ''}kernel is zero for {which}: alignment is undefined.")
    if norm_y == 0:
        raise ValueError(f"The {'centred ' if centered else ''}targets of {which} are zero (constant targets have "
                         "no centred alignment): alignment is undefined.")
    return float(y @ k @ y) / (norm_k * norm_y)


def kernel_alignment(k: Any, y: Any, *, centered: bool = True, trace_axes: TraceAxes = None) -> Alignment:
    r"""Centred kernel–target alignment `⟨K_c, (yyᵀ)_c⟩_F / (‖K_c‖_F ‖(yyᵀ)_c‖_F)`, per output and averaged.

    Cortes, Mohri & Rostamizadeh 2012, "Algorithms for learning kernels based on centered alignment" (JMLR 13):
    with `H = I − 11ᵀ/n`, `K_c = HKH`; centring removes the constant offset that makes every positive kernel look
    aligned with any labels (the uncentred alignment of Cristianini et al. 2001 is `centered=False`). It lies in
    `[−1, 1]`, equals 1 for `K = yyᵀ` (up to a positive factor and a constant shift), and large values predict that
    kernel regression with `K` fits `y` with few effective parameters. For one target column `y` it is
    `yᵀ H K H y / (‖HKH‖_F ‖Hy‖²)`.

    Args:
      k: kernel `(N, N)` or `(N, N, O_a, O_a', ...)` (traced outputs share the kernel; paired ones use their
        diagonal block `k[:, :, a, a]`).
      y: targets `(N,)` or `(N, O_1, ..., O_d)`.
      centered: centre kernel and targets (default) or not.
      trace_axes: output axes the kernel traced over; `None` infers them (see `spectrum`).

    Returns:
      An `Alignment`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import kernel_alignment
      >>> y = jnp.array([1.0, -1.0, 2.0, 0.5])
      >>> round(kernel_alignment(jnp.outer(y, y), y).mean, 6)
      1.0
      >>> round(kernel_alignment(jnp.eye(4), y).mean, 6) == round(1 / 3**0.5, 6)   # 1/√(n − 1)
      True
    """
    mat, n, paired = symmetric_matrix(k, "k")
    ymat = target_matrix(y, n, paired, trace_axes, "y")
    m = int(np.prod(paired))
    values = np.empty((m, ymat.shape[1]))
    for a in range(m):
        block = mat[a::m, a::m]
        for r in range(ymat.shape[1]):
            values[a, r] = _align(block, ymat[a::m, r], centered, f"output ({a}, {r})")
    out_shape = np.shape(y)[1:]
    if out_shape:
        layout = KernelLayout.build(out_shape, _traced(len(paired), len(out_shape), trace_axes), ())
        order = (*layout.paired, *layout.trace_axes)  # the axes of `values` (rows paired, columns traced)
        grid = values.reshape(*(out_shape[a - 1] for a in order))
        per_output = np.transpose(grid, tuple(int(i) for i in np.argsort(order))).reshape(-1)
    else:
        per_output = values.reshape(-1)
    return Alignment(per_output, float(per_output.mean()))


def _traced(n_paired: int, n_out: int, trace_axes: TraceAxes) -> TraceAxes:
    """`trace_axes` as `target_matrix` inferred it."""
    if trace_axes is not None:
        return trace_axes
    return tuple(range(1, n_out + 1)) if n_paired == 0 else ()
