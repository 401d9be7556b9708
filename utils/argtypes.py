"""argparse types for numeric flags: a bad value ends in argparse's one-line usage error, not a traceback.

    p.add_argument("--port", type=int_in(0, 65535), default=8080)
    p.add_argument("--deadline-ms", type=positive(float), default=30.0)
    p.add_argument("--max-frames", type=int_in(1), default=None)
"""

from __future__ import annotations

import argparse
import math


def number_in(kind=float, lo: float | None = None, hi: float | None = None, *, above: bool = False):
    """A ``type=`` callable: ``kind(text)`` within [lo, hi] (``above=True``: strictly greater than lo)."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if lo is not None and (value <= lo if above else value < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {lo}, got {text}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def int_in(lo: int | None = None, hi: int | None = None):
    """An integer within [lo, hi]."""
    return number_in(int, lo, hi)


def positive(kind=float):
    """A number > 0."""
    return number_in(kind, 0, above=True)


def non_negative(kind=float):
    """A number >= 0."""
    return number_in(kind, 0)
