"""The lane end to end: the real SerialBarrier driver against the simulated board over a
pty (speed 10), simulated travellers walking, stage doubles for the document and face.

Every test ends by checking the board saw no safety violation and no watchdog trip it
did not cause on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import SIM_TIMEOUTS, SimLane
from doubles import (
    ScriptedDocumentCheck,
    ScriptedFaceCapture,
    ScriptedFaceVerifier,
    match_decision,
    rejected_document,
)

from gate.lane import Outcome
from hardware.barrier.protocol import Door, DoorState, Flag, MsgType, Side, Signal
from sim.board import TravellerBehaviour

pytestmark = pytest.mark.timeout(60)

Factory = Callable[..., SimLane]


def door_opens(sim: SimLane, door: Door) -> int:
    """DOOR open requests the board executed for ``door``."""
    return sum(1 for _, kind, payload in sim.board.executed
               if kind == MsgType.DOOR and payload == bytes((int(door), 1)))


def door_requests(sim: SimLane) -> int:
    return sum(1 for _, kind, _ in sim.board.executed if kind == MsgType.DOOR)


def outcomes(sim: SimLane) -> list[str]:
    return [r.outcome.value for r in sim.records]


def assert_safe(sim: SimLane, watchdog_trips: int = 0) -> None:
    snap = sim.board.snapshot()
    assert sim.board.safety_violations == []
    assert snap.watchdog_trips == watchdog_trips
    assert sim.lane.faults == []


def pass_one(sim: SimLane, kind: str = "normal", **behaviour: Any) -> None:
    sim.board.add_traveller(TravellerBehaviour(kind, **behaviour))
    sim.lane.present_document([])


def test_genuine_passage(sim_lane: Factory) -> None:
    sim = sim_lane()
    pass_one(sim)
    [record] = sim.wait_records(1)
    sim.wait_state("idle")
    assert record.outcome is Outcome.PASSED, record
    snap = sim.board.snapshot()
    assert snap.travellers_passed == 1 and snap.zone_count == 0
    assert (snap.entry, snap.exit) == (DoorState.CLOSED, DoorState.CLOSED)
    assert door_opens(sim, Door.ENTRY) == 1 and door_opens(sim, Door.EXIT) == 1
    assert sim.visited()[-8:] == ["reading_document", "admitting", "closing_entry",
                                  "capturing_face", "verifying", "releasing", "closing_exit",
                                  "idle"]
    assert record.physical_ms > 0 and record.duration_ms >= record.physical_ms
    assert snap.lamps[Side.ENTRY] is Signal.WAIT
    assert_safe(sim)


def test_impostor_is_turned_back(sim_lane: Factory) -> None:
    sim = sim_lane(verifier=ScriptedFaceVerifier(match_decision(False)))
    pass_one(sim)
    [record] = sim.wait_records(1)
    sim.wait_state("idle")
    assert record.outcome is Outcome.FACE_MISMATCH
    assert record.officer_called
    snap = sim.board.snapshot()
    assert snap.travellers_turned_back == 1 and snap.travellers_passed == 0
    assert door_opens(sim, Door.EXIT) == 0
    assert_safe(sim)


def test_rejected_document_admits_nobody(sim_lane: Factory) -> None:
    sim = sim_lane(documents=ScriptedDocumentCheck(rejected_document("EXPIRED")))
    pass_one(sim)
    [record] = sim.wait_records(1)
    assert record.outcome is Outcome.DOCUMENT_REJECTED
    assert sim.board.snapshot().lamps[Side.ENTRY] is Signal.RED_CROSS
    sim.wait_until(lambda: sim.board.snapshot().lamps[Side.ENTRY] is Signal.WAIT,
                   label="red cross over")
    assert door_requests(sim) == 0
    assert sim.board.snapshot().travellers_waiting == 1
    assert_safe(sim)


def test_tailgater_raises_the_alarm_and_exit_stays_shut(sim_lane: Factory) -> None:
    sim = sim_lane()
    pass_one(sim, "tailgate")
    [record] = sim.wait_records(1)
    sim.wait_state("idle")
    assert record.outcome is Outcome.TAILGATING
    assert record.max_zone_count >= 2
    assert "tailgate_detected" in [c.trigger for c in sim.changes]
    assert door_opens(sim, Door.EXIT) == 0
    snap = sim.board.snapshot()
    assert snap.travellers_passed == 0 and snap.travellers_turned_back == 2
    assert_safe(sim)


def test_traveller_turning_back(sim_lane: Factory) -> None:
    sim = sim_lane()
    pass_one(sim, "turn_back")
    [record] = sim.wait_records(1, timeout=20)
    sim.wait_state("idle")
    # Either the traveller turns before ENTRY has shut (and walks straight back out), or
    # ENTRY shut first: then the face is checked, EXIT opens, nobody leaves through it,
    # and after the releasing timeout the lane sends the traveller back through ENTRY.
    assert record.outcome is Outcome.TURNED_BACK, (record, sim.path())
    snap = sim.board.snapshot()
    assert snap.travellers_turned_back == 1 and snap.travellers_passed == 0
    assert_safe(sim)


def test_slow_stages_do_not_trip_the_watchdog(sim_lane: Factory) -> None:
    sim = sim_lane(capture=ScriptedFaceCapture(delay_s=2.0),
                   verifier=ScriptedFaceVerifier(delay_s=2.0))
    pass_one(sim)
    [record] = sim.wait_records(1, timeout=20)
    assert record.outcome is Outcome.PASSED
    assert record.duration_ms >= 4000  # both slow stages ran in full (the capture partly
    assert record.state_ms["verifying"] >= 1990  # while ENTRY closed)
    assert sim.board.snapshot().watchdog_trips == 0
    assert_safe(sim)


def test_board_reboot_mid_passage(sim_lane: Factory) -> None:
    sim = sim_lane(capture=ScriptedFaceCapture(delay_s=1.5))
    pass_one(sim)
    sim.wait_state("capturing_face")
    sim.board.reboot()
    records = sim.wait_records(2)
    sim.wait_state("idle")
    assert records[0].outcome is Outcome.OUT_OF_SERVICE
    assert "BOARD_RESTARTED" in records[0].reasons
    assert "OCCUPIED_AFTER_RECOVERY" in records[1].reasons  # sent back, officer called
    assert "recovering" in sim.visited() and "rejected" in sim.visited()
    assert door_opens(sim, Door.EXIT) == 0
    assert sim.board.snapshot().travellers_turned_back == 1
    assert_safe(sim)


def test_emergency_is_mirrored_then_recovered(sim_lane: Factory) -> None:
    sim = sim_lane(capture=ScriptedFaceCapture(delay_s=1.0))
    pass_one(sim)
    sim.wait_state("capturing_face")
    sim.board.set_emergency(True)
    sim.wait_state("emergency")
    sim.wait_until(lambda: sim.board.snapshot().exit is DoorState.OPEN, label="exit open")
    requests = door_requests(sim)
    sim.wait_until(lambda: sim.board.snapshot().zone_count == 0, label="evacuated")
    assert door_requests(sim) == requests  # the host commanded no door meanwhile
    sim.wait_until(lambda: sim.board.snapshot().lamps[Side.EXIT] is Signal.GREEN_ARROW,
                   label="evacuation lamps")
    assert door_requests(sim) == requests
    sim.board.set_emergency(False)
    sim.wait_state("idle")
    snap = sim.board.snapshot()
    assert (snap.entry, snap.exit) == (DoorState.CLOSED, DoorState.CLOSED)
    assert outcomes(sim) == ["EMERGENCY"]
    assert_safe(sim)


def test_jam_takes_the_lane_out_of_service_until_cleared(sim_lane: Factory) -> None:
    sim = sim_lane(timeouts=replace(SIM_TIMEOUTS, admitting=1.0, obstructed_doorway=0.3))
    pass_one(sim)
    sim.wait_until(lambda: sim.board.snapshot().entry is DoorState.OPEN, label="entry open")
    sim.board.jam(Door.ENTRY)
    sim.wait_until(lambda: Flag.DOOR_FAULT in sim.board.snapshot().flags, label="jammed")
    sim.wait_state("out_of_service")
    sim.wait_until(lambda: sim.board.snapshot().lamps[Side.ENTRY] is Signal.OUT_OF_SERVICE,
                   label="out-of-service lamp")
    sim.board.clear_jam(Door.ENTRY)
    sim.wait_state("idle", timeout=15)
    assert Flag.DOOR_FAULT not in sim.board.snapshot().flags
    assert door_opens(sim, Door.EXIT) == 0
    assert_safe(sim)


def test_mains_loss_finishes_the_passage_then_stops(sim_lane: Factory) -> None:
    sim = sim_lane(capture=ScriptedFaceCapture(delay_s=0.5))
    pass_one(sim)
    sim.wait_state("capturing_face")
    sim.board.set_mains(False)
    [record] = sim.wait_records(1)
    assert record.outcome is Outcome.PASSED
    sim.wait_state("out_of_service")
    pass_one(sim)
    sim.wait_until(lambda: len(sim.changes) > 0 and sim.lane.state == "out_of_service",
                   label="still out of service")
    assert sim.lane.wait_for_state("reading_document", timeout=0.5) is False
    sim.board.set_mains(True)
    sim.wait_state("idle")
    assert_safe(sim)


def test_link_loss_and_replug(sim_lane: Factory) -> None:
    sim = sim_lane()
    sim.board.unplug()
    sim.wait_state("out_of_service")
    assert not sim.barrier.link_up
    sim.board.replug()
    sim.wait_state("idle", timeout=15)
    # the board tripped its watchdog while nobody talked to it; the lane cleared it
    assert Flag.WATCHDOG not in sim.board.snapshot().flags
    pass_one(sim)
    [record] = sim.wait_records(1)
    assert record.outcome is Outcome.PASSED
    assert_safe(sim, watchdog_trips=sim.board.snapshot().watchdog_trips)
    assert sim.board.snapshot().watchdog_trips <= 1


def test_two_travellers_in_a_row(sim_lane: Factory) -> None:
    sim = sim_lane()
    pass_one(sim)
    sim.wait_records(1)
    sim.wait_state("idle")
    pass_one(sim, "hesitate")
    sim.wait_records(2)
    assert outcomes(sim) == ["PASSED", "PASSED"]
    assert sim.board.snapshot().travellers_passed == 2
    assert_safe(sim)


def test_passages_over_a_noisy_link(sim_lane: Factory) -> None:
    from sim.board import BoardFaults

    sim = sim_lane(faults=BoardFaults(drop_reply=0.05, drop_request=0.05, corrupt_reply=0.05,
                                      noise=0.05), seed=7,
                   verifier=ScriptedFaceVerifier([match_decision(True), match_decision(False)]))
    pass_one(sim)
    sim.wait_records(1)
    sim.wait_state("idle")
    pass_one(sim)
    sim.wait_records(2)
    sim.wait_state("idle")
    assert outcomes(sim) == ["PASSED", "FACE_MISMATCH"]
    snap = sim.board.snapshot()
    assert snap.travellers_passed == 1 and snap.travellers_turned_back == 1
    assert sum(snap.faults_injected.values()) > 0
    assert_safe(sim)


def test_maintenance_key_and_tamper(sim_lane: Factory) -> None:
    sim = sim_lane()
    sim.board.set_maintenance_key(True)
    sim.wait_state("maintenance")
    sim.wait_until(lambda: sim.board.snapshot().lamps[Side.ENTRY] is Signal.OUT_OF_SERVICE,
                   label="maintenance lamps")
    sim.board.set_maintenance_key(False)
    sim.wait_state("idle")
    sim.board.set_tamper(True)
    sim.wait_state("out_of_service")
    sim.board.set_tamper(False)  # cabinet shut: the lane clears the latched flag itself
    sim.wait_state("idle")
    assert Flag.TAMPER not in sim.board.snapshot().flags
    pass_one(sim)
    assert sim.wait_records(1)[0].outcome is Outcome.PASSED
    assert_safe(sim)
