"""The lane's owner: one traveller at a time through the ENTRY/EXIT mantrap.

Everything the lane reacts to — barrier notices, stage results, timer expiries and
operator commands — is put on one queue and consumed by ONE owner thread, which is the
only thread that fires triggers or commands the board. Stages run on worker threads and
post their result back; the board link is kept alive by the driver's own thread (in a
link process of its own), so a slow stage can never starve the poll.

The lane is split by concern: ``gate.lane.machine`` is the machine as data (one row per
state, the transitions, the facts, the stages), ``gate.lane.guards`` the safety rules as
pure functions, ``gate.lane.doors`` the door driver, ``gate.lane.records`` the passage and
its record. This module wires them: after every input, ``_settle`` fires the first
trigger whose fact holds (an overlay first: emergency, maintenance, out of service),
until nothing more applies, then drives the doors towards the state's wish, every
command through ``guards.door_refusal``; callbacks never fire triggers themselves, so
nothing loops inside ``on_enter``.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import structlog
from transitions import EventData

from gate.config import LaneConfig
from gate.lane import guards
from gate.lane.doors import DoorDriver
from gate.lane.guards import Cause
from gate.lane.machine import (
    ADMITTING,
    CAPTURING_FACE,
    CLOSING_ENTRY,
    CLOSING_REJECTED,
    DOOR_WANTS,
    EMERGENCY,
    FACTS,
    FAULT,
    IDLE,
    LAMPS,
    MAINTENANCE,
    OUT_OF_SERVICE,
    OVERLAY_STATES,
    PASSAGE_STATES,
    PRE_RELEASE_STATES,
    RECOVERING,
    REJECTED,
    STAGES,
    build_machine,
)
from gate.lane.records import (
    Outcome,
    Passage,
    PassageEvidence,
    PassageRecord,
    StageResult,
    StateChange,
)
from gate.stages import (
    CaptureOutcome,
    DocumentCheck,
    DocumentOutcome,
    FaceCapture,
    FaceVerifier,
    MatchDecision,
)
from hardware.barrier.api import (
    Barrier,
    BarrierError,
    BarrierNotice,
    BarrierState,
    BoardChange,
    BoardRestarted,
    Door,
    DoorAction,
    DoorState,
    LinkLost,
    LinkRestored,
    Signal,
    ZoneCounted,
)
from hardware.device import DeviceHealth

_SETTLE_LIMIT = 32
#: The owner thread re-checks the doors at least this often even when nothing happens
#: (an obstructed doorway's close retry, a door command that got no answer).
_HOUSEKEEPING_S = 0.25


# ------------------------------------------------------------------ inputs and workers


@dataclass(frozen=True)
class _Notice:
    notice: BarrierNotice


@dataclass(frozen=True)
class _Operator:
    command: str  # "present_document" | "reset" | "maintenance_on" | "maintenance_off"
    #               | "officer_release"
    pages: tuple[np.ndarray, ...] = ()
    passage_id: int | None = None
    answer: queue.SimpleQueue[bool] | None = None


@dataclass(frozen=True)
class _Guidance:
    passage_id: int
    message: str


_STOP = object()


StageDone = Callable[[object, BaseException | None], None]


class StageRunner(Protocol):
    """Runs a stage off the owner thread and reports back through ``done``."""

    def submit(self, job: Callable[[], object], done: StageDone) -> None: ...

    def shutdown(self) -> None: ...


class ThreadStageRunner:
    """One short-lived thread per stage job.

    A stage that overruns its timeout keeps its thread but blocks nothing: the lane has
    moved on and ignores the late result. ``shutdown`` waits a bounded time for running
    stages (capture is cancelled by the lane first), so stopping never hangs on one.
    """

    def __init__(self, join_timeout_s: float = 5.0) -> None:
        self._join_timeout_s = join_timeout_s
        self._threads: list[threading.Thread] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], object], done: StageDone) -> None:
        def run() -> None:
            try:
                result = job()
            except BaseException as exc:  # a stage's crash becomes a named outcome
                done(None, exc)
            else:
                done(result, None)

        thread = threading.Thread(target=run, name=f"lane-stage-{next(self._numbers)}",
                                  daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def shutdown(self) -> None:
        end = time.monotonic() + self._join_timeout_s
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))


# ------------------------------------------------------------------ the lane


class Lane:
    """One e-gate lane: the barrier board plus the three stages, driven by the machine.

    Public use: ``start()``, ``present_document(pages)``, ``reset()``,
    ``set_maintenance(on)``, ``subscribe(handler)`` for ``PassageRecord``\\ s,
    ``subscribe_states(handler)`` for ``StateChange``\\ s, ``stop()``. Without ``start()``
    the lane runs in the caller's thread through ``run_pending()`` (deterministic tests).
    """

    state: str  # set by the machine

    def __init__(
        self,
        barrier: Barrier,
        document_check: DocumentCheck,
        face_capture: FaceCapture,
        face_verifier: FaceVerifier,
        config: LaneConfig | None = None,
        *,
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        runner: StageRunner | None = None,
        devices: Mapping[str, Callable[[], DeviceHealth]] | None = None,
    ) -> None:
        self.config = config if config is not None else LaneConfig()
        self.lane_id = self.config.lane_id
        self._barrier = barrier
        self._document_check = document_check
        self._face_capture = face_capture
        self._face_verifier = face_verifier
        self._clock = clock
        self._wall = wall_clock
        self._runner: StageRunner = runner if runner is not None else ThreadStageRunner()
        #: health of the devices besides the barrier (camera, document reader): a bad one
        #: stops the lane *before* a traveller is let in, never with one inside
        self._devices: dict[str, Callable[[], DeviceHealth]] = dict(devices or {})
        self._shutdown: str | None = None  # None | "drain" | "now"
        # A lazy logger: it follows structlog's configuration even when that is set (the
        # JSON renderer, the personal-data filter) after the lane was built.
        self._log = (logger.bind(lane=self.lane_id) if logger is not None
                     else structlog.get_logger("gate.lane", lane=self.lane_id))
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._subscribed = False
        self._record_handlers: list[Callable[[PassageRecord], None]] = []
        self._state_handlers: list[Callable[[StateChange], None]] = []
        self._rejection_handlers: list[Callable[[PassageRecord], None]] = []
        self._state_cond = threading.Condition()

        self._passage: Passage | None = None
        self._passage_ids = itertools.count(1)
        self._pages: tuple[np.ndarray, ...] = ()
        self._cancel_capture = threading.Event()
        self._capture_attempts = itertools.count(1)
        self._deadline: float | None = None
        self._entered_at = clock()
        self._red_cross = False
        self._maintenance_requested = False
        self._doors = DoorDriver(barrier, self._log, clock,
                                 self.config.timeouts.obstructed_doorway)
        self._last_cause: Cause | None = None
        self.records: list[PassageRecord] = []  # the latest ones, for inspection
        self.faults: list[str] = []  # every callback exception, as "Type: message"

        self.machine = build_machine(self)
        self._arm_timer(self.state)

    # ------------------------------------------------------------ public interface

    def start(self) -> None:
        """Subscribe to the barrier and start the owner thread."""
        self._subscribe_barrier()
        self._thread = threading.Thread(target=self._own, name=f"lane-{self.lane_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._cancel_capture.set()
        if self._subscribed:
            self._barrier.unsubscribe(self._post_notice)
            self._subscribed = False
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        self._runner.shutdown()

    def __enter__(self) -> Lane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def present_document(self, pages: Sequence[np.ndarray]) -> None:
        """A traveller put a document on the reader (ignored unless the lane is idle)."""
        self._inbox.put(_Operator("present_document", tuple(pages)))

    def reset(self) -> None:
        """The officer has dealt with the situation (after a fault, rejection, ...)."""
        self._inbox.put(_Operator("reset"))

    def set_maintenance(self, on: bool) -> None:
        self._inbox.put(_Operator("maintenance_on" if on else "maintenance_off"))

    def shut_down(self, *, now: bool = False) -> None:
        """The service is stopping: admit nobody new and go out of service (``SHUTDOWN``).

        Without ``now`` a passage under way finishes first; with it the lane goes out of
        service at once, which closes the passage of a traveller still inside as a case
        for an officer. Either way the doors end shut and the lamps show out of service.
        """
        self._inbox.put(_Operator("shutdown_now" if now else "shutdown"))

    def officer_release(self, passage_id: int, timeout: float = 2.0) -> bool:
        """An officer cleared the rejected traveller of ``passage_id`` who is still inside.

        True when the lane took it: the passage goes on to RELEASING, where the same
        safety guard as for a face match applies (alone in the zone, ENTRY closed). False
        when that traveller is not (or no longer) the one in the lane, or the lane did not
        answer within ``timeout``. Safe to call from any thread.
        """
        answer: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._inbox.put(_Operator("officer_release", passage_id=passage_id, answer=answer))
        if self._thread is None:
            self.run_pending()
        try:
            return answer.get(timeout=timeout)
        except queue.Empty:
            return False

    def subscribe(self, handler: Callable[[PassageRecord], None]) -> None:
        """``handler`` gets each finished passage, on the lane's thread: keep it quick."""
        self._record_handlers.append(handler)

    def subscribe_states(self, handler: Callable[[StateChange], None]) -> None:
        self._state_handlers.append(handler)

    def subscribe_rejections(self, handler: Callable[[PassageRecord], None]) -> None:
        """``handler`` gets the passage so far the moment it is rejected with the traveller
        still inside (officer called), so a case can reach an officer while a manual
        release is still possible; the final record follows through ``subscribe``."""
        self._rejection_handlers.append(handler)

    @property
    def barrier_state(self) -> BarrierState | None:
        """The driver's latest picture of the board (for dashboards and the review)."""
        return self._barrier.state

    @property
    def link_up(self) -> bool:
        return self._barrier.link_up

    @property
    def passage_id(self) -> int | None:
        return self._passage.id if self._passage is not None else None

    @property
    def decision(self) -> MatchDecision | None:
        """The match decision of the passage under way, if it got that far."""
        return self._passage.decision if self._passage is not None else None

    def wait_for_state(self, *states: str, timeout: float) -> bool:
        """Block until the lane is in one of ``states`` (for tools and tests)."""
        end = time.monotonic() + timeout
        with self._state_cond:
            while self.state not in states:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._state_cond.wait(left)
        return True

    def run_pending(self) -> None:
        """Without an owner thread: handle every queued input, then the timer (tests)."""
        self._subscribe_barrier()
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._handle(item)
        self._handle(None)

    # ------------------------------------------------------------ owner thread

    def _subscribe_barrier(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            self._barrier.subscribe(self._post_notice)

    def _post_notice(self, notice: BarrierNotice) -> None:
        """Runs on the barrier's notice thread: only hand the notice to the owner."""
        self._inbox.put(_Notice(notice))

    def _own(self) -> None:
        self._handle(None)
        while True:
            wait = _HOUSEKEEPING_S
            if self._deadline is not None:
                wait = min(wait, max(0.0, self._deadline - self._clock()))
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            self._handle(item)

    def _handle(self, item: object) -> None:
        """One input, then the timer, then settle; any exception sends the lane to fault."""
        try:
            if item is not None:
                self._dispatch(item)
            if self._deadline is not None and self._clock() >= self._deadline:
                self._deadline = None
                self._fire("timeout")
            self._settle()
        except Exception as exc:
            self._fail(exc)

    def _dispatch(self, item: object) -> None:
        if isinstance(item, _Notice):
            self._on_notice(item.notice)
        elif isinstance(item, StageResult):
            self._on_stage_done(item)
        elif isinstance(item, _Operator):
            self._on_operator(item)
        elif isinstance(item, _Guidance) and item.passage_id == self.passage_id:
            self._log.info("lane.guidance", message=item.message, passage=item.passage_id)

    def _on_notice(self, notice: BarrierNotice) -> None:
        if isinstance(notice, BoardChange):
            self._log.debug("lane.board_change", change=notice.describe())
        if isinstance(notice, ZoneCounted) and self._passage is not None:
            self._passage.max_zone = max(self._passage.max_zone, notice.count)
            if notice.count > 1 and self.state in PRE_RELEASE_STATES:
                self._passage.tailgating_seen = True
            if notice.count != 1:
                self._zone_changed_under_capture(self._passage)
        elif isinstance(notice, BoardRestarted):
            self._board_lost_its_mind(notice.detail or "BOARD_RESTARTED")
        elif isinstance(notice, LinkLost | LinkRestored):
            self._log.info("lane.link", up=isinstance(notice, LinkRestored),
                           detail=notice.detail)
            self._doors.forget()

    def _board_lost_its_mind(self, detail: str) -> None:
        """After a reboot the board's doors are closed and its lamps dark: start over."""
        self._doors.forget()
        if self._passage is not None:
            self._passage.mark(Outcome.OUT_OF_SERVICE, "BOARD_RESTARTED")
        self._fire("board_restarted", detail=detail)

    def _on_operator(self, op: _Operator) -> None:
        self._log.info("lane.operator", command=op.command, state=self.state)
        if op.command == "present_document":
            self._pages = op.pages
            if not self._fire("document_presented"):
                self._log.info("lane.document_ignored", state=self.state,
                               reason="LANE_NOT_READY")
        elif op.command == "reset":
            self._fire("officer_reset")
        elif op.command in ("shutdown", "shutdown_now"):
            self._shutdown = "now" if op.command == "shutdown_now" else "drain"
        elif op.command in ("maintenance_on", "maintenance_off"):
            self._maintenance_requested = op.command == "maintenance_on"
        elif op.command == "officer_release":
            taken = (self._passage is not None and self._passage.id == op.passage_id
                     and self._fire("officer_released"))
            if op.answer is not None:
                op.answer.put(bool(taken))

    def _on_stage_done(self, done: StageResult) -> None:
        passage = self._passage
        stage = STAGES[done.stage]
        if (passage is not None and done.stage == "capture" and self.state == CLOSING_ENTRY
                and passage.id == done.passage_id and done.attempt == passage.capture_attempt):
            passage.capture_held = done  # captured while ENTRY closed: used once it is shut
            return
        if (passage is None or passage.id != done.passage_id or self.state != stage.state
                or (done.stage == "capture" and done.attempt != passage.capture_attempt)):
            self._log.info("lane.stage_result_stale", stage=done.stage,
                           passage=done.passage_id, state=self.state)
            return
        error = None if done.error is None else type(done.error).__name__
        if done.error is not None:
            self._log.error("lane.stage_failed", stage=done.stage, error=error,
                            passage=passage.id)
        result: DocumentOutcome | CaptureOutcome | MatchDecision | None = (
            done.result if isinstance(done.result, (DocumentOutcome, CaptureOutcome,
                                                    MatchDecision))
            and isinstance(done.result, stage.result_type) else None)
        setattr(passage, stage.field, result)
        if result is None:
            self._fire(stage.refused, reasons=(f"{stage.error_prefix}_STAGE_ERROR:{error}",))
            return
        self._log.info("lane.decision", stage=done.stage, passage=passage.id,
                       **result.log_summary())
        if getattr(result, stage.positive):
            self._fire(stage.accepted)
        else:
            self._fire(stage.refused, reasons=tuple(result.reasons))

    def _fire(self, trigger: str, **kwargs: Any) -> bool:
        event = self.machine.events.get(trigger)
        if event is None:
            raise KeyError(f"no trigger {trigger!r}")
        if not event.transitions.get(self.state):
            return False  # not a trigger of this state: nothing to do, nothing to log
        return bool(event.trigger(self, **kwargs))

    def _settle(self) -> None:
        """Act on the newest picture of the board until no further trigger applies."""
        for _ in range(_SETTLE_LIMIT):
            if not self._fire_next():
                break
        else:
            self._log.error("lane.settle_limit", state=self.state)
        self._drive_doors()
        self._show_lamps()

    def _fire_next(self) -> bool:
        cause = self._blocking_cause()
        if cause != self._last_cause:
            self._log.info("lane.cause", overlay=cause.overlay if cause else None,
                           reason=cause.reason if cause else None)
            self._last_cause = cause
        overlay = cause.overlay if cause is not None else None
        state = self.state
        if state == EMERGENCY and overlay != EMERGENCY:
            return self._fire("emergency_cleared")
        if state == MAINTENANCE and overlay != MAINTENANCE:
            return self._fire("maintenance_ended")
        if overlay == EMERGENCY and state != EMERGENCY:
            return self._fire("emergency_raised", reason=cause.reason if cause else "")
        if overlay == MAINTENANCE and state not in (EMERGENCY, MAINTENANCE):
            return self._fire("maintenance_started", reason=cause.reason if cause else "")
        if overlay == OUT_OF_SERVICE and state not in OVERLAY_STATES:
            return self._fire("service_lost", reason=cause.reason if cause else "")
        if state in OVERLAY_STATES:
            return False
        status = self._barrier.state
        if status is None:
            return False
        return any(self._fact_holds(fact, status) and self._fire(fact) for fact in FACTS)

    def _fact_holds(self, fact: str, status: BarrierState) -> bool:
        return guards.fact_holds(fact, status, self._passage,
                                 self._entry_opened_for_passage(status))

    def _entry_opened_for_passage(self, status: BarrierState) -> bool:
        passage = self._passage
        if passage is None:
            return False
        if self.state == ADMITTING and status.entry is not DoorState.CLOSED:
            passage.entry_opened = True
        return passage.entry_opened

    def _blocking_cause(self) -> Cause | None:
        """Why the lane may not serve travellers now, highest priority first."""
        return guards.blocking_cause(
            state=self.state, board=self._barrier.state, link_up=self._barrier.link_up,
            maintenance_requested=self._maintenance_requested, shutdown=self._shutdown,
            stop_admitting_on_mains_loss=self.config.policy.stop_admitting_on_mains_loss,
            devices=self._devices)

    # ------------------------------------------------------------ doors and lamps

    def _door_refusal(self, door: Door, action: DoorAction) -> str | None:
        """Every door command passes the one guard, on the newest picture of the board."""
        return guards.door_refusal(door, action, state=self.state, board=self._barrier.state,
                                   link_up=self._barrier.link_up, passage=self._passage)

    def _drive_doors(self) -> None:
        """Move each door towards where the current state wants it, closes first."""
        self._doors.drive(DOOR_WANTS.get(self.state), self._door_refusal,
                          cycle_entry=self.state == REJECTED, state=self.state,
                          passage=self.passage_id)

    def _show_lamps(self) -> None:
        entry, exit_ = LAMPS[self.state]
        if self.state == IDLE and self._red_cross:
            entry = Signal.RED_CROSS
        if self.state in (REJECTED, CLOSING_REJECTED) and self._passage is not None and (
                self._passage.outcome is Outcome.TAILGATING):
            exit_ = Signal.OFFICER_CALLED
        self._doors.show((entry, exit_))

    # ------------------------------------------------------------ machine callbacks

    def lane_is_clear(self, event: EventData) -> bool:
        return guards.lane_is_clear(self._barrier.state, self._blocking_cause())

    def zone_is_empty(self, event: EventData) -> bool:
        status = self._barrier.state
        return status is not None and status.zone_count == 0

    def zone_has_one(self, event: EventData) -> bool:
        status = self._barrier.state
        return status is not None and status.zone_count == 1

    def someone_was_inside(self, event: EventData) -> bool:
        """The board reported somebody in the zone during this passage (events, not polls)."""
        return self._passage is not None and self._passage.max_zone > 0

    def exit_may_open(self, event: EventData) -> bool:
        status = self._barrier.state
        return status is not None and guards.release_refusal(status, self._passage) is None

    def officer_may_release(self, event: EventData) -> bool:
        return guards.officer_may_release(self._barrier.state, self._passage,
                                          self._blocking_cause())

    def nothing_blocks(self, event: EventData) -> bool:
        return self._blocking_cause() is None

    def clear_latched_faults(self, event: EventData) -> None:
        """Out of service: clear what the board latched, once its cause is gone."""
        status = self._barrier.state
        if status is None or not self._barrier.link_up:
            return
        if not status.latched or not self.config.policy.reset_faults_automatically:
            return
        try:
            cleared = self._barrier.reset_faults()
            self._barrier.refresh_state()
        except BarrierError as exc:
            self._log.warning("lane.reset_faults_failed", error=type(exc).__name__)
            return
        self._log.info("lane.reset_faults", cleared=cleared,
                       latched=sorted(c.value for c in status.latched))

    def rearm_timer(self, event: EventData) -> None:
        self._arm_timer(self.state)

    def end_red_cross(self, event: EventData) -> None:
        self._red_cross = False

    def _mark(self, outcome: Outcome, event: EventData, *reasons: str) -> None:
        if self._passage is not None:
            extra = tuple(event.kwargs.get("reasons", ()))
            self._passage.mark(outcome, *reasons, *extra)

    def mark_document_rejected(self, event: EventData) -> None:
        self._mark(Outcome.DOCUMENT_REJECTED, event)
        self._red_cross = True

    def mark_timeout(self, event: EventData) -> None:
        self._mark(Outcome.TIMEOUT, event, f"TIMEOUT_IN_{self.state.upper()}")

    def mark_tailgating(self, event: EventData) -> None:
        self._mark(Outcome.TAILGATING, event, "ZONE_COUNT_ABOVE_ONE")

    def mark_intruder(self, event: EventData) -> None:
        self._mark(Outcome.TAILGATING, event, "ZONE_OCCUPIED_BEFORE_ADMISSION")

    def mark_turned_back(self, event: EventData) -> None:
        if self.state == CLOSING_ENTRY and self._passage is not None and (
                self._passage.max_zone == 0):
            self._mark(Outcome.TIMEOUT, event, "NOBODY_ENTERED")
        else:
            self._mark(Outcome.TURNED_BACK, event, f"LEFT_BACKWARDS_FROM_{self.state.upper()}")

    def mark_face_not_captured(self, event: EventData) -> None:
        reason = "CAPTURE_TIMEOUT" if event.event.name == "timeout" else "FACE_NOT_CAPTURED"
        self._mark(Outcome.FACE_NOT_CAPTURED, event, reason)

    def mark_face_mismatch(self, event: EventData) -> None:
        self._mark(Outcome.FACE_MISMATCH, event)

    def mark_release_refused(self, event: EventData) -> None:
        status = self._barrier.state
        why = (guards.release_refusal(status, self._passage) if status is not None
               else "NO_STATUS")
        outcome = Outcome.TAILGATING if why == "TAILGATING" else Outcome.FACE_MISMATCH
        self._mark(outcome, event, f"RELEASE_REFUSED:{why}")

    def mark_passed(self, event: EventData) -> None:
        self._mark(Outcome.PASSED, event)

    def mark_officer_release(self, event: EventData) -> None:
        passage = self._require_passage()
        passage.officer_release = True
        passage.outcome = Outcome.OFFICER_RELEASED  # the officer's decision overrides
        passage.reasons.append("OFFICER_RELEASE")

    def before_transition(self, event: EventData) -> None:
        dest = event.transition.dest if event.transition is not None else None
        if dest in PASSAGE_STATES and self._passage is None:
            self._open_passage(origin=self.state)

    def after_transition(self, event: EventData) -> None:
        if event.transition is None:
            return
        source, dest = event.transition.source, event.transition.dest
        trigger = event.event.name
        now = self._clock()
        if dest is None:
            self._log.debug("lane.internal", trigger=trigger, state=source)
            return
        passage = self._passage
        if passage is not None and source in PASSAGE_STATES:
            passage.state_ms[source] = passage.state_ms.get(source, 0.0) + (
                now - self._entered_at) * 1000.0
        self._entered_at = now
        self._log.info("lane.transition", trigger=trigger, source=source, dest=dest,
                       passage=passage.id if passage else None,
                       **{k: v for k, v in event.kwargs.items() if k in ("reason", "detail")})
        if passage is not None and dest not in PASSAGE_STATES:
            self._close_passage(dest, trigger, event)
        self._arm_timer(dest)
        change = StateChange(self.lane_id, passage.id if passage else None, trigger, source,
                             dest, self._wall(), now)
        for handler in list(self._state_handlers):
            self._notify(handler, change)
        with self._state_cond:
            self._state_cond.notify_all()

    def on_enter_reading_document(self, event: EventData) -> None:
        passage, pages, check = self._require_passage(), self._pages, self._document_check
        self._pages = ()
        self._red_cross = False
        self._submit(passage.id, "document", lambda: check.check(pages))

    def on_enter_closing_entry(self, event: EventData) -> None:
        """The traveller is inside alone: start the face capture while ENTRY closes.

        Frames only; nothing is decided before CAPTURING_FACE (doors shut, one person), and
        any change of the zone count meanwhile throws the capture away (another person).
        """
        status = self._barrier.state
        if (self.config.policy.capture_while_closing and event.event.name == "traveller_inside"
                and status is not None and status.zone_count == 1):
            self._start_capture(self._require_passage())

    def on_exit_closing_entry(self, event: EventData) -> None:
        dest = event.transition.dest if event.transition is not None else None
        if dest != CAPTURING_FACE and self._passage is not None:
            self._drop_capture(self._passage, f"LEFT_FOR_{str(dest).upper()}")

    def on_enter_capturing_face(self, event: EventData) -> None:
        passage = self._require_passage()
        if passage.capture_attempt:  # started while ENTRY closed, still the same traveller
            held, passage.capture_held = passage.capture_held, None
            if held is not None:
                self._inbox.put(held)  # behind any zone event already queued
            return
        self._start_capture(passage)

    def on_exit_capturing_face(self, event: EventData) -> None:
        self._cancel_capture.set()
        if self._passage is not None:
            self._passage.capture_attempt = 0

    def _start_capture(self, passage: Passage) -> None:
        self._cancel_capture.set()
        self._cancel_capture = cancel = threading.Event()
        passage.capture_attempt = attempt = next(self._capture_attempts)
        passage.capture_held = None
        capture = self._face_capture
        pid = passage.id

        def guidance(message: str) -> None:
            self._inbox.put(_Guidance(pid, message))

        self._submit(pid, "capture", lambda: capture.capture(guidance, cancel), attempt)

    def _drop_capture(self, passage: Passage, reason: str) -> None:
        if passage.capture_attempt:
            self._cancel_capture.set()
            self._log.info("lane.capture_dropped", passage=passage.id, reason=reason)
        passage.capture_attempt = 0
        passage.capture_held = None

    def _zone_changed_under_capture(self, passage: Passage) -> None:
        """The zone count left 1 while a capture ran: its frames may show somebody else."""
        if not passage.capture_attempt:
            return
        self._drop_capture(passage, "ZONE_CHANGED")
        if self.state == CAPTURING_FACE:
            self._start_capture(passage)

    def on_enter_verifying(self, event: EventData) -> None:
        passage = self._require_passage()
        document, capture, verifier = passage.document, passage.capture, self._face_verifier
        if document is None or capture is None:
            raise RuntimeError("verifying without a document and a capture")
        self._submit(passage.id, "verify", lambda: verifier.verify(document, capture))

    def on_enter_recovering(self, event: EventData) -> None:
        """Re-read the board: our picture may be stale after a reboot or a link loss."""
        self._doors.forget()
        if not self._barrier.link_up:
            return
        try:
            self._barrier.refresh_state()
        except BarrierError as exc:
            self._log.warning("lane.refresh_failed", error=type(exc).__name__)
        self.clear_latched_faults(event)

    def on_enter_rejected(self, event: EventData) -> None:
        self._doors.rejection_started()
        passage = self._passage
        if passage is not None and event.transition is not None and (
                event.transition.source != CLOSING_REJECTED):
            record = self._record(passage, ended=False)
            for handler in list(self._rejection_handlers):
                self._notify(handler, record)

    def on_enter_out_of_service(self, event: EventData) -> None:
        self._log.warning("lane.out_of_service", reason=event.kwargs.get("reason", ""),
                          trigger=event.event.name)

    # ------------------------------------------------------------ passages

    def _require_passage(self) -> Passage:
        if self._passage is None:
            raise RuntimeError(f"state {self.state} without a passage")
        return self._passage

    def _open_passage(self, origin: str) -> None:
        self._passage = Passage(next(self._passage_ids), self._wall(), self._clock())
        if origin == RECOVERING:
            # somebody was found inside after a restart or an outage: sent back out
            self._passage.mark(Outcome.OUT_OF_SERVICE, "OCCUPIED_AFTER_RECOVERY")
        status = self._barrier.state
        if status is not None:
            self._passage.max_zone = status.zone_count

    def _close_passage(self, dest: str, trigger: str, event: EventData) -> None:
        passage = self._passage
        if passage is None:
            return
        self._passage = None
        if dest == EMERGENCY:
            passage.mark(Outcome.EMERGENCY, "EMERGENCY")
        elif dest != IDLE:
            passage.mark(Outcome.OUT_OF_SERVICE,
                         str(event.kwargs.get("reason") or trigger).upper())
        record = self._record(passage, ended=True)
        self._log.info("lane.passage", **record.log_summary())
        # Kept for inspection without the evidence: biometric data lives only as long as
        # the passage (or the officer's case, which got it through the subscribers).
        self.records.append(replace(record, evidence=PassageEvidence()))
        del self.records[:-100]
        for handler in list(self._record_handlers):
            self._notify(handler, record)

    def _record(self, passage: Passage, ended: bool) -> PassageRecord:
        return passage.record(self.lane_id, ended=ended, now_mono=self._clock(),
                              now_wall=self._wall())

    def _notify(self, handler: Callable[[Any], None], item: object) -> None:
        try:
            handler(item)
        except Exception as exc:  # a subscriber's bug must not stop the lane
            self._log.error("lane.subscriber_failed", error=type(exc).__name__,
                            message=str(exc))

    def _submit(self, passage_id: int, stage: str, job: Callable[[], object],
                attempt: int = 0) -> None:
        def done(result: object, error: BaseException | None) -> None:
            self._inbox.put(StageResult(passage_id, stage, result, error, attempt))

        self._runner.submit(job, done)

    def _arm_timer(self, state: str) -> None:
        if state == IDLE:
            seconds = self.config.timeouts.red_cross_hold if self._red_cross else None
        elif state == OUT_OF_SERVICE:
            seconds = self.config.timeouts.out_of_service_retry
        else:
            seconds = self.config.timeouts.for_state(state)
        self._deadline = None if seconds is None else self._clock() + seconds

    def _fail(self, exc: Exception) -> None:
        """A callback raised: log it with its traceback, never lose it, go to fault."""
        self.faults.append(f"{type(exc).__name__}: {exc}")
        del self.faults[:-100]
        self._log.error("lane.fault", state=self.state, error=type(exc).__name__,
                        message=str(exc), exc_info=exc)
        try:
            if self.state != FAULT:
                self._fire("callback_failed", reason=f"FAULT:{type(exc).__name__}")
        except Exception as again:
            self._log.error("lane.fault_in_fault", error=type(again).__name__,
                            exc_info=again)
            self.machine.set_state(FAULT, model=self)
        with contextlib.suppress(Exception):
            self._show_lamps()
