"""Empirical (finite-width) NTK and NNGP of any JAX model: the public factories over the implementations."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .._kernel import Get, parse_get, select
from .._kwargs import split_kwargs
from .._layout import KernelLayout
from .._memory import memory_budget_bytes
from .._tiling import Tiles
from ._cost import rank_implementations
from ._jacobian import jacobian_kernel
from ._model import Examples, Model, output_shape
from ._ntvp import ntk_vp, ntvp_kernel
from ._structured import structured_kernel, structured_supported

logger = logging.getLogger("ntkit.empirical")

Implementation = Literal["auto", "jacobian", "ntvp", "structured"]
_IMPLEMENTATIONS: tuple[Implementation, ...] = ("auto", "jacobian", "ntvp", "structured")


class NtkImplementation(enum.IntEnum):
    """neural-tangents' codes for `implementation=`, accepted wherever ntkit takes the strings.

    `AUTO` (0) is `"auto"`, `JACOBIAN_CONTRACTION` (1) `"jacobian"`, `NTK_VECTOR_PRODUCTS` (2) `"ntvp"`,
    `STRUCTURED_DERIVATIVES` (3) `"structured"`; the plain integers work too.

    Example:
      >>> import ntkit
      >>> ntkit.NtkImplementation.STRUCTURED_DERIVATIVES.name_in_ntkit
      'structured'
    """

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3

    @property
    def name_in_ntkit(self) -> Implementation:
        """The string ntkit uses for this implementation."""
        return _IMPLEMENTATIONS[self.value]


_IMPLEMENTATION_CODES: dict[int, Implementation] = {int(code): code.name_in_ntkit for code in NtkImplementation}


def _canonical_implementation(implementation: Any) -> Implementation:
    if isinstance(implementation, int | np.integer) and not isinstance(implementation, bool):
        if implementation not in _IMPLEMENTATION_CODES:
            raise ValueError(f"`implementation` code must be 0-3, got {implementation}.")
        return _IMPLEMENTATION_CODES[int(implementation)]
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {_IMPLEMENTATIONS} or 0-3, got {implementation!r}.")
    return implementation


def _per_example(vmap_axes: Any) -> bool:
    if vmap_axes is None:
        return False
    if vmap_axes == 0 or vmap_axes == (0, 0) or vmap_axes == (0, 0, {}) or vmap_axes == (0, 0, None):
        return True
    raise ValueError(
        "`vmap_axes` must be None (examples may interact, e.g. batch norm in training mode) or 0 / (0, 0) "
        f"(examples are independent and the batch axis is first), got {vmap_axes!r}."
    )


def _ntk_block(implementation, model, layout, x1, x2, params, kwargs):
    if implementation == "jacobian":
        return jacobian_kernel(model, layout, x1, x2, params, kwargs)
    if implementation == "ntvp":
        return ntvp_kernel(model, layout, x1, x2, params, kwargs)
    return structured_kernel(model, layout, x1, x2, params, kwargs)


def _nngp_block(model, layout, x1, x2, params, kwargs):
    f1 = model.outputs(params, x1, kwargs)
    f2 = f1 if x2 is None else model.outputs(params, x2, kwargs)
    return jnp.einsum(f"{layout.side1},{layout.side2}->{layout.out}", f1, f2)


def _block(get, implementation, model, layout, static_kwargs, x1, x2, params, dynamic_kwargs):
    kwargs = dict(dynamic_kwargs, **dict(static_kwargs))
    out = []
    for g in get:
        k = (_nngp_block(model, layout, x1, x2, params, kwargs) if g == "nngp"
             else _ntk_block(implementation, model, layout, x1, x2, params, kwargs))
        out.append(k / layout.trace_size)
    return tuple(out)


_jit_block = jax.jit(_block, static_argnums=(0, 1, 2, 3, 4))


def _compiled_bytes(gets: tuple[str, ...], implementation: str, model: Model, layout: KernelLayout, static: Any,
                    x1: Any, x2: Any, params: Any, dynamic: Any) -> float:
    """Bytes XLA allocates to run the block with `implementation` (0 where the backend does not say)."""
    compiled = _jit_block.lower(gets, implementation, model, layout, static, x1, x2, params, dynamic).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:  # pragma: no cover - backends without the analysis
        return 0.0
    return float(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes)


def _check_examples_independent(model: Model, x: Any, params: Any, kwargs: dict[str, Any]) -> None:
    """Raises if `f`'s output on an example depends on the other examples of its batch (batch statistics, masks
    drawn per batch): tiles would then give another kernel than the whole batch. Two examples, three forward passes;
    skipped on traced values."""
    if x.shape[0] < 2 or not all(_checks.is_concrete(leaf) for leaf in jax.tree_util.tree_leaves((x, params))):
        return
    together = np.asarray(model.batch(params, x[:2], kwargs))
    apart = np.concatenate([np.asarray(model.batch(params, x[i:i + 1], kwargs)) for i in range(2)])
    tol = 100 * np.finfo(together.dtype).eps if np.issubdtype(together.dtype, np.floating) else 0.0
    if not np.allclose(together, apart, rtol=tol, atol=tol * float(np.max(np.abs(together), initial=0.0))):
        raise ValueError(
            "`f`'s output on an example depends on the other examples of its batch (batch statistics, or random "
            "masks drawn for the whole batch), so tiles of `batch_size` would give another kernel than the whole "
            "batch: compute it without `batch_size`, or make examples independent and pass `vmap_axes=0`.")


def _inputs(x: Any, name: str) -> Any:
    """One input array, or `Examples` wrapping a tuple, list or dict of them (neural-tangents' pytree inputs)."""
    if not isinstance(x, tuple | list | dict):
        return _checks.check_array(x, name, min_ndim=1, nonempty=True)
    paths = jax.tree_util.tree_flatten_with_path(x)[0]
    if not paths:
        raise ValueError(f"`{name}` is an empty pytree; pass at least one input array.")
    checked = [_checks.check_array(leaf, name + jax.tree_util.keystr(path), min_ndim=1, nonempty=True)
               for path, leaf in paths]
    sizes = {leaf.shape[0] for leaf in checked}
    if len(sizes) != 1:
        raise ValueError(f"the arrays of `{name}` must have the same number of examples (axis 0), got "
                         f"{[leaf.shape[0] for leaf in checked]}.")
    return Examples(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(x), checked))


