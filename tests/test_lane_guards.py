"""The lane's safety rules, checked exhaustively as the pure functions they are.

Every state × door × action × board picture (doors, zone 0–2, beams, emergency) × passage
(none, no decision, refused, matched, officer-released, tailgating seen) × link is put to
``door_refusal``, and the rules of the guide are asserted on each answer.
"""

from __future__ import annotations

import itertools

from doubles import match_decision

from gate.lane import STATES, guards
from gate.lane.machine import ADMITTED_STATES, ADMITTING, REJECTED, RELEASING
from gate.lane.records import Passage
from hardware.barrier.api import BarrierState, Condition, Door, DoorAction, DoorState
from hardware.device import DeviceHealth


def _passages() -> list[Passage | None]:
    matched = Passage(1, 0.0, 0.0, decision=match_decision(True))
    return [None, Passage(1, 0.0, 0.0), Passage(1, 0.0, 0.0, decision=match_decision(False)),
            matched, Passage(1, 0.0, 0.0, officer_release=True),
            Passage(1, 0.0, 0.0, decision=match_decision(True), tailgating_seen=True)]


def _boards() -> list[BarrierState]:
    positions = (DoorState.CLOSED, DoorState.OPENING, DoorState.OPEN, DoorState.BLOCKED)
    out = []
    for entry, exit_, zone, beam, emergency in itertools.product(
            positions, positions, (0, 1, 2), (False, True), (False, True)):
        out.append(BarrierState(entry, exit_, zone, entry_beam=beam,
                                conditions=frozenset({Condition.EMERGENCY} if emergency
                                                     else ())))
    return out


def test_door_refusal_keeps_every_rule_in_every_situation() -> None:
    checked = allowed_exit_opens = 0
    for state, door, action, board, passage, link_up in itertools.product(
            STATES, Door, DoorAction, _boards(), _passages(), (True, False)):
        why = guards.door_refusal(door, action, state=state, board=board, link_up=link_up,
                                  passage=passage)
        checked += 1
        if not link_up:
            assert why == "LINK_DOWN"
            continue
        if board.has(Condition.EMERGENCY) or state == "emergency":
            assert why == "EMERGENCY"  # the board owns the doors
            continue
        if action is DoorAction.CLOSE:
            assert why is None  # closing is always safe (the driver never closes on a body)
            continue
        other = board.exit if door is Door.ENTRY else board.entry
        if why is None:
            assert other is DoorState.CLOSED, "both doors never open together"
        if door is Door.ENTRY and why is None:
            assert state in (ADMITTING, REJECTED)
            if state == ADMITTING:
                assert board.zone_count == 0
        if door is Door.EXIT and why is None:
            allowed_exit_opens += 1
            assert state == RELEASING
            assert passage is not None and passage.positive and not passage.tailgating_seen
            assert board.zone_count == 1 and board.entry is DoorState.CLOSED
    assert checked > 100_000 and allowed_exit_opens > 0  # the rules were met, and exercised


def test_release_refusal_names_each_reason() -> None:
    alone = BarrierState(DoorState.CLOSED, DoorState.CLOSED, 1)
    matched = Passage(1, 0.0, 0.0, decision=match_decision(True))
    assert guards.release_refusal(alone, matched) is None
    assert guards.release_refusal(alone, None) == "NO_POSITIVE_DECISION"
    assert guards.release_refusal(alone, Passage(1, 0.0, 0.0, decision=match_decision(False))
                                  ) == "NO_POSITIVE_DECISION"
    seen = Passage(1, 0.0, 0.0, decision=match_decision(True), tailgating_seen=True)
    assert guards.release_refusal(alone, seen) == "TAILGATING"
    two = BarrierState(DoorState.CLOSED, DoorState.CLOSED, 2)
    assert guards.release_refusal(two, matched) == "ZONE_NOT_ONE"
    ajar = BarrierState(DoorState.CLOSING, DoorState.CLOSED, 1)
    assert guards.release_refusal(ajar, matched) == "ENTRY_NOT_CLOSED"


def test_blocking_cause_priorities_and_device_health_only_before_admission() -> None:
    calm = BarrierState(DoorState.CLOSED, DoorState.CLOSED, 0)
    bad_camera = {"camera": lambda: DeviceHealth(False, "CAMERA_STALLED")}

    def cause(state: str = "idle", board: BarrierState | None = calm, link_up: bool = True,
              **kw: object) -> guards.Cause | None:
        args: dict[str, object] = {"maintenance_requested": False, "shutdown": None,
                                   "stop_admitting_on_mains_loss": True, "devices": {}}
        args.update(kw)
        return guards.blocking_cause(state=state, board=board, link_up=link_up,
                                     **args)  # type: ignore[arg-type]

    both = replace_conditions(calm, Condition.EMERGENCY, Condition.MAINTENANCE_KEY)
    assert cause(board=both) == guards.Cause("emergency", "EMERGENCY")  # emergency first
    assert cause(link_up=False) == guards.Cause("out_of_service", "LINK_DOWN")
    assert cause(board=None) == guards.Cause("out_of_service", "LINK_DOWN")
    assert cause(maintenance_requested=True) == guards.Cause("maintenance", "OPERATOR")
    for condition in guards.OUT_OF_SERVICE_CONDITIONS:
        got = cause(board=replace_conditions(calm, condition))
        assert got == guards.Cause("out_of_service", condition.value)
    on_ups = replace_conditions(calm, Condition.ON_UPS)
    assert cause(board=on_ups) == guards.Cause("out_of_service", "MAINS_LOST")
    assert cause(devices=bad_camera) == guards.Cause("out_of_service", "CAMERA_STALLED")
    assert cause(shutdown="drain") == guards.Cause("out_of_service", "SHUTDOWN")
    for inside in ADMITTED_STATES:  # a traveller inside finishes with what the lane has
        assert cause(inside, devices=bad_camera) is None
        assert cause(inside, board=on_ups) is None
        assert cause(inside, shutdown="drain") is None
        assert cause(inside, shutdown="now") == guards.Cause("out_of_service", "SHUTDOWN")
    assert cause() is None


def replace_conditions(board: BarrierState, *conditions: Condition) -> BarrierState:
    return BarrierState(board.entry, board.exit, board.zone_count,
                        conditions=frozenset(conditions))
