"""Vectorisable inverse trigonometric functions for the arc-cosine family of kernels.

XLA on CPU evaluates `arccos`/`arcsin` through a scalar `atan2` call per element, which dominated
the ReLU layer on full spatial covariances (millions of entries per pair of inputs). Here both come from one
polynomial `g(z) = asin(√z)/√z` on `z ∈ [0, 1/4]` (analytic there: its nearest singularity is at `z = 1`), in
Chebyshev form with coefficients computed once in float64 by NumPy, evaluated by Clenshaw's recurrence:

* `|x| ≤ 1/2`:  `asin x = x g(x²)`;
* `|x| > 1/2`:  `asin |x| = π/2 − 2 s g(s²)` with `s = √((1 − |x|)/2)` (no cancellation near `|x| = 1`).

The degree follows the dtype: the truncation error is 3e-10 at degree 6 (float32 and narrower) and 2e-15 at
degree 12 (float64), below each dtype's rounding; tests check both dtypes against NumPy.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

_DEGREES = {4: 6, 8: 12}  # itemsize -> degree (float16/bfloat16 use the float32 one)


def _g(z):
    z = np.asarray(z, np.float64)
    s = np.sqrt(z)
    return np.where(z > 0, np.arcsin(s) / np.where(s > 0, s, 1.0), 1.0)


# g on [0, 1/4] via t = 8z − 1 ∈ [−1, 1].
_COEFFS = {itemsize: tuple(float(c) for c in np.polynomial.chebyshev.chebinterpolate(
    lambda t: _g((t + 1.0) / 8.0), degree)) for itemsize, degree in _DEGREES.items()}


def _g_poly(z):
    coeffs = _COEFFS[8 if jnp.dtype(z.dtype).itemsize >= 8 else 4]
    t = 8.0 * z - 1.0
    two_t = 2.0 * t
    b1 = jnp.zeros_like(z)
    b2 = jnp.zeros_like(z)
    for c in coeffs[:0:-1]:
        b1, b2 = two_t * b1 - b2 + c, b1
    return t * b1 - b2 + coeffs[0]


def _parts(x, one_minus_abs=None):
    """`(small, x g(x²), s g(s²))`: the odd polynomial branch (smooth through 0) and the `|x| > 1/2` branch."""
    a = jnp.abs(x)
    small = a <= 0.5
    gap = 1.0 - a if one_minus_abs is None else one_minus_abs
    z = jnp.where(small, x * x, 0.5 * gap)
    g = _g_poly(z)
    # the large branch only; safe values elsewhere and at z = 0 (|x| = 1) keep derivatives finite in both modes: at
    # |x| = 1 the true derivative is infinite, and the inputs sitting exactly there carry zero tangents
    inside = ~small & (z > 0)
    s = jnp.where(inside, jnp.sqrt(jnp.where(inside, z, 0.25)), 0.0)
    return small, x * g, s * g


def arcsin(x, one_minus_abs=None):
    """`arcsin x` for `x ∈ [−1, 1]`, elementwise (differentiable: `x g(x²)` has no kink at 0).

    `one_minus_abs`, when given, is `1 − |x|` computed without cancellation by the caller: near `|x| = 1`, where
    `arcsin` is steep, it keeps the accuracy that forming `x` and subtracting it from 1 would lose.
    """
    small, odd, large = _parts(x, one_minus_abs)
    return jnp.where(small, odd, jnp.sign(x) * (math.pi / 2 - 2.0 * large))


def arccos(x):
    """`arccos x` for `x ∈ [−1, 1]`, elementwise."""
    small, odd, large = _parts(x)
    return jnp.where(small, math.pi / 2 - odd, jnp.where(x > 0, 2.0 * large, math.pi - 2.0 * large))
