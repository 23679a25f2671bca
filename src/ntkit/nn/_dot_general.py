"""`DotGeneral`: a constant linear map contracting spatial axes (neural-tangents' `stax.DotGeneral`, the cases that
keep activations batch first and channels last)."""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._axes import check_axis_argument, check_layout
from ._layer import Layer
from ._state import CovLevel, KernelState, check_state, drop_diagonal_covariances, mixing_cov_needs


@dataclasses.dataclass(frozen=True, eq=False)
class DotGeneral(Layer):
    """`jax.lax.dot_general(x, rhs, dimension_numbers)` (or `(lhs, x)`) with a constant array, no parameters.

    Supported: a scalar constant (no contraction), or a constant all of whose axes are contracted against spatial
    axes of `x` (no batch dimensions), so the output keeps the batch axis first and channels last. Kernel: the map
    applied on both sides, `Σ' = Σ_{j, j'} c[j] c[j'] Σ[.., j, .., j', ..]` (`c²Σ` for a scalar), and `Θ'` likewise.
    Other uses of neural-tangents' `DotGeneral` (free axes of the constant, batch dimensions, contracting the batch
    or channel axis) raise `NotImplementedError`. Compared by identity (it holds an array).

    Args:
      lhs: the constant on the left, or `None`.
      rhs: the constant on the right, or `None` (both `None`: the identity).
      dimension_numbers: `((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))`.
      precision: as in `jax.lax.dot_general`.
      batch_axis: neural-tangents' layout argument; must name the first axis.
      channel_axis: must name the last axis.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> diff = stax.DotGeneral(rhs=jnp.array([1.0, -1.0]), dimension_numbers=(((1,), (0,)), ((), ())))
      >>> diff.kernel(jnp.ones((3, 2, 4)), None, "nngp").shape
      (3, 3)
    """

    lhs: Any = None
    rhs: Any = None
    dimension_numbers: Any = (((), ()), ((), ()))
    precision: Any = None
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self):
        if self.lhs is not None and self.rhs is not None:
            raise ValueError("DotGeneral: give at most one of `lhs` and `rhs` (the inputs are the other factor).")
        check_axis_argument(self.batch_axis, "batch_axis", "DotGeneral")
        check_axis_argument(self.channel_axis, "channel_axis", "DotGeneral")
        (lc, rc), (lb, rb) = self.dimension_numbers
        if lb or rb:
            raise NotImplementedError("DotGeneral: batch dimensions in `dimension_numbers` are not supported.")
        const = self._constant
        if const is not None:
            c_axes = tuple(lc if self._is_lhs else rc)
            if sorted(c_axes) != list(range(const.ndim)):
                raise NotImplementedError("DotGeneral: every axis of the constant must be contracted (free axes of "
                                          "the constant would move the batch or channel axis).")

    @property
    def _is_lhs(self) -> bool:
        return self.lhs is not None

    @property
    def _constant(self) -> Any:
        c = self.lhs if self.lhs is not None else self.rhs
        return None if c is None else jnp.asarray(c)

    def _x_axes(self, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """`(x's contracted axes, the matching constant axes)`, checked to be spatial axes of `ndim`-axis inputs."""
        check_layout(self.batch_axis, self.channel_axis, ndim, "DotGeneral")
        (lc, rc), _ = self.dimension_numbers
        x_axes, c_axes = (tuple(rc), tuple(lc)) if self._is_lhs else (tuple(lc), tuple(rc))
        x_axes = tuple(a % ndim for a in x_axes)
        if any(a in (0, ndim - 1) for a in x_axes):
            raise NotImplementedError("DotGeneral: only spatial axes may be contracted (not the batch or channel "
                                      "axis).")
        return x_axes, c_axes

    def _apply(self, x):
        c = self._constant
        if c is None:
            return x
        c = c.astype(x.dtype)
        args = (c, x) if self._is_lhs else (x, c)
        return jax.lax.dot_general(*args, self.dimension_numbers, self.precision)

    def init(self, key, input_shape):
        self._x_axes(len(input_shape))
        out = jax.eval_shape(self._apply, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
        return tuple(out.shape), ()

    def apply(self, params, x, **kwargs):
        self._x_axes(x.ndim)
        return self._apply(x)

    def transform(self, k: KernelState, **kwargs) -> KernelState:
        k = check_state(k, "DotGeneral")
        c = self._constant
        shape1, shape2 = self.init(None, k.shape1)[0], self.init(None, k.shape2)[0]
        if c is None:
            return k
        x_axes, c_axes = self._x_axes(len(k.shape1))
        if not x_axes:  # a scalar
            return k.map(lambda a, n_batch, diagonal: a * c.astype(a.dtype) ** 2).replace(shape1=shape1,
                                                                                           shape2=shape2)
        if k.diagonal_spatial:
            raise ValueError("DotGeneral contracting spatial axes needs full spatial covariances; the kernel carries "
                             "only the diagonal.")
        k = drop_diagonal_covariances(k)
        n = k.n_spatial
        by_x_axis = dict(zip(x_axes, c_axes, strict=True))

        def contract(a, n_batch, diagonal):
            letters = iter(string.ascii_letters)
            lead = "".join(next(letters) for _ in range(n_batch))
            sides = [[next(letters) for _ in range(2)] for _ in range(n)]  # (side 1, side 2) per spatial axis
            const_specs = ["", ""]
            for side in range(2):
                spec = [""] * c.ndim
                for d in range(n):
                    if d + 1 in by_x_axis:
                        spec[by_x_axis[d + 1]] = sides[d][side]
                const_specs[side] = "".join(spec)
            inp = lead + "".join(s1 + s2 for s1, s2 in sides)
            out = lead + "".join(s1 + s2 for d, (s1, s2) in enumerate(sides) if d + 1 not in by_x_axis)
            cc = c.astype(a.dtype)
            return jnp.einsum(f"{inp},{const_specs[0]},{const_specs[1]}->{out}", a, cc, cc)

        return k.map(contract).replace(shape1=shape1, shape2=shape2, is_input=False)

    def needs_full(self, out_full: bool) -> bool:
        return out_full if self._constant is None or np.ndim(self._constant) == 0 else True

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return out_level if self._constant is None or np.ndim(self._constant) == 0 else mixing_cov_needs(out_level)
