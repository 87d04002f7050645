"""The lane state machine: one traveller at a time through the ENTRY/EXIT mantrap.

Everything the lane reacts to — barrier notices, stage results, timer expiries and
operator commands — is put on one queue and consumed by ONE owner thread, which is the
only thread that fires triggers or commands the board. Stages run on worker threads and
post their result back; the board link is kept alive by the driver's own thread, so a
slow stage can never starve the poll or trip the board's watchdog.

How to read this file: ``STATES`` and ``TRANSITIONS`` below are the whole machine
(``gate diagram`` draws it from them). ``DOOR_WANTS`` and ``LAMPS`` say, per state, which
position each door should reach and what each lamp shows; ``_drive_doors`` moves the doors
towards that wish, and every door command passes the one safety guard,
``_door_refusal``. After every input, ``_settle`` fires the first trigger whose fact holds
(an overlay first: emergency, maintenance, out of service), until nothing more applies;
callbacks never fire triggers themselves, so nothing loops inside ``on_enter``.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import structlog
from transitions import EventData, Machine

from gate.config import LaneConfig
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
    CommandRejected,
    Condition,
    Door,
    DoorAction,
    DoorState,
    LinkLost,
    LinkRestored,
    Side,
    Signal,
    ZoneCounted,
)
from hardware.device import DeviceHealth

# ------------------------------------------------------------------ the machine, as data

IDLE = "idle"
READING_DOCUMENT = "reading_document"
ADMITTING = "admitting"
CLOSING_ENTRY = "closing_entry"
CAPTURING_FACE = "capturing_face"
VERIFYING = "verifying"
RELEASING = "releasing"
CLOSING_EXIT = "closing_exit"
REJECTED = "rejected"
CLOSING_REJECTED = "closing_rejected"
RECOVERING = "recovering"
OUT_OF_SERVICE = "out_of_service"
EMERGENCY = "emergency"
MAINTENANCE = "maintenance"
FAULT = "fault"

#: A passage is open while the lane is in one of these states.
PASSAGE_STATES = (
    READING_DOCUMENT, ADMITTING, CLOSING_ENTRY, CAPTURING_FACE, VERIFYING, RELEASING,
    CLOSING_EXIT, REJECTED, CLOSING_REJECTED,
)
#: Before the exit has been released: a second person in the zone here is tailgating.
PRE_RELEASE_STATES = (ADMITTING, CLOSING_ENTRY, CAPTURING_FACE, VERIFYING)
#: A traveller may be inside the lane (so mains loss lets the passage finish).
ADMITTED_STATES = tuple(s for s in PASSAGE_STATES if s != READING_DOCUMENT)
OVERLAY_STATES = (OUT_OF_SERVICE, EMERGENCY, MAINTENANCE, FAULT)
#: Where time is spent on the host (stages) versus in the physical world (doors, walking).
SYSTEM_STATES = (READING_DOCUMENT, CAPTURING_FACE, VERIFYING)
PHYSICAL_STATES = (ADMITTING, CLOSING_ENTRY, RELEASING, CLOSING_EXIT, REJECTED,
                   CLOSING_REJECTED)

STATES: tuple[str, ...] = (
    IDLE, *PASSAGE_STATES, RECOVERING, OUT_OF_SERVICE, EMERGENCY, MAINTENANCE, FAULT,
)



def _all_but(*excluded: str) -> list[str]:
    return [s for s in STATES if s not in excluded]


#: Each entry: trigger, source(s), dest (None: internal), and optional conditions/before/after.
TRANSITIONS: list[dict[str, Any]] = [
    # ---- the passage
    {"trigger": "document_presented", "source": IDLE, "dest": READING_DOCUMENT,
     "conditions": "lane_is_clear"},
    {"trigger": "document_accepted", "source": READING_DOCUMENT, "dest": ADMITTING},
    {"trigger": "document_rejected", "source": READING_DOCUMENT, "dest": IDLE,
     "before": "mark_document_rejected"},
    {"trigger": "timeout", "source": READING_DOCUMENT, "dest": IDLE, "before": "mark_timeout"},
    {"trigger": "tailgate_detected", "source": list(PRE_RELEASE_STATES), "dest": REJECTED,
     "before": "mark_tailgating"},
    {"trigger": "intruder_detected", "source": [READING_DOCUMENT, ADMITTING], "dest": REJECTED,
     "before": "mark_intruder"},
    {"trigger": "traveller_inside", "source": ADMITTING, "dest": CLOSING_ENTRY},
    # somebody stepped into the zone and back out before the lane saw them inside: close
    # ENTRY and let the closed doors tell (zone empty: TURNED_BACK; back inside: capture)
    {"trigger": "zone_cleared", "source": ADMITTING, "dest": CLOSING_ENTRY,
     "conditions": "someone_was_inside"},
    {"trigger": "timeout", "source": ADMITTING, "dest": CLOSING_ENTRY, "before": "mark_timeout"},
    {"trigger": "doors_closed", "source": CLOSING_ENTRY, "dest": CAPTURING_FACE,
     "conditions": "zone_has_one"},
    {"trigger": "doors_closed", "source": CLOSING_ENTRY, "dest": IDLE,
     "conditions": "zone_is_empty", "before": "mark_turned_back"},
    {"trigger": "timeout", "source": CLOSING_ENTRY, "dest": REJECTED, "before": "mark_timeout"},
    {"trigger": "face_captured", "source": CAPTURING_FACE, "dest": VERIFYING},
    {"trigger": "face_not_captured", "source": CAPTURING_FACE, "dest": REJECTED,
     "before": "mark_face_not_captured"},
    {"trigger": "timeout", "source": CAPTURING_FACE, "dest": REJECTED,
     "before": "mark_face_not_captured"},
    {"trigger": "match_confirmed", "source": VERIFYING, "dest": RELEASING,
     "conditions": "exit_may_open"},
    {"trigger": "match_confirmed", "source": VERIFYING, "dest": REJECTED,
     "unless": "exit_may_open", "before": "mark_release_refused"},
    {"trigger": "match_refused", "source": VERIFYING, "dest": REJECTED,
     "before": "mark_face_mismatch"},
    {"trigger": "timeout", "source": VERIFYING, "dest": REJECTED, "before": "mark_timeout"},
    {"trigger": "zone_cleared", "source": RELEASING, "dest": CLOSING_EXIT},
    {"trigger": "timeout", "source": RELEASING, "dest": REJECTED,
     "before": "mark_turned_back"},
    {"trigger": "doors_closed", "source": CLOSING_EXIT, "dest": IDLE,
     "conditions": "zone_is_empty", "before": "mark_passed"},
    {"trigger": "doors_closed", "source": CLOSING_EXIT, "dest": REJECTED,
     "unless": "zone_is_empty", "before": "mark_turned_back"},
    {"trigger": "timeout", "source": CLOSING_EXIT, "dest": OUT_OF_SERVICE,
     "before": "mark_timeout"},
    {"trigger": "zone_cleared", "source": REJECTED, "dest": CLOSING_REJECTED},
    {"trigger": "timeout", "source": REJECTED, "dest": OUT_OF_SERVICE, "before": "mark_timeout"},
    {"trigger": "doors_closed", "source": CLOSING_REJECTED, "dest": IDLE,
     "conditions": "zone_is_empty"},
    {"trigger": "doors_closed", "source": CLOSING_REJECTED, "dest": REJECTED,
     "unless": "zone_is_empty"},
    {"trigger": "timeout", "source": CLOSING_REJECTED, "dest": OUT_OF_SERVICE,
     "before": "mark_timeout"},
    {"trigger": "timeout", "source": IDLE, "dest": None, "after": "end_red_cross"},
    # ---- recovery: doors closed and the zone empty before a new traveller
    {"trigger": "doors_closed", "source": RECOVERING, "dest": IDLE,
     "conditions": "zone_is_empty"},
    {"trigger": "doors_closed", "source": RECOVERING, "dest": REJECTED,
     "unless": "zone_is_empty"},  # the new passage is marked OCCUPIED_AFTER_RECOVERY
    {"trigger": "timeout", "source": RECOVERING, "dest": OUT_OF_SERVICE},
    {"trigger": "timeout", "source": OUT_OF_SERVICE, "dest": RECOVERING,
     "prepare": "clear_latched_faults", "conditions": "nothing_blocks"},
    {"trigger": "timeout", "source": OUT_OF_SERVICE, "dest": None, "after": "rearm_timer"},
    {"trigger": "board_restarted", "source": [IDLE, *PASSAGE_STATES, RECOVERING],
     "dest": RECOVERING},
    {"trigger": "officer_reset", "source": [FAULT, REJECTED, CLOSING_REJECTED, OUT_OF_SERVICE],
     "dest": RECOVERING},
    # an officer who reviewed the case clears the traveller still inside: a human decision
    {"trigger": "officer_released", "source": [REJECTED, CLOSING_REJECTED], "dest": RELEASING,
     "conditions": "officer_may_release", "before": "mark_officer_release"},
    # ---- overlays
    {"trigger": "emergency_raised", "source": _all_but(EMERGENCY), "dest": EMERGENCY},
    {"trigger": "emergency_cleared", "source": EMERGENCY, "dest": RECOVERING},
    {"trigger": "maintenance_started", "source": _all_but(EMERGENCY, MAINTENANCE),
     "dest": MAINTENANCE},
    {"trigger": "maintenance_ended", "source": MAINTENANCE, "dest": RECOVERING},
    {"trigger": "service_lost", "source": _all_but(*OVERLAY_STATES), "dest": OUT_OF_SERVICE},
    {"trigger": "callback_failed", "source": _all_but(FAULT), "dest": FAULT},
]

#: Facts checked after every input, in this order; each names the trigger it fires.
FACTS: tuple[str, ...] = ("intruder_detected", "tailgate_detected", "traveller_inside",
                          "zone_cleared", "doors_closed")

OPEN, SHUT = DoorState.OPEN, DoorState.CLOSED
#: Where each door should be, per state: (ENTRY, EXIT). None: the host leaves the doors alone.
DOOR_WANTS: dict[str, tuple[DoorState, DoorState] | None] = {
    IDLE: (SHUT, SHUT), READING_DOCUMENT: (SHUT, SHUT),
    ADMITTING: (OPEN, SHUT), CLOSING_ENTRY: (SHUT, SHUT),
    CAPTURING_FACE: (SHUT, SHUT), VERIFYING: (SHUT, SHUT),
    RELEASING: (SHUT, OPEN), CLOSING_EXIT: (SHUT, SHUT),
    REJECTED: (OPEN, SHUT), CLOSING_REJECTED: (SHUT, SHUT),
    RECOVERING: (SHUT, SHUT), OUT_OF_SERVICE: (SHUT, SHUT), FAULT: (SHUT, SHUT),
    EMERGENCY: None, MAINTENANCE: None,
}

S = Signal
#: What each lamp shows, per state: (ENTRY side, EXIT side).
LAMPS: dict[str, tuple[Signal, Signal]] = {
    IDLE: (S.WAIT, S.RED_CROSS),  # present your document here; nobody in from landside
    READING_DOCUMENT: (S.WAIT, S.RED_CROSS),
    ADMITTING: (S.GREEN_ARROW, S.RED_CROSS),
    CLOSING_ENTRY: (S.RED_CROSS, S.WAIT),
    CAPTURING_FACE: (S.RED_CROSS, S.WAIT),
    VERIFYING: (S.RED_CROSS, S.WAIT),
    RELEASING: (S.RED_CROSS, S.GREEN_ARROW),
    CLOSING_EXIT: (S.WAIT, S.RED_CROSS),
    REJECTED: (S.OFFICER_CALLED, S.RED_CROSS),
    CLOSING_REJECTED: (S.OFFICER_CALLED, S.RED_CROSS),
    RECOVERING: (S.WAIT, S.RED_CROSS),
    OUT_OF_SERVICE: (S.OUT_OF_SERVICE, S.OUT_OF_SERVICE),
    EMERGENCY: (S.GREEN_ARROW, S.GREEN_ARROW),  # evacuate either way
    MAINTENANCE: (S.OUT_OF_SERVICE, S.OUT_OF_SERVICE),
    FAULT: (S.OFFICER_CALLED, S.OUT_OF_SERVICE),
}

_OTHER = {Door.ENTRY: Door.EXIT, Door.EXIT: Door.ENTRY}
#: A door command that produced no state change is retried after this long.
_DOOR_COMMAND_RETRY_S = 1.5
_SETTLE_LIMIT = 32
#: The owner thread re-checks the doors at least this often even when nothing happens
#: (an obstructed doorway's close retry, a door command that got no answer).
_HOUSEKEEPING_S = 0.25


def build_machine(model: object | None) -> Machine:
    """The lane's machine; ``model`` None gives a machine for drawing only."""
    return Machine(
        model=model,
        states=list(STATES), transitions=[dict(t) for t in TRANSITIONS],
        initial=RECOVERING, auto_transitions=False, ignore_invalid_triggers=True,
        send_event=True, before_state_change="before_transition" if model else None,
        after_state_change="after_transition" if model else None,
        name="lane",
    )


