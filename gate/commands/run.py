"""``gate run --config lane.toml``: the lane service a lane PC runs.

Builds every device from ``[devices]``, loads and warms the stages, drives the lane until
SIGTERM/SIGINT, then shuts down safely and exits 0. ``--check`` validates the
configuration, opens every device once, prints what it found and exits 0 (all there) or
1 (something missing) — for commissioning and for the service manager. Bad configuration
is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from types import FrameType
from typing import Any

EXIT_OK, EXIT_DEVICE, EXIT_CONFIG = 0, 1, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="the lane service on its configured devices",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="FILE", help="the lane's TOML file")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration, open every device once, exit 0/1")
    p.add_argument("--json", action="store_true", help="--check: print the report as JSON")
    p.add_argument("--drain-s", type=_drain_s, default=None, metavar="S",
                   help="on stop, how long a passage under way may finish (default 20, "
                        "at most 600)")
    p.set_defaults(func=run)


def _drain_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not (math.isfinite(value) and 0 <= value <= 600):
        raise argparse.ArgumentTypeError(f"{text} must be 0..600 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    from gate.config import ConfigError, load_config
    from gate.logsetup import configure_logging
    from gate.service import DRAIN_S, LaneService, ServiceError, check_lane, stage_settings

    try:
        config = load_config(args.config)
        configure_logging(config.logging.level, json=config.logging.json)
        stage_settings(config, production=True)  # [document], [face]: before any device
    except (ConfigError, ValueError) as exc:
        print(f"gate run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        try:
            report = check_lane(config)
        except ConfigError as exc:
            print(f"gate run: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if args.json:
            print(json.dumps(report.to_json()))
        else:
            for result in report.results:
                mark = "FAIL" if not result.ok else "WARN" if result.warning else "OK  "
                print(f"{mark} {result.name:<11} {result.detail}")
        return EXIT_OK if report.ok else EXIT_DEVICE

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = LaneService(config)
    try:
        service.start()
    except ConfigError as exc:
        print(f"gate run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ServiceError, RuntimeError, OSError) as exc:  # a board backend that died, ...
        print(f"gate run: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    service.run(stop, DRAIN_S if args.drain_s is None else args.drain_s)
    return EXIT_OK
