"""Per-mode convergence of (heavy-ball) gradient descent on the mean squared loss, from the NTK's spectrum."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .._checks import check_scalar
from ..predict import max_learning_rate
from ._spectrum import TraceAxes, input_eps, kernel_matrix, rounding_level, symmetric_matrix, target_matrix

_MAX_SCAN = 10**6  # steps scanned for the first crossing of `target_loss` when the loss is not monotone
_MAX_DEFAULT_STEPS = 10**4
_BLOCK = 512  # steps per block of that scan


class Convergence(NamedTuple):
    """Predicted convergence of gradient descent with a constant NTK (NumPy float64).

    Attributes:
      eigenvalues: `(P,)` eigenvalues `λ_i` of the train-train kernel, descending.
      factors: `(P,)` asymptotic factor `ρ_i` by which the error along mode `i` shrinks per step: `|1 − ηλ_i/(nk)|`
        without momentum, the spectral radius of the mode's two-step recurrence with it; `> 1` for a diverging mode.
      time_constants: `(P,)` steps for the error along mode `i` to shrink by `e`, `−1/log ρ_i`: `inf` for a mode that
        never moves (`λ_i = 0`), negative for a diverging mode (`|τ_i|` steps per `e`-fold growth).
      critical_learning_rate: `2(1 + μ)nk/λ_max` (`ntkit.predict.max_learning_rate`).
      stable: whether `learning_rate` is below it and no eigenvalue is negative beyond rounding (then every mode
        with `λ_i > 0` converges, and those with `λ_i = 0` stay put).
      t: `(T,)` times in steps at which the losses are given.
      train_loss: `(T,)` predicted train loss `1/(2nk) ‖f_t(X) − Y‖²`.
      test_loss: `(T,)` predicted test loss `1/(2 n_test k) ‖f_t(x) − y_test‖²`, or `None`.
      steps_to_target: first step at which the train loss is at most `target_loss`; `None` if it is never reached
        (or no `target_loss` was given).
      mode_power: `(P,)` `‖v_iᵀ (f₀(X) − Y)‖²`, the initial train residual's power along each mode.
    """

    eigenvalues: np.ndarray
    factors: np.ndarray
    time_constants: np.ndarray
    critical_learning_rate: float
    stable: bool
    t: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray | None
    steps_to_target: int | None
    mode_power: np.ndarray


def _affine(a: np.ndarray, mu: float) -> np.ndarray:
    """`(P, 3, 3)` one step of the affine map of `(Δ, q, 1)`; see `_mode_factors`."""
    m = np.zeros((a.size, 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = 1 - a, -mu, 1.0
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = a, mu, -1.0
    m[:, 2, 2] = 1.0
    return m


def _mode_factors(a: np.ndarray, mu: float, t: np.ndarray) -> np.ndarray:
    """`Δ_i(t)` `(T, P)` with the error along mode `i` equal to `(1 − a_i Δ_i(t))` times its initial value.

    Heavy ball with `v ← μv − η∇L`, `θ ← θ + v` from `v = 0` gives, per mode with `a = ηλ/(nk)` and error `e_s`,
    `e_{s+1} − e_s = μ(e_s − e_{s−1}) − a e_s`. Writing `e_s = 1 − aΔ_s` and `q_s = (e_s − e_{s−1})/a`:
    `q_{s+1} = μq_s − 1 + aΔ_s`, `Δ_{s+1} = Δ_s − q_{s+1}` from `Δ_0 = q_0 = 0`, an affine map that stays exact at
    `a = 0`, raised to the power `t` by repeated squaring. Without momentum `Δ_t = (1 − (1 − a)^t)/a` in closed form.
    """
    t = np.asarray(t, np.int64)
    if mu == 0:
        c = 1 - a
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            pos = c > 0
            log_c = np.log(np.where(pos, c, 1.0))
            smooth = -np.expm1(t[:, None] * log_c) / np.where(a > 0, a, 1.0)
            general = (1 - np.power(c[None, :], t[:, None])) / np.where(a != 0, a, 1.0)
        out = np.where(pos, smooth, general)
        return np.where(a == 0, t[:, None].astype(np.float64), out)
    step = _affine(a, mu)
    result = np.broadcast_to(np.eye(3), (t.size, a.size, 3, 3)).copy()
    power = np.broadcast_to(step, (t.size, a.size, 3, 3)).copy()
    remaining = t.copy()
    while np.any(remaining > 0):
        odd = (remaining % 2 == 1)[:, None, None, None]
        result = np.where(odd, power @ result, result)
        remaining //= 2
        if np.any(remaining > 0):
            power = power @ power
    return result[:, :, 0, 2]  # Δ_t from (Δ_0, q_0, 1) = (0, 0, 1)


def _spectral_radius(a: np.ndarray, mu: float) -> np.ndarray:
    """Per mode, the largest |root| of `r² − (1 + μ − a) r + μ = 0` (`|1 − a|` for `μ = 0`)."""
    b = 1 + mu - a
    disc = b**2 - 4 * mu
    real = np.maximum(np.abs(b + np.sqrt(np.maximum(disc, 0))), np.abs(b - np.sqrt(np.maximum(disc, 0)))) / 2
    return np.where(a == 0, 1.0, np.where(disc >= 0, real, np.sqrt(mu)))


def _times(steps: Any, t: Any, decay_times: np.ndarray) -> np.ndarray:
    if steps is not None and t is not None:
        raise ValueError("Pass `steps` (the curve at 0, 1, ..., steps) or `t` (times in steps), not both.")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
            raise ValueError(f"`steps` must be a non-negative integer, got {steps!r}.")
        return np.arange(int(steps) + 1)
    if t is not None:
        arr = np.asarray(t)
        if arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr.astype(np.float64))):
            raise ValueError(f"`t` must be a non-empty finite scalar or 1-D sequence of steps, got {t!r}.")
        arr = np.atleast_1d(arr)
        if np.any(arr < 0) or np.any(arr != np.round(arr)):
            raise ValueError("`t` must hold non-negative whole numbers of steps (discrete gradient descent), got "
                             f"{arr.tolist()}.")
        return arr.astype(np.int64)
    finite = decay_times[np.isfinite(decay_times) & (decay_times > 0)]
    horizon = int(min(math.ceil(5 * finite.max()), _MAX_DEFAULT_STEPS)) if finite.size else 100
    return np.unique(np.concatenate([[0], np.round(np.geomspace(1, max(horizon, 1), 200))])).astype(np.int64)


def _first_crossing(a: np.ndarray, mu: float, power: np.ndarray, scale: float, target: float,
                    monotone: bool) -> int | None:
    """First step `s` with `scale · Σ_i (1 − a_i Δ_i(s))² power_i ≤ target`, or `None`."""

    def loss(s: np.ndarray) -> np.ndarray:
        e = 1 - a * _mode_factors(a, mu, s)
        return scale * np.sum(e**2 * power, axis=1)  # type: ignore[no-any-return]

    if loss(np.array([0]))[0] <= target:
        return 0
    if monotone:
        stuck = scale * float(np.sum(power[a == 0])) + scale * float(np.sum(power[np.isclose(a, 2.0)]))
        if stuck > target:
            return None
        hi = 1
        while loss(np.array([hi]))[0] > target:
            hi *= 2
            if hi > 2**62:
                return None
        lo = hi // 2  # loss(lo) > target
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if loss(np.array([mid]))[0] <= target else (mid, hi)
        return hi
    # Not monotone (momentum or a diverging mode). Stable dynamics settle at the power of the modes that never
    # decay; otherwise scan blocks of steps, the state (Δ, q, 1) of every mode advanced by precomputed powers.
    rho = _spectral_radius(a, mu)
    if np.all(rho <= 1) and scale * float(np.sum(power[rho >= 1])) > target:
        return None
    step = _affine(a, mu)
    size = max(8, min(_BLOCK, 2**20 // a.size))  # at most 2^20 3×3 matrices (75 MB) in a block
    powers = [np.broadcast_to(np.eye(3), step.shape)]
    for _ in range(size - 1):
        powers.append(step @ powers[-1])
    block = np.stack(powers)  # (B, P, 3, 3): M^0 ... M^{B-1}
    advance = step @ powers[-1]  # M^B
    state = np.zeros((a.size, 3))
    state[:, 2] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, _MAX_SCAN, size):
            delta = np.einsum("bpij,pj->bpi", block, state)[:, :, 0]
            losses = scale * np.sum((1 - a * delta) ** 2 * power, axis=1)
            hit = np.flatnonzero(losses <= target)
            if hit.size:
                return start + int(hit[0])
            if not np.all(np.isfinite(losses)):
                return None
            state = np.einsum("pij,pj->pi", advance, state)
    return None


def convergence(k_train: Any, y_train: Any, learning_rate: float, steps: int | None = None,
                t: int | Sequence[int] | None = None, k_test_train: Any = None, y_test: Any = None,
                target_loss: float | None = None, momentum: float = 0.0, *, fx_train_0: Any = None,
                fx_test_0: Any = None, trace_axes: TraceAxes = None) -> Convergence:
    r"""Per-mode time constants, loss curves and steps to a target loss of gradient descent with a constant NTK.

    With the loss `L = 1/(2nk) Σ‖f − y‖²` (`nk = y_train.size`) and a constant NTK `Θ = Σ_i λ_i v_i v_iᵀ` — an
    infinitely wide network, or a wide one in NTK parameterization up to `O(width^{-1/2})` (Jacot et al. 2018; Lee
    et al. 2019, "Wide neural networks of any depth evolve as linear models under gradient descent") — discrete
    full-batch gradient descent with learning rate `η` follows `f_{s+1}(X) − Y = (I − ηΘ/(nk))(f_s(X) − Y)`
    (docs/theory.md §3.5). The error along `v_i` is multiplied by `1 − ηλ_i/(nk)` per step, exactly: these are the
    discrete-step dynamics, not gradient flow's `e^{−τλ_i}` (equal to first order in `ηλ/(nk)`). On test inputs
    `f_t(x) = f₀(x) + Θ(x, X) Σ_i (1 − (1 − ηλ_i/(nk))^t)/λ_i · v_i v_iᵀ (Y − f₀(X))`.

    With heavy-ball momentum `μ` (`v ← μv − η∇L`, `θ ← θ + v` from `v = 0`, as `optax.sgd(η, momentum=μ)`) each
    mode follows the two-step recurrence `e_{s+1} = (1 + μ − a_i) e_s − μ e_{s−1}`, `e_1 = (1 − a_i) e_0`,
    `a_i = ηλ_i/(nk)` (Polyak 1964), computed exactly at every step; its asymptotic factor is the larger root's
    modulus, `√μ` once the mode oscillates.

    Above the critical rate `η_crit = 2(1 + μ)nk/λ_max` the top modes' factors exceed 1 and the predicted loss grows
    geometrically (`stable=False`). A real finite network leaves the constant-kernel regime there: up to about
    `2η_crit` it may "catapult" (the loss spikes, the kernel shrinks, then it converges; Lewkowycz et al. 2020), so
    the prediction describes only its first steps.

    Args:
      k_train: train-train NTK `(N, N)` or `(N, N, O_a, O_a', ...)`, empirical or analytic.
      y_train: targets `(N,)` or `(N, O_1, ..., O_d)`.
      learning_rate: `η > 0`.
      steps: the curves at `t = 0, 1, ..., steps`.
      t: or the curves at these times (whole numbers of steps). With neither, up to 5 time constants of the
        slowest decaying mode (at most 10⁴ steps) on a log-spaced grid.
      k_test_train: test-train NTK `(N_test, N, ...)` in the layout of `k_train`, for the test loss.
      y_test: test targets `(N_test, ...)` in the layout of `y_train`, for the test loss.
      target_loss: a train loss to reach; `steps_to_target` is the first step at or below it (exact, by bisection
        on the monotone curve without momentum; with momentum or above the critical rate by scanning at most 10⁶
        steps).
      momentum: heavy-ball `μ ∈ [0, 1)`.
      fx_train_0: initial train outputs `f₀(X)` in the layout of `y_train`; `None` means 0 (the mean of an
        infinite ensemble, or a network whose initial outputs are centred away).
      fx_test_0: initial test outputs `f₀(x)`; `None` means 0.
      trace_axes: output axes the kernels traced over; `None` infers them (see `spectrum`).

    Returns:
      A `Convergence`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import convergence
      >>> k = jnp.diag(jnp.array([4.0, 1.0]))
      >>> c = convergence(k, jnp.array([1.0, 1.0]), learning_rate=0.25, steps=2)
      >>> c.factors.tolist(), c.critical_learning_rate         # 1 - ηλ/n
      ([0.5, 0.875], 1.0)
      >>> c.train_loss.round(6).tolist()                        # (0.5^(2s) + 0.875^(2s)) / 4
      [0.5, 0.253906, 0.16217]
    """
    mat, n, paired = symmetric_matrix(k_train, "k_train")
    ymat = target_matrix(y_train, n, paired, trace_axes, "y_train")
    nk = ymat.size
    learning_rate = check_scalar(learning_rate, "learning_rate", positive=True)
    mu = check_scalar(momentum, "momentum")
    if mu >= 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {mu}.")
    f0 = 0.0 if fx_train_0 is None else target_matrix(fx_train_0, n, paired, trace_axes, "fx_train_0")
    evals, evecs = np.linalg.eigh(mat)
    evals, evecs = evals[::-1].copy(), evecs[:, ::-1].copy()
    critical = float(max_learning_rate(k_train, nk, mu, negative_eigenvalues="clip"))
    a = learning_rate * evals / nk
    a = np.where(np.abs(evals) <= rounding_level(evals, input_eps(k_train)), 0.0, a)  # zero modes, exactly
    proj = evecs.T @ (f0 - ymat)  # (P, R): initial residual along each mode
    power = np.sum(proj**2, axis=1)
    rho = _spectral_radius(a, mu)
    with np.errstate(divide="ignore"):
        tau = np.where(rho == 1, np.inf, -1 / np.log(np.where(rho == 1, 0.5, rho)))
    tau = np.where(rho == 0, 0.0, tau)
    times = _times(steps, t, np.where(power > 0, tau, np.nan))
    delta = _mode_factors(a, mu, times)  # (T, P)
    g = 1 - a * delta
    train_loss = np.sum(g**2 * power, axis=1) / (2 * nk)
    test_loss = None
    if (k_test_train is None) != (y_test is None):
        raise ValueError("Pass both `k_test_train` and `y_test` for the test loss, or neither.")
    if k_test_train is None and fx_test_0 is not None:
        raise ValueError("`fx_test_0` needs `k_test_train` and `y_test`.")
    if k_test_train is not None:
        kt, n_test, paired_t = kernel_matrix(k_test_train, "k_test_train", n2=n)
        if paired_t != paired:
            raise ValueError(f"`k_test_train` pairs output axes of sizes {paired_t}, `k_train` of sizes {paired}.")
        yt = target_matrix(y_test, n_test, paired, trace_axes, "y_test")
        if yt.shape[1] != ymat.shape[1]:
            raise ValueError(f"`y_test` has {yt.shape[1]} traced outputs per row, `y_train` {ymat.shape[1]}.")
        g0 = 0.0 if fx_test_0 is None else target_matrix(fx_test_0, n_test, paired, trace_axes, "fx_test_0")
        # f_t(x) − f₀(x) = Θ(x, X) Σ_i h_i(t) v_i v_iᵀ (Y − f₀(X)), h_i(t) = (1 − g_i(t))/λ_i = η Δ_i(t)/(nk).
        kv = kt @ evecs  # (N_test·M, P)
        h = learning_rate * delta / nk  # (T, P)
        moved = np.einsum("qp,tp,pr->tqr", kv, h, -proj)
        resid0 = g0 - yt
        test_loss = np.sum((resid0[None] + moved) ** 2, axis=(1, 2)) / (2 * yt.size)
    steps_to_target = None
    if target_loss is not None:
        target = check_scalar(target_loss, "target_loss")
        monotone = mu == 0 and bool(np.all(rho <= 1))
        steps_to_target = _first_crossing(a, mu, power, 1 / (2 * nk), target, monotone)
    stable = bool(learning_rate < critical and np.all(rho <= 1))
    return Convergence(evals, rho, tau, critical, stable, times, train_loss, test_loss, steps_to_target, power)
