"""A user model `f(params, x, **kwargs)` seen one example at a time or as a whole batch, and `Examples`, the batch
of a model taking a pytree of inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax


@jax.tree_util.register_pytree_node_class
class Examples:
    """A pytree of input arrays sharing the batch axis 0 (`(x_a, x_b)` of a two-input model), indexed and sized
    along that axis like one array, so the implementations tile, vmap and slice it unchanged."""

    def __init__(self, tree: Any):
        self.tree = tree

    def tree_flatten(self) -> tuple[list[Any], Any]:
        leaves, treedef = jax.tree_util.tree_flatten(self.tree)
        return leaves, treedef

    @classmethod
    def tree_unflatten(cls, treedef: Any, leaves: Any) -> Examples:
        return cls(jax.tree_util.tree_unflatten(treedef, leaves))

    def __getitem__(self, index: Any) -> Examples:
        return Examples(jax.tree_util.tree_map(lambda leaf: leaf[index], self.tree))

    @property
    def _first(self) -> Any:
        return jax.tree_util.tree_leaves(self.tree)[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """`(N,)`: the number of examples (the other axes differ between leaves)."""
        return (self._first.shape[0],)

    @property
    def dtype(self) -> Any:
        return self._first.dtype

    def shapes(self) -> Any:
        """The pytree of the leaves' shapes."""
        return jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), self.tree)


def unwrap(x: Any) -> Any:
    """What `f` takes: the pytree inside `Examples`, or `x` itself."""
    return x.tree if isinstance(x, Examples) else x


@dataclass(frozen=True)
class Model:
    """Wraps `f` with the knowledge of whether examples are independent.

    `per_example=True` (from `vmap_axes=0`) promises that `f` applied to a batch equals `f` applied to each
    example and stacked, so derivatives are taken one example at a time under `vmap`: an `N × O` Jacobian
    costs `N · O` single-example backward passes instead of `N · O` whole-batch ones.
    """

    f: Callable[..., Any]
    per_example: bool

    def batch(self, params, x, kwargs):
        return self.f(params, unwrap(x), **kwargs)

    def single(self, params, x, kwargs):
        """`f` on one example `x` (no batch axis); the batch axis is added and removed around the call."""
        return self.f(params, unwrap(x[None]), **kwargs)[0]

    def outputs(self, params, x, kwargs):
        """`f` on the batch `x` as every implementation sees it: one example at a time when `per_example` (so a
        model drawing random masks from an `rng` keyword gives the same outputs to all implementations)."""
        if self.per_example:
            return jax.vmap(lambda xi: self.single(params, xi, kwargs))(x)
        return self.batch(params, x, kwargs)


def output_shape(model: Model, params, x, kwargs) -> tuple[int, ...]:
    """Shape of `f(params, x)` after checking the output is one array with the batch axis first."""
    out = jax.eval_shape(lambda p, xx: model.batch(p, xx, kwargs), params, x)
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(
            f"`f(params, x)` must return a single array with the batch axis first, got {type(out).__name__}."
        )
    if len(out.shape) == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"`f(params, x)` must return an array with the batch axis first: for x of shape "
            f"{x.shapes() if isinstance(x, Examples) else x.shape} "
            f"it returned shape {out.shape}."
        )
    return tuple(out.shape)
