"""neural-tangents' layout arguments (`batch_axis`, `channel_axis`, `dimension_numbers`): ntkit lays activations
out batch first and channels last, and accepts these arguments where they name that layout."""

from __future__ import annotations

import numbers
from typing import Any

_SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def check_axis_argument(value: Any, name: str, layer: str) -> None:
    """At construction: an integer axis."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{layer}: `{name}` must be an integer axis, got {value!r}.")


def check_layout(batch_axis: int, channel_axis: int | None, ndim: int, layer: str) -> None:
    """On inputs of `ndim` axes: `batch_axis` must be the first and `channel_axis` (if any) the last."""
    if batch_axis % ndim != 0:
        raise NotImplementedError(
            f"{layer}: `batch_axis={batch_axis}` on inputs with {ndim} axes: ntkit keeps the batch axis first "
            "(transpose the inputs once, e.g. with jnp.moveaxis).")
    if channel_axis is not None and channel_axis % ndim != ndim - 1:
        raise NotImplementedError(
            f"{layer}: `channel_axis={channel_axis}` on inputs with {ndim} axes: ntkit keeps channels last "
            "(transpose the inputs once, e.g. with jnp.moveaxis).")


def check_dimension_numbers(dimension_numbers: Any, n_spatial: int, layer: str) -> None:
    """`None` or the channels-last `("N…C", "…IO", "N…C")` of `jax.lax.conv_general_dilated` (neural-tangents'
    default); other layouts raise `NotImplementedError`."""
    if dimension_numbers is None:
        return
    sp = _SPATIAL_LETTERS[n_spatial]
    default = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
    try:
        given = tuple(dimension_numbers)
    except TypeError as err:
        raise TypeError(f"{layer}: `dimension_numbers` must be None or a tuple of three strings, got "
                        f"{dimension_numbers!r}.") from err
    if given != default:
        raise NotImplementedError(f"{layer}: `dimension_numbers={given}`: ntkit supports the channels-last layout "
                                  f"{default} only (transpose inputs and filters once).")
