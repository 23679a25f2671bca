"""Structured derivatives: the NTK without per-parameter Jacobians for dense and convolutional layers.

Every use of a parameter `p` is an equation `y = op(..., p, ...)`. With `g = ∂f/∂y` (a cotangent the size of an
activation) the parameter's Jacobian is `∂f/∂p = (∂y/∂p)ᵀ g`. For a dense layer `y = x W` this is the outer
product `xᵀ g`, so its NTK term needs no Jacobian at all:

    Θ_W(x1, x2) = Σ_{s,t} (x1_s · x2_t) (g1_s · g2_t)          (s, t: positions sharing the weight)

and one four-operand `einsum` lets `opt_einsum` choose the cheaper order — the Gram matrices above, or the
per-example weight gradient `xᵀ g` when positions are many (convolutions, through their image patches). This is
the "structured derivatives" method of Novak, Sohl-Dickstein & Schoenholz, *Fast Finite Width Neural Tangent
Kernel* (ICML 2022), built on public JAX APIs only (`jax.make_jaxpr`, `jax.extend.core`).

Any other use of a parameter (biases, normalisation scales, weight tying, custom rules, control flow) falls back
to the exact per-equation rule: `(∂y/∂p)ᵀ g` by JAX's own `vjp` of that single equation, which is always correct,
only less cheap. Cotangents `g` at every use come from one backward pass per output component, through
perturbations `eps` added to the outputs of those equations.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._layout import KernelLayout
from ._jaxpr import Const, Program, bind_primitive, run_program, trace_program
from ._model import Model

# Operations that rename or reshape a parameter without mixing entries (inner products are preserved).
_VIEW_PRIMS = {"convert_element_type", "reshape", "transpose", "squeeze", "expand_dims", "copy", "copy_p"}


@dataclass(frozen=True)
class View:
    """Variable that equals `scale ·` (a permutation/reshape of) parameter `param`."""

    param: int
    parent: int | None
    op: int | None
    scale: float


@dataclass(frozen=True)
class Plan:
    """What to do for each parameter: `"dot"`, `"conv"`, `"generic"` or `"unused"`."""

    kinds: tuple[str, ...]
    consumers: tuple[tuple[tuple[int, tuple[int, ...]], ...], ...]  # per param: ((op, positions), ...)
    views: dict
    eps_ops: tuple[int, ...]
    record: dict


def _scalar_const(i) -> float | None:
    if isinstance(i, Const) and np.size(i.value) == 1 and jnp.issubdtype(jnp.result_type(i.value), jnp.inexact):
        try:
            return float(np.asarray(i.value).reshape(()))
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None
    return None


def _as_view(prog: Program, k: int, views: dict) -> View | None:
    op = prog.ops[k]
    view_ins = [(pos, i) for pos, i in enumerate(op.ins) if isinstance(i, int) and i in views]
    if len(view_ins) != 1 or len(op.outs) != 1:
        return None
    pos, i = view_ins[0]
    parent = views[i]
    name = op.name
    if name == "convert_element_type" and not jnp.issubdtype(op.params["new_dtype"], jnp.floating):
        return None
    if name in _VIEW_PRIMS:
        return View(parent.param, i, k, parent.scale)
    if name == "broadcast_in_dim" and math.prod(op.out_avals[0].shape) == math.prod(op.params["shape"]) and \
            math.prod(op.out_avals[0].shape) == _size_of(prog, i):
        return View(parent.param, i, k, parent.scale)
    if name == "neg":
        return View(parent.param, i, k, -parent.scale)
    if name in ("mul", "div") and len(op.ins) == 2:
        other = op.ins[1 - pos]
        c = _scalar_const(other)
        if c is None or (name == "div" and (pos == 1 or c == 0.0)):
            return None
        if math.prod(op.out_avals[0].shape) != _size_of(prog, i):
            return None
        return View(parent.param, i, k, parent.scale * (c if name == "mul" else 1.0 / c))
    return None


def _size_of(prog: Program, var: int) -> int:
    return math.prod(prog.avals[var].shape)


def make_plan(prog: Program, n_params: int) -> Plan | None:
    views: dict[int, View] = {i: View(i, None, None, 1.0) for i in range(n_params)}
    deps: dict[int, frozenset] = {i: frozenset([i]) for i in range(n_params)}
    consumers: list[list] = [[] for _ in range(n_params)]
    for k, op in enumerate(prog.ops):
        in_deps = frozenset().union(*(deps.get(i, frozenset()) for i in op.ins if isinstance(i, int)))
        for o in op.outs:
            deps[o] = in_deps
        if not any(isinstance(i, int) and i in views for i in op.ins):
            continue
        view = _as_view(prog, k, views)
        if view is not None:
            views[op.outs[0]] = view
            continue
        for p in sorted({views[i].param for i in op.ins if isinstance(i, int) and i in views}):
            positions = tuple(pos for pos, i in enumerate(op.ins)
                              if isinstance(i, int) and i in views and views[i].param == p)
            consumers[p].append((k, positions))
    if any(isinstance(o, int) and o in views for o in prog.outputs):
        return None  # a parameter reaches the output with no equation in between: leave it to Jacobians

    kinds = []
    record: dict[int, set] = {}
    for p, cons in enumerate(consumers):
        kind = "unused" if not cons else "generic"
        if len(cons) == 1 and len(cons[0][1]) == 1:
            k, (pos,) = cons[0]
            op = prog.ops[k]
            other = op.ins[1 - pos] if len(op.ins) == 2 else None
            independent = not (isinstance(other, int) and p in deps.get(other, frozenset()))
            if op.name == "dot_general" and independent:
                kind = "dot"
            elif (op.name == "conv_general_dilated" and pos == 1 and independent
                  and op.params["feature_group_count"] == 1 and op.params["batch_group_count"] == 1):
                kind = "conv"
        kinds.append(kind)
        for k, positions in cons:
            if kind in ("dot", "conv"):
                record.setdefault(k, set()).add(1 - positions[0])
            else:
                record.setdefault(k, set()).update(
                    pos for pos, i in enumerate(prog.ops[k].ins) if isinstance(i, int) and i not in views)
    eps_ops = tuple(sorted({k for cons in consumers for k, _ in cons}))
    return Plan(tuple(kinds), tuple(tuple(c) for c in consumers), views, eps_ops,
                {k: sorted(v) for k, v in record.items()})


def _zero_eps(prog: Program, plan: Plan):
    eps = {}
    for k in plan.eps_ops:
        eps[k] = [jnp.zeros(a.shape, a.dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else None
                  for a in prog.ops[k].out_avals]
    return eps


def _side(prog: Program, plan: Plan, model: Model, leaves, x, kw_leaves, out_shape):
    """Recorded inputs and cotangents at every parameter use, for all examples of one side.

    Returns `(rec, g)`; `g[k][j]` has shape `(N, O_1, ..., O_d, *y.shape)` for output `j` of op `k`; `rec` has a
    leading `N` axis when examples are independent (`model.per_example`), none otherwise.
    """
    n_out = math.prod(out_shape)
    eps0 = _zero_eps(prog, plan)

    def run(eps, xx):
        outs, rec = run_program(prog, [*leaves, xx, *kw_leaves], eps, plan.record)
        return outs[0], rec

    dtype = prog.avals_out[0].dtype

    if model.per_example:
        basis = jnp.eye(n_out, dtype=dtype).reshape((n_out, 1) + out_shape)

        def one(xi):
            _, vjp_fn, rec = jax.vjp(lambda e: run(e, xi[None]), eps0, has_aux=True)
            return rec, jax.vmap(vjp_fn)(basis)[0]

        rec, g = jax.vmap(one)(x)
        n = x.shape[0]
    else:
        n = x.shape[0]
        basis = jnp.eye(n * n_out, dtype=dtype).reshape((n * n_out, n) + out_shape)
        _, vjp_fn, rec = jax.vjp(lambda e: run(e, x), eps0, has_aux=True)
        g = jax.vmap(vjp_fn)(basis)[0]
    g = jax.tree_util.tree_map(lambda a: a.reshape((n,) + out_shape + a.shape[(2 if model.per_example else 1):]),
                               g)
    return rec, g


class _Letters:
    def __init__(self):
        self._pool = iter(string.ascii_lowercase)

    def take(self, count: int) -> list[str]:
        return [next(self._pool) for _ in range(count)]


def dot_spec(op, pos: int, layout: KernelLayout, per_example: bool, x_ndim: int) -> str:
    """Einsum of `Θ_W` for `y = dot_general(x, W)` (or `(W, x)`) over `x1, g1, x2, g2`."""
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    pc, pb, xc, xb = (lc, lb, rc, rb) if pos == 0 else (rc, rb, lc, lb)
    xc, xb = list(xc), list(xb)
    y_ndim = len(op.out_avals[0].shape)
    x_free = [d for d in range(x_ndim) if d not in xc and d not in xb]
    letters = _Letters()
    beta, cl = letters.take(len(pb)), letters.take(len(pc))
    f = letters.take(y_ndim - len(pb) - len(x_free))
    s, t = letters.take(len(x_free)), letters.take(len(x_free))

    def x_letters(free):
        return "".join(beta[xb.index(d)] if d in xb else cl[xc.index(d)] if d in xc else free[x_free.index(d)]
                       for d in range(x_ndim))

    def y_letters(free):
        return "".join(beta + (f + free if pos == 0 else free + f))

    n1 = layout.side1[0] if per_example else ""
    n2 = layout.side2[0] if per_example else ""
    return (f"{n1}{x_letters(s)},{layout.side1}{y_letters(s)},"
            f"{n2}{x_letters(t)},{layout.side2}{y_letters(t)}->{layout.out}")


def _conv_patches(op, rhs_shape, x):
    """Image patches of `x` such that `conv(x, W) = patches · W` (feature order is irrelevant to `Θ`)."""
    dn = op.params["dimension_numbers"]
    filter_shape = [rhs_shape[d] for d in dn.rhs_spec[2:]]
    return lax.conv_general_dilated_patches(
        x, filter_shape, op.params["window_strides"], op.params["padding"],
        lhs_dilation=op.params["lhs_dilation"], rhs_dilation=op.params["rhs_dilation"],
        dimension_numbers=dn, precision=op.params["precision"])


def conv_spec(op, layout: KernelLayout, per_example: bool) -> str:
    """Einsum of `Θ_W` for a convolution over `patches1, g1, patches2, g2` (both in the output layout)."""
    dn = op.params["dimension_numbers"]
    ndim = len(op.out_avals[0].shape)
    letters = _Letters()
    c, f = letters.take(2)
    s, t = letters.take(ndim - 1), letters.take(ndim - 1)

    def lets(free, feature):
        out = [""] * ndim
        out[dn.out_spec[0]] = free[0]
        out[dn.out_spec[1]] = feature
        for j, d in enumerate(dn.out_spec[2:]):
            out[d] = free[1 + j]
        return "".join(out)

    n1 = layout.side1[0] if per_example else ""
    n2 = layout.side2[0] if per_example else ""
    return f"{n1}{lets(s, c)},{layout.side1}{lets(s, f)},{n2}{lets(t, c)},{layout.side2}{lets(t, f)}->{layout.out}"


def _view_value(prog: Program, plan: Plan, var: int, leaves):
    view = plan.views[var]
    if view.op is None:
        return leaves[view.param]
    op = prog.ops[view.op]
    invals = [i.value if isinstance(i, Const) else _view_value(prog, plan, i, leaves) for i in op.ins]
    return bind_primitive(op.prim, op.params, invals)[0]


def _generic_jacobian(prog, plan, p, leaves, rec, g, per_example, n_lead):
    """`∂f/∂p` of shape `(N, O..., *p.shape)` as the sum over uses of `(∂y/∂p)ᵀ g`, one equation at a time."""
    cons = plan.consumers[p]

    def grad_one(rec_k, g_k):
        def uses(pv):
            local = list(leaves)
            local[p] = pv
            outs = []
            for k, _ in cons:
                op = prog.ops[k]
                positions = plan.record.get(k, [])
                invals = []
                for pos, i in enumerate(op.ins):
                    if isinstance(i, Const):
                        invals.append(i.value)
                    elif i in plan.views:
                        invals.append(_view_value(prog, plan, i, local))
                    else:
                        invals.append(rec_k[k][positions.index(pos)])
                outs.append([o for o, a in zip(bind_primitive(op.prim, op.params, invals), op.out_avals, strict=True)
                             if jnp.issubdtype(a.dtype, jnp.inexact)])
            return outs

        _, vjp_fn = jax.vjp(uses, leaves[p])
        cot = [[gj for gj in g_k[k] if gj is not None] for k, _ in cons]
        return vjp_fn(cot)[0]

    rec_c = {k: rec[k] for k, _ in cons}
    g_c = {k: g[k] for k, _ in cons}
    fn = grad_one
    # Map over the output-component axes (in g only), then over examples (in rec too, when per example).
    for _ in range(n_lead - 1):
        fn = jax.vmap(fn, in_axes=(None, 0))
    fn = jax.vmap(fn, in_axes=(0 if per_example else None, 0))
    return fn(rec_c, g_c)


def model_program(model: Model, params, kwargs, x_shape, x_dtype):
    """The flat program of `f(params, x, **kwargs)` with inputs `[*param leaves, x, *array kwargs]`.

    `x_shape` is that of one example with its batch axis of 1 when examples are independent, else the batch's.
    Returns `(program, param leaves, array kwarg leaves)`.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    all_kw_leaves, kw_tree = jax.tree_util.tree_flatten(kwargs)
    is_array = [isinstance(leaf, jax.Array) for leaf in all_kw_leaves]
    kw_leaves = [leaf for leaf, a in zip(all_kw_leaves, is_array, strict=True) if a]
    n_params = len(leaves)

    def flat_f(*args):
        p = jax.tree_util.tree_unflatten(treedef, args[:n_params])
        arrays = iter(args[n_params + 1:])
        kw = jax.tree_util.tree_unflatten(
            kw_tree, [next(arrays) if a else leaf for leaf, a in zip(all_kw_leaves, is_array, strict=True)])
        return model.batch(p, args[n_params], kw)

    prog = trace_program(flat_f, *leaves, jax.ShapeDtypeStruct(x_shape, x_dtype), *kw_leaves)
    return prog, leaves, kw_leaves


