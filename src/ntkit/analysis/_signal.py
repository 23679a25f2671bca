"""Signal propagation at initialization: mean-field fixed points, `χ₁`, the correlation depth scale and the phase.

A deep fully connected network `z^{l+1} = σ_w/√n W φ(z^l) + σ_b b` (NTK or standard parameterization: the forward
pass is the same in law) has, at infinite width, Gaussian pre-activations whose variance follows the length map
`q ↦ σ_w² E[φ(√q z)²] + σ_b²` and whose correlation between two inputs follows the correlation map
`c ↦ (σ_w² E[φ(u₁)φ(u₂)] + σ_b²)/q*`, `(u₁, u₂) ~ N(0, q*[[1, c], [c, 1]])` (Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos"). Its slope at `c = 1` is
`χ₁ = σ_w² E[φ'(√q* z)²]`: `χ₁ < 1` is the ordered phase (inputs' correlations go to 1), `χ₁ > 1` the chaotic phase
(they go to a fixed point `c* < 1`), and `χ₁ = 1` the edge of chaos. Near the fixed point the correlation converges
like `e^{−l/ξ_c}` with `ξ_c = −1/log χ_c*`, `χ_c* = σ_w² E[φ'(u₁)φ'(u₂)]` at `c*` (Schoenholz et al. 2017, "Deep
information propagation"); gradients vanish or explode at the same rate `χ₁` per layer. The same scales set how
the NTK degenerates with depth (Xiao, Pennington & Schoenholz 2020, "Disentangling trainability and
generalization in deep neural networks"; Xiao et al. 2018 for convolutions).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from ..nn import Elementwise, gauss_hermite_2d

CRITICAL_TOL = 1e-3
"""Default tolerance on `|χ₁ − 1|` under which the phase is `"critical"` (a depth scale above ~1000 layers)."""

PHASES = ("ordered", "chaotic", "critical", "unbounded")


class SignalPropagation(NamedTuple):
    """Mean-field quantities of a deep network of one activation (arrays of the grid's shape in `phase_diagram`).

    Attributes:
      q_star: the stable fixed point `q*` of the length map reached from `q_init`; `inf` when the variance grows
        without bound (no fixed point, e.g. ReLU with `σ_w² > 2`).
      chi_1: `σ_w² E[φ'(√q* z)²]`, the slope of the correlation map at `c = 1` and the factor by which squared
        gradients grow per layer. With `q* = 0` it is the limit `q → 0⁺`; with `q* = inf`, its value where the
        iteration stopped (exact for positively homogeneous `φ` such as ReLU, whose `χ₁` does not depend on `q`).
      c_star: the stable fixed point of the correlation map: 1 in the ordered and critical phases, `< 1` in the
        chaotic one, `nan` when unbounded.
      chi_c: `σ_w² E[φ'(u₁)φ'(u₂)]` at `c*` (equal to `chi_1` when `c* = 1`).
      xi_c: correlation depth scale `−1/log χ_c`: `inf` at criticality, `nan` when unbounded.
      phase: `"ordered"` (`χ₁ < 1 − tol`), `"chaotic"` (`χ₁ > 1 + tol`), `"critical"` (`|χ₁ − 1| ≤ tol`) or
        `"unbounded"` (`q* = inf`).
    """

    q_star: Any
    chi_1: Any
    c_star: Any
    chi_c: Any
    xi_c: Any
    phase: Any


def _float_dtype() -> Any:
    return jnp.zeros(()).dtype  # float64 under JAX_ENABLE_X64, else float32


def check_activation(activation: Any) -> Elementwise:
    """The activation layer, or a `TypeError` saying what is expected."""
    if not isinstance(activation, Elementwise):
        raise TypeError("`activation` must be an `ntkit.nn` activation layer (e.g. `stax.Relu()`, `stax.Erf()`, "
                        f"`stax.Elementwise(jnp.tanh)`), got {activation!r}.")
    return activation


def _fn(layer: Elementwise) -> Callable[..., Any]:
    if layer.fn is None:
        raise ValueError(f"`activation` {layer.name or 'Elementwise'} is kernel-only (`fn=None`) and lacks the closed "
                         "form needed here; give it `fn` (for quadrature) or both `nngp_fn` and `d_nngp_fn`.")
    return cast(Callable[..., Any], layer.fn)


def _nngp(layer: Elementwise, cov12, var1, var2):
    """`E[φ(u)φ(v)]`: the layer's closed form, else its Gauss–Hermite quadrature."""
    if layer.nngp_fn is not None:
        return layer.nngp_fn(cov12, var1, var2)
    fn = _fn(layer)
    return gauss_hermite_2d(fn, fn, cov12, var1, var2, layer.quadrature_degree)


def _gauss_hermite_1d(g, q, degree: int):
    """`E[g(√q z)]`, `z ~ N(0, 1)`, by `degree`-node Gauss–Hermite quadrature: the diagonal of `gauss_hermite_2d`
    in a form differentiable in `q` (the 2-D rule's `√(Σ₂₂ − Σ₁₂²/Σ₁₁)` has no derivative on the diagonal)."""
    nodes, weights = np.polynomial.hermite.hermgauss(degree)
    z = jnp.asarray(nodes * np.sqrt(2.0), q.dtype)
    w = jnp.asarray(weights / np.sqrt(np.pi), q.dtype)
    return g(jnp.sqrt(q)[..., None] * z) @ w


def _derivative(fn):
    return lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


def _length(layer: Elementwise, q):
    """`E[φ(√q z)²]`."""
    if layer.nngp_fn is not None:
        return layer.nngp_fn(q, q, q)
    fn = _fn(layer)
    return _gauss_hermite_1d(lambda x: fn(x) ** 2, q, layer.quadrature_degree)


def _d_length(layer: Elementwise, q):
    """`E[φ'(√q z)²]`."""
    if layer.nngp_fn is None and layer.d_nngp_fn is None:
        d = _derivative(_fn(layer))
        return _gauss_hermite_1d(lambda x: d(x) ** 2, q, layer.quadrature_degree)
    return _d_nngp(layer, q, q, q)


def _d_nngp(layer: Elementwise, cov12, var1, var2):
    """`E[φ'(u)φ'(v)]`: closed form, Price's theorem on the closed `E[φφ]`, or quadrature of `φ'` by autodiff."""
    if layer.d_nngp_fn is not None:
        return layer.d_nngp_fn(cov12, var1, var2)
    cov12, var1, var2 = jnp.broadcast_arrays(cov12, var1, var2)
    nngp_fn = layer.nngp_fn
    if nngp_fn is not None:
        return jax.jvp(lambda c: nngp_fn(c, var1, var2), (cov12,), (jnp.ones_like(cov12),))[1]
    d = _derivative(_fn(layer))
    return gauss_hermite_2d(d, d, cov12, var1, var2, layer.quadrature_degree)


def _solve(map_fn, x, steps: int, newton: int, lo: float, hi: float):
    """Iterate `x ↦ map_fn(x)` `steps` times, then polish with safeguarded Newton steps on `h(x) = map_fn(x) − x`.

    A Newton step is taken only where the map is contracting (`h' < 0`), when it moves the way the iteration does
    (`sign(Δx) = sign(h)`), stays in `[lo, hi]` and lowers `|h|`: so it accelerates the iteration towards the fixed
    point the network reaches and never jumps back to an unstable one behind it.
    Returns `(x, h(x), h'(x))`.
    """

    def grad_h(x):
        value, slope = jax.jvp(map_fn, (x,), (jnp.ones_like(x),))
        return value - x, slope - 1

    def iterate(_, x):
        new = map_fn(x)
        return jnp.where(jnp.isfinite(new), jnp.minimum(new, hi), hi)

    x = jax.lax.fori_loop(0, steps, iterate, x)

    def polish(_, x):
        h, dh = grad_h(x)
        step = jnp.where(dh < 0, -h / jnp.where(dh < 0, dh, -1), 0)
        new = jnp.clip(x + step, lo, hi)
        h_new = map_fn(new) - new
        ok = (step * h > 0) & (jnp.abs(h_new) < jnp.abs(h)) & jnp.isfinite(h_new)
        return jnp.where(ok, new, x)

    x = jax.lax.fori_loop(0, newton, polish, x)
    h, dh = grad_h(x)
    return x, h, dh


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _mean_field(layer: Elementwise, w2, b2, q_init, steps: int, critical_tol: float):
    dtype = w2.dtype
    finfo = jnp.finfo(dtype)
    floor = math.sqrt(float(finfo.tiny))  # where `q* = 0` is evaluated: the limit q → 0⁺, in normal numbers
    q_cap = float(finfo.max) ** 0.25  # beyond this the variance has no fixed point that matters: unbounded
    tol = 64 * float(finfo.eps)

    def length_map(q):
        return w2 * _length(layer, q) + b2

    q, h, dh = _solve(length_map, q_init, steps, 60, 0.0, q_cap)
    converged = (jnp.abs(h) <= tol * jnp.maximum(q, floor) + tol * b2) & (dh <= tol) & (q < q_cap)
    unbounded = ~converged & (h > 0)
    q_eval = jnp.maximum(q, floor)
    chi_1 = w2 * _d_length(layer, q_eval)

    chaotic = (chi_1 > 1 + critical_tol) & ~unbounded
    q_c = jnp.where(chaotic, q_eval, 1)

    def corr_map(c):
        return (w2 * _nngp(layer, c * q_c, q_c, q_c) + b2) / q_c

    c, _, _ = _solve(corr_map, jnp.zeros_like(q_c), steps, 60, -1.0, 1.0)
    c_star = jnp.where(chaotic, c, 1)
    chi_c = jnp.where(chaotic, w2 * _d_nngp(layer, c_star * q_c, q_c, q_c), chi_1)
    critical = jnp.abs(chi_1 - 1) <= critical_tol
    xi_c = jnp.where(critical, jnp.inf, -1 / jnp.log(jnp.where(critical, 0.5, chi_c)))
    q_star = jnp.where(unbounded, jnp.inf, jnp.where(q <= floor, 0, q))
    phase = jnp.where(unbounded, 3, jnp.where(critical, 2, jnp.where(chi_1 < 1, 0, 1)))
    nan = jnp.full_like(c_star, jnp.nan)
    return (q_star, chi_1, jnp.where(unbounded, nan, c_star), jnp.where(unbounded, nan, chi_c),
            jnp.where(unbounded, nan, xi_c), phase)


def mean_field(activation: Any, W_std: Any, b_std: Any, q_init: float = 1.0, max_depth: int = 1000,
               critical_tol: float = CRITICAL_TOL) -> SignalPropagation:
    """`signal_propagation` on arrays of `W_std` and `b_std` (broadcast together): NumPy arrays in the result."""
    layer = check_activation(activation)
    dtype = _float_dtype()
    w, b = (np.asarray(v, dtype=np.float64) for v in (W_std, b_std))
    for name, v in (("W_std", w), ("b_std", b)):
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"`{name}` must be finite and non-negative, got {v if v.ndim == 0 else 'an array'}.")
    if not (isinstance(q_init, int | float) and math.isfinite(q_init) and q_init > 0):
        raise ValueError(f"`q_init` must be a positive finite number, got {q_init!r}.")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise ValueError(f"`max_depth` must be a positive integer, got {max_depth!r}.")
    if not (isinstance(critical_tol, int | float) and 0 <= critical_tol < 1):
        raise ValueError(f"`critical_tol` must be in [0, 1), got {critical_tol!r}.")
    w, b = np.broadcast_arrays(w, b)
    w2 = jnp.asarray(w * w, dtype)
    b2 = jnp.asarray(b * b, dtype)
    q0 = jnp.full(w2.shape, q_init, dtype)
    out = _mean_field(layer, w2, b2, q0, int(max_depth), float(critical_tol))
    q_star, chi_1, c_star, chi_c, xi_c, phase = (np.asarray(v) for v in out)
    return SignalPropagation(q_star, chi_1, c_star, chi_c, xi_c, np.asarray(PHASES)[phase])


