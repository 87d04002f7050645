"""Number options of the simulator's commands: finite and in range, or a usage error.

``type=float`` takes ``nan`` and ``inf`` (and ``-1``) without a word; a simulated device
run at speed nan, or a page laid every 0 s, is a broken run rather than a test. These
argparse types refuse them with a one-line message naming the range.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(low: float | None = None, high: float | None = None, *, above: bool = False,
           unit: str = "") -> Callable[[str], float]:
    """A finite float with ``low <= x <= high`` (``above``: ``low < x``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
        _check(value, text, low, high, above, unit)
        return value
    return parse


def integer(low: int | None = None, high: int | None = None, *, unit: str = ""
            ) -> Callable[[str], int]:
    """A whole number with ``low <= n <= high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
        _check(value, text, low, high, False, unit)
        return value
    return parse


def _check(value: float, text: str, low: float | None, high: float | None, above: bool,
           unit: str) -> None:
    bad = not math.isfinite(value)
    bad = bad or (low is not None and (value <= low if above else value < low))
    bad = bad or (high is not None and value > high)
    if bad:
        lo = "" if low is None else (f"> {low:g}" if above else f">= {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        rng = " and ".join(p for p in (lo, hi) if p) or "finite"
        raise argparse.ArgumentTypeError(f"{text} must be {rng}{' ' + unit if unit else ''}")
