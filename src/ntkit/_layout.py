"""The output-axis layout of a kernel, shared by the empirical kernels and the predictions.

A kernel between outputs `f(x1)` of shape `(N1, O_1, ..., O_d)` and `f(x2)` has, per output axis, one of
three layouts (docs/theory.md §1): *traced* (contracted pairwise and averaged), *diagonal* (only the diagonal of
the axis pair is kept, one axis in the result) or *paired* (both axes kept). The result is laid out as
neural-tangents does, `(N1, N2, *diagonal axes, O_k, O_k', ...)`, so code ports unchanged.

`KernelLayout` gives the empirical implementations shared einsum letters, which keep trace and diagonal inside the
contraction (never a full `O × O'` block followed by a trace), and gives `ntkit.predict` the reshapes between a
kernel and the matrix `(N1·M, N2·M)` it stands for (`M` the product of paired sizes; a kernel traced over an axis
stands for `Θ ⊗ I` along it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

# Upper-case letters are reserved for output axes; implementations use lower-case ones for their own dims.
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def canonicalize_axes(axes: int | Sequence[int] | None, ndim: int, name: str,
                      what: str = "an output") -> tuple[int, ...]:
    """Returns sorted non-negative axes; raises a clear error for an axis out of range or repeated."""
    if axes is None:
        return ()
    if isinstance(axes, int):
        axes = (axes,)
    out = []
    for axis in axes:
        if not isinstance(axis, int):
            raise TypeError(f"`{name}` must hold integers, got {axis!r}.")
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"`{name}` holds axis {axis}, out of range for {what} of {ndim} axes "
                f"(batch axis first); valid axes are {-ndim}..{ndim - 1}."
            )
        out.append(axis % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` repeats an axis: {tuple(axes)}.")
    return tuple(sorted(out))


@dataclass(frozen=True)
class KernelLayout:
    """How the output axes of `f` appear in the kernel.

    Attributes:
      out_shape: shape of `f(params, x)` for one example, without the batch axis.
      trace_axes: output axes (counting the batch axis as 0) that are contracted and averaged.
      diagonal_axes: output axes whose diagonal alone is kept; `0` means the batch diagonal.
    """

    out_shape: tuple[int, ...]
    trace_axes: tuple[int, ...]
    diagonal_axes: tuple[int, ...]

    @classmethod
    def build(cls, out_shape: Sequence[int], trace_axes: int | Sequence[int] | None,
              diagonal_axes: int | Sequence[int] | None = (), what: str = "an output") -> KernelLayout:
        """Checks the axes against outputs of shape `(N, *out_shape)`; `what` names those outputs in errors."""
        ndim = len(out_shape) + 1
        if ndim > len(_LETTERS) // 2:
            raise ValueError(f"Outputs with more than {len(_LETTERS) // 2 - 1} axes are not supported.")
        trace = canonicalize_axes(trace_axes, ndim, "trace_axes", what)
        diagonal = canonicalize_axes(diagonal_axes, ndim, "diagonal_axes", what)
        if 0 in trace:
            raise ValueError(f"`trace_axes` cannot contain the batch axis 0 of {what}; use `diagonal_axes=(0,)` "
                             "for the batch diagonal.")
        both = set(trace) & set(diagonal)
        if both:
            raise ValueError(f"Axes {sorted(both)} are in both `trace_axes` and `diagonal_axes`.")
        return cls(tuple(int(s) for s in out_shape), trace, diagonal)

    @property
    def batch_diagonal(self) -> bool:
        return 0 in self.diagonal_axes

    def _pair(self, axis: int) -> tuple[str, str]:
        first = _LETTERS[2 * axis]
        if axis in self.trace_axes or axis in self.diagonal_axes:
            return first, first
        return first, _LETTERS[2 * axis + 1]

    @property
    def side1(self) -> str:
        """Letters of `(N1, O_1, ..., O_d)`."""
        return "".join(self._pair(a)[0] for a in range(len(self.out_shape) + 1))

    @property
    def side2(self) -> str:
        """Letters of `(N2, O_1', ..., O_d')`."""
        return "".join(self._pair(a)[1] for a in range(len(self.out_shape) + 1))

    @property
    def out(self) -> str:
        """Letters of the kernel: batch axes, diagonal axes, then the remaining axis pairs."""
        n1, n2 = self._pair(0)
        letters = [n1] if self.batch_diagonal else [n1, n2]
        letters += [self._pair(a)[0] for a in self.diagonal_axes if a != 0]
        for a in range(1, len(self.out_shape) + 1):
            if a not in self.trace_axes and a not in self.diagonal_axes:
                letters += list(self._pair(a))
        return "".join(letters)

    @property
    def trace_size(self) -> int:
        return math.prod(self.out_shape[a - 1] for a in self.trace_axes)

    @property
    def out_size(self) -> int:
        """Number of output components per example, `O = O_1 ⋯ O_d`."""
        return math.prod(self.out_shape)

    def pairs_per_example_pair(self) -> int:
        """Kernel entries per pair of examples (for cost estimates)."""
        size = 1
        for a, s in enumerate(self.out_shape, start=1):
            size *= s if (a in self.trace_axes or a in self.diagonal_axes) else s * s
        return size

    def kernel_shape(self, n1: int, n2: int) -> tuple[int, ...]:
        sizes = {self._pair(0)[0]: n1, self._pair(0)[1]: n2}
        for a, s in enumerate(self.out_shape, start=1):
            for letter in self._pair(a):
                sizes[letter] = s
        return tuple(sizes[c] for c in self.out)

    def mirror_permutation(self) -> tuple[int, ...]:
        """Axis permutation that turns the block `K(x_a, x_b)` into `K(x_b, x_a)`: swaps every axis pair."""
        swap = {}
        for a in range(len(self.out_shape) + 1):
            first, second = self._pair(a)
            swap[first], swap[second] = second, first
        out = self.out
        return tuple(out.index(swap[c]) for c in out)

    # --- the kernel as a matrix (for `ntkit.predict`; no diagonal axes) ---

    @property
    def paired(self) -> tuple[int, ...]:
        """Output axes (batch axis = 0) kept as a pair of axes in the kernel."""
        return tuple(a for a in range(1, len(self.out_shape) + 1)
                     if a not in self.trace_axes and a not in self.diagonal_axes)

    @property
    def paired_size(self) -> int:
        """`M`: the product of paired axis sizes (rows of the kernel matrix per example)."""
        return math.prod(self.out_shape[a - 1] for a in self.paired)

    def kernel_matrix(self, k: jax.Array) -> jax.Array:
        """`(N1, N2, a, a', ...)` -> `(N1·M, N2·M)`."""
        p = len(self.paired)
        n1, n2 = k.shape[:2]
        perm = (0, *(2 + 2 * i for i in range(p)), 1, *(3 + 2 * i for i in range(p)))
        return jnp.transpose(k, perm).reshape(n1 * self.paired_size, n2 * self.paired_size)

    def kernel_from_matrix(self, mat: jax.Array, n1: int, n2: int) -> jax.Array:
        """`(*lead, N1·M, N2·M)` -> `(*lead, N1, N2, a, a', ...)`."""
        lead = mat.shape[:-2]
        sizes = [self.out_shape[a - 1] for a in self.paired]
        x = mat.reshape(*lead, n1, *sizes, n2, *sizes)
        p, q = len(sizes), len(lead)
        perm = [q, q + 1 + p]
        for i in range(p):
            perm += [q + 1 + i, q + 2 + p + i]
        return jnp.transpose(x, (*range(q), *perm))

    def to_matrix(self, f: jax.Array) -> jax.Array:
        """Outputs `(N, *out)` -> `(N·M, R)`, `R` the product of traced sizes."""
        order = (0, *self.paired, *self.trace_axes)
        return jnp.transpose(f, order).reshape(f.shape[0] * self.paired_size, self.trace_size)

    def from_matrix(self, mat: jax.Array, n: int) -> jax.Array:
        """`(*lead, N·M, R)` -> `(*lead, N, *out)`."""
        lead = mat.shape[:-2]
        order = (0, *self.paired, *self.trace_axes)
        x = mat.reshape(*lead, n, *(self.out_shape[a - 1] for a in order[1:]))
        q = len(lead)
        return jnp.transpose(x, (*range(q), *(q + int(i) for i in np.argsort(order))))
