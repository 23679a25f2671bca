"""neural-tangents' option enums. Members are strings, so `Padding.SAME == "SAME"` and either form is accepted."""

from __future__ import annotations

import enum
from typing import Any


class Padding(enum.StrEnum):
    """Padding of convolutions and pooling (`padding=Padding.SAME` or `padding="SAME"`)."""

    CIRCULAR = "CIRCULAR"
    SAME = "SAME"
    VALID = "VALID"


class AttentionMechanism(enum.StrEnum):
    """Attention of `GlobalSelfAttention`; ntkit has kernels for `SOFTMAX` and `IDENTITY` (`ABS` and `RELU`, listed
    for neural-tangents code, raise when used)."""

    SOFTMAX = "SOFTMAX"
    IDENTITY = "IDENTITY"
    ABS = "ABS"
    RELU = "RELU"


def plain(value: Any) -> Any:
    """The string of an option enum member (layers store plain strings); anything else unchanged."""
    return value.value if isinstance(value, enum.Enum) else value


class PositionalEmbedding(enum.StrEnum):
    """Positional embeddings of `GlobalSelfAttention`; ntkit supports `NONE` only (the others raise)."""

    NONE = "NONE"
    SUM = "SUM"
    CONCAT = "CONCAT"


class AggregateImplementation(enum.StrEnum):
    """Pattern format of `Aggregate`: `DENSE` (an adjacency tensor) or `SPARSE` (edge lists); see `Aggregate`."""

    DENSE = "DENSE"
    SPARSE = "SPARSE"
