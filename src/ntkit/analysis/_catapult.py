"""Learning rates of gradient descent on the mean squared loss: the lazy phase, the catapult phase, divergence.

With the loss `1/(2nk) Σ ‖f − y‖²` (n examples, k outputs) and NTK `Θ` on the training set, a model whose kernel
stays constant converges iff `η < η_crit = 2nk/λ_max(Θ)` (docs/theory.md §3.5). Lewkowycz, Bahri, Dyer,
Sohl-Dickstein & Gur-Ari 2020 ("The large learning rate phase of deep learning: the catapult mechanism") showed that
finite-width networks also train for `η_crit < η < η_max`: the loss first grows exponentially, the kernel's top
eigenvalue then drops until `η < 2nk/λ_max(Θ_t)`, and training converges in a flatter region — the catapult phase.
In their two-layer linear ("uv") model `η_max = 4nk/λ_max` exactly; for ReLU networks they measured `η_max` up to
about `12nk/λ_max`. Above `η_max` training diverges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..empirical import empirical_ntk_fn
from ..predict import max_learning_rate

UV_MAX_FACTOR = 4.0
"""`η_max = 4nk/λ_max`: exact for the two-layer linear model of Lewkowycz et al. 2020 (a conservative default)."""

RELU_MAX_FACTOR = 12.0
"""`η_max ≈ 12nk/λ_max`: what Lewkowycz et al. 2020 measured for wide ReLU networks (an empirical upper value)."""


class CatapultWindow(NamedTuple):
    """Learning-rate regimes of gradient descent on the mean squared loss (Lewkowycz et al. 2020).

    Attributes:
      lambda_max: top eigenvalue of the training NTK.
      eta_crit: `2nk/λ_max`: below it, lazy training (the loss decreases monotonically, the kernel barely moves).
      eta_max: `max_factor · nk/λ_max`: between `eta_crit` and it, the catapult phase; above it, divergence.
      max_factor: the factor used for `eta_max` (4: two-layer linear model, exact; ~12: ReLU networks, measured).
      advice: the same in plain words.
    """

    lambda_max: float
    eta_crit: float
    eta_max: float
    max_factor: float
    advice: str

    def regime(self, learning_rate: float) -> str:
        """`"lazy"` (`η < η_crit`), `"catapult"` (`η_crit ≤ η < η_max`) or `"divergent"` (`η ≥ η_max`)."""
        if learning_rate < self.eta_crit:
            return "lazy"
        return "catapult" if learning_rate < self.eta_max else "divergent"


def catapult_window(k_train_train: Any, y_train_size: int | None = None, *, max_factor: float = UV_MAX_FACTOR,
                    negative_eigenvalues: Any = "warn") -> CatapultWindow:
    """The lazy, catapult and divergent learning-rate ranges of full-batch gradient descent on the MSE.

    `η_crit = 2nk/λ_max(Θ)` (`ntkit.predict.max_learning_rate`) and `η_max = max_factor · nk/λ_max` (Lewkowycz et
    al. 2020, see the module docstring). Assumptions: full-batch gradient descent without momentum on the loss
    `1/(2nk) Σ ‖f − y‖²`, `Θ` the empirical NTK of the network at initialization on the training set, and a wide
    network (NTK parameterization): the window's edges are asymptotic and `η_max` depends on the architecture (4 in
    the two-layer linear model, measured up to ~12 for ReLU networks, `RELU_MAX_FACTOR`). Check them on your
    network with `learning_rate_sweep`.

    Args:
      k_train_train: train-train NTK `(N, N)` or `(N, N, O, O')`, as for `ntkit.predict.max_learning_rate`.
      y_train_size: `nk`, `y_train.size`; `None` means the side of the kernel as a matrix.
      max_factor: `η_max λ_max/(nk)`, above 2.
      negative_eigenvalues: as for `max_learning_rate`.

    Returns:
      A `CatapultWindow`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntkit.analysis import catapult_window
      >>> w = catapult_window(jnp.array([[2.0, 0.5], [0.5, 1.0]]), y_train_size=2)
      >>> round(w.eta_crit, 3), round(w.eta_max, 3), w.regime(2.5)
      (1.812, 3.625, 'catapult')
    """
    if isinstance(max_factor, bool) or not isinstance(max_factor, int | float) or not 2 < max_factor < math.inf:
        raise ValueError(f"`max_factor` must be a finite number above 2, got {max_factor!r}.")
    eta_crit = float(max_learning_rate(k_train_train, y_train_size, negative_eigenvalues=negative_eigenvalues))
    k = np.asarray(k_train_train)
    nk = int(np.prod(k.shape[::2])) if y_train_size is None else int(y_train_size)
    lam = 2.0 * nk / eta_crit
    eta_max = float(max_factor) / 2 * eta_crit
    advice = (f"Full-batch gradient descent on the mean squared loss with top NTK eigenvalue {lam:.4g} and nk = {nk} "
              f"targets: below eta_crit = {eta_crit:.4g} training is lazy (the loss decreases steadily and the "
              f"kernel barely moves); between {eta_crit:.4g} and about eta_max = {eta_max:.4g} ({max_factor:g}nk/"
              "lambda_max) is the catapult phase: the loss first spikes, the top eigenvalue of the kernel drops "
              "until the rate is stable for it, and training then converges, often to flatter, better-generalizing "
              f"solutions (Lewkowycz et al. 2020); above eta_max it diverges. The upper edge depends on the "
              f"architecture ({UV_MAX_FACTOR:g}nk/lambda_max in the two-layer linear model, up to about "
              f"{RELU_MAX_FACTOR:g}nk/lambda_max measured for ReLU networks): check it with learning_rate_sweep.")
    return CatapultWindow(lam, eta_crit, eta_max, float(max_factor), advice)


class LearningRateSweep(NamedTuple):
    """Short full-batch gradient-descent runs at each learning rate, from the same initialization.

    Attributes:
      learning_rates: `(R,)`.
      losses: `(R, steps + 1)` the loss `1/(2nk) Σ ‖f − y‖²` before each step and after the last.
      final_loss: `(R,)`.
      max_loss: `(R,)` the largest loss along the run (a spike above `losses[:, 0]` is the catapult).
      spiked: `(R,)` whether the loss rose above its initial value at some step.
      diverged: `(R,)` whether the final loss is not finite or not below the initial one.
      lambda_max_init: top eigenvalue of the empirical NTK at initialization.
      lambda_max_final: `(R,)` top eigenvalue after training (`nan` where diverged).
      predicted: `catapult_window` of the NTK at initialization.
      measured_window: `(lowest rate that spiked and converged, highest rate that converged)` among the rates tried
        (`nan` where none did).
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    final_loss: np.ndarray
    max_loss: np.ndarray
    spiked: np.ndarray
    diverged: np.ndarray
    lambda_max_init: float
    lambda_max_final: np.ndarray
    predicted: CatapultWindow
    measured_window: tuple[float, float]


