"""``gate sim ...``: simulated devices, served on real device nodes.

``gate sim board`` runs the simulated barrier board on a pseudo-terminal and prints the
device path alone on its first line, so that a script (or a person in another terminal)
can point the production driver at it::

    path=$(gate sim board --speed 5 --travellers 3 | head -1)

Further targets (a whole simulated lane, scenarios) hang off the same ``gate sim`` parser.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from hardware.barrier.protocol import (
    WATCHDOG_MS_DEFAULT,
    WATCHDOG_MS_MAX,
    WATCHDOG_MS_MIN,
    BoardEvent,
    EventCode,
)
from sim.board import SimBoard
from sim.faults import BoardFaults, FaultPlan, FaultPlanError
from sim.traveller import KINDS, TravellerBehaviour


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability (0..1)")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def _watchdog(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
    if not WATCHDOG_MS_MIN <= value <= WATCHDOG_MS_MAX:
        raise argparse.ArgumentTypeError(f"watchdog must be {WATCHDOG_MS_MIN}..{WATCHDOG_MS_MAX}")
    return value


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sim", help="simulated lane and simulated devices",
        description="Simulated lane and simulated devices.")
    parser.set_defaults(func=lambda args: _no_target(parser))
    targets = parser.add_subparsers(dest="sim_target", metavar="TARGET")

    board = targets.add_parser(
        "board", help="serve a simulated barrier board on a pseudo-terminal",
        description="Serve a simulated barrier board (protocol v1) on a pseudo-terminal. "
                    "The device path is printed alone on the first line of stdout.")
    board.add_argument("--address", type=int, default=1, help="board address (default 1)")
    board.add_argument("--speed", type=_positive, default=1.0,
                       help="scale of door travel and walking (2 = twice as fast)")
    board.add_argument("--link", metavar="PATH",
                       help="stable device path (a symlink to the pty); default: a temp dir")
    board.add_argument("--watchdog-ms", type=_watchdog, default=WATCHDOG_MS_DEFAULT)
    board.add_argument("--travellers", type=int, default=0, metavar="N",
                       help="N normal travellers queued at ENTRY")
    board.add_argument("--traveller", action="append", default=[], choices=KINDS,
                       metavar="KIND",
                       help=f"queue one traveller of this kind ({', '.join(KINDS)}); repeatable")
    board.add_argument("--hesitate-s", type=float, default=1.5,
                       help="how long a 'hesitate' traveller stands in the doorway")
    board.add_argument("--drop-reply", type=_probability, default=0.0)
    board.add_argument("--drop-request", type=_probability, default=0.0)
    board.add_argument("--corrupt-reply", type=_probability, default=0.0)
    board.add_argument("--noise", type=_probability, default=0.0)
    board.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    board.add_argument("--faults", metavar="FILE", help="TOML fault plan ([[fault]] tables)")
    board.add_argument("--log-events", action="store_true",
                       help="print every board event to stderr as it is queued")
    board.set_defaults(func=run_board)


def _no_target(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _print_event(event: BoardEvent) -> None:
    arg = str(event.arg)
    if event.code == EventCode.DOOR_STATE:
        door, state = event.door_state()
        arg = f"{door.name} {state.name}"
    print(f"{event.uptime_ms / 1000:10.3f} #{event.event_id} {event.code_name} {arg}",
          file=sys.stderr, flush=True)


def run_board(args: argparse.Namespace) -> int:
    try:
        plan = FaultPlan.load(args.faults) if args.faults else None
        board = SimBoard(
            address=args.address, speed=args.speed, seed=args.seed,
            watchdog_ms=args.watchdog_ms, link_path=args.link, plan=plan,
            faults=BoardFaults(drop_reply=args.drop_reply, drop_request=args.drop_request,
                               corrupt_reply=args.corrupt_reply, noise=args.noise))
    except (OSError, FaultPlanError, ValueError) as exc:
        print(f"gate sim board: {exc}", file=sys.stderr)
        return 2
    for _ in range(max(0, args.travellers)):
        board.add_traveller(TravellerBehaviour("normal"))
    for kind in args.traveller:
        hesitate = args.hesitate_s if kind == "hesitate" else 0.0
        board.add_traveller(TravellerBehaviour(kind, hesitate_s=hesitate))

    if args.log_events:
        board.on_event = _print_event
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            path = board.start()
        except OSError as exc:
            print(f"gate sim board: cannot serve the board: {exc}", file=sys.stderr)
            return 1
        print(path, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        board.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