# ------------------------------------------------------------------ records


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


@dataclass
class _Passage:
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
    capture_held: _StageDone | None = None  # its result, if it came before CAPTURING_FACE

    def mark(self, outcome: Outcome, *reasons: str) -> None:
        """The first outcome wins; reasons accumulate (they tell the whole story)."""
        if self.outcome is None:
            self.outcome = outcome
        self.reasons.extend(r for r in reasons if r not in self.reasons)


# ------------------------------------------------------------------ inputs and workers


@dataclass(frozen=True)
class _Notice:
    notice: BarrierNotice


@dataclass(frozen=True)
class _StageDone:
    passage_id: int
    stage: str  # "document" | "capture" | "verify"
    result: object
    error: BaseException | None
    attempt: int = 0  # which capture of the passage (a restarted capture's result is stale)


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


@dataclass(frozen=True)
class _Stage:
    """How one stage's result drives the machine."""

    state: str  # the state that waits for it
    result_type: type  # what the stage returns
    field: str  # where the passage keeps it
    positive: str  # the result's attribute that says yes
    accepted: str  # trigger on yes
    refused: str  # trigger on no (with the result's reasons) or on a crash
    error_prefix: str  # reason code prefix when the stage raised


_STAGES: dict[str, _Stage] = {
    "document": _Stage(READING_DOCUMENT, DocumentOutcome, "document", "accepted",
                       "document_accepted", "document_rejected", "DOCUMENT"),
    "capture": _Stage(CAPTURING_FACE, CaptureOutcome, "capture", "ok",
                      "face_captured", "face_not_captured", "CAPTURE"),
    "verify": _Stage(VERIFYING, MatchDecision, "decision", "match",
                     "match_confirmed", "match_refused", "VERIFY"),
}

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


