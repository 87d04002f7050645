"""The ``gate`` command: one sub-command per module in ``gate.commands``.

Each command module exposes ``add_parser(subparsers)`` which registers its parser and
sets ``func`` (``args -> int`` exit code). Modules are imported lazily by name so that a
maintenance command does not pay for loading face models.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

#: OpenCV's own ceiling on decoded pixels, read once when cv2 loads: set before any command
#: imports it (the same 50 MP as hardware.images.MAX_PIXELS, which checks every header
#: before decoding; this is the second line).
OPENCV_MAX_PIXELS = 50_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_MAX_PIXELS))

#: (command name, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("run", "gate.commands.run", "the lane service on its configured devices"),
    ("sim", "gate.commands.sim", "simulated lane and simulated devices"),
    ("selftest", "gate.commands.selftest", "commissioning test of a barrier board"),
    ("document", "gate.commands.document", "read a document page's MRZ and judge eligibility"),
    ("chip", "gate.commands.chip", "read a passport chip (PACE/BAC) and authenticate it"),
    ("verify", "gate.commands.verify", "1:1 face verification of a reference and live images"),
    ("calibrate", "gate.commands.calibrate", "measure FMR/FNMR and set the decision threshold"),
    ("bench", "gate.commands.bench", "run a benchmark (document, face)"),
    ("diagram", "gate.diagram", "print the lane's state diagram (Mermaid)"),
    ("console", "gate.commands.console", "maintenance console: live view and actions on a lane"),
    ("review", "gate.commands.review", "officers' review server and its administration"),
    ("station", "gate.commands.station", "the officers' station of a row of lanes (NATS)"),
    ("pki", "gate.commands.pki", "keys and certificates of a row of lanes"),
]


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gate", description="Automated border control lane.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module, help_text in COMMANDS:
        if wanted is not None and wanted != name:
            sub.add_parser(name, help=help_text)
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    # Logs are JSON on stderr (stdout carries each command's result); a command with a
    # --log-level of its own reconfigures. The personal-data filter is always in place.
    from gate.logsetup import configure_logging

    configure_logging(os.environ.get("GATE_LOG_LEVEL", "INFO"), json=True)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
