"""neural-tangents' decorators for custom layers written as functions: `layer`, `requires`, `supports_masking`,
with `Bool` and `Diagonal` to state what a layer needs of its input kernel.

A neural-tangents custom layer is a function returning `(init_fn, apply_fn, kernel_fn)` where `kernel_fn` maps a
kernel state to a kernel state; `layer` turns it into an `ntkit.nn.Layer` (a `FunctionLayer`), so it composes with
`serial` and its `kernel_fn` takes inputs. The state is `ntkit.nn.KernelState`, which has the fields such layers
read (`nngp`, `ntk`, `cov1`, `cov2`, `shape1`, `is_gaussian`, ..., and `replace`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from typing import Any

from ._layer import Layer
from ._state import COV_FULL, CovLevel, KernelState

_REQUIREMENTS = "_ntkit_requirements"
_KEYWORDS = ("diagonal_batch", "diagonal_spatial", "batch_axis", "channel_axis")


class Bool(enum.IntEnum):
    """Three-valued logic of `Diagonal`: `NO`, `MAYBE` (iff the off-diagonal entries are zero), `YES`."""

    NO = 0
    MAYBE = 1
    YES = 2


@dataclasses.dataclass(frozen=True)
class Diagonal:
    """Whether a layer accepts (`input`) and keeps (`output`) kernels holding only equal spatial positions.

    ntkit reads `input`: `Bool.YES` lets the layer receive diagonal-only kernels when nothing after it needs more
    (a position-wise layer); anything else gives it full spatial covariances.
    """

    input: Bool = Bool.YES
    output: Bool = Bool.NO


def requires(**requirements: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator stating what a custom `kernel_fn` needs of its input kernel.

    Keywords (neural-tangents'): `diagonal_spatial` (`Diagonal(...)`, or a bool: `False` means full spatial
    covariances are needed), `diagonal_batch` (`True`, or `False` which ntkit cannot provide), `batch_axis` (must be
    0) and `channel_axis` (must be the last axis), checked on every call.
    """
    unknown = sorted(set(requirements) - set(_KEYWORDS))
    if unknown:
        raise TypeError(f"requires: unknown requirements {unknown}; expected some of {_KEYWORDS}.")
    if requirements.get("diagonal_batch", True) is False:
        raise NotImplementedError("requires(diagonal_batch=False): ntkit carries per-example covariances only.")

    def decorate(kernel_fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(kernel_fn)
        def checked(k: Any, **kwargs: Any) -> Any:
            if isinstance(k, KernelState):
                ndim = len(k.shape1)
                for key in ("batch_axis", "channel_axis"):
                    if key in requirements and requirements[key] % ndim != getattr(k, key):
                        raise ValueError(f"{kernel_fn.__name__} requires `{key}={requirements[key]}`, but ntkit "
                                         f"activations have it at {getattr(k, key)} (batch first, channels last).")
            return kernel_fn(k, **kwargs)

        setattr(checked, _REQUIREMENTS, dict(requirements))
        return checked

    return decorate


def _needs_full(kernel_fn: Callable[..., Any]) -> bool:
    """Whether the layer must receive full spatial covariances (what neural-tangents assumes without
    `requires`)."""
    diagonal = getattr(kernel_fn, _REQUIREMENTS, {}).get("diagonal_spatial", False)
    if isinstance(diagonal, Diagonal):
        return diagonal.input != Bool.YES
    return not diagonal


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionLayer(Layer):
    """A layer from `init_fn`, `apply_fn` and `kernel_fn` functions (what `layer` returns). Compared by identity.

    It receives full per-example covariances, and full spatial covariances unless its `kernel_fn` was decorated
    with `requires(diagonal_spatial=Diagonal(input=Bool.YES))`.
    """

    init_fn: Callable[..., Any]
    apply_fn: Callable[..., Any]
    kernel_fn: Callable[..., Any]
    name: str = "layer"

    def init(self, key, input_shape):
        return self.init_fn(key, input_shape)

    def apply(self, params, x, **kwargs):
        return self.apply_fn(params, x, **kwargs)

    def transform(self, k, **kwargs):
        return self.kernel_fn(k, **kwargs)

    def needs_full(self, out_full: bool) -> bool:
        return True if _needs_full(self.kernel_fn) else out_full

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return COV_FULL  # a custom kernel_fn may read the per-example covariances in any form


def layer(layer_fn: Callable[..., Any]) -> Callable[..., FunctionLayer]:
    """Decorator turning a function returning `(init_fn, apply_fn, kernel_fn)` into a layer constructor.

    `kernel_fn(k, **kwargs)` maps a `KernelState` to a `KernelState` (e.g. `k.replace(nngp=..., ntk=...)`); the
    returned layer unpacks as `(init_fn, apply_fn, kernel_fn)` with a `kernel_fn` taking inputs like any other.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> @stax.layer
      ... def Scale(c):
      ...     return (lambda key, shape: (shape, ()), lambda params, x, **kw: c * x,
      ...             lambda k, **kw: k.replace(nngp=c ** 2 * k.nngp, ntk=None if k.ntk is None else c ** 2 * k.ntk,
      ...                                       cov1=c ** 2 * k.cov1, cov2=None if k.cov2 is None else c ** 2 * k.cov2))
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), Scale(2.0))
      >>> float(kernel_fn(jnp.ones((1, 4)), None, "nngp")[0, 0])
      4.0
    """

    @functools.wraps(layer_fn)
    def build(*args: Any, **kwargs: Any) -> FunctionLayer:
        fns = layer_fn(*args, **kwargs)
        if len(fns) == 4:  # neural-tangents' `(..., mask_fn)` of a masking layer: ntkit has no masks
            fns = fns[:3]
        if len(fns) != 3 or not all(callable(f) for f in fns):
            raise TypeError(f"{layer_fn.__name__} must return (init_fn, apply_fn, kernel_fn), got {fns!r}.")
        init_fn, apply_fn, kernel_fn = fns
        return FunctionLayer(init_fn, apply_fn, kernel_fn, layer_fn.__name__)

    return build


def supports_masking(remask_kernel: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """neural-tangents' masking decorator, for porting layers that carry it: ntkit has no masked inputs, so the
    layer is unchanged except that a `mask_fn` (fourth function) is dropped and `apply_fn` raises
    `NotImplementedError` when given `mask_constant`."""
    del remask_kernel

    def decorate(layer_fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(layer_fn)
        def without_masks(*args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
            init_fn, apply_fn, kernel_fn = layer_fn(*args, **kwargs)[:3]

            def apply(params: Any, x: Any, mask_constant: Any = None, **kw: Any) -> Any:
                if mask_constant is not None:
                    raise NotImplementedError("masked inputs (`mask_constant`) are not supported by ntkit.")
                return apply_fn(params, x, **kw)

            return init_fn, apply, kernel_fn

        return without_masks

    return decorate