def example_shape(model: Model, x) -> tuple[int, ...]:
    return (1,) + x.shape[1:] if model.per_example else x.shape


def _programs(model: Model, x1, x2, params, kwargs):
    """`(program on x1, program on x2, param leaves, array kwarg leaves, plan)`; the plan is None when the
    parameters' uses cannot be classified or the two programs differ (then structured derivatives do not apply)."""
    def program_for(x):
        return model_program(model, params, kwargs, example_shape(model, x), x.dtype)

    prog1, leaves, kw_leaves = program_for(x1)
    plan = make_plan(prog1, len(leaves))
    prog2 = prog1 if (x2 is None or model.per_example) else program_for(x2)[0]
    if [o.name for o in prog2.ops] != [o.name for o in prog1.ops]:
        plan = None
    return prog1, prog2, leaves, kw_leaves, plan


def structured_supported(model: Model, x1, x2, params, kwargs) -> bool:
    """Whether `structured_kernel` applies to this model and these inputs."""
    return _programs(model, x1, x2, params, kwargs)[4] is not None


def structured_kernel(model: Model, layout: KernelLayout, x1, x2, params, kwargs):
    """The NTK by structured derivatives; call only where `structured_supported` holds."""
    prog1, prog2, leaves, kw_leaves, plan = _programs(model, x1, x2, params, kwargs)
    if plan is None:
        raise ValueError("structured derivatives do not apply to this model; use implementation='jacobian'.")

    rec1, g1 = _side(prog1, plan, model, leaves, x1, kw_leaves, layout.out_shape)
    rec2, g2 = (rec1, g1) if x2 is None else _side(prog2, plan, model, leaves, x2, kw_leaves, layout.out_shape)
    n_lead = 1 + len(layout.out_shape)
    per = model.per_example
    total = jnp.zeros(layout.kernel_shape(x1.shape[0], (x1 if x2 is None else x2).shape[0]),
                      prog1.avals_out[0].dtype)
    jac_spec = f"{layout.side1}z,{layout.side2}z->{layout.out}"
    for p, kind in enumerate(plan.kinds):
        if kind == "unused":
            continue
        if kind in ("dot", "conv"):
            ((k, (pos,)),) = plan.consumers[p]
            op = prog1.ops[k]
            scale = plan.views[op.ins[pos]].scale
            other = 1 - pos
            xa = rec1[k][plan.record[k].index(other)]
            xb = xa if x2 is None else rec2[k][plan.record[k].index(other)]
            ga, gb = g1[k][0], g2[k][0]
            if kind == "dot":
                spec = dot_spec(op, pos, layout, per, xa.ndim - (1 if per else 0))
            else:
                rhs_shape = prog1.avals[op.ins[pos]].shape
                patches = jax.vmap(partial(_conv_patches, op, rhs_shape)) if per else \
                    partial(_conv_patches, op, rhs_shape)
                xa, xb = (patches(xa), None) if x2 is None else (patches(xa), patches(xb))
                xb = xa if xb is None else xb
                spec = conv_spec(op, layout, per)
            term = jnp.einsum(spec, xa, ga, xb, gb, optimize="optimal")
            total = total + term * (scale * scale)
        else:
            j1 = _generic_jacobian(prog1, plan, p, leaves, rec1, g1, per, n_lead)
            j2 = j1 if x2 is None else _generic_jacobian(prog2, plan, p, leaves, rec2, g2, per, n_lead)
            j1 = j1.reshape(j1.shape[:n_lead] + (-1,))
            j2 = j2.reshape(j2.shape[:n_lead] + (-1,))
            total = total + jnp.einsum(jac_spec, j1, j2)
    return total
