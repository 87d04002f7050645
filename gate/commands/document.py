"""``gate document IMAGE [IMAGE…] [--json]``: read and judge one document page.

Several images are frames of the same page, voted (at most ``hardware.images.MAX_IMAGES``;
every file goes through :mod:`hardware.images`: regular files, JPEG/PNG/JPEG 2000 by magic
bytes, sizes checked before decoding). Exit codes: 0 accepted (valid and
eligible, portrait found), 1 read but not accepted (reasons say why), 2 unreadable input
(one line on stderr saying why; with ``--json`` the object still prints, ``valid: false``).
Never a traceback: any failure is a reason code.

``--chip READER --trust PATH`` also reads the document's chip with the page's MRZ and adds
``gate chip``'s object under ``chip``; a chip that is not authentic (or cannot be read:
``reasons`` then holds its code, e.g. ``CHIP_ABSENT``) makes the document not accepted
(``CHIP_NOT_AUTHENTIC`` and the chip's reasons), as a lane that requires the chip decides.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from datetime import date
from typing import Any

UNREADABLE = {
    "FILE_NOT_FOUND", "IS_A_DIRECTORY", "NOT_A_REGULAR_FILE", "FILE_UNREADABLE",
    "FILE_TOO_LARGE", "IMAGE_UNREADABLE", "IMAGE_EMPTY", "IMAGE_FORMAT_UNSUPPORTED",
    "IMAGE_TOO_SMALL", "IMAGE_TOO_LARGE", "TOO_MANY_IMAGES", "TOO_MANY_PIXELS",
    "MRZ_NOT_FOUND", "MULTIPLE_DOCUMENTS", "MRZ_INCOMPLETE",
}

KEYS = ("mrz_type", "document_type", "issuing_state", "document_number", "surname",
        "given_names", "nationality", "date_of_birth", "date_of_expiry", "sex", "optional_data")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "document", help="read a document page's MRZ, check it and judge eligibility"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="frames of one data page")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--config", metavar="TOML", help="lane configuration with a [document] section")
    p.add_argument("--today", metavar="YYYY-MM-DD", help="judge expiry and age on this date")
    p.add_argument("--chip", metavar="READER",
                   help="also read the document's chip with the page's MRZ (PC/SC reader "
                        "name, pcsc:NAME or pcsc:); its report goes under 'chip'")
    p.add_argument("--trust", metavar="PATH",
                   help="CSCA trust store for --chip: a folder or a .ml master list")
    p.set_defaults(func=run)


def _failure(reason: str, as_json: bool) -> int:
    print(f"gate document: unreadable input: {reason}", file=sys.stderr)
    if as_json:
        print(json.dumps({"valid": False, "eligible": False, "reasons": [reason]}))
    return 2


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as exc:  # the contract: a reason, never a traceback
        as_json = bool(getattr(args, "json", False))
        return _failure(f"INTERNAL_ERROR ({type(exc).__name__})", as_json)


def _run(args: argparse.Namespace) -> int:
    import cv2

    # OpenCV's own decoder messages would break the one-line-reason contract.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    from gate.document.check import MrzDocumentCheck
    from gate.document.policy import DocumentPolicy
    from gate.document.reader import MAX_PIXELS, check_image

    policy_data: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                policy_data = dict(tomllib.load(fh).get("document", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            return _failure(f"CONFIG_UNREADABLE ({type(exc).__name__})", args.json)
    if args.chip and not args.trust:
        reason = "CHIP_TRUST_MISSING"
        return _failure(f"{reason} (--chip needs --trust PATH)", args.json)
    try:
        policy = DocumentPolicy.from_dict(policy_data)
        today = date.fromisoformat(args.today) if args.today else None
    except (ValueError, TypeError, OSError) as exc:
        return _failure(f"CONFIG_INVALID ({exc})", args.json)
    from hardware import images

    loaded, too_many = images.load_all(args.images, max_pixels=MAX_PIXELS)
    if too_many:
        return _failure(too_many, args.json)
    frames = []
    reasons: list[str] = []
    for item in loaded:
        problem = item.reason if item.image is None else check_image(item.image)
        if item.image is None or problem:
            reasons.append(problem or "IMAGE_UNREADABLE")
            continue
        frames.append(item.image)
    if not frames:
        return _failure(reasons[0] if reasons else "IMAGE_UNREADABLE", args.json)
    outcome, reading, portrait, timings = MrzDocumentCheck(policy).examine(frames, today)
    mrz = dict(outcome.mrz)
    out: dict[str, Any] = {k: mrz.get(k) for k in KEYS}
    out.update(
        {
            "checks": mrz.get("checks", {}),
            "valid": bool(mrz.get("valid", False)),
            "eligible": bool(mrz.get("eligible", False)),
            "accepted": outcome.accepted,
            "reasons": list(outcome.reasons),
            "photo": ({**portrait.to_dict(), "frame": reading.frame_index} if portrait else None),
            "confidence": mrz.get("confidence", {}),
            "name_check_digit_covered": False,
            "stable": mrz.get("stable", False),
            "frames": len(args.images),
            "frames_agreeing": mrz.get("frames_agreeing", 0),
            "orientation": mrz.get("orientation", 0),
            "timings_ms": timings,
        }
    )
    accepted = outcome.accepted
    if args.chip and reading.result is not None:
        from gate.commands.chip import read as read_chip

        lines = mrz.get("lines") or []
        report, failure = read_chip(args.chip, "\n".join(lines), args.trust)
        out["chip"] = report if report is not None else {
            "authentic": False, "reasons": [str(failure).split(":")[0]], "detail": failure}
        if not out["chip"]["authentic"]:  # a lane that requires the chip refuses it
            accepted = False
            out["accepted"] = False
            out["reasons"] = [*out["reasons"], "CHIP_NOT_AUTHENTIC",
                              *out["chip"]["reasons"]]
    if reading.result is None:
        reason = outcome.reasons[0] if outcome.reasons else "MRZ_NOT_FOUND"
        print(f"gate document: unreadable input: {reason}", file=sys.stderr)
        if args.json:
            print(json.dumps(out))
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        for k in (*KEYS, "valid", "eligible", "accepted", "reasons"):
            print(f"{k:16} {out[k]}")
    return 0 if accepted else 1
