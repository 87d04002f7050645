"""Test doubles for the lane: stages with scripted results and delays, an in-memory
barrier board for pure-logic tests, a held stage runner and a manual clock.

These stand in for the real stages and the real board only in tests of the machine's
logic; the integration tests use the real driver against the simulated board on a pty.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np

from gate.stages import CaptureOutcome, DocumentOutcome, Guidance, MatchDecision
from hardware.barrier.api import (
    Barrier,
    BarrierNotice,
    BarrierState,
    BoardRestarted,
    CommandRejected,
    LinkDown,
    LinkLost,
    LinkRestored,
    NoticeHandler,
    StateRefreshed,
)
from hardware.barrier.protocol import (
    Beam,
    BoardEvent,
    BoardInfo,
    BoardStatus,
    Door,
    DoorState,
    EventCode,
    Flag,
    NakReason,
    Side,
    Signal,
)

# ------------------------------------------------------------------ stage outcomes

T = TypeVar("T")


def accepted_document() -> DocumentOutcome:
    return DocumentOutcome(accepted=True, portrait=np.zeros((8, 8, 3), np.uint8),
                           mrz={"document_type": "P", "surname": "SPECIMEN"},
                           timings_ms={"mrz": 1.0})


def rejected_document(*reasons: str) -> DocumentOutcome:
    return DocumentOutcome(accepted=False, reasons=reasons or ("EXPIRED",))


def good_capture() -> CaptureOutcome:
    return CaptureOutcome(ok=True, frames=(np.zeros((8, 8, 3), np.uint8),),
                          quality=({"sharpness": 1.0},))


def failed_capture() -> CaptureOutcome:
    return CaptureOutcome(ok=False, reasons=("FACE_NOT_CAPTURED",))


def match_decision(match: bool = True) -> MatchDecision:
    return MatchDecision(match=match, score=0.8 if match else 0.1, threshold=0.5,
                         reasons=() if match else ("SCORE_BELOW_THRESHOLD",))


class _Script(Generic[T]):
    """Results in order; the last one repeats. ``delay_s`` before each answer."""

    def __init__(self, results: T | Iterable[T], delay_s: float) -> None:
        items = list(results) if isinstance(results, list | tuple) else [results]
        self._results: deque[T] = deque(items)  # type: ignore[arg-type]
        self.delay_s = delay_s
        self.calls = 0
        self.produced: list[T] = []
        self._lock = threading.Lock()

    def next(self) -> T:
        with self._lock:
            self.calls += 1
            result = self._results[0] if len(self._results) == 1 else self._results.popleft()
            self.produced.append(result)
            return result

    def push(self, *results: T) -> None:
        """Replace what comes next."""
        with self._lock:
            self._results = deque(results)


class ScriptedDocumentCheck(_Script[DocumentOutcome]):
    def __init__(self, results: DocumentOutcome | Iterable[DocumentOutcome] | None = None,
                 delay_s: float = 0.0) -> None:
        super().__init__(results if results is not None else accepted_document(), delay_s)

    def check(self, pages: Sequence[np.ndarray]) -> DocumentOutcome:
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        return self.next()


class ScriptedFaceCapture(_Script[CaptureOutcome]):
    def __init__(self, results: CaptureOutcome | Iterable[CaptureOutcome] | None = None,
                 delay_s: float = 0.0) -> None:
        super().__init__(results if results is not None else good_capture(), delay_s)
        self.cancelled = 0

    def capture(self, guidance: Guidance, cancel: threading.Event) -> CaptureOutcome:
        guidance("LOOK_AT_CAMERA")
        if self.delay_s and cancel.wait(self.delay_s):
            self.cancelled += 1
            return CaptureOutcome(ok=False, reasons=("CANCELLED",))
        return self.next()


class ScriptedFaceVerifier(_Script[MatchDecision]):
    def __init__(self, results: MatchDecision | Iterable[MatchDecision] | None = None,
                 delay_s: float = 0.0) -> None:
        super().__init__(results if results is not None else match_decision(True), delay_s)

    def verify(self, document: DocumentOutcome, capture: CaptureOutcome) -> MatchDecision:
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        return self.next()


# ------------------------------------------------------------------ runner and clock


class HeldStageRunner:
    """Holds stage jobs until the test runs them: stage results arrive when it says."""

    def __init__(self) -> None:
        self.jobs: deque[tuple[Callable[[], object], Callable[[object, BaseException | None],
                                                                None]]] = deque()

    def submit(self, job: Callable[[], object],
               done: Callable[[object, BaseException | None], None]) -> None:
        self.jobs.append((job, done))

    def run_next(self) -> bool:
        if not self.jobs:
            return False
        job, done = self.jobs.popleft()
        try:
            result = job()
        except Exception as exc:
            done(None, exc)
        else:
            done(result, None)
        return True

    def shutdown(self) -> None:
        self.jobs.clear()


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------ an in-memory board


@dataclass(frozen=True)
class DoorCommand:
    door: Door
    open: bool
    status: BoardStatus  # the board's truth when the command arrived
    lane_state: str
    note: str = ""


class FakeBarrier(Barrier):
    """A board in memory. Commands change it at once; the test moves the world.

    Notices are published synchronously to subscribers. Invariants the lane must keep are
    checked at the moment each command arrives and recorded in ``violations``.
    """

    def __init__(self) -> None:
        self._status = BoardStatus(DoorState.CLOSED, DoorState.CLOSED, 0, Beam.NONE,
                                   Flag.NONE, 0)
        self._link = True
        self._handlers: list[NoticeHandler] = []
        self.commands: list[DoorCommand] = []
        self.violations: list[str] = []
        self.lamps: dict[Side, Signal] = {Side.ENTRY: Signal.OFF, Side.EXIT: Signal.OFF}
        self.resets = 0
        self.refreshes = 0
        self.tamper_open = False
        self.jam_persists = False
        self.lane_state: Callable[[], str] = lambda: "?"
        self.check_open: Callable[[Door, BoardStatus], str | None] = lambda d, s: None
        self._event_id = 0

    # ---- Barrier
    def start(self) -> None:
        self._publish(LinkRestored(state=self.state))

    def close(self) -> None:
        pass

    def subscribe(self, handler: NoticeHandler) -> None:
        self._handlers.append(handler)

    def unsubscribe(self, handler: NoticeHandler) -> None:
        self._handlers = [h for h in self._handlers if h is not handler]

    @property
    def link_up(self) -> bool:
        return self._link

    @property
    def status(self) -> BoardStatus:
        """The board's picture in protocol v1 terms (what the test moves)."""
        return self._status

    @property
    def state(self) -> BarrierState:
        return self._status.state()

    def open_door(self, door: Door) -> None:
        self._door_command(door, True)

    def close_door(self, door: Door) -> None:
        self._door_command(door, False)

    def set_lamp(self, side: Side, signal: Signal) -> None:
        if not self._link:
            raise LinkDown("fake link down")
        self.lamps[side] = signal

    def reset_faults(self) -> bool:
        if not self._link:
            raise LinkDown("fake link down")
        self.resets += 1
        flags = self._status.flags & ~(Flag.WATCHDOG | Flag.EVENT_OVERFLOW)
        if not self.tamper_open:
            flags &= ~Flag.TAMPER
        if not self.jam_persists:
            flags &= ~Flag.DOOR_FAULT
            for door in Door:
                if self._status.door(door) is DoorState.JAMMED:
                    self._set_door(door, DoorState.OPEN)
        ok = not flags & (Flag.TAMPER | Flag.DOOR_FAULT)
        self._update(flags=flags)
        return ok

    def configure_watchdog(self, watchdog_ms: int) -> None:
        pass

    def info(self) -> BoardInfo:
        return BoardInfo(1, 1000, "fake", "FAKE0001")

    def refresh_status(self) -> BoardStatus:
        if not self._link:
            raise LinkDown("fake link down")
        self.refreshes += 1
        self._publish(StateRefreshed(state=self.state))
        return self._status

    def refresh_state(self) -> BarrierState:
        return self.refresh_status().state()

    # ---- the command checks
    def _door_command(self, door: Door, opening: bool) -> None:
        if not self._link:
            raise LinkDown("fake link down")
        s = self._status
        cmd = DoorCommand(door, opening, s, self.lane_state())
        self.commands.append(cmd)
        what = f"{'open' if opening else 'close'} {door.name} in {cmd.lane_state}"
        if Flag.EMERGENCY in s.flags:
            self.violations.append(f"{what} during EMERGENCY: {s}")
            raise CommandRejected("DOOR", NakReason.FAULT_ACTIVE)
        if Flag.WATCHDOG in s.flags or s.door(door) is DoorState.JAMMED:
            raise CommandRejected("DOOR", NakReason.FAULT_ACTIVE)
        if opening:
            other = Door.EXIT if door is Door.ENTRY else Door.ENTRY
            if s.door(door) in (DoorState.OPEN, DoorState.OPENING, DoorState.BLOCKED):
                return
            if s.door(other) is not DoorState.CLOSED:
                self.violations.append(f"{what} while {other.name} {s.door(other).name}")
                raise CommandRejected("DOOR", NakReason.NOT_ALLOWED)
            problem = self.check_open(door, s)
            if problem:
                self.violations.append(f"{what}: {problem}; {s}")
            self._set_door(door, DoorState.OPENING)
        elif s.door(door) not in (DoorState.CLOSED, DoorState.CLOSING):
            self._set_door(door, DoorState.CLOSING)

    # ---- the physical world, moved by the test
    def finish_travel(self) -> None:
        for door in Door:
            state = self._status.door(door)
            if state is DoorState.OPENING:
                self._set_door(door, DoorState.OPEN)
            elif state is DoorState.CLOSING:
                self._set_door(door, DoorState.CLOSED)

    def block(self, door: Door) -> None:
        if self._status.door(door) is DoorState.CLOSING:
            self._set_door(door, DoorState.BLOCKED)
            self._set_door(door, DoorState.OPEN)

    def jam(self, door: Door) -> None:
        self._set_door(door, DoorState.JAMMED)
        self.set_flag(Flag.DOOR_FAULT, True)

    def set_zone(self, count: int) -> None:
        self._update(zone_count=count)
        self._event(EventCode.ZONE_COUNT, count)

    def set_beams(self, beams: Beam) -> None:
        self._update(beams=beams)
        self._event(EventCode.BEAMS, int(beams))

    def set_flag(self, flag: Flag, on: bool) -> None:
        flags = self._status.flags | flag if on else self._status.flags & ~flag
        self._update(flags=flags)
        code = {Flag.EMERGENCY: EventCode.EMERGENCY_ON if on else EventCode.EMERGENCY_OFF,
                Flag.TAMPER: EventCode.TAMPER, Flag.ON_UPS: EventCode.POWER,
                Flag.WATCHDOG: EventCode.WATCHDOG_TRIPPED,
                Flag.MAINTENANCE_KEY: EventCode.MAINTENANCE_KEY}.get(flag)
        if flag is Flag.TAMPER:
            self.tamper_open = on
        if flag is Flag.DOOR_FAULT:
            self.jam_persists = on
        if code is not None:
            self._event(code, int(on))
        if flag is Flag.EMERGENCY and on:
            for door in Door:  # the board opens both doors by itself
                self._set_door(door, DoorState.OPEN)
        if flag is Flag.WATCHDOG and on:
            for door in Door:
                if self._status.door(door) is not DoorState.CLOSED:
                    self._set_door(door, DoorState.CLOSED)

    def set_link(self, up: bool) -> None:
        if up == self._link:
            return
        self._link = up
        self._publish(LinkRestored(state=self.state) if up else LinkLost(state=self.state))

    def restart(self) -> None:
        inputs = self._status.flags & (Flag.EMERGENCY | Flag.ON_UPS | Flag.MAINTENANCE_KEY)
        self._status = replace(self._status, entry=DoorState.CLOSED, exit=DoorState.CLOSED,
                               flags=inputs)
        self.lamps = {Side.ENTRY: Signal.OFF, Side.EXIT: Signal.OFF}
        self._event_id = 0
        self._publish(BoardRestarted(state=self.state, detail="RESTARTED"))
        if Flag.EMERGENCY in inputs:
            for door in Door:
                self._set_door(door, DoorState.OPEN)

    # ---- plumbing
    def _set_door(self, door: Door, state: DoorState) -> None:
        if door is Door.ENTRY:
            self._update(entry=state)
        else:
            self._update(exit=state)
        self._event(EventCode.DOOR_STATE, (int(door) << 4) | int(state))

    def _update(self, **changes: object) -> None:
        self._status = replace(self._status, **changes)  # type: ignore[arg-type]

    def _event(self, code: EventCode, arg: int) -> None:
        self._event_id += 1
        self._update(last_event_id=self._event_id)
        event = BoardEvent(self._event_id, int(code), arg, 0)
        self._publish(event.notice(self.state))

    def _publish(self, notice: BarrierNotice) -> None:
        for handler in list(self._handlers):
            handler(notice)
