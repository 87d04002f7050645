"""What the lane hands to the officers' review, and what the review asks of the lane.

The lane knows nothing about storage, encryption or web pages: it builds a
:class:`CaseInput` when a passage ends in something an officer must see, and hands it to
:class:`gate.review.queue.CaseSpool`. In the other direction the review server only ever
talks to the lane through :class:`LaneControl`, so the server runs the same whether the
lane is in its own process, on another PC, or absent.

Fields marked *personal* hold personal or biometric data: they are sealed before they
touch a disk and never go to a log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

CaseKind = Literal["REJECTION", "TAILGATING", "MANUAL_RELEASE", "OUT_OF_SERVICE_WITH_TRAVELLER"]
CASE_KINDS: tuple[str, ...] = (
    "REJECTION",
    "TAILGATING",
    "MANUAL_RELEASE",
    "OUT_OF_SERVICE_WITH_TRAVELLER",
)

#: Live frames kept per case: enough for an officer to judge, few enough to stay minimal.
MAX_LIVE_FRAMES = 5


@dataclass(frozen=True)
class CaseInput:
    """One event on a lane that an officer must look at."""

    lane_id: str
    opened_at: float  # epoch seconds (time.time()) when the lane raised it
    kind: str  # one of CASE_KINDS
    reasons: Sequence[str] = ()  # reason codes, e.g. ("FACE_MISMATCH",)
    mrz: Mapping[str, Any] = field(default_factory=dict, repr=False)  # personal: parsed MRZ
    portrait: np.ndarray | None = field(default=None, repr=False)  # personal: BGR document photo
    live_frames: Sequence[np.ndarray] = field(default=(), repr=False)  # personal: BGR, best first
    score: float | None = None  # similarity of the best live frame to the portrait
    threshold: float | None = None  # the lane's decision threshold at that moment
    quality: Sequence[Mapping[str, Any]] = ()  # per live frame: sharpness, pose, ...
    timeline: Sequence[Mapping[str, Any]] = ()  # {"t": epoch s, "event"/"state": ...}
    case_id: str | None = None  # the lane may choose it; otherwise the spool assigns one
    #: personal: the chip's portrait (DG2, BGR) beside the page's, when the chip was read
    chip_portrait: np.ndarray | None = field(default=None, repr=False)

    def log_summary(self) -> dict[str, Any]:
        """What may go to a log: no names, no numbers, no images."""
        return {
            "lane_id": self.lane_id,
            "kind": self.kind,
            "reasons": list(self.reasons),
            "has_portrait": self.portrait is not None,
            "has_chip_portrait": self.chip_portrait is not None,
            "live_frames": len(self.live_frames),
        }


class CaseRejected(ValueError):
    """A CaseInput that cannot be a case (unknown kind, no lane id)."""


def check_case_input(case: CaseInput) -> None:
    if case.kind not in CASE_KINDS:
        raise CaseRejected(f"unknown case kind {case.kind!r}")
    if not case.lane_id:
        raise CaseRejected("case without lane id")


_DOC_NUMBER_KEYS = ("document_number", "number", "doc_number")


def document_number(mrz: Mapping[str, Any]) -> str:
    for key in _DOC_NUMBER_KEYS:
        value = mrz.get(key)
        if value:
            return str(value)
    return ""


def mask_document_number(number: str) -> str:
    """Masked for the queue: the last three characters let officers tell cases apart
    without the queue showing (or a screen photo capturing) full document numbers."""
    cleaned = re.sub(r"[<\s]", "", number)
    if not cleaned:
        return ""
    visible = cleaned[-3:] if len(cleaned) > 4 else ""
    return "•" * (len(cleaned) - len(visible)) + visible


@runtime_checkable
class LaneControl(Protocol):
    """What the review server may ask of the lanes.

    ``release_exit`` is the officer's "clear the traveller": the lane opens its exit door
    for the traveller of that case and answers whether it did. It must not block for long
    (the server waits on it while the officer waits on the page) and must refuse (False)
    when the case is not the lane's current traveller or the lane is not in a state that
    allows a release.
    """

    def release_exit(self, case_id: str, officer: str) -> bool: ...

    def lane_states(self) -> dict[str, dict[str, Any]]:
        """lane id -> plain, non-personal state: {"state": ..., "zone_count": ..., ...}."""
        ...
