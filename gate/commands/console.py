"""``gate console``: the maintenance console (see :mod:`gate.console`)."""

from __future__ import annotations

from gate.console import add_parser, run

__all__ = ["add_parser", "run"]