def _same_features(x1: Any, x2: Any) -> None:
    if isinstance(x1, Examples) != isinstance(x2, Examples):
        raise ValueError("`x1` and `x2` must both be arrays or both pytrees of arrays.")
    if not isinstance(x1, Examples):
        _checks.check_same_features(x1, x2)
        return
    if str(jax.tree_util.tree_structure(x1.tree)) != str(jax.tree_util.tree_structure(x2.tree)):
        raise ValueError("`x1` and `x2` must be pytrees of the same structure.")
    for a, b in zip(jax.tree_util.tree_leaves(x1.tree), jax.tree_util.tree_leaves(x2.tree), strict=True):
        _checks.check_same_features(a, b)


class _Engine:
    """What the three factories share: validation, the choice of implementation, tiling and `get`."""

    def __init__(self, f: Callable[..., Any], trace_axes: Any, diagonal_axes: Any, vmap_axes: Any,
                 implementation: Any, batch_size: Any):
        if not callable(f):
            raise TypeError(f"`f` must be callable as f(params, x, **kwargs), got {type(f).__name__}.")
        self.model = Model(f, _per_example(vmap_axes))
        self.trace_axes = trace_axes
        self.diagonal_axes = diagonal_axes
        self.implementation = _canonical_implementation(implementation)
        self.batch_size = _checks.check_batch_size(batch_size)
        # the cost model's choice per input shapes; a pure function of static shapes, so safe under `jit`
        self._auto_cache: dict[Any, str] = {}

    def resolve(self, layout: KernelLayout, x1: Any, x2: Any, params: Any, kwargs: dict[str, Any],
                gets: tuple[str, ...] = ("ntk",)) -> str:
        """The implementation that runs on blocks `(x1, x2)`: `"auto"` resolved by the cost model and checked
        against what XLA allocates, and `"structured"` replaced by `"jacobian"` (with a debug log) when the model
        has no structure to exploit."""
        def shapes(x: Any) -> Any:
            if isinstance(x, Examples):
                leaves, treedef = jax.tree_util.tree_flatten(x.tree)
                return treedef, tuple(leaf.shape for leaf in leaves)
            return x.shape

        key = (self.implementation, layout, shapes(x1), None if x2 is None else shapes(x2), str(x1.dtype),
               tuple(jnp.shape(leaf) for leaf in jax.tree_util.tree_leaves(params)),
               tuple(sorted(kwargs)))
        if key not in self._auto_cache:
            if self.implementation != "auto":
                self._auto_cache[key] = self._supported(self.implementation, x1, x2, params, kwargs)
            else:
                self._auto_cache[key] = self._choose(layout, x1, x2, params, kwargs, gets)
        return self._auto_cache[key]

    def _supported(self, choice: str, x1: Any, x2: Any, params: Any, kwargs: dict[str, Any]) -> str:
        if choice == "structured" and isinstance(x1, Examples):
            logger.debug("structured derivatives take one input array: using 'jacobian' for a pytree of inputs.")
            return "jacobian"
        if choice == "structured" and not structured_supported(self.model, x1, x2, params, kwargs):
            logger.debug("structured derivatives do not apply to this model (a parameter is returned by f "
                         "unchanged, or f's traced program differs between x1 and x2): using 'jacobian'.")
            return "jacobian"
        return choice

    def _choose(self, layout: KernelLayout, x1: Any, x2: Any, params: Any, kwargs: dict[str, Any],
                gets: tuple[str, ...]) -> str:
        """The cost model's ranking, best first; the first whose compiled program (what XLA really allocates:
        arguments, outputs and temporaries) fits in the memory budget wins, else the least hungry. Compiling here
        costs nothing extra: the call that follows reuses the compiled program."""
        if isinstance(x1, Examples):  # the cost model reads one input array
            return "jacobian"
        budget = memory_budget_bytes()
        ranked = list(dict.fromkeys(self._supported(c, x1, x2, params, kwargs) for c in
                                    rank_implementations(self.model, layout, x1, x2, params, kwargs, budget)))
        if not all(_checks.is_concrete(leaf) for leaf in jax.tree_util.tree_leaves((x1, x2, params, kwargs))):
            return ranked[0]  # traced: compiled with the caller's program, no separate executable to measure
        dynamic, static = split_kwargs(kwargs)
        needs = {}
        for choice in ranked:
            needs[choice] = _compiled_bytes(gets, choice, self.model, layout, static, x1, x2, params, dynamic)
            if needs[choice] <= budget:
                return choice
            logger.debug("auto: %s would allocate %.3g GB, over the budget of %.3g GB", choice, needs[choice] / 1e9,
                         budget / 1e9)
        return min(needs, key=lambda c: needs[c])

    def prepare(self, x1: Any, x2: Any, params: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, KernelLayout]:
        x1 = _inputs(x1, "x1")
        if x2 is not None:
            x2 = _inputs(x2, "x2")
            _same_features(x1, x2)
        _checks.check_params(params)
        out_shape = output_shape(self.model, params, x1, kwargs)
        if x2 is not None:
            output_shape(self.model, params, x2, kwargs)
        layout = KernelLayout.build(out_shape[1:], self.trace_axes, self.diagonal_axes)
        if layout.batch_diagonal and x2 is not None and x2.shape[0] != x1.shape[0]:
            raise ValueError("`diagonal_axes` holds the batch axis 0, so `x1` and `x2` need the same number of "
                             f"examples; got {x1.shape[0]} and {x2.shape[0]}.")
        return x1, x2, layout

    def implementation_for(self, x1: Any, x2: Any = None, params: Any = None, **kwargs: Any) -> str:
        """The implementation that runs for these inputs: the cost model's choice for `"auto"`, and
        `"jacobian"` where structured derivatives do not apply."""
        x1, x2, layout = self.prepare(x1, x2, params, kwargs)
        return self.resolve(layout, x1, x2, params, kwargs)

    def __call__(self, x1: Any, x2: Any, get: Any, params: Any, batch_size: Any,
                 kwargs: dict[str, Any]) -> Any:
        gets, single = parse_get(get, allow_none=True)  # None: both, as in neural-tangents
        x1, x2, layout = self.prepare(x1, x2, params, kwargs)
        batch_size = _checks.check_batch_size(batch_size) or self.batch_size
        tiles = Tiles.build(x1.shape[0], None if x2 is None else x2.shape[0], batch_size, layout.batch_diagonal)
        # chosen for the blocks that run (the first tile's shapes), compiled as they will run
        first = tiles.inputs(x1, x2, *tiles.pairs()[0])
        implementation = self.resolve(layout, *first, params, kwargs, gets) if "ntk" in gets else "jacobian"
        dynamic, static = split_kwargs(kwargs)
        model = self.model

        def block(a: Any, b: Any) -> tuple[jax.Array, ...]:
            return _jit_block(gets, implementation, model, layout, static, a, b, params, dynamic)

        if not tiles.single and not model.per_example:
            _check_examples_independent(model, x1, params, kwargs)
        if tiles.single:
            results = block(x1, x2)
        else:
            assemblies = [tiles.assembly(layout.mirror_permutation()) for _ in gets]
            for i, j in tiles.progress():
                for assembly, value in zip(assemblies, block(*tiles.inputs(x1, x2, i, j)), strict=True):
                    assembly.add(i, j, value)
            results = tuple(assembly.result() for assembly in assemblies)
        return select(dict(zip(gets, results, strict=True)), gets, single)


