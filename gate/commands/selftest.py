"""``gate selftest --port PORT``: commissioning test of a barrier board."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import structlog

from gate.selftest import run_selftest


def _address(text: str) -> int:
    value = int(text, 0)  # 7, 0x07
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError("address must be 0..255")
    return value


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "selftest", help="commissioning test of a barrier board",
        description="Drive a barrier board through every check of protocol v1: link, INFO, "
                    "CONFIG, lamps, doors, interlock, sensors, RESET_FAULTS. Exit code 0 "
                    "when every check passed, 1 when one failed, 2 when the link is down.")
    p.add_argument("--port", required=True,
                   help="serial device or pyserial URL (/dev/ttyUSB0, a pty path, socket://)")
    p.add_argument("--address", type=_address, default=1, help="board address (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--door-timeout", type=float, default=5.0, metavar="S",
                   help="longest wait for a door to reach OPEN/CLOSED (default 5 s)")
    p.add_argument("--lamp-dwell", type=float, default=0.25, metavar="S",
                   help="how long each lamp signal is shown (default 0.25 s)")
    p.add_argument("--verbose", action="store_true", help="log link traffic to stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    level = logging.DEBUG if args.verbose else logging.WARNING
    logger = structlog.wrap_logger(structlog.PrintLogger(sys.stderr),
                                   wrapper_class=structlog.make_filtering_bound_logger(level))
    report = run_selftest(args.port, address=args.address, door_timeout_s=args.door_timeout,
                          lamp_dwell_s=args.lamp_dwell, logger=logger)
    print(report.as_json() if args.json else report.text())
    return report.exit_code