def _mse(apply_fn: Callable, params: Any, x: Any, y: Any, kwargs: dict[str, Any]) -> jax.Array:
    diff = apply_fn(params, x, **kwargs) - y
    return 0.5 * jnp.mean(diff * diff)


def _train(apply_fn: Callable, params: Any, x: Any, y: Any, learning_rate: Any, steps: int,
           kwargs: dict[str, Any]) -> tuple[Any, jax.Array]:
    grad_fn = jax.value_and_grad(lambda p: _mse(apply_fn, p, x, y, kwargs))

    def step(p, _):
        loss, g = grad_fn(p)
        return jax.tree_util.tree_map(lambda a, b: a - learning_rate * b, p, g), loss

    params, losses = jax.lax.scan(step, params, None, length=steps)
    return params, jnp.concatenate([losses, _mse(apply_fn, params, x, y, kwargs)[None]])


def _top_eigenvalue(ntk_fn: Any, x: Any, params: Any) -> float:
    k = np.asarray(ntk_fn(x, None, params), dtype=np.float64)
    side = int(np.prod(k.shape[::2]))
    perm = (*range(0, k.ndim, 2), *range(1, k.ndim, 2))
    mat = np.transpose(k, perm).reshape(side, side)
    return float(np.linalg.eigvalsh((mat + mat.T) / 2)[-1])


