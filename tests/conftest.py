"""Shared fixtures: a lane on an in-memory board (``fake_lane``) and a lane on the real
driver talking to the simulated board over a pty (``sim_lane``).

``sim_lane`` is a factory so each test picks its stage scripts, timeouts and board
options; everything it starts is stopped at teardown, and the teardown fails the test if
a lane, driver or board thread is left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from doubles import (
    FakeBarrier,
    HeldStageRunner,
    ManualClock,
    ScriptedDocumentCheck,
    ScriptedFaceCapture,
    ScriptedFaceVerifier,
)

from gate.config import LaneConfig, Timeouts
from gate.lane import Lane, PassageRecord, StateChange
from gate.logsetup import configure_logging


@pytest.fixture(autouse=True)
def _audit_key_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's audit key (and its anchor beside it) in the test's own folder: no test
    creates one in the real ~/.config/egate."""
    monkeypatch.setenv("GATE_REVIEW_AUDIT_KEY_FILE", str(tmp_path / "audit-key" / "audit.key"))
    monkeypatch.delenv("GATE_REVIEW_AUDIT_KEY", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _product_logging() -> None:
    """Log as the product does (JSON, privacy filter, INFO) rather than structlog's
    default of every debug line on stdout; tests that inspect logs configure their own."""
    configure_logging("INFO", json=True)

#: Short timeouts for the simulated lane at speed 10 (door travel 0.08-0.1 s).
SIM_TIMEOUTS = Timeouts(
    reading_document=5.0, admitting=5.0, closing_entry=5.0, capturing_face=5.0,
    verifying=5.0, releasing=5.0, closing_exit=5.0, rejected=8.0, closing_rejected=5.0,
    recovering=5.0, out_of_service_retry=0.2, red_cross_hold=0.5,
)

_OUR_THREADS = ("lane-", "barrier-", "sim-board")


# ------------------------------------------------------------------ in-memory board


@dataclass
class FakeLane:
    barrier: FakeBarrier
    lane: Lane
    clock: ManualClock
    runner: HeldStageRunner
    documents: ScriptedDocumentCheck
    capture: ScriptedFaceCapture
    verifier: ScriptedFaceVerifier
    records: list[PassageRecord] = field(default_factory=list)

    def step(self) -> str:
        self.lane.run_pending()
        return self.lane.state

    def stage(self) -> str:
        """Let the oldest held stage job finish now."""
        assert self.runner.run_next(), "no stage job was waiting"
        return self.step()

    def travel(self) -> str:
        self.barrier.finish_travel()
        return self.step()

    def later(self, seconds: float) -> str:
        self.clock.advance(seconds)
        return self.step()

    def to_admitting(self) -> None:
        """Drive a traveller from idle to an open ENTRY, the zone still empty."""
        assert self.step() == "idle"
        self.lane.present_document([])
        assert self.step() == "reading_document"
        assert self.stage() == "admitting"
        self.travel()

    def to_closing_entry(self) -> None:
        """The traveller is inside alone; ENTRY starts to close (and the capture to run)."""
        self.to_admitting()
        self.barrier.set_zone(1)
        assert self.step() == "closing_entry"

    def to_capturing(self) -> None:
        """Drive a traveller from idle to a closed zone with the face capture running."""
        self.to_closing_entry()
        assert self.travel() == "capturing_face"

    def leave_by_exit(self) -> str:
        """EXIT open: the traveller walks out and EXIT closes behind them."""
        self.travel()
        self.barrier.set_zone(0)
        assert self.step() == "closing_exit"
        return self.travel()


def make_fake_lane(config: LaneConfig | None = None) -> FakeLane:
    barrier = FakeBarrier()
    clock = ManualClock()
    runner = HeldStageRunner()
    docs, cap, ver = ScriptedDocumentCheck(), ScriptedFaceCapture(), ScriptedFaceVerifier()
    lane = Lane(barrier, docs, cap, ver, config, clock=clock, runner=runner)
    barrier.lane_state = lambda: lane.state
    fake = FakeLane(barrier, lane, clock, runner, docs, cap, ver)
    lane.subscribe(fake.records.append)
    return fake


@pytest.fixture
def fake_lane() -> FakeLane:
    return make_fake_lane()


# ------------------------------------------------------------------ the simulated board


@dataclass
class SimLane:
    board: Any  # sim.board.SimBoard
    barrier: Any  # hardware.barrier.driver.SerialBarrier
    lane: Lane
    documents: ScriptedDocumentCheck
    capture: ScriptedFaceCapture
    verifier: ScriptedFaceVerifier
    records: list[PassageRecord] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)

    def wait_state(self, *states: str, timeout: float = 10.0) -> None:
        if not self.lane.wait_for_state(*states, timeout=timeout):
            raise AssertionError(f"lane in {self.lane.state}, not {states} after {timeout} s; "
                                 f"path: {self.path()}")

    def wait_records(self, count: int = 1, timeout: float = 15.0) -> list[PassageRecord]:
        end = time.monotonic() + timeout
        while len(self.records) < count:
            if time.monotonic() > end:
                raise AssertionError(f"{len(self.records)} records, wanted {count}; "
                                     f"state {self.lane.state}; path: {self.path()}")
            time.sleep(0.02)
        return list(self.records)

    def wait_until(self, what: Callable[[], bool], timeout: float = 10.0,
                   label: str = "condition") -> None:
        end = time.monotonic() + timeout
        while not what():
            if time.monotonic() > end:
                raise AssertionError(f"{label} not reached in {timeout} s; state "
                                     f"{self.lane.state}; path: {self.path()}")
            time.sleep(0.02)

    def path(self) -> list[str]:
        return [f"{c.source}-{c.trigger}->{c.dest}" for c in self.changes]

    def visited(self) -> list[str]:
        return [c.dest for c in self.changes]


