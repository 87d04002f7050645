"""``gate verify REFERENCE LIVE [LIVE…]``: one 1:1 comparison from image files.

REFERENCE is a document page image or a portrait (the largest face is used); LIVE are
camera frames. Every file is read through :mod:`hardware.images` (regular files, JPEG, PNG
and JPEG 2000 by magic bytes, sizes checked before decoding, at most
``hardware.images.MAX_IMAGES`` files a call). Exit codes: 0 match, 1 no match, 2 no usable
face, an unreadable image or a bad argument (one line on stderr; with ``--json`` the
object too), 3 the face pack or runtime could not start. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from typing import Any, TextIO

from models.pack import DEFAULT_PACK
from models.runtime import GPU_POLICIES

UNREADABLE_IMAGE = "UNREADABLE_IMAGE"
ARGUMENT_INVALID = "ARGUMENT_INVALID"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="document page image or portrait")
    p.add_argument("live", nargs="+", help="live camera frame(s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--pack", default=DEFAULT_PACK, help="pack id or pack folder")
    p.add_argument("--gpu", choices=GPU_POLICIES, default="preferred")
    p.add_argument("--detector", choices=("hog", "mmod"), default="hog")
    p.add_argument("--target-fmr", type=float, default=1e-3)
    p.add_argument("--threshold", type=float, default=None,
                   help="override the calibrated threshold")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify", help="compare a document photo with live frames (1:1)")
    configure(p)
    p.set_defaults(func=run)


def _emit(args: argparse.Namespace, data: dict[str, Any], out: TextIO) -> None:
    if args.json:
        print(json.dumps(data, allow_nan=False, default=str), file=out)
        return
    if "error" in data:
        print(f"error: {data['error']}", file=sys.stderr)
    elif data.get("reasons") and not data.get("match"):
        verdict = "MATCH" if data.get("match") else "NO MATCH"
        print(f"{verdict}: {', '.join(data['reasons'])} score={data.get('score')} "
              f"threshold={data.get('threshold')}", file=out)
    else:
        print(f"MATCH score={data['score']} threshold={data['threshold']} pack={data['pack']} "
              f"provider={data['provider']}", file=out)


def _refuse(args: argparse.Namespace, out: TextIO, why: str, data: dict[str, Any]) -> int:
    """Bad input: one line on stderr, the JSON object on stdout with ``--json``; exit 2."""
    print(f"gate verify: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps({"match": False, **data}, allow_nan=False, default=str), file=out)
    return 2


def _bad_argument(args: argparse.Namespace) -> str | None:
    fmr = args.target_fmr
    if not (math.isfinite(fmr) and 0.0 < fmr < 1.0):
        return f"--target-fmr must be a number between 0 and 1 (exclusive), not {fmr}"
    if args.threshold is not None and not math.isfinite(args.threshold):
        return f"--threshold must be a finite number, not {args.threshold}"
    return None


def _run(args: argparse.Namespace, out: TextIO) -> int:
    bad = _bad_argument(args)
    if bad:
        return _refuse(args, out, f"bad argument: {bad}",
                       {"reasons": [ARGUMENT_INVALID], "error": bad})
    from gate.face.quality import QualitySettings, assess
    from gate.face.verify import FaceMatch
    from hardware import images as imagefiles
    from models.face import load_face_model
    from models.pack import PackError
    from models.runtime import GpuUnavailable, RuntimeSettings

    loaded, too_many = imagefiles.load_all([args.reference, *args.live])
    if too_many:
        return _refuse(args, out, f"unreadable input: {too_many} (at most "
                       f"{imagefiles.MAX_IMAGES} images a call)",
                       {"reasons": [UNREADABLE_IMAGE, too_many]})
    failed = [(item.path, item.reason or imagefiles.IMAGE_UNREADABLE)
              for item in loaded if item.image is None]
    if failed:
        codes = list(dict.fromkeys(code for _, code in failed))
        listed = ", ".join(f"{code} ({path})" for path, code in failed)
        return _refuse(args, out, f"unreadable input: {listed}",
                       {"reasons": [UNREADABLE_IMAGE, *codes],
                        "files": [{"file": path, "reason": code} for path, code in failed]})
    images = {"reference": loaded[0].image}
    lives = [item.image for item in loaded[1:]]
    try:
        model = load_face_model(args.pack, RuntimeSettings(gpu=args.gpu),
                                detector=args.detector)
    except (PackError, GpuUnavailable, OSError) as exc:
        _emit(args, {"match": False, "error": str(exc), "reasons": ["FACE_PACK_UNAVAILABLE"]},
              out)
        return 3
    settings = QualitySettings()
    qualities: list[dict[str, Any]] = []
    live_q: list[dict[str, float]] = []
    named = [(args.reference, images["reference"]), *zip(args.live, lives, strict=True)]
    for i, (name, img) in enumerate(named):
        assert img is not None
        faces = model.detect(img)
        entry: dict[str, Any] = {"file": name, "faces": len(faces)}
        measures: dict[str, float] = {}
        if faces:
            q = assess(img, model.landmarks(img, faces[0]), settings, others=len(faces) - 1)
            measures = q.measures
            entry.update(q.measures)
            entry["failed_gates"] = list(q.failures)
        if i > 0:
            live_q.append(measures)
        qualities.append(entry)
    verifier = FaceMatch(model, target_fmr=args.target_fmr, threshold=args.threshold)
    reference = images["reference"]
    assert reference is not None
    decision = verifier.compare(reference, [x for x in lives if x is not None], live_q)
    score = None if math.isnan(decision.score) else round(decision.score, 6)
    record = dict(decision.record)
    record.pop("live_quality", None)
    result = {
        "match": decision.match, "score": score, "threshold": round(decision.threshold, 6),
        "reasons": list(decision.reasons), **record, "quality": qualities,
    }
    _emit(args, result, out)
    if any(r.startswith("NO_FACE") for r in decision.reasons):
        return 2
    return 0 if decision.match else 1



def run(args: argparse.Namespace) -> int:
    """Log lines go to stderr while the command works: stdout carries only its result."""
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args, out)
