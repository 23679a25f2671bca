"""The eigendecomposition of an NTK, with the summaries that set how fast and what a kernel machine learns.

Also the reading of a kernel and its targets as a matrix and columns, shared by the other modules of this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .._checks import check_array
from .._layout import KernelLayout

TraceAxes = int | Sequence[int] | None


def kernel_matrix(k: Any, name: str, n2: int | None = None) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """A kernel `(N1, N2, O_a, O_a', ...)` as the float64 matrix `(N1·M, N2·M)` it stands for.

    Returns the matrix, `N1` and the paired output sizes `(O_a, ...)` (`M` their product). A kernel traced over an
    output axis stands for `Θ ⊗ I` along it (docs/theory.md §1.2): its matrix is `Θ` itself, one copy per traced
    output. `n2`, if given, is the expected `N2`.
    """
    k = check_array(k, name)
    if k.ndim < 2 or k.ndim % 2 or k.shape[2::2] != k.shape[3::2]:
        raise ValueError(f"`{name}` must have shape (N1, N2, O_a, O_a', ...) (axis pairs of equal sizes), got "
                         f"{k.shape}.")
    if k.size == 0:
        raise ValueError(f"`{name}` is empty (shape {k.shape}).")
    if n2 is not None and k.shape[1] != n2:
        raise ValueError(f"`{name}` has {k.shape[1]} columns of examples (axis 1), expected {n2} (the training "
                         f"examples); got shape {k.shape}.")
    paired = tuple(int(s) for s in k.shape[2::2])
    m = int(np.prod(paired))
    perm = (*range(0, k.ndim, 2), *range(1, k.ndim, 2))
    mat = np.transpose(np.asarray(k, np.float64), perm).reshape(k.shape[0] * m, k.shape[1] * m)
    return mat, int(k.shape[0]), paired


def input_eps(x: Any) -> float:
    """Machine epsilon of the floating dtype `x` was computed in (float64's for integers)."""
    dtype = np.asarray(x).dtype
    return float(np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps)


def rounding_level(evals: np.ndarray, eps: float) -> float:
    """`P·eps·max|λ|`: eigenvalues of a `(P, P)` kernel stored with precision `eps` below it are rounding noise."""
    return float(evals.size * eps * np.max(np.abs(evals))) if evals.size else 0.0


def symmetric_matrix(k: Any, name: str) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """`kernel_matrix` of a square kernel `(N, N, ...)`, checked symmetric (to rounding) and symmetrized."""
    mat, n, paired = kernel_matrix(k, name)
    if mat.shape[0] != mat.shape[1]:
        raise ValueError(f"`{name}` must be square in its examples, shape (N, N, ...); got {np.shape(k)}.")
    scale = float(np.max(np.abs(mat)))
    eps = input_eps(k)
    asym = float(np.max(np.abs(mat - mat.T)))
    if asym > 100 * eps * max(scale, np.finfo(np.float64).tiny) * max(mat.shape[0], 1) ** 0.5:
        raise ValueError(f"`{name}` is not symmetric (max |K - Kᵀ| = {asym:.3g}, max |K| = {scale:.3g}): a "
                         "train-train kernel K(X, X) is.")
    return (mat + mat.T) / 2, n, paired


def target_matrix(y: Any, n: int, paired: tuple[int, ...], trace_axes: TraceAxes, name: str) -> np.ndarray:
    """Targets `(N, O_1, ..., O_d)` (or `(N,)`) as the float64 matrix `(N·M, R)` matching `kernel_matrix`.

    `R` is the product of traced sizes. With `trace_axes=None` the layout is inferred from the kernel: all output
    axes traced for a kernel `(N, N)`, none when it pairs every output axis; otherwise `trace_axes` is needed.
    """
    y = check_array(y, name, min_ndim=1)
    if y.shape[0] != n:
        raise ValueError(f"`{name}` must have one row per example of the kernel ({n}), got shape {y.shape}.")
    if y.size == 0:
        raise ValueError(f"`{name}` is empty (shape {y.shape}).")
    yy = np.asarray(y, np.float64)
    if yy.ndim == 1:
        yy = yy[:, None]
    out = yy.shape[1:]
    if trace_axes is None:
        if not paired:
            trace_axes = tuple(range(1, yy.ndim))
        elif len(paired) == len(out):
            trace_axes = ()
        else:
            raise ValueError(f"Cannot tell which output axes of `{name}` (shape {y.shape}) the kernel traced: it "
                             f"pairs {len(paired)} of {len(out)}. Pass `trace_axes` (as to `empirical_ntk_fn`).")
    layout = KernelLayout.build(out, trace_axes, (), what=f"`{name}` with shape {y.shape}")
    sizes = tuple(out[a - 1] for a in layout.paired)
    if sizes != paired:
        raise ValueError(f"`{name}` (shape {y.shape}, traced over {layout.trace_axes}) has untraced output sizes "
                         f"{sizes}, but the kernel pairs output axes of sizes {paired}.")
    order = (0, *layout.paired, *layout.trace_axes)  # as `KernelLayout.to_matrix`, in float64 NumPy
    return np.transpose(yy, order).reshape(n * layout.paired_size, layout.trace_size)


class Spectrum(NamedTuple):
    """The eigendecomposition of a train-train kernel and its summaries (NumPy float64).

    Attributes:
      eigenvalues: `(P,)`, descending, `P = N·M` (`M` the product of paired output sizes); as computed, tiny
        negative values from rounding included.
      eigenvectors: `(P, P)`, orthonormal columns, column `i` for `eigenvalues[i]`; row `n·M + m` is example `n`,
        paired output `m`.
      condition_number: `λ_max / λ_min`; `inf` when `λ_min ≤ 0` (a singular kernel).
      effective_rank: participation ratio `(Σλ)² / Σλ²` of the eigenvalues clipped at 0.
      entropy_effective_rank: `exp(−Σ p_i log p_i)`, `p = λ / Σλ` (Roy & Vetterli 2007).
      target_fraction: `(P,)` with `y`: the fraction of `‖y‖²` along each eigenvector (summed over traced outputs),
        summing to 1; else `None`.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    condition_number: float
    effective_rank: float
    entropy_effective_rank: float
    target_fraction: np.ndarray | None


def spectrum(k: Any, y: Any = None, *, trace_axes: TraceAxes = None) -> Spectrum:
    r"""Eigenvalues, eigenvectors, conditioning, effective rank and target alignment of a train-train NTK.

    Under gradient descent on the mean squared loss a wide network's training error along the eigenvector `v_i` of
    its NTK decays as `(1 − ηλ_i/(nk))^t` (Jacot et al. 2018; Lee et al. 2019; docs/theory.md §3.5): the top
    eigenvalue caps the learning rate, the condition number `λ_max/λ_min` sets how many steps the slowest mode takes,
    and targets whose power sits in the top modes are learned first (Arora et al. 2019, "Fine-grained analysis of
    optimization and generalization for overparameterized two-layer neural networks", §4).

    Two effective ranks summarize how many modes carry the kernel's trace, both from the eigenvalues clipped at 0:
    the participation ratio `(Σλ)² / Σλ²` (1 for a rank-one kernel, `P` for a multiple of the identity) and the
    entropy effective rank `exp(H(p))`, `p_i = λ_i/Σλ` (Roy & Vetterli 2007, "The effective rank: a measure of
    effective dimensionality").

    The kernel may be empirical or analytic, in any layout of `ntkit.empirical_ntk_fn`: `(N, N)` traced over the
    outputs (standing for `Θ ⊗ I`; its eigenvalues are those of `Θ`, each once) or `(N, N, O_a, O_a', ...)` with
    output axes paired. Computed in float64 with NumPy's symmetric solver on concrete arrays (not under `jit`).

    Args:
      k: train-train kernel `(N, N)` or `(N, N, O_a, O_a', ...)`, symmetric.
      y: optional targets `(N,)` or `(N, O_1, ..., O_d)`.
      trace_axes: output axes of `y` the kernel traced over; `None` infers them (all for a kernel `(N, N)`, none
        when the kernel pairs every output axis of `y`).

    Returns:
      A `Spectrum`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import spectrum
      >>> s = spectrum(jnp.array([[2.0, 1.0], [1.0, 2.0]]), y=jnp.array([1.0, 1.0]))
      >>> s.eigenvalues.round(6).tolist(), round(s.condition_number, 6), s.target_fraction.round(6).tolist()
      ([3.0, 1.0], 3.0, [1.0, 0.0])
      >>> round(s.effective_rank, 4)
      1.6
    """
    mat, n, paired = symmetric_matrix(k, "k")
    evals, evecs = np.linalg.eigh(mat)
    evals, evecs = evals[::-1].copy(), evecs[:, ::-1].copy()
    lam = np.clip(evals, 0.0, None)
    total = float(lam.sum())
    if total > 0:
        p = lam / total
        effective = float(total**2 / np.sum(lam**2))
        nz = p[p > 0]
        entropy = float(np.exp(-np.sum(nz * np.log(nz))))
    else:
        effective = entropy = 0.0
    cond = float(evals[0] / evals[-1]) if evals[-1] > 0 else float("inf")
    fraction = None
    if y is not None:
        ymat = target_matrix(y, n, paired, trace_axes, "y")
        power = np.sum((evecs.T @ ymat) ** 2, axis=1)
        norm = float(np.sum(ymat**2))
        if norm == 0:
            raise ValueError("`y` is all zeros: it has no power to split among the eigendirections.")
        fraction = power / norm
    return Spectrum(evals, evecs, cond, effective, entropy, fraction)
