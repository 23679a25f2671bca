"""Adaptive Dormand–Prince integration that says how it ended, with reverse-mode derivatives by the adjoint ODE.

This is `jax.experimental.ode.odeint` (whose stepping functions it reuses) with two changes: the number of steps is
bounded in total, not per output time, and every output time says whether the integrator reached it. `odeint` stops
silently at its step bound and returns, for the times it did not reach, a polynomial extrapolation of its last step.
The adjoint pass is `odeint`'s (Chen et al. 2018, "Neural ordinary differential equations"): it integrates the
augmented system backwards with the same bound, and its cotangents are NaN if it runs out of steps.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.ode import (
    initial_step_size,
    interp_fit_dopri,
    mean_error_ratio,
    optimal_step_size,
    runge_kutta_step,
)
from jax.flatten_util import ravel_pytree


def integrate(func: Callable[..., Any], y0: Any, ts: jax.Array, *args: Any, rtol: float, atol: float,
              max_steps: int) -> tuple[Any, jax.Array, jax.Array]:
    """Solves `dy/dt = func(y, t, *args)` from `y(ts[0]) = y0` at the strictly increasing times `ts`.

    Returns:
      `(ys, reached, t_end)`: the solution at `ts` (a new leading axis on every leaf of `y0`); for each time, whether
      the integrator reached it within `max_steps` steps in all (where it did not, `ys` holds an extrapolation); the
      time at which it stopped.
    """
    converted, consts = jax.closure_convert(func, y0, ts[0], *args)
    return _integrate(converted, float(rtol), float(atol), int(max_steps), y0, ts, *args, *consts)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _integrate(func: Callable[..., Any], rtol: float, atol: float, max_steps: int, y0: Any, ts: jax.Array,
               *args: Any) -> tuple[Any, jax.Array, jax.Array]:
    flat0, unravel = ravel_pytree(y0)

    def flat_func(y: jax.Array, t: jax.Array, *a: Any) -> jax.Array:
        return ravel_pytree(func(unravel(y), t, *a))[0]

    ys, reached, t_end = _solve(flat_func, rtol, atol, max_steps, flat0, ts, *args)
    return jax.vmap(unravel)(ys), reached, t_end


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
@jax.default_matmul_precision("highest")
def _solve(func: Callable[..., jax.Array], rtol: float, atol: float, max_steps: int, y0: jax.Array, ts: jax.Array,
           *args: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    def fun(y: jax.Array, t: jax.Array) -> jax.Array:
        return func(y, t, *args)

    def to_target(carry: list, target: jax.Array) -> tuple[list, tuple[jax.Array, jax.Array]]:
        def cond(state: list) -> jax.Array:
            i, _, _, t, dt, _, _ = state
            return (t < target) & (i < max_steps) & (dt > 0)

        def body(state: list) -> list:
            i, y, f, t, dt, last_t, coeff = state
            next_y, next_f, next_y_error, k = runge_kutta_step(fun, y, f, t, dt)
            ratio = mean_error_ratio(next_y_error, rtol, atol, y, next_y)
            new_coeff = interp_fit_dopri(y, next_y, k, dt)
            new_dt = jnp.clip(optimal_step_size(dt, ratio), min=0.0)
            accept = ratio <= 1.0  # a rejected step (or a NaN error) keeps the state and retries with new_dt
            new = (next_y, next_f, t + dt, t, new_coeff)
            old = (y, f, t, last_t, coeff)
            y, f, t, last_t, coeff = (jnp.where(accept, a, b) for a, b in zip(new, old, strict=True))
            return [i + 1, y, f, t, new_dt, last_t, coeff]

        state = lax.while_loop(cond, body, carry)
        _, _, _, t, _, last_t, coeff = state
        relative = (target - last_t) / (t - last_t)
        return state, (jnp.polyval(coeff, relative.astype(coeff.dtype)), t >= target)

    f0 = fun(y0, ts[0])
    dt = jnp.clip(initial_step_size(fun, ts[0], y0, 4, rtol, atol, f0), min=0.0)
    init = [jnp.zeros((), jnp.int32), y0, f0, ts[0], dt, ts[0], jnp.stack([y0] * 5)]
    final, (ys, reached) = lax.scan(to_target, init, ts[1:])
    return (jnp.concatenate([y0[None], ys]), jnp.concatenate([jnp.ones((1,), bool), reached]), final[3])


def _solve_fwd(func: Callable[..., jax.Array], rtol: float, atol: float, max_steps: int, y0: jax.Array,
               ts: jax.Array, *args: Any) -> tuple[tuple[jax.Array, jax.Array, jax.Array], tuple]:
    out = _solve(func, rtol, atol, max_steps, y0, ts, *args)
    return out, (out[0], ts, args)


@jax.default_matmul_precision("highest")
def _solve_rev(func: Callable[..., jax.Array], rtol: float, atol: float, max_steps: int, res: tuple,
               cotangents: tuple) -> tuple:
    ys, ts, args = res
    g = cotangents[0]  # `reached` and `t_end` carry no derivative

    def aug_dynamics(state: tuple, t: jax.Array, *a: Any) -> tuple:
        """The system and its adjoint, in reversed time `−t`."""
        y, y_bar, *_ = state
        y_dot, vjp = jax.vjp(func, y, -t, *a)
        return (-y_dot, *vjp(y_bar))

    def back(carry: tuple, i: jax.Array) -> tuple[tuple, jax.Array]:
        y_bar, t0_bar, args_bar, ok = carry
        t_bar = jnp.dot(func(ys[i], ts[i], *args), g[i])  # moving the output time moves the output
        t0_bar = t0_bar - t_bar
        segment, reached, _ = integrate(aug_dynamics, (ys[i], y_bar, t0_bar, args_bar), jnp.stack([-ts[i], -ts[i - 1]]),
                                        *args, rtol=rtol, atol=atol, max_steps=max_steps)
        _, y_bar, t0_bar, args_bar = jax.tree_util.tree_map(operator.itemgetter(1), segment)
        return (y_bar + g[i - 1], t0_bar, args_bar, ok & reached[1]), t_bar

    init = (g[-1], jnp.zeros((), ts.dtype), jax.tree_util.tree_map(jnp.zeros_like, args), jnp.ones((), bool))
    (y_bar, t0_bar, args_bar, ok), rev_ts_bar = lax.scan(back, init, jnp.arange(ts.shape[0] - 1, 0, -1))
    ts_bar = jnp.concatenate([t0_bar[None], rev_ts_bar[::-1]])
    return jax.tree_util.tree_map(lambda x: jnp.where(ok, x, jnp.full_like(x, jnp.nan)), (y_bar, ts_bar, *args_bar))


_solve.defvjp(_solve_fwd, _solve_rev)