class EmpiricalKernelFn:
    """`kernel_fn(x1, x2=None, get=("nngp", "ntk"), params=None, batch_size=None, **kwargs)`, from
    `empirical_kernel_fn`: a `Kernel(nngp, ntk)` for a tuple `get`, an array for a string."""

    def __init__(self, engine: _Engine):
        self._engine = engine

    def __call__(self, x1: Any, x2: Any = None, get: Any = ("nngp", "ntk"), params: Any = None,
                 batch_size: int | None = None, **kwargs: Any) -> Any:
        return self._engine(x1, x2, get, params, batch_size, kwargs)

    def implementation_for(self, x1: Any, x2: Any = None, params: Any = None, **kwargs: Any) -> str:
        """The implementation that computes the NTK for these inputs (what `"auto"` chose; `"jacobian"` where
        structured derivatives do not apply)."""
        return self._engine.implementation_for(x1, x2, params, **kwargs)


class _OneKernelFn:
    """`fn(x1, x2=None, params=None, batch_size=None, **kwargs)` computing the kernel named by `get`."""

    get: ClassVar[Get]

    def __init__(self, engine: _Engine):
        self._engine = engine

    def __call__(self, x1: Any, x2: Any = None, params: Any = None, batch_size: int | None = None,
                 **kwargs: Any) -> jax.Array:
        return self._engine(x1, x2, self.get, params, batch_size, kwargs)


