"""Passages: what the lane keeps while one is open, and the record it leaves."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gate.lane.machine import CLOSING_REJECTED, PHYSICAL_STATES, REJECTED, SYSTEM_STATES
from gate.stages import CaptureOutcome, DocumentOutcome, MatchDecision


class Outcome(enum.StrEnum):
    PASSED = "PASSED"
    DOCUMENT_REJECTED = "DOCUMENT_REJECTED"
    FACE_MISMATCH = "FACE_MISMATCH"
    FACE_NOT_CAPTURED = "FACE_NOT_CAPTURED"
    TAILGATING = "TAILGATING"
    TURNED_BACK = "TURNED_BACK"
    TIMEOUT = "TIMEOUT"
    OUT_OF_SERVICE = "OUT_OF_SERVICE"
    EMERGENCY = "EMERGENCY"
    OFFICER_RELEASED = "OFFICER_RELEASED"


@dataclass(frozen=True)
class PassageEvidence:
    """Personal data of one passage, for the officer's case only — never for a log."""

    document: DocumentOutcome | None = None
    capture: CaptureOutcome | None = None
    decision: MatchDecision | None = None


@dataclass(frozen=True)
class PassageRecord:
    """How one passage ended, and where its time went.

    ``system_ms`` is time the lane spent in its own stages (reading the document,
    capturing and verifying the face); ``physical_ms`` is time spent on doors and on the
    traveller walking. Both use the host's monotonic clock; ``started_at``/``ended_at`` are
    wall-clock (UNIX seconds) so records line up with other logs.
    """

    lane_id: str
    passage_id: int
    outcome: Outcome
    reasons: tuple[str, ...]
    started_at: float
    ended_at: float
    duration_ms: float
    state_ms: Mapping[str, float]
    system_ms: float
    physical_ms: float
    stages: Mapping[str, Mapping[str, Any]]  # log summaries of the stage outcomes
    max_zone_count: int
    officer_called: bool
    evidence: PassageEvidence = field(default_factory=PassageEvidence, repr=False,
                                      compare=False)

    def log_summary(self) -> dict[str, Any]:
        return {
            "passage": self.passage_id, "outcome": str(self.outcome),
            "reasons": list(self.reasons), "duration_ms": round(self.duration_ms, 1),
            "system_ms": round(self.system_ms, 1), "physical_ms": round(self.physical_ms, 1),
            "state_ms": {k: round(v, 1) for k, v in self.state_ms.items()},
            "stages": {k: dict(v) for k, v in self.stages.items()},
            "max_zone_count": self.max_zone_count, "officer_called": self.officer_called,
        }


@dataclass(frozen=True)
class StateChange:
    """One transition of the lane, for timelines (the sim lane, dashboards)."""

    lane_id: str
    passage_id: int | None
    trigger: str
    source: str
    dest: str
    at: float  # wall clock
    at_monotonic: float


@dataclass(frozen=True)
class StageResult:
    """A stage's result on its way back to the owner thread."""

    passage_id: int
    stage: str  # "document" | "capture" | "verify"
    result: object
    error: BaseException | None
    attempt: int = 0  # which capture of the passage (a restarted capture's result is stale)


@dataclass
class Passage:
    """The passage under way, as the owner thread keeps it."""

    id: int
    started_at: float
    started_mono: float
    outcome: Outcome | None = None
    reasons: list[str] = field(default_factory=list)
    state_ms: dict[str, float] = field(default_factory=dict)
    document: DocumentOutcome | None = None
    capture: CaptureOutcome | None = None
    decision: MatchDecision | None = None
    tailgating_seen: bool = False
    officer_release: bool = False  # an officer cleared this traveller after a rejection
    entry_opened: bool = False  # ENTRY left CLOSED while admitting this passage
    max_zone: int = 0
    capture_attempt: int = 0  # the face capture whose result counts (0: none running)
    capture_held: StageResult | None = None  # its result, if it came before CAPTURING_FACE

    def mark(self, outcome: Outcome, *reasons: str) -> None:
        """The first outcome wins; reasons accumulate (they tell the whole story)."""
        if self.outcome is None:
            self.outcome = outcome
        self.reasons.extend(r for r in reasons if r not in self.reasons)

    @property
    def positive(self) -> bool:
        """A positive decision for this traveller: a face match, or an officer's release."""
        return self.officer_release or (self.decision is not None and self.decision.match)

    def record(self, lane_id: str, *, ended: bool, now_mono: float,
               now_wall: float) -> PassageRecord:
        """The passage as a record: final when ``ended``, else as it stands now."""
        return PassageRecord(
            lane_id=lane_id, passage_id=self.id,
            outcome=self.outcome or Outcome.TIMEOUT,
            reasons=tuple(self.reasons), started_at=self.started_at,
            ended_at=now_wall, duration_ms=(now_mono - self.started_mono) * 1000.0,
            state_ms=dict(self.state_ms),
            system_ms=sum(v for k, v in self.state_ms.items() if k in SYSTEM_STATES),
            physical_ms=sum(v for k, v in self.state_ms.items() if k in PHYSICAL_STATES),
            stages={name: summary for name, summary in (
                ("document", self.document.log_summary() if self.document else None),
                ("capture", self.capture.log_summary() if self.capture else None),
                ("verify", self.decision.log_summary() if self.decision else None),
            ) if summary is not None},
            max_zone_count=self.max_zone,
            officer_called=not ended or any(
                s in self.state_ms for s in (REJECTED, CLOSING_REJECTED)),
            evidence=PassageEvidence(self.document, self.capture, self.decision),
        )
