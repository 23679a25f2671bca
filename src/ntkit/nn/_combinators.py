"""Combinators: `serial`, `parallel`, fan-out, fan-in (sum, concatenation, product), `Identity`, `repeat`.

Branches carry independent weights, so kernels of a sum add and kernels of a product multiply (docs/theory.md §2).
A list of kernel states (one per branch) flows between `FanOut`/`parallel` and a `FanIn*` layer.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from .._kwargs import fold_rng
from ._driver import fused_segments
from ._elementwise import Elementwise, cross_expectations
from ._layer import Layer
from ._state import (
    COV_DIAGONAL,
    CovLevel,
    KernelState,
    align_covariances,
    check_state,
    cross_variances,
    diagonal_variances,
    self_variances,
)


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
        """Parameters as neural-tangents' (and `jax.example_libraries.stax`'s) `serial`: a list, one entry per
        layer; before each layer `key, layer_key = split(key)` and the layer gets `layer_key`."""
        params = []
        for i, layer in enumerate(self.layers):
            key, layer_key = jax.random.split(key)
            try:
                input_shape, p = layer.init(layer_key, input_shape)
            except ValueError as err:
                raise ValueError(f"serial: layer {i} ({type(layer).__name__}): {err}") from err
            params.append(p)
        return input_shape, params

    def apply(self, params, x, **kwargs):
        for i, (layer, p) in enumerate(zip(self.layers, params, strict=True)):
            x = layer.apply(p, x, **fold_rng(kwargs, i))
        return x

    def transform(self, k, **kwargs):
        for layer, path in self.flat_layers():
            sub = kwargs
            for i in path:
                sub = fold_rng(sub, i)
            try:
                k = layer.transform(k, **sub)
            except ValueError as err:
                where = ".".join(map(str, path))
                raise ValueError(f"serial: layer {where} ({type(layer).__name__}): {err}") from err
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
        return _fuse_elementwise_sums(out)

    def compiled_steps(self) -> list[tuple[tuple[Layer, ...], tuple[tuple[int, ...], ...]]]:
        """One compiled step per layer, or per affine layer with the nonlinearity after it, nested `serial`s
        included: compile and run time stay linear in depth however the network is written."""
        flat = self.flat_layers()
        segments = fused_segments([layer.pointwise for layer, _ in flat])
        return [(tuple(flat[i][0] for i in segment), tuple(flat[i][1] for i in segment)) for segment in segments]


@dataclasses.dataclass(frozen=True, init=False)
class repeat(serial):  # noqa: N801 -- stax name
    """`layer` applied `n` times with independent weights: the network and kernel of `serial(*[layer] * n)`.

    Parameters as neural-tangents' `repeat`: the layer's parameter tree with every leaf stacked along a new leading
    axis of size `n` (copy `i` at index `i`), drawn with the keys `serial` would give the copies. The layer must keep
    its input shape.

    Example:
      >>> import jax, ntkit.nn as stax
      >>> _, params = stax.repeat(stax.Dense(4), 3).init(jax.random.key(0), (2, 4))
      >>> params[0].shape
      (3, 4, 4)
    """

    layer: Layer
    n: int

    def __init__(self, layer: Layer, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"`n` must be a non-negative integer, got {n!r}.")
        super().__init__(*([layer] * n))
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "n", n)

    def __repr__(self) -> str:
        return f"repeat({self.layer!r}, {self.n})"

    def init(self, key, input_shape):
        out_shape, _ = self.layer.init(key, input_shape)  # the output shape (and the layer's own checks)
        if tuple(out_shape) != tuple(input_shape):
            raise ValueError(f"repeat: the layer maps shape {tuple(input_shape)} to {tuple(out_shape)}; it must keep "
                             "the shape (use serial(*[layer] * n) instead).")

        def step(key, _):
            key, layer_key = jax.random.split(key)
            return key, self.layer.init(layer_key, input_shape)[1]

        return out_shape, jax.lax.scan(step, key, None, self.n)[1]

    def apply(self, params, x, **kwargs):
        for i in range(self.n):
            x = self.layer.apply(jax.tree_util.tree_map(lambda a, i=i: a[i], params), x, **fold_rng(kwargs, i))
        return x


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
        # as neural-tangents' (and `jax.example_libraries.stax`'s) `parallel`: layer `i` gets `split(key, n)[i]`,
        # the parameters are a tuple
        keys = jax.random.split(key, len(self.layers))
        outs = [layer.init(keys[i], s) for i, (layer, s) in enumerate(zip(self.layers, input_shape, strict=True))]
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

    weight_free: ClassVar[bool] = True

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
    """Sum of branches; with independent branches `Σ = Σ_b Σ_b`, `Θ = Σ_b Θ_b`.

    Branches must be independent with mean zero for their kernels to add: end each with a `Dense`/`Conv` (Gaussian
    output), except at most one. Two or more non-Gaussian branches (nonlinearities of a shared input, correlated
    and not mean-zero) raise a `ValueError`, except the pattern `FanOut(n), parallel(φ_1, ..., φ_n), FanInSum()`
    inside a `serial` with every branch an elementwise nonlinearity or `Identity`: that is the nonlinearity
    `Σ_b φ_b`, whose kernel `Σ_bc E[φ_b(u) φ_c(v)]` is computed with the cross terms (closed forms for the ReLU
    family and the identity, quadrature otherwise).
    """

    def init(self, key, input_shape):
        _same_shapes(input_shape, "FanInSum")
        return input_shape[0], ()

    def apply(self, params, x, **kwargs):
        return sum(x[1:], x[0])

    def transform(self, k, **kwargs):
        ks = _branches(k, "FanInSum")
        _same_shapes([s.shape1 for s in ks], "FanInSum")
        # the network's inputs are not mean-zero either: their cross terms with a nonlinearity do not vanish
        loose = [i for i, s in enumerate(ks) if not s.is_gaussian or s.is_input]
        if len(loose) > 1:
            raise ValueError(
                f"FanInSum: branches {loose} are not Gaussian (they end in a nonlinearity or are the network's "
                "inputs), so their sum's kernel "
                "needs their cross-covariances and means, which are not tracked. End each branch but one with a "
                "Dense/Conv layer, or sum elementwise nonlinearities of one shared input as "
                "`FanOut(n), parallel(φ_1, ..., φ_n), FanInSum()` in a serial (computed exactly).")
        return ks[0].replace(nngp=_sum_opt([s.nngp for s in ks]), ntk=_sum_opt([s.ntk for s in ks]),
                             cov1=_sum_opt([s.cov1 for s in ks]), cov2=_sum_opt([s.cov2 for s in ks]),
                             is_gaussian=all(s.is_gaussian for s in ks), is_input=False)


@dataclasses.dataclass(frozen=True)
class SumOfElementwise(Layer):
    """Kernel of `FanOut(n), parallel(φ_1, ..., φ_n), FanInSum()` on a Gaussian input: the nonlinearity `Σ_b φ_b`.

    `Σ' = Σ_bc E[φ_b(u) φ_c(v)]`, `Θ' = Θ Σ_bc E[φ_b'(u) φ_c'(v)]` (`branches[b]` is an `Elementwise` layer or
    `None` for `Identity`). `serial` runs this in place of the three layers; `init`/`apply` are theirs.
    """

    branches: tuple[Elementwise | None, ...]

    pointwise: ClassVar[bool] = True

    def init(self, key, input_shape):
        raise NotImplementedError("SumOfElementwise is the kernel of FanOut/parallel/FanInSum; use those.")

    def apply(self, params, x, **kwargs):
        raise NotImplementedError("SumOfElementwise is the kernel of FanOut/parallel/FanInSum; use those.")

    def _expectations(self, cov12, var1, var2, with_derivative):
        nngp = d_nngp = None
        for f in self.branches:
            for g in self.branches:
                e, d = cross_expectations(f, g, cov12, var1, var2, with_derivative)
                nngp = e if nngp is None else nngp + e
                if with_derivative:
                    d_nngp = d if d_nngp is None else d_nngp + d
        return nngp, d_nngp

    def transform(self, k, **kwargs):
        name = "FanInSum"
        k = check_state(k, name)
        if not k.is_gaussian:
            raise ValueError(f"{name} of elementwise branches needs a Gaussian input (the output of a Dense or Conv "
                             "layer).")
        d1, d2 = diagonal_variances(k, name)
        v1, v2 = cross_variances(d1, d2, k)
        nngp, d_nngp = self._expectations(k.nngp, v1, v2, k.ntk is not None)
        cov1, cov2 = k.covariances(name)
        cov1 = self._expectations(cov1, *self_variances(d1, k), False)[0]
        cov2 = None if cov2 is None else self._expectations(cov2, *self_variances(d2, k), False)[0]
        return k.replace(nngp=nngp, ntk=None if k.ntk is None else k.ntk * d_nngp, cov1=cov1, cov2=cov2,
                         is_gaussian=False, is_input=False)

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return max(out_level, COV_DIAGONAL)


def _elementwise_branch(layer: Layer) -> tuple[bool, Elementwise | None]:
    """Whether a branch is an elementwise nonlinearity or the identity (possibly in a one-layer `serial`), and which."""
    while isinstance(layer, serial) and len(layer.layers) == 1:
        layer = layer.layers[0]
    if isinstance(layer, Identity) or (isinstance(layer, serial) and not layer.layers):
        return True, None
    if isinstance(layer, Elementwise):
        return True, layer
    return False, None


def _weight_free(layer: Layer) -> bool:
    """Whether a branch is known to draw no random weights (every layer in it `weight_free`)."""
    if isinstance(layer, serial | parallel):
        return all(_weight_free(sub) for sub in layer.layers)
    return layer.weight_free


@dataclasses.dataclass(frozen=True)
class _CorrelatedFanIn(Layer):
    """A fan-in after `FanOut` whose branches `shared` draw no weights: deterministic functions of one input,
    correlated, so their kernels do not combine as independent branches' do (2× off for the sum
    `parallel(Identity(), Identity())`). Refused, except a concatenation along channels, whose channel-averaged
    kernel needs no cross-covariances. `init`/`apply` are the fan-in's own."""

    inner: Layer
    shared: tuple[int, ...]

    def init(self, key, input_shape):
        return self.inner.init(key, input_shape)

    def apply(self, params, x, **kwargs):
        return self.inner.apply(params, x, **kwargs)

    def transform(self, k, **kwargs):
        name = type(self.inner).__name__
        if isinstance(self.inner, FanInConcat):
            shapes = [s.shape1 for s in _branches(k, name)]
            if self.inner._axis(len(shapes[0])) == len(shapes[0]) - 1:
                return self.inner.transform(k, **kwargs)
        raise ValueError(
            f"{name}: branches {list(self.shared)} draw no random weights, so they are correlated functions of the "
            "same input and their kernels do not combine as independent branches' (their cross-covariances are not "
            "tracked). Give all of them but one a Dense/Conv layer of its own, or, for a sum of elementwise "
            "nonlinearities of one input, write `FanOut(n), parallel(φ_1, ..., φ_n), FanInSum()` (computed "
            "exactly).")

    def needs_full(self, out_full: bool) -> bool:
        return self.inner.needs_full(out_full)

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return self.inner.cov_needs(out_level)


