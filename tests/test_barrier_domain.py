"""A second board vendor does not touch the lane.

``VendorBoard`` below is a barrier written only against ``hardware.barrier.api`` — the
domain picture and typed notices — with nothing of protocol v1 (no frames, flag bits or
event codes; its own door and lamp "codes" are strings). The lane runs a passage, refuses
an impostor and stops on an emergency on it exactly as on the v1 driver. The mapping of
protocol v1 onto the model is checked here too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from doubles import (
    HeldStageRunner,
    ManualClock,
    ScriptedDocumentCheck,
    ScriptedFaceCapture,
    ScriptedFaceVerifier,
    match_decision,
)

from gate.lane import Lane, Outcome
from hardware.barrier.api import (
    Barrier,
    BarrierNotice,
    BarrierState,
    BeamsChanged,
    BoardChange,
    BoardInfo,
    Condition,
    ConditionChanged,
    Door,
    DoorMoved,
    DoorState,
    LinkRestored,
    NoticeHandler,
    Side,
    Signal,
    StateRefreshed,
    ZoneCounted,
)
from hardware.barrier.protocol import BoardEvent, BoardStatus, EventCode

ROOT = Path(__file__).resolve().parent.parent


class VendorBoard(Barrier):
    """Another vendor's door controller, as its driver would present it to the lane."""

    def __init__(self) -> None:
        self._state = BarrierState(DoorState.CLOSED, DoorState.CLOSED, 0)
        self._handlers: list[NoticeHandler] = []
        self.wire: list[str] = []  # this vendor's own command strings
        self.violations: list[str] = []
        self._seq = 0

    def start(self) -> None:
        self._publish(LinkRestored(state=self._state, detail="vendor-b"))

    def close(self) -> None:
        pass

    def subscribe(self, handler: NoticeHandler) -> None:
        self._handlers.append(handler)

    def unsubscribe(self, handler: NoticeHandler) -> None:
        self._handlers = [h for h in self._handlers if h is not handler]

    @property
    def link_up(self) -> bool:
        return True

    @property
    def state(self) -> BarrierState:
        return self._state

    def open_door(self, door: Door) -> None:
        other = Door.EXIT if door is Door.ENTRY else Door.ENTRY
        if self._state.door(other) is not DoorState.CLOSED:
            self.violations.append(f"open {door.name} with {other.name} not closed")
        self.wire.append(f"OPEN:{door.name.lower()}")
        self._move(door, DoorState.OPEN)

    def close_door(self, door: Door) -> None:
        self.wire.append(f"SHUT:{door.name.lower()}")
        self._move(door, DoorState.CLOSED)

    def set_lamp(self, side: Side, signal: Signal) -> None:
        self.wire.append(f"LAMP:{side.name.lower()}={signal.name.lower()}")

    def reset_faults(self) -> bool:
        return True

    def configure_watchdog(self, watchdog_ms: int) -> None:
        pass

    def info(self) -> BoardInfo:
        return BoardInfo(0, 1000, "vendor-b", "B-0001")

    def refresh_state(self) -> BarrierState:
        self._publish(StateRefreshed(state=self._state))
        return self._state

    # ---- the world, moved by the test
    def zone(self, count: int) -> None:
        self._change(lambda s: replace(s, zone_count=count),
                     lambda s: ZoneCounted(count=count, state=s, event_id=self._next()))

    def emergency(self, on: bool) -> None:
        conditions = (self._state.conditions | {Condition.EMERGENCY} if on
                      else self._state.conditions - {Condition.EMERGENCY})
        self._change(lambda s: replace(s, conditions=conditions),
                     lambda s: ConditionChanged(condition=Condition.EMERGENCY, raised=on,
                                                state=s, event_id=self._next()))
        if on:
            for door in Door:
                self._move(door, DoorState.OPEN)

    def _move(self, door: Door, position: DoorState) -> None:
        self._change(lambda s: replace(s, entry=position) if door is Door.ENTRY
                     else replace(s, exit=position),
                     lambda s: DoorMoved(door=door, position=position, state=s,
                                         event_id=self._next()))

    def _change(self, update: Callable[[BarrierState], BarrierState],
                notice: Callable[[BarrierState], BarrierNotice]) -> None:
        self._state = update(self._state)
        self._publish(notice(self._state))

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _publish(self, notice: BarrierNotice) -> None:
        for handler in list(self._handlers):
            handler(notice)


def _lane(verifier: ScriptedFaceVerifier | None = None) -> tuple[Lane, VendorBoard,
                                                                  HeldStageRunner,
                                                                  list[Outcome]]:
    board, runner = VendorBoard(), HeldStageRunner()
    lane = Lane(board, ScriptedDocumentCheck(), ScriptedFaceCapture(),
                verifier or ScriptedFaceVerifier(), clock=ManualClock(), runner=runner)
    outcomes: list[Outcome] = []
    lane.subscribe(lambda record: outcomes.append(record.outcome))
    board.start()
    lane.run_pending()
    return lane, board, runner, outcomes


