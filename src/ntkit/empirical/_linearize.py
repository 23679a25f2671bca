"""Linearized and Taylor-expanded models around fixed parameters."""

from __future__ import annotations

from collections.abc import Callable

import jax

from .._checks import check_params


def _delta(params, params0):
    return jax.tree_util.tree_map(lambda p, p0: p - p0, params, params0)


def linearize(f: Callable, params) -> Callable:
    """First-order Taylor expansion of `f` in its parameters around `params`.

    `f_lin(p, x) = f(params, x) + J(x) (p − params)`, computed with one `jvp` (no Jacobian stored). Trained by
    gradient descent it follows the NTK dynamics of `f` at `params` exactly (Lee et al. 2019).

    Example:
      >>> import jax.numpy as jnp, ntkit
      >>> f = lambda p, x: jnp.sin(x @ p)
      >>> p0, x = jnp.ones((3, 2)), jnp.ones((4, 3))
      >>> f_lin = ntkit.linearize(f, p0)
      >>> bool(jnp.allclose(f_lin(p0, x), f(p0, x)))
      True
    """
    check_params(params)

    def f_lin(p, *args, **kwargs):
        out, tangent = jax.jvp(lambda q: f(q, *args, **kwargs), (params,), (_delta(p, params),))
        return jax.tree_util.tree_map(lambda a, b: a + b, out, tangent)  # outputs may be any pytree

    return f_lin


def taylor_expand(f: Callable, params, degree: int) -> Callable:
    """Taylor expansion of `f` in its parameters around `params` to `degree` (0 is `f(params, ·)`).

    `f_k(p, x) = Σ_{j ≤ degree} (1/j!) D^j f(params, x)[Δ, …, Δ]` with `Δ = p − params`, by nested `jvp`s.
    """
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ValueError(f"`degree` must be a non-negative integer, got {degree!r}.")
    check_params(params)

    def f_taylor(p, *args, **kwargs):
        delta = _delta(p, params)

        def g(q):
            return f(q, *args, **kwargs)

        # Coefficients of s ↦ f(params + s Δ) at s = 0 by repeated jvp along the line.
        def along(s):
            return g(jax.tree_util.tree_map(lambda p0, d: p0 + s * d, params, delta))

        total = along(0.0)
        deriv = along
        factorial = 1.0
        for j in range(1, degree + 1):
            prev = deriv

            def deriv(s, prev=prev):
                return jax.jvp(prev, (s,), (1.0,))[1]

            factorial *= j
            total = jax.tree_util.tree_map(lambda t, d, c=factorial: t + d / c, total, deriv(0.0))
        return total

    return f_taylor
