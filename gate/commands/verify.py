"""``gate verify REFERENCE LIVE [LIVE…]``: one 1:1 comparison from image files.

REFERENCE is a document page image or a portrait (the largest face is used); LIVE are
camera frames. Exit codes: 0 match, 1 no match, 2 no usable face or unreadable image
(with a reason), 3 the face pack or runtime could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from typing import Any, TextIO

import cv2
import numpy as np

from models.pack import DEFAULT_PACK
from models.runtime import GPU_POLICIES

UNREADABLE_IMAGE = "UNREADABLE_IMAGE"


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


def _read(path: str) -> np.ndarray | None:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from gate.face.quality import QualitySettings, assess
    from gate.face.verify import FaceMatch
    from models.face import load_face_model
    from models.pack import PackError
    from models.runtime import GpuUnavailable, RuntimeSettings

    images = {"reference": _read(args.reference)}
    lives = [_read(p) for p in args.live]
    unreadable = [p for p, img in zip([args.reference, *args.live], [images["reference"], *lives],
                                      strict=True) if img is None]
    if unreadable:
        _emit(args, {"match": False, "reasons": [UNREADABLE_IMAGE], "files": unreadable}, out)
        return 2
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
