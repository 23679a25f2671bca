"""`Index`: indexing the spatial and channel axes of activations, as `x[idx]` (neural-tangents' `stax.Index`)."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from ._axes import check_axis_argument, check_layout
from ._layer import Layer
from ._state import KernelState, check_state


class _Slice:
    """`Slice[1:3, ::2]` returns its index, `(slice(1, 3), slice(None, None, 2))`: the `idx` of `Index`."""

    def __getitem__(self, idx: Any) -> Any:
        return idx


Slice = _Slice()


def _freeze(entry: Any) -> Any:
    """A hashable index entry (slices are not hashable before Python 3.12)."""
    if isinstance(entry, slice):
        return ("slice", entry.start, entry.stop, entry.step)
    return entry


def _thaw(entry: Any) -> Any:
    if isinstance(entry, tuple):
        return slice(*entry[1:])
    return entry


def _entries(idx: Any) -> tuple[Any, ...]:
    """`idx` as a tuple of slices, integers and at most one `Ellipsis`; anything else is a `TypeError`."""
    entries = idx if isinstance(idx, tuple) else (idx,)
    for e in entries:
        ok = e is Ellipsis or isinstance(e, slice) or (isinstance(e, numbers.Integral) and not isinstance(e, bool))
        if not ok:
            raise TypeError(f"Index: `idx` may hold slices, integers and `...` (build it with `stax.Slice[...]`), "
                            f"got {e!r}.")
    if sum(e is Ellipsis for e in entries) > 1:
        raise ValueError("Index: `idx` may hold at most one `...`.")
    return tuple(int(e) if isinstance(e, numbers.Integral) else e for e in entries)


@dataclasses.dataclass(frozen=True)
class Index(Layer):
    """`x[idx]` on activations `(N, *S, C)`: a slice or an integer per spatial axis, a slice on channels.

    Kernel: the same entry applied to both position axes, `Σ'[p, p'] = Σ[idx(p), idx(p')]` (an integer removes
    the spatial axis); a channel slice changes the width only. Indexing the batch axis, or an integer on the
    channel axis (removing it), raises `NotImplementedError`, as in neural-tangents.

    Args:
      idx: the index, e.g. `stax.Slice[:, 1:5, ::2]` (`Slice[...]` returns what it is indexed with).
      batch_axis: neural-tangents' layout argument; must name the first axis.
      channel_axis: must name the last axis.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> net = stax.serial(stax.Conv(8, (2,)), stax.Relu(), stax.Index(stax.Slice[:, -1]), stax.Dense(1))
      >>> net.kernel(jnp.ones((3, 5, 2)), None, "ntk").shape
      (3, 3)
    """

    idx: Any
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self):
        object.__setattr__(self, "idx", tuple(_freeze(e) for e in _entries(self.idx)))
        check_axis_argument(self.batch_axis, "batch_axis", "Index")
        check_axis_argument(self.channel_axis, "channel_axis", "Index")

    def _per_axis(self, ndim: int) -> tuple[Any, ...]:
        """One entry per axis of `ndim`-axis activations (`...` expanded, missing trailing axes full)."""
        check_layout(self.batch_axis, self.channel_axis, ndim, "Index")
        entries = tuple(_thaw(e) for e in self.idx)
        if Ellipsis in entries:
            at = entries.index(Ellipsis)
            fill = ndim - (len(entries) - 1)
            entries = entries[:at] + (slice(None),) * fill + entries[at + 1:]
        if len(entries) > ndim:
            raise ValueError(f"Index: `idx` has {len(entries)} entries for activations with {ndim} axes.")
        entries = entries + (slice(None),) * (ndim - len(entries))
        if entries[0] != slice(None):
            raise NotImplementedError("Index: indexing the batch axis is not supported (select examples before "
                                      "calling the kernel).")
        if not isinstance(entries[-1], slice):
            raise NotImplementedError("Index: an integer on the channel axis removes it; only slices are supported "
                                      "there.")
        return entries

    def init(self, key, input_shape):
        entries = self._per_axis(len(input_shape))
        out = jax.eval_shape(lambda x: x[entries], jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
        return tuple(out.shape), ()

    def apply(self, params, x, **kwargs):
        return x[self._per_axis(x.ndim)]

    def transform(self, k: KernelState, **kwargs) -> KernelState:
        k = check_state(k, "Index")
        entries = self._per_axis(len(k.shape1))
        spatial = entries[1:-1]
        channels = k.shape1[-1]
        if k.is_input and len(range(channels)[entries[-1]]) != channels:
            # the input kernel averages over all input channels; a subset's kernel cannot be read from it
            raise ValueError(f"Index: selecting channels {entries[-1]} of the network's inputs changes their "
                             "kernel, which is computed from all channels; index the inputs before calling the "
                             "kernel (after a Dense/Conv, channels are exchangeable and may be indexed).")

        def index(a, n_batch, diagonal):
            full = (slice(None),) * n_batch
            per = tuple(spatial) if diagonal else tuple(e for e in spatial for _ in range(2))
            return a[full + per]

        out = k.map(index)
        return out.replace(shape1=self.init(None, k.shape1)[0], shape2=self.init(None, k.shape2)[0])
