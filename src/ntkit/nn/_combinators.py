"""Combinators: `serial`, `parallel`, fan-out, fan-in (sum, concatenation, product), `Identity`, `repeat`.

Branches carry independent weights, so kernels of a sum add and kernels of a product multiply (docs/theory.md §2).
A list of kernel states (one per branch) flows between `FanOut`/`parallel` and a `FanIn*` layer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .._kwargs import fold_rng
from ._driver import fused_segments
from ._layer import Layer
from ._state import CovLevel, KernelState, align_covariances, check_state


@dataclasses.dataclass(frozen=True, init=False)
class serial(Layer):  # noqa: N801 -- stax name
    """Layers one after the other: `serial(Dense(512), Relu(), Dense(1))`."""

    layers: tuple[Layer, ...]

    def __init__(self, *layers: Layer):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"serial: layer {i} is a {type(layer).__name__}, not an ntkit.nn layer.")
        object.__setattr__(self, "layers", tuple(layers))

    def init(self, key, input_shape):
        params = []
        for i, layer in enumerate(self.layers):
            try:
                input_shape, p = layer.init(jax.random.fold_in(key, i), input_shape)
            except ValueError as err:
                raise ValueError(f"serial: layer {i} ({type(layer).__name__}): {err}") from err
            params.append(p)
        return input_shape, tuple(params)

    def apply(self, params, x, **kwargs):
        for i, (layer, p) in enumerate(zip(self.layers, params, strict=True)):
            x = layer.apply(p, x, **fold_rng(kwargs, i))
        return x

    def transform(self, k, **kwargs):
        for i, layer in enumerate(self.layers):
            try:
                k = layer.transform(k, **fold_rng(kwargs, i))
            except ValueError as err:
                raise ValueError(f"serial: layer {i} ({type(layer).__name__}): {err}") from err
        return k

    def needs_full(self, out_full: bool) -> bool:
        for layer in reversed(self.layers):
            out_full = layer.needs_full(out_full)
        return out_full

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        for layer in reversed(self.layers):
            out_level = layer.cov_needs(out_level)
        return out_level

    def flat_layers(self) -> list[tuple[Layer, tuple[int, ...]]]:
        """Every layer with its path of indices, nested `serial`s opened (`serial(a, serial(b, c))` runs as
        `a, b, c` at paths `(0,), (1, 0), (1, 1)`)."""
        out: list[tuple[Layer, tuple[int, ...]]] = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, serial):
                out += [(sub, (i, *path)) for sub, path in layer.flat_layers()]
            else:
                out.append((layer, (i,)))
        return out

    def compiled_steps(self) -> list[tuple[tuple[Layer, ...], tuple[tuple[int, ...], ...]]]:
        """One compiled step per layer, or per affine layer with the nonlinearity after it, nested `serial`s
        included: compile and run time stay linear in depth however the network is written."""
        flat = self.flat_layers()
        segments = fused_segments([layer.pointwise for layer, _ in flat])
        return [(tuple(flat[i][0] for i in segment), tuple(flat[i][1] for i in segment)) for segment in segments]


def repeat(layer: Layer, n: int) -> serial:
    """`layer` applied `n` times (independent weights per copy)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"`n` must be a non-negative integer, got {n!r}.")
    return serial(*([layer] * n))


@dataclasses.dataclass(frozen=True, init=False)
class parallel(Layer):  # noqa: N801 -- stax name
    """Layer `i` applied to input `i` of a list: `parallel(Dense(8), Identity())`."""

    layers: tuple[Layer, ...]

    def __init__(self, *layers: Layer):
        object.__setattr__(self, "layers", tuple(layers))

    def _check(self, xs, what):
        if not isinstance(xs, list | tuple) or len(xs) != len(self.layers):
            raise ValueError(f"parallel of {len(self.layers)} layers needs a list of {len(self.layers)} {what}.")

    def init(self, key, input_shape):
        self._check(input_shape, "input shapes")
        outs = [layer.init(jax.random.fold_in(key, i), s) for i, (layer, s) in enumerate(zip(self.layers,
                                                                                            input_shape, strict=True))]
        return [o[0] for o in outs], tuple(o[1] for o in outs)

    def apply(self, params, x, **kwargs):
        self._check(x, "inputs")
        return [layer.apply(p, xi, **fold_rng(kwargs, i))
                for i, (layer, p, xi) in enumerate(zip(self.layers, params, x, strict=True))]

    def transform(self, k, **kwargs):
        self._check(k, "kernels")
        pairs = enumerate(zip(self.layers, k, strict=True))
        return [layer.transform(ki, **fold_rng(kwargs, i)) for i, (layer, ki) in pairs]

    def needs_full(self, out_full: bool) -> bool:
        return any(layer.needs_full(out_full) for layer in self.layers)

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return max(layer.cov_needs(out_level) for layer in self.layers)