@dataclass(frozen=True)
class _Cause:
    overlay: str  # EMERGENCY | MAINTENANCE | OUT_OF_SERVICE
    reason: str


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

        self._passage: _Passage | None = None
        self._passage_ids = itertools.count(1)
        self._pages: tuple[np.ndarray, ...] = ()
        self._cancel_capture = threading.Event()
        self._capture_attempts = itertools.count(1)
        self._deadline: float | None = None
        self._entered_at = clock()
        self._red_cross = False
        self._maintenance_requested = False
        self._door_pending: dict[Door, tuple[DoorAction, float]] = {}
        self._door_seen: dict[Door, DoorState] = {}
        self._obstructed_since: dict[Door, float] = {}
        self._entry_cycled = False
        self._lamps_shown: dict[Side, Signal] = {}
        self._last_refusal: dict[Door, str] = {}
        self._last_cause: _Cause | None = None
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
        elif isinstance(item, _StageDone):
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
            self._lamps_shown.clear()
            self._door_pending.clear()

    def _board_lost_its_mind(self, detail: str) -> None:
        """After a reboot the board's doors are closed and its lamps dark: start over."""
        self._lamps_shown.clear()
        self._door_pending.clear()
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

    def _on_stage_done(self, done: _StageDone) -> None:
        passage = self._passage
        stage = _STAGES[done.stage]
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
        if fact == "intruder_detected":
            # somebody in the zone although ENTRY has not opened for this passage yet
            opened = self._entry_opened_for_passage(status)
            return status.zone_count > 0 and not opened
        if fact == "tailgate_detected":
            return status.zone_count > 1 or (
                self._passage is not None and self._passage.tailgating_seen)
        if fact == "traveller_inside":
            return status.zone_count == 1 and not status.entry_beam
        if fact == "zone_cleared":
            return status.zone_count == 0 and status.beams_clear
        if fact == "doors_closed":
            return status.entry is DoorState.CLOSED and status.exit is DoorState.CLOSED
        raise KeyError(fact)

    def _entry_opened_for_passage(self, status: BarrierState) -> bool:
        passage = self._passage
        if passage is None:
            return False
        if self.state == ADMITTING and status.entry is not DoorState.CLOSED:
            passage.entry_opened = True
        return passage.entry_opened

    def _blocking_cause(self) -> _Cause | None:
        """Why the lane may not serve travellers now, highest priority first."""
        status = self._barrier.state
        if status is not None and status.has(Condition.EMERGENCY):
            return _Cause(EMERGENCY, "EMERGENCY")
        if status is None or not self._barrier.link_up:
            return _Cause(OUT_OF_SERVICE, "LINK_DOWN")
        if status.has(Condition.MAINTENANCE_KEY):
            return _Cause(MAINTENANCE, "MAINTENANCE_KEY")
        if self._maintenance_requested:
            return _Cause(MAINTENANCE, "OPERATOR")
        for condition in (Condition.WATCHDOG, Condition.TAMPER, Condition.DOOR_FAULT):
            if status.has(condition):
                return _Cause(OUT_OF_SERVICE, condition.value)
        admitted = self.state in ADMITTED_STATES
        if self._shutdown == "now" or (self._shutdown == "drain" and not admitted):
            return _Cause(OUT_OF_SERVICE, "SHUTDOWN")
        if (status.has(Condition.ON_UPS) and self.config.policy.stop_admitting_on_mains_loss
                and not admitted):
            return _Cause(OUT_OF_SERVICE, "MAINS_LOST")
        if not admitted:  # a traveller inside finishes with what the lane already has
            for name, probe in self._devices.items():
                health = probe()
                if not health.ok:
                    return _Cause(OUT_OF_SERVICE, health.reason or f"{name.upper()}_FAILED")
        return None

    # ------------------------------------------------------------ doors and lamps

    def _door_refusal(self, door: Door, action: DoorAction) -> str | None:
        """THE safety guard: every door command passes here. None means allowed.

        Never a command while the link is down or EMERGENCY is raised (the board owns
        the doors then); never open a door unless the other is CLOSED; ENTRY opens only to
        admit into an empty zone or to send a traveller back; EXIT opens only to release a
        traveller with a positive decision who is alone in the zone with ENTRY CLOSED.
        """
        status = self._barrier.state
        if status is None or not self._barrier.link_up:
            return "LINK_DOWN"
        if status.has(Condition.EMERGENCY) or self.state == EMERGENCY:
            return "EMERGENCY"
        if action is DoorAction.CLOSE:
            return None
        if status.door(_OTHER[door]) is not DoorState.CLOSED:
            return "OTHER_DOOR_NOT_CLOSED"
        if door is Door.ENTRY:
            if self.state == ADMITTING:
                return None if status.zone_count == 0 else "ZONE_NOT_EMPTY"
            return None if self.state == REJECTED else "ENTRY_NOT_WANTED"
        if self.state != RELEASING:
            return "NOT_RELEASING"
        return self._release_refusal(status)

    def _release_refusal(self, status: BarrierState) -> str | None:
        passage = self._passage
        if passage is None or not (passage.officer_release or (
                passage.decision is not None and passage.decision.match)):
            return "NO_POSITIVE_DECISION"
        if passage.tailgating_seen:
            return "TAILGATING"
        if status.zone_count != 1:
            return "ZONE_NOT_ONE"
        if status.entry is not DoorState.CLOSED:
            return "ENTRY_NOT_CLOSED"
        if status.has(Condition.EMERGENCY):
            return "EMERGENCY"
        return None

    def _command_door(self, door: Door, action: DoorAction) -> None:
        refusal = self._door_refusal(door, action)
        if refusal is not None:
            if self._last_refusal.get(door) != refusal:
                self._log.info("lane.door_refused", door=door.name, action=action.name,
                               reason=refusal, state=self.state)
                self._last_refusal[door] = refusal
            return
        self._last_refusal.pop(door, None)
        self._door_pending[door] = (action, self._clock())
        self._log.info("lane.door_command", door=door.name, action=action.name,
                       state=self.state, passage=self.passage_id)
        try:
            if action is DoorAction.OPEN:
                self._barrier.open_door(door)
            else:
                self._barrier.close_door(door)
        except CommandRejected as exc:
            # the board knew better (flags not yet polled, interlock): re-decide later
            self._log.warning("lane.door_nak", door=door.name, action=action.name,
                              reason=str(exc.reason))
        except BarrierError as exc:
            self._log.warning("lane.door_failed", door=door.name, action=action.name,
                              error=type(exc).__name__)

    def _drive_doors(self) -> None:
        """Move each door towards where the current state wants it, closes first."""
        wants = DOOR_WANTS.get(self.state)
        status = self._barrier.state
        if wants is None or status is None or not self._barrier.link_up:
            return
        if self.state == REJECTED and not self._entry_cycled:
            # An ENTRY still open from admitting is closed first and then reopened: the
            # reopening is what tells the traveller (and a tailgater) to go back.
            self._entry_cycled = status.entry is DoorState.CLOSED
            if not self._entry_cycled:
                wants = (SHUT, SHUT)
        now = self._clock()
        for door in Door:
            seen = status.door(door)
            if self._door_seen.get(door) is not seen:
                self._door_seen[door] = seen
                self._door_pending.pop(door, None)
            pending = self._door_pending.get(door)
            if pending is not None and now - pending[1] > _DOOR_COMMAND_RETRY_S:
                self._door_pending.pop(door, None)
        plan: list[tuple[Door, DoorAction]] = []
        for door, want in zip(Door, wants, strict=True):
            seen = status.door(door)
            obstructed = status.beam(door)
            if not obstructed:
                self._obstructed_since.pop(door, None)
            elif door not in self._obstructed_since:
                self._obstructed_since[door] = now
            if door in self._door_pending:
                continue
            if want is DoorState.CLOSED and seen in (DoorState.OPEN, DoorState.OPENING,
                                                     DoorState.BLOCKED):
                # Never close on a body in the doorway; but a doorway blocked for long is
                # given an obstruction-safe try, so a real jam ends as DOOR_FAULT.
                if obstructed and now - self._obstructed_since[door] < (
                        self.config.timeouts.obstructed_doorway):
                    continue
                if obstructed:
                    self._obstructed_since[door] = now
                plan.insert(0, (door, DoorAction.CLOSE))
            elif want is DoorState.OPEN and seen is DoorState.CLOSED:
                plan.append((door, DoorAction.OPEN))
        for door, action in plan:
            self._command_door(door, action)

    def _show_lamps(self) -> None:
        if self._barrier.state is None or not self._barrier.link_up:
            return
        entry, exit_ = LAMPS[self.state]
        if self.state == IDLE and self._red_cross:
            entry = Signal.RED_CROSS
        if self.state in (REJECTED, CLOSING_REJECTED) and self._passage is not None and (
                self._passage.outcome is Outcome.TAILGATING):
            exit_ = Signal.OFFICER_CALLED
        for side, signal in ((Side.ENTRY, entry), (Side.EXIT, exit_)):
            if self._lamps_shown.get(side) is signal:
                continue
            try:
                self._barrier.set_lamp(side, signal)
            except BarrierError as exc:
                self._log.warning("lane.lamp_failed", side=side.name, error=type(exc).__name__)
                return
            self._lamps_shown[side] = signal

    # ------------------------------------------------------------ machine callbacks

    def lane_is_clear(self, event: EventData) -> bool:
        status = self._barrier.state
        return (status is not None and self._blocking_cause() is None
                and status.zone_count == 0 and status.beams_clear
                and status.entry is DoorState.CLOSED and status.exit is DoorState.CLOSED)

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
        return status is not None and self._release_refusal(status) is None

    def officer_may_release(self, event: EventData) -> bool:
        """Only a lone traveller, never after tailgating, never with a cause blocking."""
        status = self._barrier.state
        passage = self._passage
        return (status is not None and passage is not None and not passage.tailgating_seen
                and status.zone_count == 1 and status.beams_clear  # not on the way out
                and self._blocking_cause() is None)

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
        why = self._release_refusal(status) if status is not None else "NO_STATUS"
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

    def _start_capture(self, passage: _Passage) -> None:
        self._cancel_capture.set()
        self._cancel_capture = cancel = threading.Event()
        passage.capture_attempt = attempt = next(self._capture_attempts)
        passage.capture_held = None
        capture = self._face_capture
        pid = passage.id

        def guidance(message: str) -> None:
            self._inbox.put(_Guidance(pid, message))

        self._submit(pid, "capture", lambda: capture.capture(guidance, cancel), attempt)

    def _drop_capture(self, passage: _Passage, reason: str) -> None:
        if passage.capture_attempt:
            self._cancel_capture.set()
            self._log.info("lane.capture_dropped", passage=passage.id, reason=reason)
        passage.capture_attempt = 0
        passage.capture_held = None

    def _zone_changed_under_capture(self, passage: _Passage) -> None:
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
        self._lamps_shown.clear()
        self._door_pending.clear()
        if not self._barrier.link_up:
            return
        try:
            self._barrier.refresh_state()
        except BarrierError as exc:
            self._log.warning("lane.refresh_failed", error=type(exc).__name__)
        self.clear_latched_faults(event)

    def on_enter_rejected(self, event: EventData) -> None:
        self._entry_cycled = False
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

    def _require_passage(self) -> _Passage:
        if self._passage is None:
            raise RuntimeError(f"state {self.state} without a passage")
        return self._passage

    def _open_passage(self, origin: str) -> None:
        self._passage = _Passage(next(self._passage_ids), self._wall(), self._clock())
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

    def _record(self, passage: _Passage, ended: bool) -> PassageRecord:
        """The passage as a record: final when ``ended``, else as it stands now."""
        now = self._clock()
        return PassageRecord(
            lane_id=self.lane_id, passage_id=passage.id,
            outcome=passage.outcome or Outcome.TIMEOUT,
            reasons=tuple(passage.reasons), started_at=passage.started_at,
            ended_at=self._wall(), duration_ms=(now - passage.started_mono) * 1000.0,
            state_ms=dict(passage.state_ms),
            system_ms=sum(v for k, v in passage.state_ms.items() if k in SYSTEM_STATES),
            physical_ms=sum(v for k, v in passage.state_ms.items() if k in PHYSICAL_STATES),
            stages={name: summary for name, summary in (
                ("document", passage.document.log_summary() if passage.document else None),
                ("capture", passage.capture.log_summary() if passage.capture else None),
                ("verify", passage.decision.log_summary() if passage.decision else None),
            ) if summary is not None},
            max_zone_count=passage.max_zone,
            officer_called=not ended or any(
                s in passage.state_ms for s in (REJECTED, CLOSING_REJECTED)),
            evidence=PassageEvidence(passage.document, passage.capture, passage.decision),
        )

    def _notify(self, handler: Callable[[Any], None], item: object) -> None:
        try:
            handler(item)
        except Exception as exc:  # a subscriber's bug must not stop the lane
            self._log.error("lane.subscriber_failed", error=type(exc).__name__,
                            message=str(exc))

    def _submit(self, passage_id: int, stage: str, job: Callable[[], object],
                attempt: int = 0) -> None:
        def done(result: object, error: BaseException | None) -> None:
            self._inbox.put(_StageDone(passage_id, stage, result, error, attempt))

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


def describe(states: Iterable[str] = STATES) -> dict[str, str]:
    """One line per state, for docs and ``gate diagram``."""
    text = {
        IDLE: "doors closed, zone empty; waiting for a document",
        READING_DOCUMENT: "the document stage runs on a worker",
        ADMITTING: "ENTRY open; waiting for exactly one person inside and the ENTRY beam clear",
        CLOSING_ENTRY: "ENTRY closing behind the traveller",
        CAPTURING_FACE: "both doors closed; live face capture",
        VERIFYING: "1:1 comparison of document photo and live face",
        RELEASING: "EXIT open; waiting for the zone to clear",
        CLOSING_EXIT: "EXIT closing behind the traveller",
        REJECTED: "traveller sent back through ENTRY, EXIT shut, officer called",
        CLOSING_REJECTED: "ENTRY closing behind the turned-back traveller",
        RECOVERING: "re-reading the board, resetting faults, closing doors",
        OUT_OF_SERVICE: "link down, watchdog, jam, tamper or mains loss",
        EMERGENCY: "the board opened both doors; the host commands none",
        MAINTENANCE: "maintenance key or operator; the host commands no doors",
        FAULT: "an exception in the lane itself; officer reset needed",
    }
    return {s: text[s] for s in states}