def _our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(_OUR_THREADS)]


@pytest.fixture
def sim_lane() -> Iterator[Callable[..., SimLane]]:
    """Factory: ``sim_lane(documents=..., capture=..., verifier=..., timeouts=..., speed=10,
    **board_options)`` starts a SimBoard, the real SerialBarrier on its pty and a Lane."""
    from hardware.barrier.driver import SerialBarrier
    from sim.board import SimBoard

    before = set(_our_threads())
    started: list[tuple[Any, Any, Lane]] = []

    def make(*, documents: ScriptedDocumentCheck | None = None,
             capture: ScriptedFaceCapture | None = None,
             verifier: ScriptedFaceVerifier | None = None, timeouts: Timeouts | None = None,
             config: LaneConfig | None = None, speed: float = 10.0,
             **board_options: Any) -> SimLane:
        board = SimBoard(speed=speed, **board_options)
        path = board.start()
        barrier = SerialBarrier(path)
        barrier.start()
        docs = documents or ScriptedDocumentCheck()
        cap = capture or ScriptedFaceCapture()
        ver = verifier or ScriptedFaceVerifier()
        base = config or LaneConfig(lane_id="sim-lane")
        lane = Lane(barrier, docs, cap, ver, replace(base, timeouts=timeouts or SIM_TIMEOUTS))
        sim = SimLane(board, barrier, lane, docs, cap, ver)
        lane.subscribe(sim.records.append)
        lane.subscribe_states(sim.changes.append)
        started.append((board, barrier, lane))
        lane.start()
        sim.wait_state("idle", timeout=5.0)
        return sim

    yield make
    for board, barrier, lane in reversed(started):
        lane.stop()
        barrier.close()
        board.stop()
    end = time.monotonic() + 3.0
    while set(_our_threads()) - before and time.monotonic() < end:
        time.sleep(0.05)
    left = sorted(set(_our_threads()) - before)
    assert not left, f"threads left running: {left}"