def learning_rate_sweep(init_fn: Callable, apply_fn: Callable, x: Any, y: Any, learning_rates: Sequence[float],
                        steps: int, key: Any, *, max_factor: float = UV_MAX_FACTOR,
                        ntk_kwargs: dict[str, Any] | None = None, **apply_kwargs: Any) -> LearningRateSweep:
    """Train a finite network briefly at each learning rate and compare with the predicted catapult window.

    Every run starts from the same parameters `init_fn(key, x.shape)[1]` and takes `steps` full-batch gradient
    steps on `1/(2nk) Σ ‖f(x) − y‖²` (Lewkowycz et al. 2020's setting; see `catapult_window`). The empirical NTK
    (`ntkit.empirical_ntk_fn(apply_fn, **ntk_kwargs)`, traced over the last output axis) gives `λ_max` at
    initialization, the predicted window, and `λ_max` after each converged run: in the catapult phase it ends
    below `2nk/η`.

    Args:
      init_fn: `(key, input_shape) -> (output_shape, params)`, e.g. from an `ntkit.nn` network.
      apply_fn: `(params, x, **apply_kwargs) -> (N, k)` outputs.
      x: training inputs `(N, ...)`.
      y: targets of the shape of `apply_fn`'s output.
      learning_rates: the rates to try, positive.
      steps: gradient steps per rate.
      key: a JAX PRNG key for `init_fn`.
      max_factor: as in `catapult_window`.
      ntk_kwargs: passed to `empirical_ntk_fn` (e.g. `{"vmap_axes": 0}` when examples are independent).
      **apply_kwargs: passed to `apply_fn`.

    Returns:
      A `LearningRateSweep`.
    """
    rates = np.asarray(learning_rates, dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0 or not np.all(np.isfinite(rates)) or np.any(rates <= 0):
        raise ValueError(f"`learning_rates` must be a non-empty 1-D sequence of positive numbers, got {rates!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    x, y = jnp.asarray(x), jnp.asarray(y)
    _, params0 = init_fn(key, x.shape)
    out = apply_fn(params0, x, **apply_kwargs)
    if out.shape != y.shape:
        raise ValueError(f"`y` must have the shape of the network's output on `x`, {out.shape}, got {y.shape}.")
    ntk_fn = empirical_ntk_fn(apply_fn, **(ntk_kwargs or {}))
    k0 = ntk_fn(x, None, params0, **apply_kwargs)
    window = catapult_window(k0, int(y.size), max_factor=max_factor)
    train = jax.jit(lambda p, lr: _train(apply_fn, p, x, y, lr, steps, apply_kwargs))
    losses, lam_final = [], []
    for lr in rates:
        params, loss = train(params0, jnp.asarray(lr, out.dtype))
        loss = np.asarray(loss, dtype=np.float64)
        losses.append(loss)
        ok = np.isfinite(loss[-1]) and loss[-1] < loss[0]
        lam_final.append(_top_eigenvalue(lambda a, b, p: ntk_fn(a, b, p, **apply_kwargs), x, params) if ok
                         else math.nan)
    loss_arr = np.stack(losses)
    with np.errstate(invalid="ignore"):
        final, peak = loss_arr[:, -1], np.max(np.where(np.isfinite(loss_arr), loss_arr, np.inf), axis=1)
        diverged = ~np.isfinite(final) | (final >= loss_arr[:, 0])
        spiked = peak > loss_arr[:, 0]
    good = ~diverged
    lower = rates[spiked & good]
    measured = (float(lower.min()) if lower.size else math.nan, float(rates[good].max()) if good.any() else math.nan)
    return LearningRateSweep(rates, loss_arr, final, peak, spiked, diverged, window.lambda_max, np.asarray(lam_final),
                             window, measured)