def _fuse_elementwise_sums(flat: list[tuple[Layer, tuple[int, ...]]]) -> list[tuple[Layer, tuple[int, ...]]]:
    """`FanOut(n), parallel(φ_1, ..., φ_n), FanInSum()` with elementwise/identity branches, at least one
    nonlinear, becomes one `SumOfElementwise` (the branches are correlated: their kernels do not simply add)."""
    out: list[tuple[Layer, tuple[int, ...]]] = []
    i = 0
    while i < len(flat):
        window = [layer for layer, _ in flat[i:i + 3]]
        if (len(window) == 3 and isinstance(window[0], FanOut) and isinstance(window[1], parallel)
                and isinstance(window[2], FanInSum | FanInProd | FanInConcat)
                and len(window[1].layers) == window[0].num):
            parsed = [_elementwise_branch(b) for b in window[1].layers]
            if (isinstance(window[2], FanInSum) and all(ok for ok, _ in parsed)
                    and any(f is not None for _, f in parsed)):
                out.append((SumOfElementwise(tuple(f for _, f in parsed)), flat[i][1]))
                i += 3
                continue
            shared = [b for b, branch in enumerate(window[1].layers) if _weight_free(branch)]
            if len(shared) > 1:
                out += [flat[i], flat[i + 1], (_CorrelatedFanIn(window[2], tuple(shared)), flat[i + 2][1])]
                i += 3
                continue
        out.append(flat[i])
        i += 1
    return out


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
    """Concatenation of branches along `axis` of the activations `(N, *S, C)`.

    Channels (`axis=-1`): the channel-count-weighted average of the branches' kernels. A spatial axis: the
    branches' kernels side by side along it, with zero covariance between positions of different branches, which
    holds for independent mean-zero Gaussian branches only (a `ValueError` otherwise, as in neural-tangents). The
    batch axis cannot be concatenated (it would mix examples into one kernel entry).
    """

    axis: int = -1

    def __post_init__(self):
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise TypeError(f"FanInConcat: `axis` must be an int, got {self.axis!r}.")

    def _axis(self, ndim: int) -> int:
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"FanInConcat: `axis={self.axis}` is out of range for inputs of {ndim} dimensions.")
        axis = self.axis % ndim
        if axis == 0:
            raise ValueError("FanInConcat: `axis` is the batch axis (0); concatenate along channels (-1) or a "
                             "spatial axis.")
        return axis

    def init(self, key, input_shape):
        shapes = [tuple(s) for s in input_shape]
        axis = self._axis(len(shapes[0]))
        cut = [s[:axis] + s[axis + 1:] for s in shapes]
        if any(len(s) != len(shapes[0]) for s in shapes) or any(c != cut[0] for c in cut):
            raise ValueError(f"FanInConcat: branch shapes must match except along axis {self.axis}: {shapes}.")
        return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:], ()

    def apply(self, params, x, **kwargs):
        return jnp.concatenate(x, axis=self.axis)

    def transform(self, k, **kwargs):
        ks = _branches(k, "FanInConcat")
        axis = self._axis(len(ks[0].shape1))
        if axis == len(ks[0].shape1) - 1:
            return self._channels(ks)
        return self._spatial(ks, axis - 1)

    def _channels(self, ks):
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

    def _spatial(self, ks, d: int):
        """Concatenation along spatial axis `d` (0-based among the spatial axes)."""
        shapes = [s.shape1 for s in ks]
        cut = [s[:d + 1] + s[d + 2:] for s in shapes]
        if any(c != cut[0] for c in cut):
            raise ValueError(f"FanInConcat: branch shapes must match except along axis {self.axis}: {shapes}.")
        if not all(s.is_gaussian for s in ks):
            raise ValueError(f"FanInConcat along spatial axis {self.axis} needs independent Gaussian branches "
                             "(each ending in a Dense/Conv layer): the covariance between positions of different "
                             "branches is then zero; for other branches it is not tracked.")
        k0 = ks[0]

        def join(arrays, n_batch, diagonal):
            if any(a is None for a in arrays):
                return None
            if diagonal:  # one axis per spatial axis: plain concatenation
                return jnp.concatenate(arrays, axis=n_batch + d)
            # axes (i, i') for spatial axis d: block diagonal, zero between branches
            row, col = n_batch + 2 * d, n_batch + 2 * d + 1
            sizes = [a.shape[col] for a in arrays]
            blocks = []
            for b, a in enumerate(arrays):
                pad = [(0, 0)] * a.ndim
                pad[col] = (sum(sizes[:b]), sum(sizes[b + 1:]))
                blocks.append(jnp.pad(a, pad))
            return jnp.concatenate(blocks, axis=row)

        full = not k0.diagonal_spatial
        cov_diag = k0.cov_is_diagonal
        size = sum(s[d + 1] for s in shapes)
        return k0.replace(
            nngp=join([s.nngp for s in ks], 2, not full), ntk=join([s.ntk for s in ks], 2, not full),
            cov1=join([s.cov1 for s in ks], 1, cov_diag), cov2=join([s.cov2 for s in ks], 1, cov_diag),
            shape1=k0.shape1[:d + 1] + (size,) + k0.shape1[d + 2:],
            shape2=k0.shape2[:d + 1] + (sum(s.shape2[d + 1] for s in ks),) + k0.shape2[d + 2:],
            is_gaussian=True, is_input=False)
