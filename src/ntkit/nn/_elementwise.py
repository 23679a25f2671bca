"""Elementwise nonlinearities: closed-form Gaussian expectations, or 2-D Gauss–Hermite quadrature.

For a Gaussian pair `(u, v)` with covariance `[[Σ₁₁, Σ₁₂], [Σ₁₂, Σ₂₂]]` a nonlinearity `φ` maps the kernel as
`Σ' = E[φ(u) φ(v)]`, `Θ' = Θ · E[φ'(u) φ'(v)]` (docs/theory.md §2). Each activation is one function `φ`, one
`nngp_fn(Σ₁₂, Σ₁₁, Σ₂₂)` and optionally one `d_nngp_fn` for `E[φ'φ']`; when that is missing it comes from Price's
theorem, `E[φ'(u)φ'(v)] = ∂E[φ(u)φ(v)]/∂Σ₁₂`, by autodiff.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import _special
from ._layer import Layer
from ._state import COV_DIAGONAL, CovLevel, check_state, cross_variances, diagonal_variances, self_variances


@dataclasses.dataclass(frozen=True)
class _Bound:
    """A module-level function with bound hyper-parameters, compared by value (so jit caches are shared)."""

    func: Callable
    args: tuple

    def __call__(self, *xs):
        return self.func(*xs, *self.args)


def gauss_hermite_2d(g: Callable, h: Callable, cov12, var1, var2, degree: int):
    """`E[g(u) h(v)]` for centred Gaussian `(u, v)`, by `degree × degree` Gauss–Hermite quadrature.

    `u = √Σ₁₁ z₁`, `v = Σ₁₂/√Σ₁₁ z₁ + √(Σ₂₂ − Σ₁₂²/Σ₁₁) z₂` with `z ~ N(0, I)`; nodes of `∫ e^{-x²}` rescaled by
    `√2`. Arrays broadcast; memory is `degree ×` their size (one scan over the `z₁` nodes).
    """
    nodes, weights = np.polynomial.hermite.hermgauss(degree)
    return _nested_2d(g, h, cov12, var1, var2, nodes * np.sqrt(2.0), weights / np.sqrt(np.pi), degree)


def _nested_2d(g: Callable, h: Callable, cov12, var1, var2, outer, w_outer, degree: int):
    """`Σ_i w_outer[i] g(√Σ₁₁ z_i) E[h(v) | z₁ = z_i]` at the `outer` nodes `z_i` of `z₁`, the inner expectation over
    `z₂` by `degree`-node Gauss–Hermite (see `gauss_hermite_2d`)."""
    cov12, var1, var2 = jnp.broadcast_arrays(cov12, var1, var2)
    dtype = cov12.dtype
    nodes, weights = np.polynomial.hermite.hermgauss(degree)
    z = jnp.asarray(nodes * np.sqrt(2.0), dtype).reshape((1,) * cov12.ndim + (-1,))  # no implicit rank promotion
    w = jnp.asarray(weights / np.sqrt(np.pi), dtype)
    s1 = jnp.sqrt(jnp.maximum(var1, 0))
    pos = s1 > 0
    a = jnp.where(pos, cov12 / jnp.where(pos, s1, 1), 0)
    b = jnp.sqrt(jnp.maximum(var2 - a * a, 0))

    def body(acc, node):
        zi, wi = node
        hv = h(a[..., None] * zi + b[..., None] * z)
        return acc + wi * g(s1 * zi) * (hv @ w), None

    acc, _ = jax.lax.scan(body, jnp.zeros_like(cov12), (jnp.asarray(outer, dtype), jnp.asarray(w_outer, dtype)))
    return acc


def derivative(fn: Callable) -> Callable:
    """`φ'` of an elementwise `φ`, by a forward-mode product with ones."""
    return lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


@dataclasses.dataclass(frozen=True)
class Elementwise(Layer):
    """Any elementwise nonlinearity `φ`, with its kernel in closed form or by quadrature.

    Args:
      fn: `φ`, applied elementwise by the finite network; `None` for a kernel-only layer (then `nngp_fn` is
        required, and `init`/`apply` raise `NotImplementedError`), as in neural-tangents.
      nngp_fn: `(Σ₁₂, Σ₁₁, Σ₂₂) -> E[φ(u)φ(v)]` (arrays broadcast), or `None` for 2-D Gauss–Hermite quadrature.
      d_nngp_fn: `(Σ₁₂, Σ₁₁, Σ₂₂) -> E[φ'(u)φ'(v)]`; `None` means `∂ nngp_fn/∂Σ₁₂` (Price's theorem) when
        `nngp_fn` is given, else quadrature with `φ'` by autodiff.
      quadrature_degree: nodes per dimension (25 suits smooth `φ`; non-smooth ones need a closed form).

    The input must be Gaussian (an affine layer before it): on anything else the expectations above are not the
    kernel of the finite network, and a `ValueError` says so.

    Example:
      >>> import jax.numpy as jnp, ntkit.nn as stax
      >>> net = stax.serial(stax.Dense(1), stax.Elementwise(jnp.tanh), stax.Dense(1))
      >>> net.kernel(jnp.eye(3), None, "nngp").shape
      (3, 3)
    """

    fn: Callable | None = None
    nngp_fn: Callable | None = None
    d_nngp_fn: Callable | None = None
    quadrature_degree: int = 25
    name: str = "Elementwise"

    pointwise: ClassVar[bool] = True
    weight_free: ClassVar[bool] = True

    def __post_init__(self):
        if self.fn is None and self.nngp_fn is None:
            raise ValueError(f"{self.name}: give `fn` (φ) or `nngp_fn` (its kernel); both are None.")
        for arg in ("fn", "nngp_fn", "d_nngp_fn"):
            value = getattr(self, arg)
            if value is not None and not callable(value):
                raise TypeError(f"{self.name}: `{arg}` must be callable or None, got {type(value).__name__}.")

    def _finite(self) -> Callable:
        if self.fn is None:
            raise NotImplementedError(f"{self.name} was built without `fn` (kernel only): its finite network "
                                      "(`init`/`apply`) needs the elementwise function `fn`.")
        return self.fn

    def init(self, key, input_shape):
        self._finite()
        return tuple(input_shape), ()

    def apply(self, params, x, **kwargs):
        return self._finite()(x)

    def _nngp(self, cov12, var1, var2):
        if self.nngp_fn is not None:
            return self.nngp_fn(cov12, var1, var2)
        return gauss_hermite_2d(self._finite(), self._finite(), cov12, var1, var2, self.quadrature_degree)

    def _d_nngp(self, cov12, var1, var2):
        if self.d_nngp_fn is not None:
            return self.d_nngp_fn(cov12, var1, var2)
        nngp_fn = self.nngp_fn
        if nngp_fn is not None:
            cov12, var1, var2 = jnp.broadcast_arrays(cov12, var1, var2)
            return jax.jvp(lambda c: nngp_fn(c, var1, var2), (cov12,), (jnp.ones_like(cov12),))[1]
        d = derivative(self._finite())
        return gauss_hermite_2d(d, d, cov12, var1, var2, self.quadrature_degree)

    def transform(self, k, **kwargs):
        k = check_state(k, self.name)
        if not k.is_gaussian:
            what = "the raw inputs" if k.is_input else "a non-Gaussian activation"
            raise ValueError(f"{self.name} needs a Gaussian input (the output of a Dense or Conv layer), got "
                             f"{what}: its kernel is not a Gaussian expectation there.")
        d1, d2 = diagonal_variances(k, self.name)
        v1, v2 = cross_variances(d1, d2, k)
        nngp = self._nngp(k.nngp, v1, v2)
        ntk = None if k.ntk is None else k.ntk * self._d_nngp(k.nngp, v1, v2)
        cov1, cov2 = k.covariances(self.name)
        cov1 = self._nngp(cov1, *self_variances(d1, k))
        cov2 = None if cov2 is None else self._nngp(cov2, *self_variances(d2, k))
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False, is_input=False)

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return max(out_level, COV_DIAGONAL)  # the variances of its input


def ElementwiseNumerical(fn: Callable, deg: int, df: Callable | None = None) -> Elementwise:
    """neural-tangents' name for quadrature kernels: `Elementwise(fn)` with `deg` Gauss–Hermite nodes per axis.

    `df` is `φ'` when known (else autodiff); `E[φ'(u)φ'(v)]` is then computed by quadrature over `df`.
    """
    d_nngp_fn = None if df is None else _Bound(_quadrature, (df, int(deg)))
    return Elementwise(fn=fn, d_nngp_fn=d_nngp_fn, quadrature_degree=int(deg), name="ElementwiseNumerical")


def _quadrature(cov12, var1, var2, fn, degree):
    return gauss_hermite_2d(fn, fn, cov12, var1, var2, degree)


def gauss_split_2d(g: Callable, h: Callable, cov12, var1, var2, degree: int = 64, reach: float = 10.0):
    """`E[g(u) h(v)]` as `gauss_hermite_2d`, for `g` with a kink or jump at 0 (ReLU, its derivative).

    The outer integral over `z₁` (`u = √Σ₁₁ z₁`) is split at 0 and each half done by `degree`-node Gauss–Legendre
    on `[0, reach]` against the normal density (the mass past `reach = 10` is ~1e-23), so a `g` smooth on each
    side is integrated to near rounding; `h` must be smooth (`degree`-node Gauss–Hermite inside).
    """
    t, wt = np.polynomial.legendre.leggauss(degree)
    half = (t + 1) * reach / 2
    outer = np.concatenate([-half, half])
    w_outer = np.concatenate([wt, wt]) * reach / 2 * np.exp(-outer ** 2 / 2) / np.sqrt(2 * np.pi)
    return _nested_2d(g, h, cov12, var1, var2, outer, w_outer, degree)


def _piecewise_linear(layer: Elementwise | None) -> tuple[float, float] | None:
    """`(c, d)` with `φ(x) = c x + d |x|` for the identity (`None`) and the ReLU family, else `None`."""
    if layer is None:
        return 1.0, 0.0
    if layer.name == "ABRelu" and isinstance(layer.fn, _Bound):
        a, b = layer.fn.args[:2]
        return (a + b) / 2, (b - a) / 2
    return None


def _is_sign(layer: Elementwise | None) -> bool:
    return layer is not None and layer.name == "Sign" and layer.fn is _sign


def cross_expectations(f: Elementwise | None, g: Elementwise | None, cov12, var1, var2, with_derivative: bool):
    """`(E[φ_f(u) φ_g(v)], E[φ_f'(u) φ_g'(v)])` for two nonlinearities of one centred Gaussian pair (`None`: the
    identity); the second is `None` unless `with_derivative`.

    The same layer uses its own kernel; two members of the ReLU family (or the identity), `φ = c x + d|x|`, have
    `E = c_f c_g Σ₁₂ + d_f d_g E[|u||v|]` and `E' = c_f c_g + d_f d_g (2/π) arcsin(cos θ)` (odd × even terms
    vanish), and so has `Sign` with one of them; anything else is integrated by `gauss_split_2d`, with the kinked
    one outside.
    """
    if f is not None and f == g:
        return f._nngp(cov12, var1, var2), f._d_nngp(cov12, var1, var2) if with_derivative else None
    pf, pg = _piecewise_linear(f), _piecewise_linear(g)
    if _is_sign(g) and pf is not None:  # the closed form below has the sign first
        return cross_expectations(g, f, cov12, var2, var1, with_derivative)
    if _is_sign(f) and pg is not None:
        # E[sign(u) (c v + d|v|)] = c E[sign(u) v] = c √(2/π) Σ₁₂/√Σ₁₁ (odd × even vanishes); sign' = 0
        pos1 = var1 > 0
        r1 = jnp.where(pos1, 1 / jnp.sqrt(jnp.where(pos1, var1, 1)), 0)
        nngp = pg[0] * math.sqrt(2 / math.pi) * cov12 * r1
        return nngp, _zero_d_nngp(cov12, var1, var2) if with_derivative else None
    if pf is not None and pg is not None:
        (cf, df), (cg, dg) = pf, pg
        nngp = cf * cg * cov12 + df * dg * _abrelu_nngp(cov12, var1, var2, -1.0, 1.0)
        d_nngp = None
        if with_derivative:
            _, cos, _, _ = _angle(cov12, var1, var2)
            d_nngp = cf * cg + df * dg * (2 / math.pi) * _special.arcsin(cos)
        return nngp, d_nngp
    fn_f = _identity if f is None else f._finite()
    fn_g = _identity if g is None else g._finite()
    if pg is not None and pf is None:  # the kinked one goes outside: swap the roles of u and v
        return cross_expectations(g, f, cov12, var2, var1, with_derivative)
    nngp = gauss_split_2d(fn_f, fn_g, cov12, var1, var2)
    d_nngp = gauss_split_2d(derivative(fn_f), derivative(fn_g), cov12, var1, var2) if with_derivative else None
    return nngp, d_nngp


def _identity(x):
    return x


def _closed(name, fn, nngp_fn, d_nngp_fn, *args) -> Elementwise:
    return Elementwise(fn=_Bound(fn, args), nngp_fn=_Bound(nngp_fn, args),
                       d_nngp_fn=None if d_nngp_fn is None else _Bound(d_nngp_fn, args), name=name)


# ----- ReLU family: arc-cosine kernels (Cho & Saul 2009) -----

def _angle(cov12, var1, var2):
    """`(√(Σ₁₁Σ₂₂), cos θ, sin θ, θ)` of the angle between the two inputs' pre-activations."""
    norm, cos, sin2 = _correlation(cov12, var1, var2)
    sin = jnp.where(sin2 > 0, jnp.sqrt(jnp.where(sin2 > 0, sin2, 1)), 0)  # finite derivatives at cos = ±1 too
    return norm, cos, sin, _special.arccos(cos)


def _correlation(cov12, var1, var2):
    """`(√(Σ₁₁Σ₂₂), cos θ, sin² θ)`: `sin² θ = 1 − cos² θ` lets closed forms write `Σ₁₁Σ₂₂ − Σ₁₂²` as
    `Σ₁₁Σ₂₂ sin² θ`, which is exact (0) for an input with itself, where the difference cancels catastrophically.

    An input of zero variance (an all-zero input row with no bias) gets `cos θ = 0` and a norm whose derivative is
    0 rather than the `∞ · 0` of `√0`: the kernels below are then differentiable there in both autodiff modes with
    the derivative of their part odd in the input, which is what central finite differences measure.
    """
    # Square roots and reciprocals per side: the variances are small arrays broadcast against the covariance, and
    # a square root and a division per covariance entry would dominate a ReLU layer. The double `where`s keep
    # the values and make the derivatives at a zero variance 0 instead of NaN.
    pos1, pos2 = var1 > 0, var2 > 0
    s1 = jnp.where(pos1, jnp.sqrt(jnp.where(pos1, var1, 1)), 0)
    s2 = jnp.where(pos2, jnp.sqrt(jnp.where(pos2, var2, 1)), 0)
    r1 = jnp.where(pos1, 1 / jnp.where(pos1, s1, 1), 0)
    r2 = jnp.where(pos2, 1 / jnp.where(pos2, s2, 1), 0)
    # Perfectly correlated entries (each input with itself) get exactly ±1: rounding of `Σ₁₂ r₁ r₂` (or of Σ₁₂
    # against the variances, computed by other operations) would put θ ~ √ulp away from 0, and the NTK's (π − θ)
    # term compounds that with depth. Within a few ulp of ±1 the computed angle is rounding noise anyway.
    cos = cov12 * r1 * r2
    tie = (cov12 * cov12 >= var1 * var2) | (1 - jnp.abs(cos) <= 4 * jnp.finfo(cos.dtype).eps)
    cos = jnp.where(pos1 & pos2, jnp.where(tie, jnp.sign(cov12), jnp.clip(cos, -1, 1)), 0)
    return s1 * s2, cos, 1 - cos * cos


def _stabilized(fn, degree: int, cov12, var1, var2, *args):
    """`fn` evaluated on inputs divided by their largest magnitude, times that magnitude to the power `degree`
    (`fn` is positively homogeneous of that degree): neural-tangents' `do_stabilize`, which keeps the arc-cosine
    formulas away from under- and overflow in very deep networks. The scale carries no derivative (by
    homogeneity its contribution is zero)."""
    # the variances too: orthogonal inputs (Σ₁₂ = 0) would otherwise divide them by `tiny`
    largest = jnp.maximum(jnp.max(jnp.abs(cov12)), jnp.maximum(jnp.max(jnp.abs(var1)), jnp.max(jnp.abs(var2))))
    scale = jax.lax.stop_gradient(jnp.maximum(largest, jnp.finfo(cov12.dtype).tiny))
    out = fn(cov12 / scale, var1 / scale, var2 / scale, *args)
    return out if degree == 0 else out * scale ** degree


def _abrelu_nngp(cov12, var1, var2, a, b, stabilize=False):
    if stabilize:
        return _stabilized(_abrelu_nngp, 1, cov12, var1, var2, a, b)
    # `(π − θ) Σ₁₂` rather than `(π − θ) √(Σ₁₁Σ₂₂) cos θ` (equal): its derivative stays right at a zero variance
    norm, cos, sin, theta = _angle(cov12, var1, var2)
    out = (b - a) ** 2 / (2 * math.pi) * (norm * sin + (math.pi - theta) * cov12)
    return out if a * b == 0 else out + a * b * cov12


def _abrelu_d_nngp(cov12, var1, var2, a, b, stabilize=False):
    if stabilize:
        return _stabilized(_abrelu_d_nngp, 0, cov12, var1, var2, a, b)
    _, _, _, theta = _angle(cov12, var1, var2)
    return a * b + (b - a) ** 2 / (2 * math.pi) * (math.pi - theta)


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Elementwise:
    """`φ(x) = a·min(x, 0) + b·max(x, 0)`: `E[φφ] = ab Σ₁₂ + (b − a)² √(Σ₁₁Σ₂₂)(sin θ + (π − θ) cos θ)/(2π)`,
    `E[φ'φ'] = ab + (b − a)² (π − θ)/(2π)`, `θ = arccos(Σ₁₂/√(Σ₁₁Σ₂₂))` (Cho & Saul 2009).

    `do_stabilize=True` (neural-tangents' option, for very deep networks) evaluates the formulas on covariances
    divided by their largest magnitude and scales back; the result is the same up to rounding. The kernels are
    differentiable with respect to the inputs in forward and reverse mode, an all-zero input included.
    """
    return _closed("ABRelu", _abrelu, _abrelu_nngp, _abrelu_d_nngp, float(a), float(b), bool(do_stabilize))


def _abrelu(x, a, b, stabilize=False):
    return jnp.where(x > 0, b * x, a * x)


def Relu(do_stabilize: bool = False) -> Elementwise:
    """`max(x, 0)`, the arc-cosine kernel of degree 1 (docs/theory.md §2); `do_stabilize` as in `ABRelu`."""
    return ABRelu(0.0, 1.0, do_stabilize)


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Elementwise:
    """`max(x, αx)`; `do_stabilize` as in `ABRelu`."""
    return ABRelu(alpha, 1.0, do_stabilize)


def Abs(do_stabilize: bool = False) -> Elementwise:
    """`|x|`; `do_stabilize` as in `ABRelu`."""
    return ABRelu(-1.0, 1.0, do_stabilize)


def _rect_j_polynomials(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of `P_n`, `Q_n` with `J_n(θ) = P_n(cos θ)(π − θ) + Q_n(cos θ) sin θ`.

    Cho & Saul define `J_n = (−1)ⁿ sin^{2n+1}θ (sin⁻¹θ ∂_θ)ⁿ ((π − θ)/sin θ)`; with `c = cos θ`, `s = sin θ` the
    operator is `−∂_c`, and `∂_cⁿ ((π − θ)/s) = (P_n (π − θ) + Q_n s)/s^{2n+1}`. Differentiating once more gives
    `P_{n+1} = (1 − c²) P_n' + (2n + 1) c P_n`, `Q_{n+1} = P_n + (1 − c²) Q_n' + 2n c Q_n` from `P_0 = 1, Q_0 = 0`
    (so `J_1 = sin θ + (π − θ) cos θ`, `J_2 = 3 sin θ cos θ + (π − θ)(1 + 2cos²θ)`).
    """
    P = np.polynomial.Polynomial
    p, q = P([1.0]), P([0.0])
    one_minus_c2, c = P([1.0, 0.0, -1.0]), P([0.0, 1.0])
    for k in range(n):
        p, q = one_minus_c2 * p.deriv() + (2 * k + 1) * c * p, p + one_minus_c2 * q.deriv() + 2 * k * c * q
    return p.coef, q.coef


def _polyval(coefs, x):
    out = jnp.zeros_like(x)
    for a in coefs[::-1]:
        out = out * x + float(a)
    return out


def _rect_j(n: int, cos, sin, theta):
    """Cho & Saul's `J_n(θ)` for any degree `n ≥ 0`."""
    p, q = _rect_j_polynomials(n)
    return _polyval(p, cos) * (math.pi - theta) + _polyval(q, cos) * sin


def _rect_monomial(x, n):
    return jnp.where(x > 0, x ** n, 0)


def _rect_monomial_nngp(cov12, var1, var2, n):
    norm, cos, sin, theta = _angle(cov12, var1, var2)
    return norm ** n * _rect_j(n, cos, sin, theta) / (2 * math.pi)


def _rect_monomial_d_nngp(cov12, var1, var2, n):
    if n == 0:
        return jnp.zeros_like(cov12 * var1 * var2)
    norm, cos, sin, theta = _angle(cov12, var1, var2)
    return n * n * norm ** (n - 1) * _rect_j(n - 1, cos, sin, theta) / (2 * math.pi)


def RectifiedMonomial(degree: int) -> Elementwise:
    """`max(x, 0)^n`, the arc-cosine kernel `‖·‖ⁿ J_n(θ)/(2π)` of any degree `n ≥ 0` (Cho & Saul 2009)."""
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ValueError(f"`degree` of RectifiedMonomial must be a non-negative integer, got {degree!r}.")
    return _closed("RectifiedMonomial", _rect_monomial, _rect_monomial_nngp, _rect_monomial_d_nngp, int(degree))


# ----- erf family (Williams 1997) -----

def _erf(x, a, b, c):
    return a * jax.scipy.special.erf(b * x) + c


def _erf_det(cov12, var1, var2, b):
    """`(1 + 2b²Σ₁₁)(1 + 2b²Σ₂₂) − 4b⁴Σ₁₂²` as `1 + 2b²(Σ₁₁ + Σ₂₂) + 4b⁴Σ₁₁Σ₂₂ sin²θ` (no cancellation)."""
    _, _, sin2 = _correlation(cov12, var1, var2)
    return 1 + 2 * b * b * (var1 + var2) + 4 * b ** 4 * var1 * var2 * sin2


def _erf_nngp(cov12, var1, var2, a, b, c):
    prod = (1 + 2 * b * b * var1) * (1 + 2 * b * b * var2)
    r = jnp.clip(2 * b * b * cov12 / jnp.sqrt(prod), -1, 1)
    one_minus_abs = _erf_det(cov12, var1, var2, b) / (prod * (1 + jnp.abs(r)))  # (1 − r²)/(1 + |r|), exactly
    return a * a * (2 / math.pi) * _special.arcsin(r, one_minus_abs) + c * c


def _erf_d_nngp(cov12, var1, var2, a, b, c):
    return a * a * b * b * (4 / math.pi) / jnp.sqrt(_erf_det(cov12, var1, var2, b))


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """`a·erf(bx) + c`: `E[φφ] = a²(2/π) arcsin(2b²Σ₁₂/√((1 + 2b²Σ₁₁)(1 + 2b²Σ₂₂))) + c²`,
    `E[φ'φ'] = a²b²(4/π)((1 + 2b²Σ₁₁)(1 + 2b²Σ₂₂) − 4b⁴Σ₁₂²)^{-1/2}` (Williams 1997)."""
    return _closed("Erf", _erf, _erf_nngp, _erf_d_nngp, float(a), float(b), float(c))


def Sigmoid_like() -> Elementwise:
    """`½(1 + erf(x/2.40206))`, an erf close to the logistic sigmoid with an exact kernel."""
    return Erf(0.5, 1 / 2.4020563531719796, 0.5)


def _sign(x):
    return jnp.sign(x)


def _sign_nngp(cov12, var1, var2):
    norm, cos, _, _ = _angle(cov12, var1, var2)
    return (2 / math.pi) * _special.arcsin(cos)


def _zero_d_nngp(cov12, var1, var2, *args):
    return jnp.zeros_like(cov12 * var1 * var2)


def Sign() -> Elementwise:
    """`sign(x)`: `E[φφ] = (2/π) arcsin(Σ₁₂/√(Σ₁₁Σ₂₂))`; `φ' = 0` almost everywhere, as autodiff of the finite net."""
    return Elementwise(fn=_sign, nngp_fn=_sign_nngp, d_nngp_fn=_zero_d_nngp, name="Sign")


# ----- trigonometric and exponential -----

def _sin(x, a, b, c):
    return a * jnp.sin(b * x + c)


def _sin_parts(cov12, var1, var2, b):
    minus = jnp.exp(-b * b * (var1 + var2 - 2 * cov12) / 2)
    plus = jnp.exp(-b * b * (var1 + var2 + 2 * cov12) / 2)
    return minus, plus


def _sin_nngp(cov12, var1, var2, a, b, c):
    minus, plus = _sin_parts(cov12, var1, var2, b)
    return a * a / 2 * (minus - plus * math.cos(2 * c))


def _sin_d_nngp(cov12, var1, var2, a, b, c):
    minus, plus = _sin_parts(cov12, var1, var2, b)
    return a * a * b * b / 2 * (minus + plus * math.cos(2 * c))


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """`a·sin(bx + c)`: `E[φφ] = a²/2 (e^{-b²(Σ₁₁+Σ₂₂−2Σ₁₂)/2} − e^{-b²(Σ₁₁+Σ₂₂+2Σ₁₂)/2} cos 2c)`."""
    return _closed("Sin", _sin, _sin_nngp, _sin_d_nngp, float(a), float(b), float(c))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """`a·cos(bx + c) = a·sin(bx + c + π/2)`."""
    return Sin(a, b, c + math.pi / 2)


def Rbf(gamma: float = 1.0) -> Elementwise:
    """`√2 sin(√(2γ) x + π/4)`, whose NNGP is the RBF kernel `exp(−γ(Σ₁₁ + Σ₂₂ − 2Σ₁₂))` (Rahimi & Recht 2007)."""
    return Sin(math.sqrt(2), math.sqrt(2 * gamma), math.pi / 4)


def _exp(x, a, b):
    return a * jnp.exp(b * x)


def _exp_nngp(cov12, var1, var2, a, b):
    return a * a * jnp.exp(b * b * (var1 + var2 + 2 * cov12) / 2)


def _exp_d_nngp(cov12, var1, var2, a, b):
    return b * b * _exp_nngp(cov12, var1, var2, a, b)


def Exp(a: float = 1.0, b: float = 1.0) -> Elementwise:
    """`a·e^{bx}`: `E[φφ] = a² e^{b²(Σ₁₁ + Σ₂₂ + 2Σ₁₂)/2}`."""
    return _closed("Exp", _exp, _exp_nngp, _exp_d_nngp, float(a), float(b))


def _gaussian(x, a, b):
    return a * jnp.exp(b * x * x)


def _gaussian_det(cov12, var1, var2, b):
    """`det(I − 2bΣ) = 1 − 2b(Σ₁₁ + Σ₂₂) + 4b²Σ₁₁Σ₂₂ sin²θ` (no cancellation for b < 0)."""
    _, _, sin2 = _correlation(cov12, var1, var2)
    return 1 - 2 * b * (var1 + var2) + 4 * b * b * var1 * var2 * sin2


def _gaussian_nngp(cov12, var1, var2, a, b):
    return a * a / jnp.sqrt(_gaussian_det(cov12, var1, var2, b))


def _gaussian_d_nngp(cov12, var1, var2, a, b):
    return 4 * a * a * b * b * cov12 * _gaussian_det(cov12, var1, var2, b) ** -1.5


def Gaussian(a: float = 1.0, b: float = -1.0) -> Elementwise:
    """`a·e^{bx²}`: `E[φφ] = a² D^{-1/2}`, `E[φ'φ'] = 4a²b² Σ₁₂ D^{-3/2}`, `D = det(I − 2bΣ)`."""
    return _closed("Gaussian", _gaussian, _gaussian_nngp, _gaussian_d_nngp, float(a), float(b))


def Gelu(approximate: bool = False, quadrature_degree: int = 25) -> Elementwise:
    """`φ(x) = x Φ(x)` (GELU), with `Φ` the standard normal CDF.

    Exact GELU has a closed form, derived by writing `Φ(u) = P(ξ₁ ≤ u)` with independent `ξ ~ N(0, 1)` and
    applying Gaussian integration by parts to `E[u v 1{u − ξ₁ ≥ 0} 1{v − ξ₂ ≥ 0}]`: with `a_i = 1 + Σ_ii`,
    `D = a₁a₂ − Σ₁₂²`,
    `E[φφ] = Σ₁₂/4 + Σ₁₂ asin(Σ₁₂/√(a₁a₂))/(2π) + (Σ₁₁Σ₂₂ + Σ₁₂²(1 − Σ₁₁Σ₂₂)/(a₁a₂)) / (2π√D)`,
    and `E[φ'φ']` is its derivative in `Σ₁₂` (Price's theorem). `approximate=True` is the `tanh` form of the finite
    network (`x/2 (1 + tanh(√(2/π)(x + 0.044715 x³)))`); its kernel is computed by quadrature.
    """
    if approximate:
        return Elementwise(fn=_gelu_tanh, quadrature_degree=quadrature_degree, name="Gelu")
    return _closed("Gelu", _gelu, _gelu_nngp, _gelu_d_nngp)


def _gelu(x):
    return 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _gelu_parts(cov12, var1, var2):
    """`(a₁a₂, D, arcsin ρ, Q)` of the GELU kernel in forms without cancellation: with `sin²θ` from
    `_correlation`, `D = a₁a₂ − Σ₁₂² = 1 + Σ₁₁ + Σ₂₂ + Σ₁₁Σ₂₂ sin²θ` (≥ 1: no singularity anywhere),
    `1 − |ρ| = D/(a₁a₂(1 + |ρ|))` and `Q = Σ₁₁Σ₂₂ + Σ₁₂²(1 − Σ₁₁Σ₂₂)/(a₁a₂)
    = Σ₁₁Σ₂₂ (1 + Σ₁₁ + Σ₂₂ + cos²θ + Σ₁₁Σ₂₂ sin²θ)/(a₁a₂)`."""
    _, cos, sin2 = _correlation(cov12, var1, var2)
    a12 = (1 + var1) * (1 + var2)
    det = 1 + var1 + var2 + var1 * var2 * sin2
    rho = jnp.clip(cov12 / jnp.sqrt(a12), -1, 1)
    asin = _special.arcsin(rho, det / (a12 * (1 + jnp.abs(rho))))
    quad = var1 * var2 * (1 + var1 + var2 + cos * cos + var1 * var2 * sin2) / a12
    return a12, det, asin, quad


def _gelu_nngp(cov12, var1, var2):
    _, det, asin, quad = _gelu_parts(cov12, var1, var2)
    return cov12 / 4 + cov12 * asin / (2 * math.pi) + quad / (2 * math.pi * jnp.sqrt(det))


def _gelu_d_nngp(cov12, var1, var2):
    """`∂E[φφ]/∂Σ₁₂` (Price's theorem): `1/4 + arcsin ρ/(2π) + Σ₁₂(3 + Σ₁₁ + Σ₂₂ − Σ₁₁Σ₂₂)/(2π a₁a₂ √D)
    + QΣ₁₂/(2π D^{3/2})` (the derivative of each term of `_gelu_nngp`, with `∂ρ/∂Σ₁₂ = 1/√(a₁a₂)` and
    `√(1 − ρ²) = √(D/(a₁a₂))`)."""
    a12, det, asin, quad = _gelu_parts(cov12, var1, var2)
    root = jnp.sqrt(det)
    return (0.25 + asin / (2 * math.pi) + cov12 * (3 + var1 + var2 - var1 * var2) / (2 * math.pi * a12 * root)
            + quad * cov12 / (2 * math.pi * det * root))


# ----- polynomials: Isserlis' theorem -----

def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else n * _double_factorial(n - 2)


def _moment(j: int, k: int, cov12, var1, var2):
    """`E[u^j v^k] = Σ_m C(j,m) C(k,m) m! (j−m−1)!! (k−m−1)!! Σ₁₂^m Σ₁₁^{(j−m)/2} Σ₂₂^{(k−m)/2}` (j−m, k−m even)."""
    total = jnp.zeros_like(cov12 * var1 * var2)
    for m in range(min(j, k) + 1):
        if (j - m) % 2 or (k - m) % 2:
            continue
        coef = math.comb(j, m) * math.comb(k, m) * math.factorial(m) * _double_factorial(j - m - 1) * \
            _double_factorial(k - m - 1)
        total = total + coef * cov12 ** m * var1 ** ((j - m) // 2) * var2 ** ((k - m) // 2)
    return total


def _poly(x, coef):
    return sum(c * x ** i for i, c in enumerate(coef))


def _poly_nngp(cov12, var1, var2, coef):
    total = jnp.zeros_like(cov12 * var1 * var2)
    for j, cj in enumerate(coef):
        for k, ck in enumerate(coef):
            if cj and ck:
                total = total + cj * ck * _moment(j, k, cov12, var1, var2)
    return total


def _poly_d_nngp(cov12, var1, var2, coef):
    return _poly_nngp(cov12, var1, var2, tuple(i * c for i, c in enumerate(coef))[1:])


def Polynomial(coef) -> Elementwise:
    """`Σ_i coef[i] xⁱ`, kernel exact by Isserlis' theorem."""
    coef = tuple(float(c) for c in coef)
    if not coef:
        raise ValueError("`coef` of Polynomial must hold at least one coefficient.")
    return _closed("Polynomial", _poly, _poly_nngp, _poly_d_nngp, coef)


def Monomial(degree: int) -> Elementwise:
    """`x^n`, kernel exact by Isserlis' theorem."""
    if not isinstance(degree, int) or degree < 0:
        raise ValueError(f"`degree` of Monomial must be a non-negative integer, got {degree!r}.")
    return Polynomial((0.0,) * degree + (1.0,))
