"""The `Kernel(nngp, ntk)` named tuple that every stage returns, and the parsing of `get` that selects from it."""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

Get = Literal["nngp", "ntk"]
GETS: tuple[Get, ...] = ("nngp", "ntk")
STATE_GETS: tuple[str, ...] = GETS + (
    "cov1", "cov2", "shape1", "shape2", "x1_is_x2", "is_gaussian", "is_reversed", "is_input", "diagonal_batch",
    "diagonal_spatial", "batch_axis", "channel_axis", "mask1", "mask2")
"""What `get` may name of an analytic kernel function: neural-tangents' `Kernel` fields."""


class Kernel(NamedTuple):
    """NNGP and NTK of the same inputs, `(N1, N2, ...)` each; a field is `None` when it was not asked for."""

    nngp: Any = None
    ntk: Any = None


def parse_get(get: Any, allowed: tuple[str, ...] = GETS, allow_none: bool = False) -> tuple[tuple[str, ...], bool]:
    """`(gets, single)`: the requested kernels as a tuple (lower case) and whether one string was given.

    `get=None` means every kernel of `allowed` when `allow_none`, and is an error otherwise.
    """
    if get is None:
        if allow_none:
            return tuple(allowed), False
        raise ValueError(f"`get` must be one of {allowed} or a tuple of them, got None.")
    single = isinstance(get, str)
    try:
        gets = (get,) if single else tuple(get)
    except TypeError:
        gets = ()
    gets = tuple(g.lower() if isinstance(g, str) else g for g in gets)
    if not gets or any(g not in allowed for g in gets) or len(set(gets)) != len(gets):
        also = ", or None" if allow_none else ""
        raise ValueError(f"`get` must be one of {allowed}, a tuple of them without repeats{also}; got {get!r}.")
    return gets, single


@functools.cache
def fields_tuple(fields: tuple[str, ...]) -> type:
    """A named tuple type `Kernel` with these fields, for a `get` naming fields other than `nngp` and `ntk` (as
    neural-tangents returns for `get=("nngp", "cov1")`)."""
    return collections.namedtuple("Kernel", fields)


def select(values: Mapping[str, Any], gets: tuple[str, ...], single: bool) -> Any:
    """The array of the one requested kernel when `single`, else a `Kernel` with `None` where not requested; for
    `get=("ntk", "nngp")` a named tuple with the fields in that order (as neural-tangents), so that
    `ntk, nngp = kernel_fn(x1, x2, ("ntk", "nngp"))` unpacks them in the order asked for."""
    if single:
        return values[gets[0]]
    if list(gets) != sorted(gets, key=GETS.index):
        return fields_tuple(tuple(gets))(*(values[g] for g in gets))
    return Kernel(**{g: values[g] if g in gets else None for g in GETS})
