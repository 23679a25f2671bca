"""What a kernel job is: the kernel function called tile by tile, and the identity a store records.

A job is the kernel `K(x1, x2)` of one kernel function on one pair of inputs, cut into one tiling. Its identity
(`Identity`) holds everything the stored numbers depend on: the kernel function (an architecture's `repr` and a
fingerprint of the program it traces to), `get`, fingerprints of the inputs' bytes and of the parameters, the
shape, dtype and tile side, and ntkit's version. A store written by one job refuses to be continued by another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # object addresses in reprs differ from run to run


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def array_fingerprint(x: Any) -> str:
    """SHA-256 of an array's shape, dtype and bytes (C order)."""
    a = np.ascontiguousarray(np.asarray(x))
    return _digest(str(a.shape).encode(), str(a.dtype).encode(), a.tobytes())


def tree_fingerprint(tree: Any) -> str | None:
    """SHA-256 of a pytree's structure and every leaf's bytes; None for None."""
    if tree is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return _digest(str(treedef).encode(), *(array_fingerprint(leaf).encode() for leaf in leaves))


def _layer_of(kernel_fn: Any) -> Any:
    """The `ntkit.nn` layer behind `kernel_fn` (the layer, or its bound `kernel` method), else None."""
    from ..nn import Layer

    if isinstance(kernel_fn, Layer):
        return kernel_fn
    owner = getattr(kernel_fn, "__self__", None)
    if isinstance(owner, Layer) and getattr(kernel_fn, "__name__", None) == "kernel":
        return owner
    return None


@dataclass(frozen=True)
class KernelFunction:
    """A kernel function as a job calls it: `block(params, a, b) -> tuple of (n_a, n_b) arrays`, one per `get`.

    Attributes:
      fn: the callable, `fn(x1, x2, get)` or, for an empirical kernel, `fn(x1, x2, get, params)`.
      kind: `"analytic"` (an `ntkit.nn` layer's kernel), `"empirical"` (called with `params`) or `"function"`
        (another kernel function `fn(x1, x2, get)` returning a `Kernel` named tuple).
      description: the architecture's `repr` (addresses removed) or the function's type.
      gets: the kernels computed, in order.
    """

    fn: Callable[..., Any]
    kind: str
    description: str
    gets: tuple[str, ...]

    @classmethod
    def build(cls, kernel_fn: Any, params: Any, gets: tuple[str, ...]) -> KernelFunction:
        from ..empirical import EmpiricalKernelFn

        layer = _layer_of(kernel_fn)
        if layer is not None:
            if params is not None:
                raise ValueError("`params` is for empirical kernel functions; an analytic `ntkit.nn` kernel takes "
                                 "none (pass params=None).")
            return cls(layer.kernel, "analytic", _ADDRESS.sub("", repr(layer)), gets)
        if not callable(kernel_fn):
            raise TypeError("`kernel_fn` must be an `ntkit.nn` layer (or its `kernel_fn`) or an empirical kernel "
                            f"function `ntkit.empirical_kernel_fn(f)`, got {type(kernel_fn).__name__}.")
        if isinstance(kernel_fn, EmpiricalKernelFn) and params is None:
            raise ValueError("`params` is required for an empirical kernel function (the parameters of `f`).")
        kind = "function" if params is None else "empirical"
        return cls(kernel_fn, kind, _ADDRESS.sub("", getattr(kernel_fn, "__qualname__", type(kernel_fn).__qualname__)),
                   gets)

    def block(self, params: Any, a: Any, b: Any) -> tuple[jax.Array, ...]:
        """The kernels `K(a, b)` (`b=None`: `K(a, a)`), one array per `get`."""
        out = self.fn(a, b, self.gets, params) if self.kind == "empirical" else self.fn(a, b, self.gets)
        return tuple(getattr(out, g) for g in self.gets)

    def fingerprint(self, params: Any, a: Any, b: Any) -> str:
        """SHA-256 of the program the kernel traces to on one pair of examples (its jaxpr, addresses removed, and
        its constants): two kernel functions with the same fingerprint compute the same numbers."""
        closed = jax.make_jaxpr(self.block)(params, a, b)
        text = _ADDRESS.sub("", str(closed.jaxpr))
        return _digest(text.encode(), *(array_fingerprint(c).encode() for c in closed.consts))


def as_input(x: Any, name: str) -> np.ndarray:
    """`x` checked (finite real numbers, at least one example) and as a NumPy array of JAX's default float dtype
    (float64 with `JAX_ENABLE_X64=1`, else float32) when it is not already floating."""
    from .. import _checks

    checked = _checks.check_array(x, name, min_ndim=1, nonempty=True)
    if not jnp.issubdtype(checked.dtype, jnp.floating):
        checked = checked.astype(jnp.result_type(float))
    return np.asarray(checked)
