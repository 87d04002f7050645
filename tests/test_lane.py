"""The lane machine's logic on an in-memory board: deterministic, no threads, no clock."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import FakeLane, make_fake_lane
from doubles import failed_capture, match_decision, rejected_document

from gate.config import LaneConfig, Policy
from gate.lane import LAMPS, STATES, TRANSITIONS, Outcome
from gate.stages import CaptureOutcome
from hardware.barrier.protocol import Beam, Door, DoorState, Flag, Side, Signal


def opened(fake: FakeLane, door: Door) -> int:
    return sum(1 for c in fake.barrier.commands if c.door is door and c.open)


def finish_in_zone_and_leave_by_entry(fake: FakeLane) -> None:
    """A rejected traveller: ENTRY opens, the traveller walks back out, ENTRY closes."""
    assert fake.lane.state == "rejected"
    assert fake.barrier.status is not None
    fake.travel()
    assert fake.barrier.status.entry is DoorState.OPEN
    fake.barrier.set_zone(0)
    assert fake.step() == "closing_rejected"
    assert fake.travel() == "idle"


def test_a_genuine_passage(fake_lane: FakeLane) -> None:
    fake = fake_lane
    assert fake.step() == "idle"
    assert fake.barrier.lamps == {Side.ENTRY: Signal.WAIT, Side.EXIT: Signal.RED_CROSS}
    fake.lane.present_document([])
    assert fake.step() == "reading_document"
    assert fake.stage() == "admitting"
    assert fake.barrier.lamps[Side.ENTRY] is Signal.GREEN_ARROW
    assert fake.barrier.status is not None
    assert fake.barrier.status.entry is DoorState.OPENING
    fake.travel()
    fake.barrier.set_beams(Beam.ENTRY)  # walking through the doorway
    fake.barrier.set_zone(1)
    assert fake.step() == "admitting"  # not while the doorway is occupied
    fake.barrier.set_beams(Beam.NONE)
    assert fake.step() == "closing_entry"
    assert fake.travel() == "capturing_face"
    assert fake.stage() == "verifying"
    assert opened(fake, Door.EXIT) == 0
    assert fake.stage() == "releasing"
    assert opened(fake, Door.EXIT) == 1
    assert fake.barrier.lamps[Side.EXIT] is Signal.GREEN_ARROW
    assert fake.leave_by_exit() == "idle"
    [record] = fake.records
    assert record.outcome is Outcome.PASSED
    assert not record.officer_called
    assert set(record.stages) == {"document", "capture", "verify"}
    assert "surname" not in str(record.log_summary())
    assert record.evidence.decision is not None and record.evidence.decision.match
    assert set(record.state_ms) >= {"admitting", "capturing_face", "releasing"}
    assert fake.barrier.violations == []


def test_rejected_document_never_admits(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.documents.push(rejected_document("EXPIRED"))
    fake.step()
    fake.lane.present_document([])
    fake.step()
    assert fake.stage() == "idle"
    assert fake.barrier.commands == []
    assert fake.barrier.lamps[Side.ENTRY] is Signal.RED_CROSS
    [record] = fake.records
    assert record.outcome is Outcome.DOCUMENT_REJECTED
    assert "EXPIRED" in record.reasons
    fake.later(fake.lane.config.timeouts.red_cross_hold + 0.1)
    assert fake.barrier.lamps[Side.ENTRY] is Signal.WAIT


def test_document_stage_crash_is_a_named_outcome(fake_lane: FakeLane) -> None:
    fake = fake_lane

    def broken(pages: object) -> object:
        raise ValueError("corrupt image")

    fake.documents.check = broken  # type: ignore[method-assign,assignment]
    fake.step()
    fake.lane.present_document([])
    fake.step()
    assert fake.stage() == "idle"
    assert fake.records[0].outcome is Outcome.DOCUMENT_REJECTED
    assert fake.records[0].reasons == ("DOCUMENT_STAGE_ERROR:ValueError",)
    assert fake.lane.faults == []


def test_impostor_is_sent_back_through_entry(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.verifier.push(match_decision(False))
    fake.to_capturing()
    fake.stage()
    assert fake.stage() == "rejected"
    assert fake.barrier.lamps[Side.ENTRY] is Signal.OFFICER_CALLED
    finish_in_zone_and_leave_by_entry(fake)
    assert opened(fake, Door.EXIT) == 0
    [record] = fake.records
    assert record.outcome is Outcome.FACE_MISMATCH
    assert "SCORE_BELOW_THRESHOLD" in record.reasons
    assert record.officer_called


def test_face_not_captured(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.capture.push(failed_capture())
    fake.to_capturing()
    assert fake.stage() == "rejected"
    finish_in_zone_and_leave_by_entry(fake)
    assert fake.records[0].outcome is Outcome.FACE_NOT_CAPTURED


@pytest.mark.parametrize("when", ["admitting", "closing_entry", "verifying"])
def test_tailgating_keeps_exit_shut(fake_lane: FakeLane, when: str) -> None:
    fake = fake_lane
    fake.to_admitting()
    if when == "admitting":
        fake.barrier.set_zone(2)
    else:
        fake.barrier.set_zone(1)
        fake.step()
        if when == "verifying":
            fake.travel()
            fake.stage()
            assert fake.lane.state == "verifying"
        # a second person slips in and the count briefly reads 2, then 1 again
        fake.barrier.set_zone(2)
        fake.barrier.set_zone(1)
    assert fake.step() == "rejected"
    assert fake.barrier.lamps[Side.EXIT] is Signal.OFFICER_CALLED
    while fake.runner.run_next():
        fake.step()  # a late positive decision must change nothing
    assert fake.lane.state == "rejected"
    fake.travel()
    fake.barrier.set_zone(0)
    fake.step()
    fake.travel()
    assert fake.lane.state == "idle"
    assert opened(fake, Door.EXIT) == 0
    assert fake.records[0].outcome is Outcome.TAILGATING


def test_somebody_in_the_zone_before_entry_opened(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.step()
    fake.lane.present_document([])
    fake.step()
    fake.barrier.set_zone(1)  # nobody can have come through a closed ENTRY
    assert fake.step() == "rejected"
    fake.stage()  # the document check finishing late changes nothing
    assert fake.lane.state == "rejected"
    finish_in_zone_and_leave_by_entry(fake)
    assert fake.records[-1].outcome is Outcome.TAILGATING
    assert "ZONE_OCCUPIED_BEFORE_ADMISSION" in fake.records[-1].reasons
    assert opened(fake, Door.EXIT) == 0


def test_nobody_comes_in(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_admitting()
    assert fake.later(fake.lane.config.timeouts.admitting + 0.1) == "closing_entry"
    assert fake.travel() == "idle"
    assert fake.records[0].outcome is Outcome.TIMEOUT
    assert "NOBODY_ENTERED" in fake.records[0].reasons


def test_traveller_steps_in_and_back_out_between_two_looks(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_admitting()
    # in and out again before the lane looked: only the board's events saw the zone at 1
    fake.barrier.set_beams(Beam.ENTRY)
    fake.barrier.set_zone(1)
    fake.barrier.set_zone(0)
    fake.barrier.set_beams(Beam.NONE)
    assert fake.step() == "closing_entry"  # at once, not after the admitting timeout
    assert fake.travel() == "idle"
    [record] = fake.records
    assert record.outcome is Outcome.TURNED_BACK
    assert "LEFT_BACKWARDS_FROM_CLOSING_ENTRY" in record.reasons
    assert opened(fake, Door.EXIT) == 0


def test_traveller_back_inside_while_entry_closes_is_captured(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_admitting()
    fake.barrier.set_zone(1)
    fake.barrier.set_zone(0)  # a step back out: ENTRY starts to close
    assert fake.step() == "closing_entry"
    fake.barrier.set_zone(1)  # ...and in again for good
    assert fake.travel() == "capturing_face"
    assert fake.stage() == "verifying"
    assert fake.stage() == "releasing"
    assert fake.leave_by_exit() == "idle"
    [record] = fake.records
    assert record.outcome is Outcome.PASSED


def _capture_of(value: int) -> CaptureOutcome:
    return CaptureOutcome(ok=True, frames=(np.full((8, 8, 3), value, np.uint8),),
                          quality=({"sharpness": 1.0},))


def test_capture_starts_while_entry_closes_and_counts_once_it_is_shut(fake_lane: FakeLane
                                                                       ) -> None:
    fake = fake_lane
    fake.to_closing_entry()
    assert len(fake.runner.jobs) == 1  # the capture, started with ENTRY still closing
    assert fake.stage() == "closing_entry"  # its result waits: nothing decided yet
    assert fake.barrier.status is not None
    assert fake.barrier.status.entry is not DoorState.CLOSED
    assert fake.travel() == "verifying"  # doors shut, one inside: the held capture counts
    assert fake.capture.calls == 1
    assert fake.stage() == "releasing"


def test_capture_during_closing_is_thrown_away_when_the_zone_changes(fake_lane: FakeLane
                                                                      ) -> None:
    fake = fake_lane
    fake.capture.push(_capture_of(1), _capture_of(2))
    fake.to_closing_entry()
    fake.barrier.set_zone(0)  # the first person steps out, another steps in
    fake.barrier.set_zone(1)
    assert fake.step() == "closing_entry"
    assert fake.stage() == "closing_entry"  # the first capture's frames: stale
    assert fake.travel() == "capturing_face"
    assert fake.stage() == "verifying"  # a fresh capture of whoever is inside now
    assert fake.stage() == "releasing"
    assert fake.leave_by_exit() == "idle"
    [record] = fake.records
    assert record.evidence.capture is not None
    assert int(record.evidence.capture.frames[0][0, 0, 0]) == 2
    assert fake.capture.calls == 2


def test_zone_change_reported_after_the_doors_shut_restarts_the_capture(fake_lane: FakeLane
                                                                         ) -> None:
    fake = fake_lane
    fake.capture.push(_capture_of(1), _capture_of(2))
    fake.to_closing_entry()
    assert fake.stage() == "closing_entry"  # first capture held
    # the board's events arrive together: the lane sees the shut doors while handling the
    # first of them, and the zone changes only after it has entered capturing_face
    fake.barrier.set_beams(Beam.NONE)
    fake.barrier.set_zone(0)
    fake.barrier.set_zone(1)
    fake.barrier.finish_travel()
    assert fake.step() == "capturing_face"
    assert fake.stage() == "verifying"
    assert fake.stage() == "releasing"
    assert fake.leave_by_exit() == "idle"
    [record] = fake.records
    assert record.evidence.capture is not None
    assert int(record.evidence.capture.frames[0][0, 0, 0]) == 2


def test_capture_while_closing_can_be_switched_off() -> None:
    fake = make_fake_lane(LaneConfig(policy=Policy(capture_while_closing=False)))
    fake.to_closing_entry()
    assert not fake.runner.jobs
    assert fake.travel() == "capturing_face"
    assert len(fake.runner.jobs) == 1


def test_tailgater_while_closing_drops_the_early_capture(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_closing_entry()
    fake.barrier.set_zone(2)
    assert fake.step() == "rejected"
    assert fake.stage() == "rejected"  # the capture's late result changes nothing
    assert opened(fake, Door.EXIT) == 0


def test_capture_timeout_cancels_the_capture(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_capturing()
    assert fake.later(fake.lane.config.timeouts.capturing_face + 0.1) == "rejected"
    assert fake.lane._cancel_capture.is_set()
    assert fake.stage() == "rejected"  # the capture finishing late is ignored
    finish_in_zone_and_leave_by_entry(fake)
    assert fake.records[0].outcome is Outcome.FACE_NOT_CAPTURED
    assert "CAPTURE_TIMEOUT" in fake.records[0].reasons


def test_traveller_who_will_not_leave_through_exit(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_capturing()
    fake.stage()
    assert fake.stage() == "releasing"
    fake.travel()
    assert fake.later(fake.lane.config.timeouts.releasing + 0.1) == "rejected"
    assert fake.barrier.status is not None
    assert fake.barrier.status.exit is DoorState.CLOSING  # EXIT first, then ENTRY
    assert opened(fake, Door.ENTRY) == 1
    fake.travel()
    assert fake.barrier.status.entry is DoorState.OPENING
    fake.travel()
    fake.barrier.set_zone(0)
    fake.step()
    assert fake.travel() == "idle"
    assert fake.records[0].outcome is Outcome.TURNED_BACK
    assert fake.barrier.violations == []


def test_emergency_mid_passage(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_capturing()
    commands = len(fake.barrier.commands)
    fake.barrier.set_flag(Flag.EMERGENCY, True)
    assert fake.step() == "emergency"
    assert fake.barrier.lamps == {Side.ENTRY: Signal.GREEN_ARROW, Side.EXIT: Signal.GREEN_ARROW}
    fake.stage()
    fake.later(60)
    fake.barrier.set_zone(0)
    assert fake.step() == "emergency"
    assert len(fake.barrier.commands) == commands  # the host commanded no door
    fake.barrier.set_flag(Flag.EMERGENCY, False)
    assert fake.step() == "recovering"
    assert fake.barrier.status is not None
    assert fake.barrier.status.entry is DoorState.CLOSING
    assert fake.travel() == "idle"
    assert fake.records[0].outcome is Outcome.EMERGENCY
    assert fake.barrier.violations == []


def test_link_loss_and_recovery(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.step()
    fake.lane.present_document([])
    fake.step()
    fake.barrier.set_link(False)
    assert fake.step() == "out_of_service"
    fake.later(5)
    assert fake.lane.state == "out_of_service"
    fake.barrier.set_link(True)
    fake.step()
    assert fake.later(fake.lane.config.timeouts.out_of_service_retry + 0.01) == "idle"
    assert fake.barrier.refreshes >= 1
    assert fake.records[0].outcome is Outcome.OUT_OF_SERVICE
    assert "LINK_DOWN" in fake.records[0].reasons


@pytest.mark.parametrize("flag", [Flag.WATCHDOG, Flag.DOOR_FAULT, Flag.TAMPER])
def test_latched_faults_are_reset_once_their_cause_is_gone(fake_lane: FakeLane,
                                                           flag: Flag) -> None:
    fake = fake_lane
    fake.step()
    fake.barrier.set_flag(flag, True)
    assert fake.step() == "out_of_service"
    assert fake.barrier.lamps[Side.ENTRY] is Signal.OUT_OF_SERVICE
    retry = fake.lane.config.timeouts.out_of_service_retry + 0.01
    if flag is not Flag.WATCHDOG:  # the cause persists: resets are refused
        assert fake.later(retry) == "out_of_service"
        fake.barrier.jam_persists = fake.barrier.tamper_open = False
    assert fake.later(retry) == "idle"
    assert fake.barrier.resets >= 1


def test_mains_loss_lets_the_passage_finish_then_stops(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_capturing()
    fake.barrier.set_flag(Flag.ON_UPS, True)
    assert fake.step() == "capturing_face"
    fake.stage()
    fake.stage()
    fake.travel()
    fake.barrier.set_zone(0)
    fake.step()
    assert fake.travel() == "out_of_service"
    assert fake.records[0].outcome is Outcome.PASSED
    fake.lane.present_document([])
    assert fake.later(3) == "out_of_service"
    fake.barrier.set_flag(Flag.ON_UPS, False)
    assert fake.later(1) == "idle"


def test_mains_loss_ignored_when_policy_says_so() -> None:
    fake = make_fake_lane(replace(LaneConfig(), policy=Policy(
        stop_admitting_on_mains_loss=False)))
    fake.step()
    fake.barrier.set_flag(Flag.ON_UPS, True)
    assert fake.step() == "idle"


def test_maintenance_by_key_and_by_operator(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.step()
    fake.barrier.set_flag(Flag.MAINTENANCE_KEY, True)
    assert fake.step() == "maintenance"
    fake.barrier.set_flag(Flag.MAINTENANCE_KEY, False)
    assert fake.step() == "idle"
    fake.lane.set_maintenance(True)
    assert fake.step() == "maintenance"
    fake.lane.present_document([])
    assert fake.step() == "maintenance"
    fake.lane.set_maintenance(False)
    assert fake.step() == "idle"


def test_board_restart_with_someone_inside(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_capturing()
    fake.barrier.restart()
    assert fake.step() == "rejected"  # recovering found the zone occupied
    assert fake.barrier.lamps[Side.ENTRY] is Signal.OFFICER_CALLED  # re-lit after the reboot
    fake.stage()  # the old passage's capture is stale
    assert fake.lane.state == "rejected"
    finish_in_zone_and_leave_by_entry(fake)
    first, second = fake.records
    assert first.outcome is Outcome.OUT_OF_SERVICE and "BOARD_RESTARTED" in first.reasons
    assert second.outcome is Outcome.OUT_OF_SERVICE
    assert "OCCUPIED_AFTER_RECOVERY" in second.reasons
    assert opened(fake, Door.EXIT) == 0


def test_a_callback_exception_goes_to_fault_and_is_kept(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.step()
    original = fake.lane.on_enter_reading_document

    def explode(event: object) -> None:
        raise RuntimeError("bug in a callback")

    fake.lane.on_enter_reading_document = explode  # type: ignore[method-assign]
    fake.lane.machine.get_state("reading_document").on_enter = [explode]
    fake.lane.present_document([])
    assert fake.step() == "fault"
    assert fake.lane.faults == ["RuntimeError: bug in a callback"]
    assert fake.barrier.lamps[Side.ENTRY] is Signal.OFFICER_CALLED
    fake.lane.machine.get_state("reading_document").on_enter = [original]
    fake.lane.reset()
    assert fake.step() == "idle"


def test_closing_waits_for_a_clear_doorway(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_admitting()
    fake.barrier.set_zone(1)
    fake.barrier.set_beams(Beam.ENTRY)
    fake.step()
    closes = [c for c in fake.barrier.commands if not c.open]
    assert closes == []
    fake.barrier.set_beams(Beam.NONE)
    assert fake.step() == "closing_entry"
    fake.barrier.block(Door.ENTRY)  # somebody stepped in after all
    fake.barrier.set_beams(Beam.ENTRY)
    assert fake.step() == "closing_entry"
    assert len([c for c in fake.barrier.commands if not c.open]) == 1
    fake.barrier.set_beams(Beam.NONE)
    fake.step()
    assert len([c for c in fake.barrier.commands if not c.open]) == 2
    assert fake.travel() == "capturing_face"


def test_every_state_has_lamps_and_every_waiting_state_a_timeout() -> None:
    assert set(LAMPS) == set(STATES)
    timed = {t["source"] for t in TRANSITIONS if t["trigger"] == "timeout"}
    waiting = set(STATES) - {"emergency", "maintenance", "fault"}
    assert waiting <= timed


def test_officer_clears_a_rejected_traveller_still_inside(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.verifier.push(match_decision(False))
    fake.to_capturing()
    fake.stage()
    assert fake.stage() == "rejected"
    passage = fake.lane.passage_id
    assert passage is not None
    fake.travel()  # ENTRY swings open to send the traveller back...
    assert not fake.lane.officer_release(passage + 1)  # ...a different case: refused
    assert fake.lane.officer_release(passage)  # the officer clears this one
    assert fake.lane.state == "releasing"
    assert opened(fake, Door.EXIT) == 0  # not while ENTRY is still open
    fake.travel()  # ENTRY closes first
    fake.step()
    assert opened(fake, Door.EXIT) == 1
    assert fake.leave_by_exit() == "idle"
    [record] = fake.records
    assert record.outcome is Outcome.OFFICER_RELEASED
    assert "OFFICER_RELEASE" in record.reasons and "SCORE_BELOW_THRESHOLD" in record.reasons
    assert fake.barrier.violations == []


def test_officer_cannot_release_a_tailgating_pair(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.to_capturing()
    fake.barrier.set_zone(2)
    fake.barrier.set_zone(1)  # the count settles back to one, the alarm stays
    assert fake.step() == "rejected"
    passage = fake.lane.passage_id
    assert passage is not None
    assert not fake.lane.officer_release(passage)
    assert fake.lane.state == "rejected"
    assert opened(fake, Door.EXIT) == 0


def test_officer_release_needs_somebody_inside(fake_lane: FakeLane) -> None:
    fake = fake_lane
    fake.verifier.push(match_decision(False))
    fake.to_capturing()
    fake.stage()
    assert fake.stage() == "rejected"
    passage = fake.lane.passage_id
    assert passage is not None
    fake.travel()
    fake.barrier.set_beams(Beam.ENTRY)  # walking back out through ENTRY
    fake.barrier.set_zone(0)
    assert not fake.lane.officer_release(passage)
    assert opened(fake, Door.EXIT) == 0