@dataclasses.dataclass(frozen=True)
class FanOut(Layer):
    """`n` copies of the input (a list), for branches that `parallel` then transforms."""

    num: int

    def init(self, key, input_shape):
        return [input_shape] * self.num, ()

    def apply(self, params, x, **kwargs):
        return [x] * self.num

    def transform(self, k, **kwargs):
        return [check_state(k, "FanOut")] * self.num


@dataclasses.dataclass(frozen=True)
class Identity(Layer):
    """`x ↦ x`, kernel unchanged (the skip branch of a residual block)."""

    def init(self, key, input_shape):
        return input_shape, ()

    def apply(self, params, x, **kwargs):
        return x

    def transform(self, k, **kwargs):
        return k


def _branches(k, name: str) -> list[KernelState]:
    if not isinstance(k, list | tuple) or not all(isinstance(s, KernelState) for s in k) or len(k) < 1:
        raise ValueError(f"{name} needs a list of branch kernels (from FanOut/parallel), got {type(k).__name__}.")
    return align_covariances(list(k))


def _same_shapes(shapes, name: str, ignore_channels: bool = False):
    shapes = [tuple(s) for s in shapes]
    cut = [s[:-1] if ignore_channels else s for s in shapes]
    if any(c != cut[0] for c in cut):
        raise ValueError(f"{name}: branch shapes do not match: {shapes}.")


def _sum_opt(arrays):
    return None if any(a is None for a in arrays) else sum(arrays[1:], arrays[0])


@dataclasses.dataclass(frozen=True)
class FanInSum(Layer):
    """Sum of branches; with independent branches `Σ = Σ_b Σ_b`, `Θ = Σ_b Θ_b`."""

    def init(self, key, input_shape):
        _same_shapes(input_shape, "FanInSum")
        return input_shape[0], ()

    def apply(self, params, x, **kwargs):
        return sum(x[1:], x[0])

    def transform(self, k, **kwargs):
        ks = _branches(k, "FanInSum")
        _same_shapes([s.shape1 for s in ks], "FanInSum")
        return ks[0].replace(nngp=_sum_opt([s.nngp for s in ks]), ntk=_sum_opt([s.ntk for s in ks]),
                             cov1=_sum_opt([s.cov1 for s in ks]), cov2=_sum_opt([s.cov2 for s in ks]),
                             is_gaussian=all(s.is_gaussian for s in ks), is_input=False)


@dataclasses.dataclass(frozen=True)
class FanInProd(Layer):
    """Elementwise product of branches; independent branches: `Σ = Π_b Σ_b`, `Θ = Σ_b Θ_b Π_{c≠b} Σ_c`."""

    def init(self, key, input_shape):
        _same_shapes(input_shape, "FanInProd")
        return input_shape[0], ()

    def apply(self, params, x, **kwargs):
        out = x[0]
        for xi in x[1:]:
            out = out * xi
        return out

    def transform(self, k, **kwargs):
        ks = _branches(k, "FanInProd")
        _same_shapes([s.shape1 for s in ks], "FanInProd")

        def prod(arrays):
            if any(a is None for a in arrays):
                return None
            out = arrays[0]
            for a in arrays[1:]:
                out = out * a
            return out

        ntk = None
        if all(s.ntk is not None for s in ks):
            ntk = sum(prod([s.ntk if c == b else s.nngp for c, s in enumerate(ks)]) for b in range(len(ks)))
        return ks[0].replace(nngp=prod([s.nngp for s in ks]), ntk=ntk, cov1=prod([s.cov1 for s in ks]),
                             cov2=prod([s.cov2 for s in ks]), is_gaussian=False, is_input=False)


@dataclasses.dataclass(frozen=True)
class FanInConcat(Layer):
    """Concatenation along channels (`axis=-1`): the channel-count-weighted average of the branches' kernels."""

    axis: int = -1

    def __post_init__(self):
        if self.axis != -1:
            raise ValueError(f"FanInConcat supports the channel axis only (`axis=-1`), got axis={self.axis}.")

    def init(self, key, input_shape):
        _same_shapes(input_shape, "FanInConcat", ignore_channels=True)
        return tuple(input_shape[0][:-1]) + (sum(s[-1] for s in input_shape),), ()

    def apply(self, params, x, **kwargs):
        return jnp.concatenate(x, axis=-1)

    def transform(self, k, **kwargs):
        ks = _branches(k, "FanInConcat")
        _same_shapes([s.shape1 for s in ks], "FanInConcat", ignore_channels=True)
        widths = [s.shape1[-1] for s in ks]
        total = sum(widths)

        def mix(arrays):
            if any(a is None for a in arrays):
                return None
            return sum(w / total * a for w, a in zip(widths, arrays, strict=True))

        return ks[0].replace(nngp=mix([s.nngp for s in ks]), ntk=mix([s.ntk for s in ks]),
                             cov1=mix([s.cov1 for s in ks]), cov2=mix([s.cov2 for s in ks]),
                             shape1=ks[0].shape1[:-1] + (total,), shape2=ks[0].shape2[:-1] + (total,),
                             is_gaussian=all(s.is_gaussian for s in ks), is_input=False)
