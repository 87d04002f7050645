"""``gate chip --reader READER (--page IMAGE | --mrz MRZ) --trust PATH [--json]``: read one
passport chip and judge it.

The keys come from the MRZ: read off the page image (the document stage's reader), or
given as text with its lines joined by ``\\n``. PACE when the chip offers it, else BAC;
EF.COM, EF.SOD, DG1, DG14, DG15, DG2; passive authentication against the trust store
(``--trust``: a folder of CSCA certificates and CRLs, PEM or DER, and ``.ml`` master lists,
or one master-list file); chip authentication (DG14) or active authentication (DG15); DG1
against the MRZ. One JSON object with ``--json``: ``access``, ``files``,
``dg1_matches_mrz``, ``passive_authentication`` (``valid``, ``reasons``),
``chip_authentication`` (``method``: CA, AA or null; ``valid``), ``portrait`` (``format``,
``width``, ``height``), ``authentic``, ``reasons``, ``timings`` (milliseconds).

Exit codes: 0 authentic; 1 read but not authentic (the reasons say why); 2 no chip, no
reader, no access (one line on stderr saying why) or unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

DEFAULT_TIMEOUT_S = 5.0


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "chip", help="read a passport chip (PACE/BAC) and authenticate it",
        description="Read one passport chip and authenticate it (passive, chip/active).")
    p.add_argument("--reader", required=True, metavar="READER",
                   help="PC/SC reader: its name (or a prefix), pcsc:NAME, or pcsc: for the "
                        "first reader")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--page", metavar="IMAGE", help="the data page: keys from its MRZ")
    keys.add_argument("--mrz", metavar="MRZ", help="the MRZ, lines joined by \\n")
    p.add_argument("--trust", required=True, metavar="PATH",
                   help="CSCA trust store: a folder (certificates, CRLs, .ml) or a .ml file")
    p.add_argument("--can", metavar="CAN", help="the card access number, where a card has one")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"wait this long for a chip in the field (default {DEFAULT_TIMEOUT_S})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def reader_url(text: str) -> str:
    return text if text.startswith("pcsc:") else f"pcsc:{text}"


def read(reader: str, mrz: str, trust_path: str, *, can: str | None = None,
         timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[dict[str, Any] | None, str | None]:
    """(the report, None) when the chip was read, or (None, a one-line reason)."""
    from hardware.chip import bac
    from hardware.chip.api import ChipError
    from hardware.chip.pcsc import PcscReader
    from hardware.chip.session import read_chip
    from hardware.chip.trust import TrustStore

    try:
        bac.mrz_information(mrz)
    except ValueError as err:
        return None, f"MRZ_INVALID ({err})"
    trust = TrustStore.load(trust_path)
    device = PcscReader.from_url(reader_url(reader))
    try:
        card = device.connect(timeout_s)
        try:
            report = read_chip(card, mrz, trust, at=datetime.now(UTC), can=can)
        finally:
            card.close()
    except ChipError as err:
        return None, f"{err.reason}: {err}"
    finally:
        device.close()
    out = report.to_dict()
    out["reader"] = device.name
    return out, None


def _mrz_from_page(path: str) -> tuple[str | None, str]:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    from gate.document.check import MrzDocumentCheck
    from gate.document.policy import DocumentPolicy
    from gate.document.reader import MAX_PIXELS, check_image
    from hardware import images

    loaded, too_many = images.load_all([path], max_pixels=MAX_PIXELS)
    if too_many:
        return None, too_many
    item = loaded[0]
    if item.image is None:
        return None, item.reason or "IMAGE_UNREADABLE"
    problem = check_image(item.image)
    if problem:
        return None, problem
    outcome, reading, _portrait, _timings = MrzDocumentCheck(DocumentPolicy()).examine(
        [item.image], None)
    lines = outcome.mrz.get("lines") or []
    if reading.result is None or not lines:
        return None, outcome.reasons[0] if outcome.reasons else "MRZ_NOT_FOUND"
    return "\n".join(lines), ""


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as exc:  # the contract: a reason, never a traceback
        print(f"gate chip: INTERNAL_ERROR ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if not args.timeout > 0 or args.timeout > 600:
        print("gate chip: --timeout must be in (0, 600] seconds", file=sys.stderr)
        return 2
    if args.page:
        mrz, problem = _mrz_from_page(args.page)
        if mrz is None:
            print(f"gate chip: no MRZ on the page: {problem}", file=sys.stderr)
            return 2
    else:
        mrz = args.mrz.replace("\\n", "\n")
    report, failure = read(args.reader, mrz, args.trust, can=args.can, timeout_s=args.timeout)
    if report is None:
        print(f"gate chip: {failure}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        pa = report["passive_authentication"]
        ca = report["chip_authentication"]
        portrait = report["portrait"] or {}
        print(f"reader           {report['reader']}")
        print(f"access           {report['access']}")
        print(f"files            {' '.join(report['files'])}")
        print(f"passive auth     {'valid' if pa['valid'] else 'INVALID'} {pa['reasons']}")
        print(f"chip auth        {ca['method']} {'valid' if ca['valid'] else 'INVALID'}")
        print(f"dg1 = page MRZ   {report['dg1_matches_mrz']}")
        print(f"portrait         {portrait.get('format')} {portrait.get('width')}x"
              f"{portrait.get('height')}")
        print(f"authentic        {report['authentic']} {report['reasons']}")
        print(f"total            {report['timings']['total_ms']:.0f} ms, "
              f"{report['apdus']} APDUs")
    return 0 if report["authentic"] else 1
