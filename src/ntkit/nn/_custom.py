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

from . import _masking
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

    Built from a function decorated with `supports_masking`, it takes masked inputs: `mask_rule(mask, input_shape)`
    gives its output's mask, `apply_fn` receives the input's mask as `mask=` and `kernel_fn` reads `k.mask1`,
    `k.mask2`; with `remask_kernel` the covariances at masked positions are zeroed after `kernel_fn`.
    """

    init_fn: Callable[..., Any]
    apply_fn: Callable[..., Any]
    kernel_fn: Callable[..., Any]
    name: str = "layer"
    mask_rule: Callable[..., Any] | None = None
    remask_kernel: bool = False

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
        if isinstance(fns, _MaskingFns):  # from `supports_masking`
            return FunctionLayer(fns.init_fn, fns.inner_apply_fn, fns.kernel_fn, layer_fn.__name__, fns.mask_rule,
                                 fns.remask_kernel)
        if len(fns) == 4:  # a `mask_fn` without `supports_masking`: the layer takes no masks
            fns = fns[:3]
        if len(fns) != 3 or not all(callable(f) for f in fns):
            raise TypeError(f"{layer_fn.__name__} must return (init_fn, apply_fn, kernel_fn), got {fns!r}.")
        init_fn, apply_fn, kernel_fn = fns
        return FunctionLayer(init_fn, apply_fn, kernel_fn, layer_fn.__name__)

    return build


class _MaskingFns(tuple):
    """`(init_fn, apply_fn, kernel_fn)` of a layer declared with `supports_masking`, with what `layer` needs to
    build a `FunctionLayer` taking masks."""

    init_fn: Callable[..., Any]
    inner_apply_fn: Callable[..., Any]
    kernel_fn: Callable[..., Any]
    mask_rule: Callable[..., Any]
    remask_kernel: bool


def supports_masking(remask_kernel: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator declaring that a custom layer takes masked inputs (neural-tangents' `supports_masking`; put it
    under `layer`).

    The decorated function returns `(init_fn, apply_fn, kernel_fn)` or `(init_fn, apply_fn, kernel_fn, mask_fn)`:
    `apply_fn(params, x, mask=None, **kwargs)` receives the input's mask (booleans, `True` where masked), `kernel_fn`
    may read `k.mask1`/`k.mask2`, and `mask_fn(mask, input_shape)` gives the output's mask (the input's when
    absent). The result unpacks as `(init_fn, apply_fn, kernel_fn)` with an `apply_fn` taking `mask_constant=`
    (returning a `MaskedArray`); under `layer`, the layer takes masks in `serial` networks and `kernel_fn(...,
    mask_constant=c)`.

    Args:
      remask_kernel: zero the covariances at masked positions after `kernel_fn` (needed unless `kernel_fn` keeps
        them zero).
    """
    remask_kernel = bool(remask_kernel)

    def decorate(layer_fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(layer_fn)
        def with_masks(*args: Any, **kwargs: Any) -> _MaskingFns:
            fns = layer_fn(*args, **kwargs)
            if len(fns) not in (3, 4) or not all(callable(f) for f in fns):
                raise TypeError(f"{layer_fn.__name__} must return (init_fn, apply_fn, kernel_fn[, mask_fn]), got "
                                f"{fns!r}.")
            init_fn, apply_fn, kernel_fn = fns[:3]
            mask_rule = fns[3] if len(fns) == 4 else _same_mask

            def apply(params: Any, x: Any, mask_constant: Any = None, **kw: Any) -> Any:
                x, mask = _masking.masked_input(x, mask_constant)
                if mask is None:
                    return apply_fn(params, x, **kw)
                out = apply_fn(params, x, mask=mask, **kw)
                return _masking.MaskedArray(out, mask_rule(mask, tuple(x.shape)))

            out = _MaskingFns((init_fn, apply, kernel_fn))
            out.init_fn, out.inner_apply_fn, out.kernel_fn = init_fn, apply_fn, kernel_fn
            out.mask_rule, out.remask_kernel = mask_rule, remask_kernel
            return out

        return with_masks

    return decorate


def _same_mask(mask: Any, input_shape: Any) -> Any:
    return mask
