"""Property-based safety test: random orders of board events, stage results, timer
expiries and operator commands, fed to the lane on an in-memory board.

Whatever the order, at the moment any door command reaches the board:
- no door is commanded during EMERGENCY;
- a door is commanded open only while the other one is CLOSED (never both open);
- EXIT is commanded open only in ``releasing``, with a positive decision for the
  passage under way (one the verifier really produced), zone count exactly 1, ENTRY
  CLOSED, and no zone count above 1 seen earlier in that passage before release.
And the lane never ends up in ``fault`` (no callback raised).
"""

from __future__ import annotations

from typing import Any

from conftest import FakeLane, make_fake_lane
from doubles import accepted_document, failed_capture, good_capture, match_decision
from doubles import rejected_document as rejected
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.lane import PRE_RELEASE_STATES
from hardware.barrier.protocol import Beam, BoardStatus, Door, DoorState, Flag

FLAGS = [Flag.EMERGENCY, Flag.WATCHDOG, Flag.TAMPER, Flag.ON_UPS, Flag.DOOR_FAULT,
         Flag.MAINTENANCE_KEY]

noise = st.one_of(
    st.tuples(st.just("present")),
    st.tuples(st.just("stage"), st.booleans()),
    st.tuples(st.just("travel")),
    st.tuples(st.just("block"), st.sampled_from(list(Door))),
    st.tuples(st.just("jam"), st.sampled_from(list(Door))),
    st.tuples(st.just("zone"), st.integers(0, 3)),
    st.tuples(st.just("beams"), st.sampled_from([Beam.NONE, Beam.ENTRY, Beam.EXIT,
                                                  Beam.ENTRY | Beam.EXIT])),
    st.tuples(st.just("flag"), st.sampled_from(FLAGS), st.booleans()),
    st.tuples(st.just("link"), st.booleans()),
    st.tuples(st.just("restart")),
    st.tuples(st.just("time"), st.sampled_from([0.1, 0.5, 3.0, 16.0, 61.0])),
    st.tuples(st.just("reset")),
    st.tuples(st.just("maintenance"), st.booleans()),
    st.tuples(st.just("officer_release")),
)

#: The skeleton of a genuine passage; noise is interleaved with it.
HAPPY = [("present",), ("stage", True), ("travel",), ("zone", 1), ("travel",),
         ("stage", True), ("stage", True), ("travel",), ("zone", 0), ("travel",)]


class Checker:
    def __init__(self, fake: FakeLane) -> None:
        self.fake = fake
        self.tailgated: set[int] = set()
        self.released_by_officer: set[int] = set()
        self.exit_opens = 0
        fake.barrier.check_open = self.check_open

    def check_open(self, door: Door, status: BoardStatus) -> str | None:
        if door is not Door.EXIT:
            return None
        self.exit_opens += 1
        lane = self.fake.lane
        decision = lane.decision
        if lane.state != "releasing":
            return f"EXIT opened in {lane.state}"
        if lane.passage_id in self.released_by_officer:
            pass  # an officer's decision, taken while the traveller was inside
        elif decision is None or not decision.match:
            return "EXIT opened without a positive decision"
        elif not any(decision is d for d in self.fake.verifier.produced):
            return "EXIT opened on a decision the verifier never made"
        if status.zone_count != 1:
            return f"EXIT opened with zone count {status.zone_count}"
        if status.entry is not DoorState.CLOSED:
            return f"EXIT opened with ENTRY {status.entry.name}"
        if lane.passage_id in self.tailgated:
            return "EXIT opened after a tailgater was seen"
        return None

    def apply(self, action: tuple[Any, ...]) -> None:
        fake, kind = self.fake, action[0]
        board = fake.barrier
        if kind == "present":
            fake.lane.present_document([])
        elif kind == "stage":
            ok = action[1]
            fake.documents.push(accepted_document() if ok else rejected())
            fake.capture.push(good_capture() if ok else failed_capture())
            fake.verifier.push(match_decision(ok))
            fake.runner.run_next()
        elif kind == "travel":
            board.finish_travel()
        elif kind == "block":
            board.block(action[1])
        elif kind == "jam":
            board.jam(action[1])
        elif kind == "zone":
            if action[1] > 1 and fake.lane.state in PRE_RELEASE_STATES and (
                    fake.lane.passage_id is not None):
                self.tailgated.add(fake.lane.passage_id)
            board.set_zone(action[1])
        elif kind == "beams":
            board.set_beams(action[1])
        elif kind == "flag":
            board.set_flag(action[1], action[2])
        elif kind == "link":
            board.set_link(action[1])
        elif kind == "restart":
            board.restart()
        elif kind == "time":
            fake.clock.advance(action[1])
        elif kind == "reset":
            fake.lane.reset()
        elif kind == "maintenance":
            fake.lane.set_maintenance(action[1])
        elif kind == "officer_release":
            passage = fake.lane.passage_id
            if passage is not None and fake.lane.officer_release(passage):
                assert passage not in self.tailgated, "officer release after tailgating"
                self.released_by_officer.add(passage)
        fake.step()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_safety_invariants_hold_for_any_order(data: st.DataObject) -> None:
    fake = make_fake_lane()
    checker = Checker(fake)
    mode = data.draw(st.sampled_from(["noise", "perturbed passage", "two perturbed passages"]),
                     label="mode")
    if mode == "noise":
        actions: list[tuple[Any, ...]] = data.draw(st.lists(noise, max_size=40), label="noise")
    else:
        # a genuine passage (or two) with a few events at random points: reaches the deep
        # states (verifying, releasing) where the EXIT checks matter
        actions = HAPPY * (2 if mode.startswith("two") else 1)
        for extra in data.draw(st.lists(noise, min_size=1, max_size=4), label="perturbation"):
            actions.insert(data.draw(st.integers(0, len(actions)), label="at"), extra)
    fake.step()
    for action in actions:
        checker.apply(action)
    assert fake.barrier.violations == []
    assert fake.lane.faults == []


def test_the_skeleton_alone_releases() -> None:
    """The property test's skeleton is a real passage (so the EXIT checks do run)."""
    fake = make_fake_lane()
    checker = Checker(fake)
    fake.step()
    for action in HAPPY:
        checker.apply(action)
    assert checker.exit_opens == 1
    assert fake.lane.state == "idle"
    assert [r.outcome.value for r in fake.records] == ["PASSED"]
