"""Lazy versus rich training, measured in the user's own training loop: how far the NTK and the weights move.

In the lazy (kernel) regime the empirical NTK stays at its initial value, the weights barely move relative to their
size, and the network stays close to its linearization at initialization (Jacot et al. 2018; Lee et al. 2019; Chizat,
Oyallon & Bach 2019, "On lazy training in differentiable programming"). In the rich (feature-learning) regime the
kernel moves, fast early on, and aligns with the targets (Fort et al. 2020, "Deep learning versus kernel learning:
an empirical study of loss landscape geometry and the time evolution of the Neural Tangent Kernel"; Baratin et al.
2021, "Implicit regularization via neural feature alignment"). `KernelTracker` records these quantities on a fixed
probe set at scheduled steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..empirical import empirical_ntk_fn, linearize

DEFAULT_EVERY = 100
DEFAULT_PROBE_SIZE = 32


class TrackerHistory(NamedTuple):
    """What `KernelTracker` recorded, one entry per recorded step (`(T,)` float64 arrays).

    Attributes:
      step: the training steps recorded (the first is the initialization, given as `step0`).
      kernel_distance: `1 − ⟨Θ_t, Θ_0⟩_F/(‖Θ_t‖_F ‖Θ_0‖_F)` (Fort et al. 2020): 0 for an unchanged kernel, at most 1
        (positive semi-definite kernels) — small means lazy.
      kernel_velocity: the same distance between consecutive recorded kernels, divided by the steps between them
        (`nan` at the first record).
      alignment: centred kernel–target alignment `⟨HΘH, HYYᵀH⟩_F/(‖HΘH‖_F ‖HYYᵀH‖_F)`, `H = I − 11ᵀ/N` (Cortes,
        Mohri & Rostamizadeh 2012), `nan` without `probe_y`.
      weight_change: `‖θ_t − θ_0‖/‖θ_0‖` over all parameters.
      linearization_gap: `‖f(θ_t) − f_lin(θ_t)‖/√(N k)`, the root-mean-square difference on the probe between the
        network and its linearization at `θ_0` (`ntkit.linearize`) at the same parameters.
      output_change: `‖f(θ_t) − f(θ_0)‖/√(N k)`, for scale: a gap much smaller than it means the function moved
        as the linearized model does.
    """

    step: np.ndarray
    kernel_distance: np.ndarray
    kernel_velocity: np.ndarray
    alignment: np.ndarray
    weight_change: np.ndarray
    linearization_gap: np.ndarray
    output_change: np.ndarray


def kernel_distance(k1: Any, k2: Any) -> float:
    """`1 − ⟨K₁, K₂⟩_F/(‖K₁‖_F ‖K₂‖_F)`, in float64."""
    a, b = np.asarray(k1, np.float64).ravel(), np.asarray(k2, np.float64).ravel()
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def centred_alignment(k: Any, y: Any) -> float:
    """Centred kernel–target alignment of an `(N, N)` kernel with targets `(N, ...)` (Cortes et al. 2012)."""
    k = np.asarray(k, np.float64)
    y = np.asarray(y, np.float64).reshape(k.shape[0], -1)
    kc = k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()
    yc = y - y.mean(0, keepdims=True)
    target = yc @ yc.T
    return float(np.sum(kc * target) / (np.linalg.norm(kc) * np.linalg.norm(target)))


def _tree_norm(tree: Any) -> jax.Array:
    leaves = [jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.sqrt(sum(leaves[1:], leaves[0]))


def _independent(apply_fn: Callable, x: Any, params: Any, kwargs: dict[str, Any]) -> bool:
    """Whether the outputs on two examples are the same computed together and apart (no batch statistics)."""
    if not isinstance(x, jax.Array | np.ndarray):
        return False
    together = np.asarray(apply_fn(params, x[:2], **kwargs))
    apart = np.concatenate([np.asarray(apply_fn(params, x[i:i + 1], **kwargs)) for i in range(2)])
    if together.shape != apart.shape or not np.issubdtype(together.dtype, np.floating):
        return False
    tol = 100 * float(np.finfo(together.dtype).eps)
    return bool(np.allclose(together, apart, rtol=tol, atol=tol * float(np.max(np.abs(together), initial=0.0))))


class KernelTracker:
    """Records how lazily a network trains, from inside any training loop (plain JAX, Optax, Flax, Equinox).

    At construction the empirical NTK `Θ_0` of `apply_fn` at `params0` is computed on a fixed probe set (the first
    `probe_size` rows of `probe_x`); then `tracker.update(step, params)` in the loop records, at the scheduled
    steps only, the quantities of `TrackerHistory`. Off schedule `update` is a set lookup: it does not touch
    `params` (no device synchronization). Each record costs one empirical NTK of the probe (`(P, P)`, through
    `ntkit.empirical_ntk_fn`, traced over the last output axis), one forward pass and one Jacobian-vector product;
    construction compiles them once (about a second on a CPU), which short runs feel most (see
    `benchmarks/tracker_overhead.py`).

    Args:
      apply_fn: `(params, x, **apply_kwargs) -> (N, ..., k)` outputs; `params` any pytree of floating arrays
        (Flax variables, an Equinox model's arrays from `eqx.partition`, a dict).
      probe_x: inputs `(N, ...)`; the first `probe_size` are the probe.
      params0: the parameters at initialization (the reference of every distance).
      probe_y: targets of the probe inputs (`(N, ...)`, the same first rows are used) for the alignment, or `None`.
      every: record at steps that are multiples of it (an int), or at the steps of an iterable of ints.
      probe_size: how many probe inputs to use (default 32; with `every=100`, each record costs a few percent of
        the 100 steps of a width-1024 MLP it follows, see `benchmarks/tracker_overhead.py`).
      step0: the step number of `params0`.
      ntk_kwargs: passed to `ntkit.empirical_ntk_fn`. Without `vmap_axes` there, it is `0` (derivatives one example
        at a time, about 100x faster on an MLP) when the outputs on two probe examples are the same computed
        together and apart, else `None` (batch statistics).
      **apply_kwargs: passed to `apply_fn`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ntkit.analysis import KernelTracker
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"] / 8
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> p = {"w1": jax.random.normal(k1, (3, 64)), "w2": jax.random.normal(k2, (64, 1))}
      >>> x = jax.random.normal(k2, (16, 3)); y = jnp.sin(x[:, :1])
      >>> tracker = KernelTracker(f, x, p, probe_y=y, every=10)
      >>> grad = jax.jit(jax.grad(lambda p: jnp.mean((f(p, x) - y) ** 2)))
      >>> for step in range(1, 51):
      ...     p = jax.tree_util.tree_map(lambda a, g: a - 0.5 * g, p, grad(p))
      ...     _ = tracker.update(step, p)
      >>> h = tracker.history
      >>> h.step.tolist()
      [0, 10, 20, 30, 40, 50]
      >>> bool(h.kernel_distance[-1] < 0.05)                # the kernel barely moved: lazy
      True
      >>> bool(h.linearization_gap[-1] < 0.2 * h.output_change[-1])
      True
    """

    def __init__(self, apply_fn: Callable, probe_x: Any, params0: Any, *, probe_y: Any = None,
                 every: int | Iterable[int] = DEFAULT_EVERY, probe_size: int = DEFAULT_PROBE_SIZE, step0: int = 0,
                 ntk_kwargs: dict[str, Any] | None = None, **apply_kwargs: Any):
        if not callable(apply_fn):
            raise TypeError(f"`apply_fn` must be a function (params, x) -> outputs, got {apply_fn!r}.")
        if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 2:
            raise ValueError(f"`probe_size` must be an integer of at least 2, got {probe_size!r}.")
        if isinstance(every, int) and not isinstance(every, bool):
            if every < 1:
                raise ValueError(f"`every` must be a positive integer or an iterable of steps, got {every!r}.")
            self._every: int | None = every
            self._steps: frozenset[int] = frozenset()
        else:
            try:
                steps = frozenset(int(s) for s in every)  # type: ignore[union-attr]
            except (TypeError, ValueError) as err:
                raise ValueError(f"`every` must be a positive integer or an iterable of steps, got {every!r}.") \
                    from err
            self._every, self._steps = None, steps
        leaves = jax.tree_util.tree_leaves(params0)
        if not leaves or not all(jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact) for v in leaves):
            raise TypeError("`params0` must be a non-empty pytree of floating arrays (for Equinox, the arrays from "
                            "`eqx.partition(model, eqx.is_inexact_array)`).")
        x = probe_x[:probe_size]
        if jax.tree_util.tree_leaves(x)[0].shape[0] < 2:
            raise ValueError("`probe_x` must hold at least 2 inputs (batch axis first).")
        self._x, self._params0, self._kwargs = x, params0, apply_kwargs
        self._y = None if probe_y is None else np.asarray(probe_y)[:probe_size]
        ntk_kwargs = dict(ntk_kwargs or {})
        if "vmap_axes" not in ntk_kwargs:
            ntk_kwargs["vmap_axes"] = 0 if _independent(apply_fn, x, params0, apply_kwargs) else None
        ntk_fn = empirical_ntk_fn(apply_fn, **ntk_kwargs)
        f_lin = linearize(lambda p, xx: apply_fn(p, xx, **apply_kwargs), params0)
        norm0 = _tree_norm(params0)

        def measure(params):
            ntk = ntk_fn(x, None, params, **apply_kwargs)
            f = apply_fn(params, x, **apply_kwargs)
            f0 = apply_fn(params0, x, **apply_kwargs)
            delta = jax.tree_util.tree_map(lambda a, b: a - b, params, params0)
            gap = jnp.sqrt(jnp.mean(jnp.square(f - f_lin(params, x))))
            moved = jnp.sqrt(jnp.mean(jnp.square(f - f0)))
            return ntk, _tree_norm(delta) / norm0, gap, moved

        self._measure = jax.jit(measure)
        ntk0, *_ = self._measure(params0)
        self._ntk0 = np.asarray(ntk0, np.float64)
        if self._y is not None and self._y.shape[0] != self._ntk0.shape[0]:
            raise ValueError(f"`probe_y` must have one row per probe input ({self._ntk0.shape[0]}), got shape "
                             f"{self._y.shape}.")
        self._prev: tuple[int, np.ndarray] = (int(step0), self._ntk0)
        self._records: list[tuple[float, ...]] = []
        self._append(int(step0), self._ntk0, 0.0, math.nan, 0.0, 0.0, 0.0)

    def scheduled(self, step: int) -> bool:
        """Whether `update(step, ...)` records."""
        return step % self._every == 0 if self._every is not None else step in self._steps

    def _append(self, step: int, ntk: np.ndarray, distance: float, velocity: float, weight: float, gap: float,
                moved: float) -> None:
        align = math.nan if self._y is None else centred_alignment(ntk, self._y)
        self._records.append((step, distance, velocity, align, weight, gap, moved))

    def update(self, step: int, params: Any) -> bool:
        """Record at `step` if it is on the schedule (and not recorded yet); returns whether it recorded."""
        if not self.scheduled(step) or step == self._prev[0]:
            return False
        ntk, weight, gap, moved = self._measure(params)
        ntk = np.asarray(ntk, np.float64)
        prev_step, prev_ntk = self._prev
        velocity = kernel_distance(ntk, prev_ntk) / abs(step - prev_step)
        self._append(int(step), ntk, kernel_distance(ntk, self._ntk0), velocity, float(weight), float(gap),
                     float(moved))
        self._prev = (int(step), ntk)
        return True

    @property
    def kernel0(self) -> np.ndarray:
        """`Θ_0` on the probe, `(P, P)` (or with output axes, as `empirical_ntk_fn` lays them out)."""
        return self._ntk0

    @property
    def kernel(self) -> np.ndarray:
        """The most recently recorded kernel on the probe."""
        return self._prev[1]

    @property
    def history(self) -> TrackerHistory:
        """Everything recorded so far, as a `TrackerHistory` of float64 arrays (`step` as integers)."""
        cols = list(zip(*self._records, strict=True))
        return TrackerHistory(np.asarray(cols[0], dtype=np.int64), *(np.asarray(c, np.float64) for c in cols[1:]))


def plot_tracker(history: TrackerHistory, axes: Any = None):
    """Plot a `TrackerHistory`: kernel distance and velocity, alignment, weight change and linearization gap.

    Needs matplotlib (`pip install 'ntkit[plot]'`).

    Args:
      history: `tracker.history`.
      axes: three matplotlib `Axes`, or `None` for a new figure's row of three.

    Returns:
      The three `Axes`.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("plot_tracker needs matplotlib: pip install 'ntkit[plot]'") from err
    if not isinstance(history, TrackerHistory):
        raise TypeError(f"`history` must be a TrackerHistory (`tracker.history`), got {type(history).__name__}.")
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes = list(np.ravel(axes))
    if len(axes) != 3:
        raise ValueError(f"`axes` must hold 3 Axes, got {len(axes)}.")
    s = history.step
    axes[0].plot(s, history.kernel_distance, "o-", label="distance from Θ₀")
    axes[0].plot(s, history.kernel_velocity, "s--", label="velocity (per step)")
    axes[0].set_yscale("symlog", linthresh=1e-6)
    axes[0].set_title("kernel")
    axes[1].plot(s, history.alignment, "o-")
    axes[1].set_title("centred kernel–target alignment")
    axes[2].plot(s, history.weight_change, "o-", label="‖θ − θ₀‖/‖θ₀‖")
    axes[2].plot(s, history.linearization_gap, "s--", label="‖f − f_lin‖ (RMS)")
    axes[2].plot(s, history.output_change, "^:", label="‖f − f₀‖ (RMS)")
    axes[2].set_title("weights and function")
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].legend(fontsize="small")
    axes[2].legend(fontsize="small")
    return axes