def _stage(lane: Lane, runner: HeldStageRunner) -> str:
    assert runner.run_next()
    lane.run_pending()
    return lane.state


def test_a_genuine_traveller_passes_on_another_vendors_board() -> None:
    lane, board, runner, outcomes = _lane()
    assert lane.state == "idle"
    lane.present_document([])
    lane.run_pending()
    assert _stage(lane, runner) == "admitting"
    assert "OPEN:entry" in board.wire and board.state.entry is DoorState.OPEN
    board.zone(1)
    lane.run_pending()
    assert lane.state == "capturing_face"  # ENTRY shut behind the traveller at once
    assert _stage(lane, runner) == "verifying"
    assert "OPEN:exit" not in board.wire  # nothing opens before the decision
    assert _stage(lane, runner) == "releasing"
    assert board.state.exit is DoorState.OPEN
    board.zone(0)
    lane.run_pending()
    assert lane.state == "idle" and outcomes == [Outcome.PASSED]
    assert board.violations == []
    assert "LAMP:exit=green_arrow" in board.wire


def test_an_impostor_is_refused_and_an_emergency_obeyed_on_another_vendors_board() -> None:
    lane, board, runner, outcomes = _lane(ScriptedFaceVerifier(match_decision(False)))
    lane.present_document([])
    lane.run_pending()
    _stage(lane, runner)
    board.zone(1)
    lane.run_pending()
    _stage(lane, runner)
    assert _stage(lane, runner) == "rejected"
    assert "OPEN:exit" not in board.wire
    board.emergency(True)
    lane.run_pending()
    assert lane.state == "emergency"
    commands = len(board.wire)
    lane.run_pending()
    assert not [w for w in board.wire[commands:] if w.startswith(("OPEN", "SHUT"))]
    assert outcomes == [Outcome.FACE_MISMATCH]  # the first outcome of the passage wins
    assert board.violations == []


def test_the_lane_imports_nothing_of_the_wire() -> None:
    imported: set[str] = set()
    for path in (ROOT / "gate" / "lane").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported |= {node.module for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
    assert "hardware.barrier.api" in imported
    assert not {m for m in imported if m.startswith("hardware.barrier.")
                and m != "hardware.barrier.api"}


def test_protocol_v1_maps_onto_the_model() -> None:
    status = BoardStatus.unpack(bytes([2, 0, 1, 0b01, 0, 0b0101001, 0, 7]))
    state = status.state()
    assert (state.entry, state.exit, state.zone_count) == (DoorState.OPEN, DoorState.CLOSED, 1)
    assert state.entry_beam and not state.exit_beam
    assert state.conditions == {Condition.EMERGENCY, Condition.ON_UPS,
                                Condition.MAINTENANCE_KEY}
    assert state.latched == frozenset() and state.last_event_id == 7

    def event(code: int, arg: int) -> BoardChange:
        return BoardEvent(9, code, arg, 0).notice(state)

    moved = event(EventCode.DOOR_STATE, (2 << 4) | 3)
    assert isinstance(moved, DoorMoved) and (moved.door, moved.position) == (
        Door.EXIT, DoorState.CLOSING)
    assert moved.event_id == 9 and BoardEvent.unpack(moved.raw).code == EventCode.DOOR_STATE
    zone = event(EventCode.ZONE_COUNT, 2)
    assert isinstance(zone, ZoneCounted) and zone.count == 2
    beams = event(EventCode.BEAMS, 2)
    assert isinstance(beams, BeamsChanged) and (beams.entry, beams.exit) == (False, True)
    for code, arg, condition, raised in (
            (EventCode.EMERGENCY_ON, 0, Condition.EMERGENCY, True),
            (EventCode.EMERGENCY_OFF, 0, Condition.EMERGENCY, False),
            (EventCode.WATCHDOG_TRIPPED, 0, Condition.WATCHDOG, True),
            (EventCode.TAMPER, 1, Condition.TAMPER, True),
            (EventCode.TAMPER, 0, Condition.TAMPER, False),
            (EventCode.POWER, 1, Condition.ON_UPS, True),
            (EventCode.MAINTENANCE_KEY, 0, Condition.MAINTENANCE_KEY, False)):
        notice = event(code, arg)
        assert isinstance(notice, ConditionChanged), code
        assert (notice.condition, notice.raised) == (condition, raised), code
    # an undefined door state or an unknown code is a plain change, never a crash
    assert type(event(EventCode.DOOR_STATE, (1 << 4) | 9)) is BoardChange
    assert type(event(0x7E, 1)) is BoardChange
    assert type(event(EventCode.RESTARTED, 0)) is BoardChange