class EmpiricalNTKFn(_OneKernelFn):
    """`ntk_fn(x1, x2=None, params=None, batch_size=None, **kwargs)`, from `empirical_ntk_fn`."""

    get = "ntk"

    def implementation_for(self, x1: Any, x2: Any = None, params: Any = None, **kwargs: Any) -> str:
        """The implementation that computes the NTK for these inputs (see `EmpiricalKernelFn`)."""
        return self._engine.implementation_for(x1, x2, params, **kwargs)


class EmpiricalNNGPFn(_OneKernelFn):
    """`nngp_fn(x1, x2=None, params=None, batch_size=None, **kwargs)`, from `empirical_nngp_fn`."""

    get = "nngp"


def empirical_kernel_fn(
    f: Callable[..., Any],
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: Implementation | int = "auto",
    batch_size: int | None = None,
) -> EmpiricalKernelFn:
    """Empirical NNGP and NTK of a finite model, as `kernel_fn(x1, x2, get, params, **kwargs)`.

    For a model `f(params, x, **kwargs)` returning `(N, O_1, ..., O_d)` (batch first):

    * NTK `Θ̂(x, x') = Σ_p ∂f(x)/∂p ∂f(x')/∂p` over every parameter leaf (docs/theory.md §1);
    * NNGP `K̂(x, x') = f(x) f(x')ᵀ`.

    Output axes in `trace_axes` are contracted and *averaged* (so a traced kernel of an `O`-output readout is the
    per-output kernel); axes in `diagonal_axes` keep only the diagonal (axis `0` is the batch diagonal). The result
    has shape `(N1, N2, *diagonal axes, O_k, O_k', ...)`, as in neural-tangents.

    Args:
      f: the model, `f(params, x, **kwargs) -> array`; `params` any pytree of floating arrays (dicts, Flax
        variables, an Equinox model's arrays from `eqx.partition`).
      trace_axes: output axes to trace over (default the last, the logits).
      diagonal_axes: output axes to keep the diagonal of.
      vmap_axes: `None` (examples may interact) or `0` (they are independent and the batch axis is first): then
        derivatives are taken one example at a time, which is much faster.
      implementation: `"jacobian"` (explicit Jacobians contracted), `"ntvp"` (NTK-vector products, no Jacobian
        stored), `"structured"` (structured derivatives: dense and convolutional layers through small Gram
        matrices, Novak et al. 2022), or `"auto"`, which estimates every method's FLOPs and memory from the shapes
        of `f`'s traced program and picks the cheapest that fits in half the machine's memory (see
        docs/empirical.md). neural-tangents' `NtkImplementation` codes (`ntkit.NtkImplementation`, or the
        integers 0–3: auto, jacobian, ntvp, structured) are accepted.
      batch_size: tile `x1` and `x2` into blocks of this many examples, bounding peak memory; tiled and untiled
        results agree. Can also be passed to the returned function.

    Returns:
      An `EmpiricalKernelFn`, `kernel_fn(x1, x2=None, get=("nngp", "ntk"), params, batch_size=None, **kwargs)`:
      `x2=None` means `x1` and then only blocks on and above the diagonal are computed. With a string `get` an
      array comes back, with a tuple a named tuple `Kernel(nngp, ntk)`. It works under `jax.jit` (tiled too).

    Example:
      >>> import jax, jax.numpy as jnp, ntkit
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> p = {"w1": jax.random.normal(jax.random.key(0), (3, 64)) / 3 ** 0.5,
      ...      "w2": jax.random.normal(jax.random.key(1), (64, 2)) / 8}
      >>> kernel_fn = ntkit.empirical_kernel_fn(f, vmap_axes=0)
      >>> kernel_fn(jnp.ones((4, 3)), None, "ntk", p).shape
      (4, 4)
    """
    return EmpiricalKernelFn(_Engine(f, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size))


