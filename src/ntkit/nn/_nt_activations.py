"""neural-tangents' remaining nonlinearities: `Gabor`, `Hermite` (closed forms) and `ExpNormalized` (a kernel map).

For a Gaussian pair `(u, v)` with covariance `C = [[Σ₁₁, Σ₁₂], [Σ₁₂, Σ₂₂]]`, as in `_elementwise`.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from ._elementwise import Elementwise, Polynomial
from ._layer import Layer
from ._state import COV_DIAGONAL, CovLevel, check_state, cross_variances, diagonal_variances, self_variances


def _gabor(x):
    return jnp.exp(-x * x) * jnp.sin(x)


def _gabor_nngp(cov12, var1, var2):
    """`E[e^{-u²} sin u · e^{-v²} sin v] = D^{-1/2} exp(−(Σ₁₁ + Σ₂₂ + 4δ)/(2D)) sinh(Σ₁₂/D)`, `δ = Σ₁₁Σ₂₂ − Σ₁₂²`,
    `D = det(I + 2C) = 1 + 2Σ₁₁ + 2Σ₂₂ + 4δ`: from `E[exp(−zᵀz + i wᵀz)] = det(I + 2C)^{-1/2}
    exp(−wᵀC(I + 2C)^{-1}w/2)` with `w = (1, ∓1)` and `sin u sin v = (cos(u − v) − cos(u + v))/2`."""
    delta = var1 * var2 - cov12 * cov12
    det = 1 + 2 * var1 + 2 * var2 + 4 * delta
    return jnp.exp(-(var1 + var2 + 4 * delta) / (2 * det)) * jnp.sinh(cov12 / det) / jnp.sqrt(det)


def Gabor() -> Elementwise:
    """`φ(x) = exp(−x²) sin x`, kernel in closed form (see `_gabor_nngp`); `E[φ'φ']` by Price's theorem."""
    return Elementwise(fn=_gabor, nngp_fn=_gabor_nngp, name="Gabor")


def Hermite(degree: int) -> Elementwise:
    """The probabilists' Hermite polynomial normalized by its norm under `N(0, 1)`: `φ = He_n / √(n!)`.

    With unit-variance inputs (e.g. after `LayerNorm`) the kernel is `ρⁿ` and the NTK gains `n ρⁿ⁻¹`, as in
    neural-tangents; here it is exact for any variance (Isserlis' theorem, as `Polynomial`).
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"`degree` of Hermite must be a non-negative integer, got {degree!r}.")
    coef = np.polynomial.hermite_e.herme2poly([0.0] * degree + [1.0]) / math.sqrt(math.factorial(degree))
    return Polynomial(tuple(float(c) for c in coef))


@dataclasses.dataclass(frozen=True)
class ExpNormalized(Layer):
    """neural-tangents' normalized exponential kernel map (no finite network: `apply` raises).

    With `q = √(Σ₁₁ Σ₂₂)` and `ρ = Σ₁₂/q` (clipped to `[−1, 1]` when `do_clip`): `Σ' = q exp(γ(ρ + shift))`,
    `Θ' = γ Θ exp(γ(ρ + shift))` (the derivative of `Σ'` in `Σ₁₂`); for `shift = −1` it is a Gaussian (RBF)
    kernel of the normalized inputs scaled by their norms.

    Args:
      gamma: `γ`.
      shift: the shift of the exponent.
      do_clip: clip `ρ` to `[−1, 1]`.
    """

    gamma: float = 1.0
    shift: float = -1.0
    do_clip: bool = False

    pointwise = True

    def init(self, key, input_shape):
        return tuple(input_shape), ()

    def apply(self, params, x, **kwargs):
        raise NotImplementedError("ExpNormalized is defined by its kernel only (as in neural-tangents); it has no "
                                  "finite network.")

    def _map(self, cov12, var1, var2):
        q = jnp.sqrt(var1 * var2)
        rho = cov12 / jnp.where(q > 0, q, 1)
        if self.do_clip:
            rho = jnp.clip(rho, -1, 1)
        e = jnp.exp(self.gamma * (rho + self.shift))
        return q * e, self.gamma * e

    def transform(self, k, **kwargs):
        k = check_state(k, "ExpNormalized")
        d1, d2 = diagonal_variances(k, "ExpNormalized")
        nngp, d_nngp = self._map(k.nngp, *cross_variances(d1, d2, k))
        cov1, cov2 = k.covariances("ExpNormalized")
        cov1 = self._map(cov1, *self_variances(d1, k))[0]
        cov2 = None if cov2 is None else self._map(cov2, *self_variances(d2, k))[0]
        ntk = None if k.ntk is None else k.ntk * d_nngp
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False, is_input=False)

    def cov_needs(self, out_level: CovLevel) -> CovLevel:
        return max(out_level, COV_DIAGONAL)
