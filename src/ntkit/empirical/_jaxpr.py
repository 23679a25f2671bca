"""A flat, inlined program built from a jaxpr with public JAX APIs (`jax.make_jaxpr`, `jax.extend.core`).

Structured derivatives need to see every equation in which a parameter is used, including those hidden inside
`jit` calls. `Program` inlines call-like equations into one flat list of `Op`s over integer variable ids, folds
constants, and evaluates the list with an interpreter that can add a perturbation `eps` to chosen outputs and
record chosen inputs. Everything else (custom derivative rules, control flow) is kept as an opaque equation and
bound as is, so its own differentiation rules stay in force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
from jax.extend import core as jcore

# Call-like primitives whose body is inlined; names differ across JAX releases.
_INLINE_JAXPR_PARAM = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
                       "checkpoint": "jaxpr", "remat": "jaxpr"}


@dataclass(frozen=True)
class Const:
    """A value known when the program is built (literal, closed-over constant, or folded)."""

    value: Any


@dataclass(frozen=True)
class Op:
    prim: Any
    params: dict
    ins: tuple  # int variable ids or Const
    outs: tuple[int, ...]
    out_avals: tuple

    @property
    def name(self) -> str:
        return self.prim.name


@dataclass
class Program:
    """A flat list of operations; variables are integers, inputs are `0 .. n_inputs-1`."""

    n_inputs: int
    ops: list[Op] = field(default_factory=list)
    outputs: list = field(default_factory=list)  # int ids or Const
    n_vars: int = 0
    avals: dict = field(default_factory=dict)  # variable id -> abstract value
    avals_out: tuple = ()


def bind_primitive(prim, params, invals):
    bound = prim.get_bind_params(params)
    # Older JAX releases return `(subfuns, params)`, newer ones the params alone.
    subfuns, bind_params = bound if isinstance(bound, tuple) else ((), bound)
    out = prim.bind(*subfuns, *invals, **bind_params)
    return list(out) if prim.multiple_results else [out]


def build_program(closed: jcore.ClosedJaxpr) -> Program:
    prog = Program(n_inputs=len(closed.jaxpr.invars))
    prog.n_vars = prog.n_inputs
    prog.avals = dict(enumerate(closed.in_avals))
    prog.avals_out = tuple(closed.out_avals)

    def fresh() -> int:
        prog.n_vars += 1
        return prog.n_vars - 1

    def walk(jaxpr, consts, args):
        env: dict = {}

        def read(v):
            return Const(v.val) if isinstance(v, jcore.Literal) else env[v]

        for var, c in zip(jaxpr.constvars, consts, strict=True):
            env[var] = Const(c)
        for var, a in zip(jaxpr.invars, args, strict=True):
            env[var] = a
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            inline = _INLINE_JAXPR_PARAM.get(eqn.primitive.name)
            if inline is not None and inline in eqn.params:
                sub = eqn.params[inline]
                if isinstance(sub, jcore.ClosedJaxpr):
                    outs = walk(sub.jaxpr, sub.consts, ins)
                else:
                    outs = walk(sub, [], ins)
            elif all(isinstance(i, Const) for i in ins) and not eqn.effects:
                outs = [Const(v) for v in bind_primitive(eqn.primitive, eqn.params, [i.value for i in ins])]
            else:
                ids = tuple(fresh() for _ in eqn.outvars)
                prog.avals.update((i, v.aval) for i, v in zip(ids, eqn.outvars, strict=True))
                prog.ops.append(Op(eqn.primitive, dict(eqn.params), tuple(ins), ids,
                                   tuple(v.aval for v in eqn.outvars)))
                outs = list(ids)
            for var, o in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jcore.DropVar):
                    env[var] = o
        return [read(v) for v in jaxpr.outvars]

    prog.outputs = walk(closed.jaxpr, closed.consts, list(range(prog.n_inputs)))
    return prog


def run_program(prog: Program, inputs, eps: dict | None = None, record: dict | None = None):
    """Evaluates `prog`.

    Args:
      inputs: values of the input variables, in order.
      eps: `{op index: [array or None per output]}` added to those outputs (for cotangents at them).
      record: `{op index: [input positions]}` whose input values are returned.
    Returns:
      `(outputs, recorded)` with `recorded[op index] = [values at the requested positions]`.
    """
    eps = eps or {}
    record = record or {}
    env: dict[int, Any] = dict(enumerate(inputs))
    recorded = {}

    def read(i):
        return i.value if isinstance(i, Const) else env[i]

    for k, op in enumerate(prog.ops):
        invals = [read(i) for i in op.ins]
        if k in record:
            recorded[k] = [invals[p] for p in record[k]]
        outvals = bind_primitive(op.prim, op.params, invals)
        if k in eps:
            outvals = [o if e is None else o + e for o, e in zip(outvals, eps[k], strict=True)]
        for i, o in zip(op.outs, outvals, strict=True):
            env[i] = o
    return [read(o) for o in prog.outputs], recorded


def trace_program(fn, *args) -> Program:
    """Program of `fn(*args)` where `fn` takes flat array arguments (abstract values are fine)."""
    return build_program(jax.make_jaxpr(fn)(*args))