def empirical_ntk_fn(
    f: Callable[..., Any],
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: Implementation | int = "auto",
    batch_size: int | None = None,
) -> EmpiricalNTKFn:
    """Empirical NTK, `ntk_fn(x1, x2=None, params=None, batch_size=None, **kwargs)`; see `empirical_kernel_fn`."""
    return EmpiricalNTKFn(_Engine(f, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size))


def empirical_nngp_fn(
    f: Callable[..., Any],
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    batch_size: int | None = None,
) -> EmpiricalNNGPFn:
    """Empirical NNGP `f(x1) f(x2)ᵀ`, `nngp_fn(x1, x2=None, params=None, batch_size=None, **kwargs)`; see
    `empirical_kernel_fn`."""
    return EmpiricalNNGPFn(_Engine(f, trace_axes, diagonal_axes, None, "jacobian", batch_size))


def empirical_ntk_vp_fn(f: Callable[..., Any], x1: Any, x2: Any, params: Any,
                        **kwargs: Any) -> Callable[[Any], jax.Array]:
    """`v ↦ Θ(x1, x2) v` without forming `Θ`: one vjp through `f(·, x2)` and one jvp through `f(·, x1)`.

    `v` has the shape of `f(params, x2)`; the result the shape of `f(params, x1)`. No trace over outputs: this is
    the full NTK acting on output space, as gradient descent sees it. `x2=None` means `x1`.
    """
    x1 = _checks.check_array(x1, "x1")
    x2 = x1 if x2 is None else _checks.check_array(x2, "x2")
    _checks.check_same_features(x1, x2)
    _checks.check_params(params)
    model = Model(f, False)
    out2 = output_shape(model, params, x2, kwargs)

    @jax.jit
    def vp(v: jax.Array) -> jax.Array:
        return ntk_vp(model, x1, x2, params, kwargs, v)

    def ntk_vp_fn(v: Any) -> jax.Array:
        v = jnp.asarray(v)
        if v.shape != out2:
            raise ValueError(f"`v` must have the shape of f(params, x2), {out2}; got {v.shape}.")
        return vp(v)

    return ntk_vp_fn


