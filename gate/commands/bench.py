"""``gate bench document|face|lane|link|chip|row``: benchmarks that print what they measured."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

#: bench name -> module exposing ``configure(parser)`` and ``run(args) -> int``
BENCHES = {
    "document": "gate.document.bench",
    "face": "models.bench",
    "lane": "gate.bench_lane",
    "link": "hardware.barrier.bench_link",
    "chip": "gate.bench_chip",
    "row": "gate.bench_row",
}


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("bench", help="run a benchmark")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module_name in BENCHES.items():
        module = importlib.import_module(module_name)
        p = benches.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
        module.configure(p)
        p.set_defaults(func=module.run)
