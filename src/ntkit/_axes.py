"""Output-axis bookkeeping for empirical kernels.

A kernel between outputs `f(x1)` of shape `(N1, O_1, ..., O_d)` and `f(x2)` has, per output axis, one of
three layouts (THEORY.md §1): *traced* (contracted pairwise and averaged), *diagonal* (only the diagonal of the
axis pair is kept, one axis in the result) or *paired* (both axes kept). The result is laid out as neural-tangents
does, `(N1, N2, *diagonal axes, O_k, O_k', ...)`, so code ports unchanged. `KernelLayout` turns this into einsum
letters that every implementation shares, which keeps trace and diagonal inside the contraction (never a full
`O × O'` block followed by a trace).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Upper-case letters are reserved for output axes; implementations use lower-case ones for their own dims.
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def canonicalize_axes(axes: int | Sequence[int] | None, ndim: int, name: str) -> tuple[int, ...]:
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
                f"`{name}` holds axis {axis}, out of range for an output of {ndim} axes "
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
    def build(cls, out_shape: Sequence[int], trace_axes, diagonal_axes) -> KernelLayout:
        ndim = len(out_shape) + 1
        if ndim > len(_LETTERS) // 2:
            raise ValueError(f"Outputs with more than {len(_LETTERS) // 2 - 1} axes are not supported.")
        trace = canonicalize_axes(trace_axes, ndim, "trace_axes")
        diagonal = canonicalize_axes(diagonal_axes, ndim, "diagonal_axes")
        if 0 in trace:
            raise ValueError("`trace_axes` cannot contain the batch axis 0; use `diagonal_axes=(0,)` instead.")
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
