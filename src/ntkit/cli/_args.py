"""Option types shared by the commands: `argparse` `type=` functions with messages naming what is expected."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _float(text: str, positive: bool) -> float:
    kind = "positive" if positive else "non-negative"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a {kind} number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"must be a finite {kind} number, got {text}")
    return value


def positive_float(text: str) -> float:
    return _float(text, positive=True)


def non_negative_float(text: str) -> float:
    return _float(text, positive=False)
