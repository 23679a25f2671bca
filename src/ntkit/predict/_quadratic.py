"""Recognizing a loss whose gradient is `a (f − b)`: the mean squared loss and its multiples, for which gradient flow
has a closed form (`gradient_descent` then needs no integration)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete

# Primitives that call one sub-jaxpr with their own inputs and outputs (dependencies are traced through them).
_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call",
                    "custom_vjp_call"})


def _dependent_outputs(jaxpr: jex.core.Jaxpr, dependent_inputs: list[bool]) -> list[bool]:
    """Which outputs of `jaxpr` can depend on the inputs flagged: a conservative data-flow pass (an equation with a
    dependent input has all its outputs dependent, except calls, which are followed inside)."""
    dependent = {v for v, d in zip(jaxpr.invars, dependent_inputs, strict=True) if d}

    def hit(v: Any) -> bool:
        return not isinstance(v, jex.core.Literal) and v in dependent

    for eqn in jaxpr.eqns:
        ins = [hit(v) for v in eqn.invars]
        if not any(ins):
            continue
        subs = list(jex.core.jaxprs_in_params(eqn.params))
        if (eqn.primitive.name in _CALLS and len(subs) == 1 and len(subs[0].invars) == len(ins)
                and len(subs[0].outvars) == len(eqn.outvars)):
            outs = _dependent_outputs(subs[0], ins)
        else:
            outs = [True] * len(eqn.outvars)
        dependent.update(v for v, d in zip(eqn.outvars, outs, strict=True) if d)
    return [hit(v) for v in jaxpr.outvars]


def quadratic_loss(loss: Callable[[jax.Array, jax.Array], jax.Array], y: jax.Array) -> tuple[float, jax.Array] | None:
    """`(a, b)` when `∇_f loss(f, y) = a (f − b)` for every `f`, with a scalar `a > 0` (the mean squared loss and its
    multiples, for which the ODE has a closed form), else None. Needs concrete targets.

    Checked, not sampled: the jaxpr of the Hessian-vector product must not depend on `f` (so the Hessian is constant;
    a piecewise loss such as Huber's selects on `f`, so it is not taken for quadratic even where it is), then two
    random directions must see `a I` and two points the same `b`, to rounding (which rules out a constant Hessian that
    is not a multiple of `I`, and derivatives that disagree with values through `stop_gradient`). Anything that fails
    to trace says None, and the caller integrates the ODE.
    """
    if not is_concrete(y):
        return None

    def grad(f: jax.Array) -> jax.Array:
        return jax.grad(loss)(f, y)

    def hvp(f: jax.Array, v: jax.Array) -> jax.Array:
        return jax.jvp(grad, (f,), (v,))[1]

    try:
        if _dependent_outputs(jax.make_jaxpr(hvp)(y, y).jaxpr, [True, False])[0]:
            return None
        rng = np.random.default_rng(0)
        with jax.ensure_compile_time_eval():
            v, w = (jnp.asarray(rng.standard_normal(y.shape), y.dtype) for _ in range(2))
            hv, hw = np.asarray(hvp(y, v), np.float64), np.asarray(hvp(y, w), np.float64)
            at_y, at_0 = np.asarray(grad(y), np.float64), np.asarray(grad(jnp.zeros_like(y)), np.float64)
    except Exception:  # noqa: BLE001  (detection is best effort; the integration surfaces real errors)
        return None
    vn, wn, yn = (np.asarray(x, np.float64) for x in (v, w, y))
    a = float(np.vdot(vn, hv) / np.vdot(vn, vn))
    tol = 100 * float(jnp.finfo(y.dtype).eps)  # normwise: each entry is a few roundings away
    if not (np.isfinite(a) and a > 0):
        return None
    b = yn - at_y / a
    if (np.linalg.norm(hv - a * vn) > tol * a * np.linalg.norm(vn)
            or np.linalg.norm(hw - a * wn) > tol * a * np.linalg.norm(wn)
            or np.linalg.norm(at_0 + a * b) > tol * (a * np.linalg.norm(b) + np.linalg.norm(at_y) + a)):
        return None
    return a, jnp.asarray(b, y.dtype)
