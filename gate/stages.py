"""The interfaces between the lane state machine and its processing stages.

The lane (``gate.lane``) calls these; the real implementations live in
``gate.document`` (MRZ, eligibility, document photo), ``models`` and ``gate.face``
(live capture, 1:1 verification). Each call runs on a worker thread, never on the lane's
owner thread, so a slow stage cannot starve the barrier poll.

Outcomes are plain data. Fields marked *personal* may hold personal or biometric data:
they go to the verifier and, for a rejection, to the officer's case — never to a log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class DocumentOutcome:
    """What the document stage concluded about the page(s) presented."""

    accepted: bool  # MRZ valid *and* traveller eligible under this lane's policy
    reasons: tuple[str, ...] = ()  # reason codes, e.g. ("EXPIRED",) or ("MRZ_NOT_FOUND",)
    portrait: np.ndarray | None = field(default=None, repr=False)  # personal: BGR photo crop
    mrz: Mapping[str, Any] = field(default_factory=dict, repr=False)  # personal: parsed fields
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    #: the chip's second half still being read (gate.chip.PendingChip), when the lane has a
    #: chip reader and admitted on passive authentication; the face verifier waits for it
    chip: Any = field(default=None, repr=False, compare=False)

    def log_summary(self) -> dict[str, Any]:
        """What may go to a log: no names, no numbers, no images."""
        return {
            "accepted": self.accepted,
            "reasons": list(self.reasons),
            "has_portrait": self.portrait is not None,
            "document_type": self.mrz.get("document_type"),
            "timings_ms": dict(self.timings_ms),
        }


@dataclass(frozen=True)
class CaptureOutcome:
    """What the live capture produced within its window."""

    ok: bool
    reasons: tuple[str, ...] = ()  # e.g. ("FACE_NOT_CAPTURED",), ("CAMERA_FAILED",)
    frames: tuple[np.ndarray, ...] = field(default=(), repr=False)  # personal: best frames
    quality: tuple[Mapping[str, float], ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)

    def log_summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reasons": list(self.reasons),
            "frames": len(self.frames),
            "quality": [dict(q) for q in self.quality],
            "timings_ms": dict(self.timings_ms),
        }


@dataclass(frozen=True)
class MatchDecision:
    """The 1:1 comparison of the document photo with the live face."""

    match: bool
    score: float
    threshold: float
    reasons: tuple[str, ...] = ()  # e.g. ("SCORE_BELOW_THRESHOLD",), ("NO_FACE_IN_DOCUMENT",)
    record: Mapping[str, Any] = field(default_factory=dict)  # pack, provider, fmr, timings
    #: personal: the chip's portrait (BGR) where the chip gave a decodable one, authentic
    #: or not: the officer's case shows it beside the page's (never in a log or record)
    chip_portrait: np.ndarray | None = field(default=None, repr=False, compare=False)

    def log_summary(self) -> dict[str, Any]:
        return {
            "match": self.match,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "reasons": list(self.reasons),
            **{k: v for k, v in self.record.items() if k in ("pack", "provider", "target_fmr",
                                                            "timings_ms")},
        }


Guidance = Callable[[str], None]
"""Called by a stage with a short message key for the traveller ("STEP_CLOSER", ...)."""


class DocumentCheck(Protocol):
    def check(self, pages: Sequence[np.ndarray]) -> DocumentOutcome:
        """Read and judge one document from one or more frames of its data page."""
        ...


class FaceCapture(Protocol):
    def capture(self, guidance: Guidance, cancel: threading.Event) -> CaptureOutcome:
        """Take the live face within the capture window; return early when cancelled."""
        ...


class FaceVerifier(Protocol):
    def verify(self, document: DocumentOutcome, capture: CaptureOutcome) -> MatchDecision:
        """Compare the document portrait with the captured live frames (1:1 only)."""
        ...
