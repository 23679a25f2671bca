"""Empirical (finite-width) NTK and NNGP of any JAX model: public factories, tiling, validation."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import _checks
from ._axes import KernelLayout
from ._cost import choose_implementation
from ._jacobian import jacobian_kernel
from ._model import Model, output_shape
from ._ntvp import ntvp_kernel
from ._structured import structured_kernel

Implementation = Literal["auto", "jacobian", "ntvp", "structured"]
# neural-tangents' integer codes: 0 AUTO, 1 JACOBIAN_CONTRACTION, 2 NTK_VECTOR_PRODUCTS, 3 STRUCTURED_DERIVATIVES.
_IMPLEMENTATION_CODES = {0: "auto", 1: "jacobian", 2: "ntvp", 3: "structured"}
_IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured")

Kernel = collections.namedtuple("Kernel", ["nngp", "ntk"])


def _canonical_implementation(implementation) -> str:
    if isinstance(implementation, int) and not isinstance(implementation, bool):
        if implementation not in _IMPLEMENTATION_CODES:
            raise ValueError(f"`implementation` code must be 0-3, got {implementation}.")
        return _IMPLEMENTATION_CODES[implementation]
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {_IMPLEMENTATIONS} or 0-3, got {implementation!r}.")
    return implementation


def _per_example(vmap_axes) -> bool:
    if vmap_axes is None:
        return False
    if vmap_axes == 0 or vmap_axes == (0, 0) or vmap_axes == (0, 0, {}) or vmap_axes == (0, 0, None):
        return True
    raise ValueError(
        "`vmap_axes` must be None (examples may interact, e.g. batch norm in training mode) or 0 / (0, 0) "
        f"(examples are independent and the batch axis is first), got {vmap_axes!r}."
    )


def _check_batch_size(batch_size) -> int | None:
    if batch_size is None:
        return None
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer or None, got {batch_size!r}.")
    return batch_size


def _split_kwargs(kwargs: dict) -> tuple[dict, tuple]:
    """Array keyword arguments are traced; everything else is static and must be hashable."""
    dynamic, static = {}, []
    for key, value in kwargs.items():
        if all(isinstance(leaf, jax.Array | np.ndarray) for leaf in jax.tree_util.tree_leaves(value)) and \
                jax.tree_util.tree_leaves(value):
            dynamic[key] = value
        else:
            try:
                hash(value)
            except TypeError as err:
                raise TypeError(f"keyword argument `{key}` must be an array pytree or hashable.") from err
            static.append((key, value))
    return dynamic, tuple(sorted(static, key=lambda kv: kv[0]))


def _ntk_block(implementation, model, layout, x1, x2, params, kwargs):
    if implementation == "jacobian":
        return jacobian_kernel(model, layout, x1, x2, params, kwargs)
    if implementation == "ntvp":
        return ntvp_kernel(model, layout, x1, x2, params, kwargs)
    return structured_kernel(model, layout, x1, x2, params, kwargs, fallback=jacobian_kernel)


def _nngp_block(model, layout, x1, x2, params, kwargs):
    f1 = model.batch(params, x1, kwargs)
    f2 = f1 if x2 is None else model.batch(params, x2, kwargs)
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


def _chunks(n: int, size: int | None) -> list[slice]:
    size = n if size is None else min(size, n)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class _EmpiricalKernelFn:
    """The kernel function returned by the factories (see `empirical_kernel_fn`)."""

    def __init__(self, f, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size):
        if not callable(f):
            raise TypeError(f"`f` must be callable as f(params, x, **kwargs), got {type(f).__name__}.")
        self._model = Model(f, _per_example(vmap_axes))
        self._trace_axes = trace_axes
        self._diagonal_axes = diagonal_axes
        self._implementation = _canonical_implementation(implementation)
        self._batch_size = _check_batch_size(batch_size)
        self._auto_cache: dict = {}

    def _resolve(self, layout, x1, x2, params, kwargs) -> str:
        if self._implementation != "auto":
            return self._implementation
        key = (layout, x1.shape, None if x2 is None else x2.shape, str(x1.dtype),
               tuple(jax.tree_util.tree_map(jnp.shape, jax.tree_util.tree_leaves(params))))
        if key not in self._auto_cache:
            self._auto_cache[key] = choose_implementation(self._model, layout, x1, x2, params, kwargs)
        return self._auto_cache[key]

    def implementation_for(self, x1, x2=None, params=None, **kwargs) -> str:
        """The implementation `"auto"` resolves to for these inputs (the cost model's choice)."""
        x1, x2, params, layout = self._prepare(x1, x2, params, kwargs)
        return self._resolve(layout, x1, x2, params, kwargs)

    def _prepare(self, x1, x2, params, kwargs):
        x1 = _checks.check_array(x1, "x1")
        if x2 is not None:
            x2 = _checks.check_array(x2, "x2")
            _checks.check_same_features(x1, x2)
        _checks.check_params(params)
        out_shape = output_shape(self._model, params, x1[:1], kwargs)
        layout = KernelLayout.build(out_shape[1:], self._trace_axes, self._diagonal_axes)
        if layout.batch_diagonal and x2 is not None and x2.shape[0] != x1.shape[0]:
            raise ValueError("`diagonal_axes` holds the batch axis 0, so `x1` and `x2` need the same number of "
                             f"examples; got {x1.shape[0]} and {x2.shape[0]}.")
        return x1, x2, params, layout

    def __call__(self, x1, x2, get, params, batch_size=None, **kwargs):
        single = isinstance(get, str)
        gets = (get,) if single else tuple(get)
        for g in gets:
            if g not in ("nngp", "ntk"):
                raise ValueError(f"`get` must be 'nngp', 'ntk' or a tuple of them, got {get!r}.")
        x1, x2, params, layout = self._prepare(x1, x2, params, kwargs)
        batch_size = _check_batch_size(batch_size) or self._batch_size
        implementation = self._resolve(layout, x1, x2, params, kwargs) if "ntk" in gets else "jacobian"
        dynamic, static = _split_kwargs(kwargs)
        model = self._model

        def block(a, b):
            return _jit_block(gets, implementation, model, layout, static, a, b, params, dynamic)

        n1 = x1.shape[0]
        n2 = n1 if x2 is None else x2.shape[0]
        rows, cols = _chunks(n1, batch_size), _chunks(n2, batch_size)
        if len(rows) == 1 and len(cols) == 1:
            results = block(x1, x2)
        else:
            results = self._tiled(block, layout, x1, x2, rows, cols, len(gets))
        results = tuple(results)
        if single:
            return results[0]
        return Kernel(**{g: r for g, r in zip(gets, results, strict=True)}, **{
            g: None for g in ("nngp", "ntk") if g not in gets})

    def _tiled(self, block, layout, x1, x2, rows, cols, n_out):
        n1 = x1.shape[0]
        n2 = n1 if x2 is None else x2.shape[0]
        shape = layout.kernel_shape(n1, n2)
        outs = [None] * n_out
        perm = layout.mirror_permutation()
        if layout.batch_diagonal:
            pairs = [(r, r) for r in rows]
        elif x2 is None:
            pairs = [(r, c) for i, r in enumerate(rows) for c in cols[i:]]
        else:
            pairs = [(r, c) for r in rows for c in cols]
        for r, c in tqdm(pairs, desc="kernel tiles", disable=None, leave=False):
            if x2 is None and r == c:
                res = block(x1[r], None)
            else:
                res = block(x1[r], (x1 if x2 is None else x2)[c])
            for k, val in enumerate(res):
                if outs[k] is None:
                    outs[k] = np.empty(shape, dtype=val.dtype)
                val = np.asarray(val)
                if layout.batch_diagonal:
                    outs[k][r] = val
                    continue
                outs[k][r, c] = val
                if x2 is None and r != c:
                    outs[k][c, r] = np.transpose(val, perm)
        return tuple(jnp.asarray(o) for o in outs)


def empirical_kernel_fn(
    f: Callable[..., Any],
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: Implementation | int = "auto",
    batch_size: int | None = None,
):
    """Empirical NNGP and NTK of a finite model, as `kernel_fn(x1, x2, get, params, **kwargs)`.

    For a model `f(params, x, **kwargs)` returning `(N, O_1, ..., O_d)` (batch first):

    * NTK `Θ̂(x, x') = Σ_p ∂f(x)/∂p ∂f(x')/∂p` over every parameter leaf (THEORY.md §1);
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
        `ntkit._cost`). The integers 0–3 of neural-tangents (auto, jacobian, ntvp, structured) are accepted.
      batch_size: tile `x1` and `x2` into blocks of this many examples, bounding peak memory; tiled and untiled
        results agree. Can also be passed to the returned function.

    Returns:
      `kernel_fn(x1, x2=None, get=("nngp", "ntk"), params, batch_size=None, **kwargs)`: `x2=None` means `x1` and
      then only blocks on and above the diagonal are computed. With a string `get` an array comes back, with a
      tuple a named tuple `Kernel(nngp, ntk)`.

    Example:
      >>> import jax, jax.numpy as jnp, ntkit
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> p = {"w1": jax.random.normal(jax.random.key(0), (3, 64)) / 3 ** 0.5,
      ...      "w2": jax.random.normal(jax.random.key(1), (64, 2)) / 8}
      >>> kernel_fn = ntkit.empirical_kernel_fn(f, vmap_axes=0)
      >>> kernel_fn(jnp.ones((4, 3)), None, "ntk", p).shape
      (4, 4)
    """
    impl = _EmpiricalKernelFn(f, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size)

    def kernel_fn(x1, x2=None, get=("nngp", "ntk"), params=None, batch_size=None, **kwargs):
        return impl(x1, x2, get, params, batch_size=batch_size, **kwargs)

    kernel_fn.implementation_for = impl.implementation_for  # type: ignore[attr-defined]
    return kernel_fn


def empirical_ntk_fn(f, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None, implementation="auto",
                     batch_size=None):
    """Empirical NTK, `ntk(x1, x2, params, batch_size=None, **kwargs)`; see `empirical_kernel_fn`."""
    impl = _EmpiricalKernelFn(f, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size)

    def ntk_fn(x1, x2=None, params=None, batch_size=None, **kwargs):
        return impl(x1, x2, "ntk", params, batch_size=batch_size, **kwargs)

    ntk_fn.implementation_for = impl.implementation_for  # type: ignore[attr-defined]
    return ntk_fn


def empirical_nngp_fn(f, trace_axes=(-1,), diagonal_axes=(), batch_size=None):
    """Empirical NNGP `f(x1) f(x2)ᵀ`, `nngp(x1, x2, params, batch_size=None, **kwargs)`; see `empirical_kernel_fn`."""
    impl = _EmpiricalKernelFn(f, trace_axes, diagonal_axes, None, "jacobian", batch_size)

    def nngp_fn(x1, x2=None, params=None, batch_size=None, **kwargs):
        return impl(x1, x2, "nngp", params, batch_size=batch_size, **kwargs)

    return nngp_fn


def empirical_ntk_vp_fn(f, x1, x2, params, **kwargs):
    """`v ↦ Θ(x1, x2) v` without forming `Θ`: one vjp through `f(·, x2)` and one jvp through `f(·, x1)`.

    `v` has the shape of `f(params, x2)`; the result the shape of `f(params, x1)`. No trace over outputs: this is
    the full NTK acting on output space, as gradient descent sees it. `x2=None` means `x1`.
    """
    from ._ntvp import ntk_vp

    x1 = _checks.check_array(x1, "x1")
    x2 = x1 if x2 is None else _checks.check_array(x2, "x2")
    _checks.check_same_features(x1, x2)
    _checks.check_params(params)
    model = Model(f, False)
    out2 = output_shape(model, params, x2, kwargs)

    @jax.jit
    def vp(v):
        return ntk_vp(model, x1, x2, params, kwargs, v)

    def ntk_vp_fn(v):
        v = jnp.asarray(v)
        if v.shape != out2:
            raise ValueError(f"`v` must have the shape of f(params, x2), {out2}; got {v.shape}.")
        return vp(v)

    return ntk_vp_fn