def signal_propagation(activation: Any, W_std: float = 1.0, b_std: float = 0.0, *, q_init: float = 1.0,
                       max_depth: int = 1000, critical_tol: float = CRITICAL_TOL) -> SignalPropagation:
    r"""Mean-field signal propagation through a deep network of `Dense(W_std, b_std)` and `activation` layers.

    Computes the variance fixed point `q*` of `q ↦ σ_w² E[φ(√q z)²] + σ_b²` (Poole et al. 2016) reached from
    `q_init`, `χ₁ = σ_w² E[φ'(√q* z)²]`, the correlation fixed point `c*` and its slope `χ_c`, the correlation
    depth scale `ξ_c = −1/log χ_c` and the phase (Schoenholz et al. 2017; Xiao et al. 2018, 2020). See the module
    docstring for the theory and `SignalPropagation` for each field.

    Assumptions: infinite width, i.i.d. Gaussian weights and biases (`W ~ N(0, σ_w²/n)`, `b ~ N(0, σ_b²)`), the
    same `φ` at every layer, and depth large enough for the fixed points to be reached. The expectations use the
    layer's closed form when it has one (ReLU family, erf, sin, GELU, polynomials, ...) and its Gauss–Hermite
    quadrature otherwise (accurate for smooth `φ` only, as the layer's kernel).

    Numerics: the maps are iterated `max_depth` times (layers), then the fixed point is polished with safeguarded
    Newton steps that only accelerate the iteration (never jump to an unstable fixed point); a variance still
    growing past `finfo.max^{1/4}`, or with no fixed point ahead, gives `q* = inf` and phase `"unbounded"`.
    `q* = 0` (the signal dies out, e.g. ReLU or tanh without bias in the ordered phase) is evaluated as the limit
    `q → 0⁺`. The chaotic `c*` is the limit of the correlation map from `c = 0`. Computed in the default float
    dtype (float32 unless `jax_enable_x64`).

    Args:
      activation: an `ntkit.nn` activation layer (`stax.Relu()`, `stax.Erf()`, `stax.Elementwise(jnp.tanh)`, ...).
      W_std: `σ_w ≥ 0`.
      b_std: `σ_b ≥ 0`.
      q_init: variance of the first layer's pre-activations (matters only where the fixed point is not unique, e.g.
        ReLU at `σ_w² = 2, σ_b = 0`, where every `q` is one).
      max_depth: iterations of the maps before the Newton polish.
      critical_tol: the phase is `"critical"` when `|χ₁ − 1| ≤ critical_tol` (default `1e-3`: depth scales above
        about 1000 layers).

    Returns:
      A `SignalPropagation` of Python floats and a phase string.

    Example:
      >>> import ntkit.nn as stax
      >>> from ntkit.analysis import signal_propagation
      >>> sp = signal_propagation(stax.Relu(), W_std=1.2, b_std=0.1)
      >>> round(sp.chi_1, 4), sp.phase                            # χ₁ = σ_w²/2 for ReLU
      (0.72, 'ordered')
      >>> round(sp.q_star, 4)                                     # σ_b²/(1 − σ_w²/2)
      0.0357
      >>> signal_propagation(stax.Relu(), W_std=2 ** 0.5).phase   # the edge of chaos
      'critical'
      >>> signal_propagation(stax.Relu(), W_std=1.6).q_star       # σ_w² > 2: the variance explodes
      inf
    """
    for name, v in (("W_std", W_std), ("b_std", b_std)):
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            raise TypeError(f"`{name}` must be a real number, got {v!r}; use `phase_diagram` for grids.")
    r = mean_field(activation, W_std, b_std, q_init, max_depth, critical_tol)
    q_star, chi_1, c_star, chi_c, xi_c = (float(v) for v in r[:5])
    return SignalPropagation(q_star, chi_1, c_star, chi_c, xi_c, str(r.phase))
