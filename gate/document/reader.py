"""Reading the MRZ of one document from one or several frames of its data page.

Every way a frame can fail has a reason code, so the lane can tell the traveller what to do
(place the document flat, only one document, …) and the officer can see what happened:

``IMAGE_UNREADABLE`` (not an image), ``IMAGE_EMPTY``, ``IMAGE_TOO_SMALL``, ``IMAGE_TOO_LARGE``,
``MRZ_NOT_FOUND``, ``MULTIPLE_DOCUMENTS``, ``MRZ_INCOMPLETE`` (part of the zone covered or
cut off), ``MRZ_UNSTABLE`` (frames disagree), ``NAME_LOW_CONFIDENCE`` (the name, which no
check digit covers, was not read with confidence), ``MRZ_LOW_CONFIDENCE`` (another character
was not; a check digit does not catch every wrong character), plus the ICAO problems of
:func:`hardware.docreader.mrz.parse` (``CHECK_COMPOSITE``, ``NATIONALITY_UNKNOWN``…).

A page upside down is read as well: each zone is tried both ways and the reading with the
better classifier score wins.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import cv2
import numpy as np

from gate.document.cells import cut, ink_image
from gate.document.locate import MrzZone, locate
from gate.document.ocr import Decoded, OcrbRecogniser, decode, default_recogniser, vote
from hardware import images
from hardware.docreader import mrz as icao

MAX_PIXELS = images.MAX_PIXELS  # 50 MP: beyond this a "page" is an attack or a mistake
MIN_SIDE = 200
NAME_CONFIDENCE_MIN = 0.90
CHAR_CONFIDENCE_MIN = 0.90  # correct reads measured ≥ 0.986 on every capture condition
UNTRUSTED = frozenset({"MRZ_UNSTABLE", "NAME_LOW_CONFIDENCE", "MRZ_LOW_CONFIDENCE"})
UNCOVERED_FIELDS = ("document_code", "issuing_state", "name", "nationality", "sex")


@dataclass
class ZoneRead:
    zone: MrzZone
    probs: np.ndarray  # (lines, n, 37)
    decoded: Decoded
    flipped: bool


@dataclass
class MrzReading:
    """What the reader concluded; ``result`` is None when nothing could be parsed."""

    result: icao.MrzResult | None
    reasons: list[str] = field(default_factory=list)
    confidence: dict[str, float] = field(default_factory=dict)
    stable: bool = False
    frames: int = 0
    frames_agreeing: int = 0
    corrections: int = 0
    orientation: int = 0
    zone: MrzZone | None = None
    frame_index: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        """A valid MRZ *and* a reading to trust: stable, every character confident."""
        return (
            self.result is not None
            and self.result.valid
            and not any(r in UNTRUSTED for r in self.reasons)
        )

    def to_dict(self) -> dict[str, Any]:
        base: dict[str, Any] = self.result.to_dict() if self.result else {"valid": False}
        base.update(
            {
                "valid": self.valid,  # ICAO-valid and a reading to trust
                "icao_valid": bool(self.result and self.result.valid),
                "confidence": {k: round(v, 4) for k, v in self.confidence.items()},
                "name_check_digit_covered": False,
                "stable": self.stable,
                "frames": self.frames,
                "frames_agreeing": self.frames_agreeing,
                "corrections": self.corrections,
                "orientation": self.orientation,
                "reasons": list(self.reasons),
            }
        )
        if self.zone is not None:
            quad = _zone_quad(self.zone)
            base["mrz_quad"] = [[round(float(x), 1), round(float(y), 1)] for x, y in quad]
        return base


def _zone_quad(zone: MrzZone) -> np.ndarray:
    h, w = zone.canonical.shape
    pts = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], float) @ zone.to_image.T
    return pts[:, :2] / pts[:, 2:3]


def decode_image(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """Bytes -> BGR image or a reason code, through the one decoding path of the lane
    (:mod:`hardware.images`: JPEG, PNG, JPEG 2000 by magic bytes, the size declared in the
    header checked before decoding); then the frame checks of :func:`check_image`."""
    img, problem = images.decode(data, max_pixels=MAX_PIXELS)
    if img is None:
        return None, problem or "IMAGE_UNREADABLE"
    return img, check_image(img)


def check_image(img: np.ndarray) -> str | None:
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.size == 0:
        return "IMAGE_EMPTY"
    h, w = img.shape[:2]
    if h * w > MAX_PIXELS:
        return "IMAGE_TOO_LARGE"
    if min(h, w) < MIN_SIDE:
        return "IMAGE_TOO_SMALL"
    if img.dtype != np.uint8:
        return "IMAGE_UNREADABLE"
    return None


def _flip(zone: MrzZone) -> MrzZone:
    h, w = zone.canonical.shape
    rot = np.array([[-1.0, 0, w], [0, -1.0, h], [0, 0, 1.0]])  # canonical -> flipped canonical
    return replace(
        zone,
        canonical=cv2.rotate(zone.canonical, cv2.ROTATE_180),
        to_image=zone.to_image @ rot,  # rot is its own inverse
        line_y=tuple(h - y for y in reversed(zone.line_y)),
        span_x=(w - zone.span_x[1], w - zone.span_x[0]),
    )


class MrzReader:
    def __init__(self, recogniser: OcrbRecogniser | None = None) -> None:
        self.recogniser = recogniser or default_recogniser()

    def read_zone(self, zone: MrzZone) -> ZoneRead:
        """Try each cell count the zone may have, upright first; keep the best scoring.

        The page is tried upside down only when the upright reading does not pass its
        check digits: a correct upright read is the common case and costs half as much.
        """
        counts = (30,) if len(zone.lines) == 3 else (44, 36)
        ink = ink_image(zone.canonical)
        best = self._best(zone, ink, counts, flipped=False)
        if best.decoded.checks_ok and best.decoded.score > -0.5:
            return best
        flipped = self._best(_flip(zone), np.ascontiguousarray(ink[::-1, ::-1]), counts, True)
        return flipped if flipped.decoded.score > best.decoded.score else best

    def _best(
        self, zone: MrzZone, ink: np.ndarray, counts: tuple[int, ...], flipped: bool
    ) -> ZoneRead:
        grids = [cut(zone, n, ink) for n in counts]
        probs_all = self.recogniser.probabilities(np.concatenate([g.cells for g in grids]))
        best: ZoneRead | None = None
        offset = 0
        for n, g in zip(counts, grids, strict=True):
            m = g.lines * n
            probs = probs_all[offset : offset + m].reshape(g.lines, n, -1)
            offset += m
            d = decode(probs)
            if best is None or d.score > best.decoded.score:
                best = ZoneRead(zone, probs, d, flipped)
        assert best is not None
        return best

    def read(self, frames: Sequence[np.ndarray], today: date | None = None) -> MrzReading:
        """Read one document from ``frames`` (several = the same page, voted)."""
        t0 = time.perf_counter()
        reads: list[tuple[int, ZoneRead]] = []
        reasons: Counter[str] = Counter()
        for i, img in enumerate(frames):
            problem = check_image(img)
            if problem:
                reasons[problem] += 1
                continue
            zones = locate(img)
            if not zones:
                reasons["MRZ_NOT_FOUND"] += 1
                continue
            full = [z for z in zones if z.complete]
            if len(full) > 1:
                longest = max(max(t.length for t in z.lines) for z in full)
                big = [z for z in full if max(t.length for t in z.lines) > 0.6 * longest]
                if len(big) > 1:
                    reasons["MULTIPLE_DOCUMENTS"] += 1
                    continue
                full = big
            if not full:
                reasons["MRZ_INCOMPLETE"] += 1
                continue
            zone = max(full, key=lambda z: max(t.length for t in z.lines))
            reads.append((i, self.read_zone(zone)))
        t_read = (time.perf_counter() - t0) * 1000
        if not reads:
            reason = reasons.most_common(1)[0][0] if reasons else "MRZ_NOT_FOUND"
            return MrzReading(None, [reason], frames=len(frames), timings_ms={"read": t_read})
        # Vote among frames whose zone has the majority layout.
        kinds = Counter(r.decoded.mrz_type for _, r in reads)
        mrz_type = kinds.most_common(1)[0][0]
        group = [(i, r) for i, r in reads if r.decoded.mrz_type == mrz_type]
        voted = decode(vote([r.probs for _, r in group]), mrz_type) if len(group) > 1 \
            else group[0][1].decoded
        agreeing = sum(1 for _, r in group if r.decoded.lines == voted.lines)
        result = icao.parse(voted.lines, today)
        conf = _field_confidence(voted)
        out_reasons = list(result.problems)
        if len(group) > 1 and agreeing * 2 < len(frames):
            out_reasons.append("MRZ_UNSTABLE")
        if conf.get("name", 0.0) < NAME_CONFIDENCE_MIN:
            out_reasons.append("NAME_LOW_CONFIDENCE")
        if _weakest_outside_name(voted) < CHAR_CONFIDENCE_MIN:
            out_reasons.append("MRZ_LOW_CONFIDENCE")
        best_i, best_read = max(group, key=lambda ir: ir[1].decoded.score)
        return MrzReading(
            result=result,
            reasons=out_reasons,
            confidence=conf,
            stable="MRZ_UNSTABLE" not in out_reasons,
            frames=len(frames),
            frames_agreeing=agreeing,
            corrections=voted.corrections,
            orientation=180 if best_read.flipped else 0,
            zone=best_read.zone,
            frame_index=best_i,
            timings_ms={"read": round((time.perf_counter() - t0) * 1000, 2)},
        )


def _field_confidence(d: Decoded) -> dict[str, float]:
    """Lowest character probability per field: a chain is as strong as its weakest link."""
    layout = icao.LAYOUTS[d.mrz_type]
    out: dict[str, float] = {}
    for f in layout.fields:
        sl = d.conf[f.span.line, f.span.start : f.span.end]
        out[f.name] = float(sl.min()) if sl.size else 1.0
    out["overall"] = float(d.conf.min())
    return out


def _weakest_outside_name(d: Decoded) -> float:
    """Lowest confidence outside the name, ignoring characters a check digit corrected.

    A check digit catches one wrong digit, not every wrong character (a confusion can keep the
    sum by chance), so an unsure character is a reason to read again even where covered.
    """
    layout = icao.LAYOUTS[d.mrz_type]
    name = next(f.span for f in layout.fields if f.name == "name")
    low = 1.0
    for r in range(d.conf.shape[0]):
        for c in range(d.conf.shape[1]):
            if (r, c) in d.repaired or (r == name.line and name.start <= c < name.end):
                continue
            low = min(low, float(d.conf[r, c]))
    return low
