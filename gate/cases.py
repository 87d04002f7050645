"""From the lane's passages to the officers' cases, and back (an officer's release).

``CaseRecorder`` listens to a lane and turns every passage an officer must see into a
``gate.review.CaseInput`` handed to the durable ``CaseSpool``: a traveller rejected while
inside the lane (the case opens at that moment, so the officer can still clear them), a
document refused at the reader, a tailgating alarm, a lane that went out of service or
into an emergency with somebody inside. Writing happens on the recorder's own thread:
the spool seals and fsyncs each case, which must never hold up the lane's owner thread.

``LaneCaseControl`` is the ``gate.review.LaneControl`` the review server calls: it maps a
case back to its lane and passage and asks the lane for an officer's release, which the
lane grants only under its own release guard.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gate.lane import Lane, Outcome, PassageRecord, StateChange
from gate.review.cases import CaseInput
from gate.review.queue import CaseSpool

#: Outcomes that always reach an officer, and the case kind they open.
CASE_KIND_OF: Mapping[Outcome, str] = {
    Outcome.DOCUMENT_REJECTED: "REJECTION",
    Outcome.FACE_MISMATCH: "REJECTION",
    Outcome.FACE_NOT_CAPTURED: "REJECTION",
    Outcome.TAILGATING: "TAILGATING",
    Outcome.OUT_OF_SERVICE: "OUT_OF_SERVICE_WITH_TRAVELLER",
    Outcome.EMERGENCY: "OUT_OF_SERVICE_WITH_TRAVELLER",
    Outcome.TIMEOUT: "REJECTION",
}
_TIMELINE_LIMIT = 200
_REMEMBERED_CASES = 500


def case_kind(record: PassageRecord) -> str | None:
    """The case a passage opens, or None when no officer needs to see it."""
    kind = CASE_KIND_OF.get(record.outcome)
    if kind is None:
        return None  # PASSED, TURNED_BACK (left of their own accord), OFFICER_RELEASED
    if record.outcome in (Outcome.OUT_OF_SERVICE, Outcome.EMERGENCY, Outcome.TIMEOUT):
        # only with a traveller involved: an empty lane's outage is a maintenance matter
        return kind if (record.max_zone_count > 0 or record.officer_called) else None
    return kind


def case_input(record: PassageRecord, kind: str, case_id: str,
               timeline: list[dict[str, Any]]) -> CaseInput:
    evidence = record.evidence
    document, capture, decision = evidence.document, evidence.capture, evidence.decision
    return CaseInput(
        lane_id=record.lane_id,
        opened_at=record.ended_at,
        kind=kind,
        reasons=(str(record.outcome), *record.reasons),
        mrz=_with_chip(document, decision),
        portrait=document.portrait if document is not None else None,
        chip_portrait=decision.chip_portrait if decision is not None else None,
        live_frames=list(capture.frames) if capture is not None else [],
        score=decision.score if decision is not None else None,
        threshold=decision.threshold if decision is not None else None,
        quality=[dict(q) for q in capture.quality] if capture is not None else [],
        timeline=timeline,
        case_id=case_id,
    )


def _with_chip(document: Any, decision: Any) -> dict[str, Any]:
    """The MRZ record, with the chip's verdict the face comparison saw (when it waited for
    one): access, passive/chip authentication, which portrait was the reference."""
    mrz = dict(document.mrz) if document is not None else {}
    chip = decision.record.get("chip") if decision is not None else None
    if chip is not None:
        mrz["chip"] = chip
    return mrz


class LaneCaseControl:
    """``gate.review.LaneControl`` over lanes in this process."""

    def __init__(self, lanes: Mapping[str, Lane] | None = None) -> None:
        self._lanes: dict[str, Lane] = dict(lanes or {})
        self._cases: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._log = structlog.get_logger("gate.cases")

    def add_lane(self, lane: Lane) -> None:
        self._lanes[lane.lane_id] = lane

    def remember(self, case_id: str, lane_id: str, passage_id: int) -> None:
        with self._lock:
            self._cases[case_id] = (lane_id, passage_id)
            while len(self._cases) > _REMEMBERED_CASES:
                self._cases.popitem(last=False)

    def release_exit(self, case_id: str, officer: str) -> bool:
        with self._lock:
            where = self._cases.get(case_id)
        lane = self._lanes.get(where[0]) if where is not None else None
        if where is None or lane is None:
            self._log.info("cases.release_unknown_case", case_id=case_id)
            return False
        released = lane.officer_release(where[1])
        # the officer's identity goes to the review's audit log, not to the lane's log
        self._log.info("cases.release", case_id=case_id, lane=where[0], passage=where[1],
                       released=released)
        return released

    def lane_states(self) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        for lane_id, lane in self._lanes.items():
            status = lane.barrier_state
            states[lane_id] = {
                "state": lane.state,
                "zone_count": status.zone_count if status else None,
                "entry": status.entry.name if status else None,
                "exit": status.exit.name if status else None,
                "flags": "|".join(sorted(c.value for c in status.conditions))
                if status else None,
                "link_up": lane.link_up,
            }
        return states


class CaseRecorder:
    """Opens a case for every passage an officer must see (see ``case_kind``)."""

    def __init__(self, spool: CaseSpool, control: LaneCaseControl | None = None) -> None:
        self._spool = spool
        self._control = control
        self._inbox: queue.SimpleQueue[CaseInput | None] = queue.SimpleQueue()
        self._timelines: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._opened: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._write, name="cases-writer", daemon=True)
        self._thread.start()
        self._log = structlog.get_logger("gate.cases")
        self._opened_handlers: list[Callable[[str, str, PassageRecord], None]] = []
        self.submitted: list[str] = []  # case ids handed to the spool, newest last

    def attach(self, lane: Lane) -> None:
        lane.subscribe_states(self._on_state)
        lane.subscribe_rejections(self._on_rejection)
        lane.subscribe(self._on_record)
        if self._control is not None:
            self._control.add_lane(lane)

    def subscribe_opened(self, handler: Callable[[str, str, PassageRecord], None]) -> None:
        """``handler(case_id, kind, record)`` for each case opened, on the lane's thread
        (the row member issues a referral's nonce there): keep it quick."""
        self._opened_handlers.append(handler)

    # The three handlers run on the lane's owner thread: they only copy and enqueue.

    def _on_state(self, change: StateChange) -> None:
        if change.passage_id is None:
            return
        with self._lock:
            timeline = self._timelines.setdefault((change.lane_id, change.passage_id), [])
            if len(timeline) < _TIMELINE_LIMIT:
                timeline.append({"t": change.at, "state": change.dest,
                                 "event": change.trigger, "from": change.source})

    def _on_rejection(self, record: PassageRecord) -> None:
        self._open(record)

    def _on_record(self, record: PassageRecord) -> None:
        key = (record.lane_id, record.passage_id)
        with self._lock:
            already = key in self._opened
        if not already:
            self._open(record)
        with self._lock:
            self._timelines.pop(key, None)
            self._opened.pop(key, None)

    def _open(self, record: PassageRecord) -> None:
        kind = case_kind(record)
        if kind is None:
            return
        key = (record.lane_id, record.passage_id)
        case_id = uuid.uuid4().hex
        with self._lock:
            self._opened[key] = case_id
            timeline = list(self._timelines.get(key, ()))
        if self._control is not None:
            self._control.remember(case_id, record.lane_id, record.passage_id)
        for handler in self._opened_handlers:
            try:
                handler(case_id, kind, record)
            except Exception as exc:  # one listener must not lose the case
                self._log.error("cases.listener_failed", error=type(exc).__name__)
        self._inbox.put(case_input(record, kind, case_id, timeline))

    def _write(self) -> None:
        while True:
            case = self._inbox.get()
            if case is None:
                return
            case_id = self._spool.submit(case)  # never raises; None is logged by the spool
            if case_id is not None:
                self.submitted.append(case_id)
            self._log.info("cases.opened", case_id=case_id, **case.log_summary())

    def close(self, timeout: float = 5.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout)
