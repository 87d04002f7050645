"""Lane → officer: a rejection becomes a case in the officers' queue, and an officer's
"clear" releases the traveller through the lane's own release guard.

The barrier path is the real driver against the simulated board on a pty; the review is
the real app (in-process HTTP client) on a real SQLite store with sealed images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import SIM_TIMEOUTS, SimLane
from doubles import ScriptedFaceVerifier, match_decision, rejected_document
from fastapi.testclient import TestClient
from test_review_support import add_officer, csrf_of, new_seal, new_store, sign_in

from gate.cases import CaseRecorder, LaneCaseControl, case_kind
from gate.lane import Outcome, PassageRecord
from gate.review.app import ReviewSettings, create_app
from gate.review.queue import CaseSpool
from sim.traveller import TravellerBehaviour

pytestmark = pytest.mark.timeout(90)
Factory = Callable[..., SimLane]


def _review(tmp_path: Path, sim: SimLane) -> tuple[CaseRecorder, TestClient, Any, CaseSpool]:
    seal = new_seal()
    store = new_store(tmp_path)
    add_officer(store, "anna")
    spool = CaseSpool(tmp_path / "spool", seal, f"sqlite:///{tmp_path / 'review.sqlite3'}",
                      retry_min_s=0.05)
    control = LaneCaseControl()
    recorder = CaseRecorder(spool, control)
    recorder.attach(sim.lane)
    app = create_app(store, seal, control, ReviewSettings(purge_interval_s=0))
    client = TestClient(app)
    assert sign_in(client, "anna").status_code == 303
    return recorder, client, store, spool


def _wait_for_queue(client: TestClient, timeout: float) -> list[dict[str, Any]]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cases = client.get("/api/queue").json()["cases"]
        if cases:
            return list(cases)
        time.sleep(0.02)
    return []


def test_rejection_reaches_the_officer_queue_within_a_second(
        sim_lane: Factory, tmp_path: Path) -> None:
    sim = sim_lane(verifier=ScriptedFaceVerifier(match_decision(False)))
    recorder, client, store, spool = _review(tmp_path, sim)
    try:
        sim.board.add_traveller(TravellerBehaviour("normal"))
        sim.lane.present_document([])
        sim.wait_state("rejected")
        rejected_at = time.monotonic()
        cases = _wait_for_queue(client, timeout=5.0)
        latency = time.monotonic() - rejected_at
        assert cases, "no case reached the queue"
        assert latency < 1.0, f"case took {latency:.2f} s"
        [case] = cases
        assert case["lane_id"] == "sim-lane" and case["kind"] == "REJECTION"
        record = store.case(case["case_id"])
        assert record is not None and "FACE_MISMATCH" in record.reasons
        sim.wait_records(1)
        time.sleep(0.2)  # the final record must not open a second case
        assert len(client.get("/api/queue").json()["cases"]) == 1
    finally:
        client.close()
        recorder.close()
        spool.close()


def test_officer_clears_the_traveller_through_the_lane(
        sim_lane: Factory, tmp_path: Path) -> None:
    # Slow doors: the officer decides while ENTRY is still swinging open to send the
    # traveller back, so the traveller is still alone inside when the release comes.
    timeouts = SIM_TIMEOUTS.__class__(**{**SIM_TIMEOUTS.__dict__, "rejected": 20.0,
                                         "releasing": 20.0})
    sim = sim_lane(verifier=ScriptedFaceVerifier(match_decision(False)), speed=0.25,
                   timeouts=timeouts)
    recorder, client, store, spool = _review(tmp_path, sim)
    try:
        sim.board.add_traveller(TravellerBehaviour("normal"))
        sim.lane.present_document([])
        sim.wait_state("rejected", timeout=30.0)
        [case] = _wait_for_queue(client, timeout=5.0)
        page = client.get(f"/cases/{case['case_id']}")
        assert page.status_code == 200
        answer = client.post(f"/cases/{case['case_id']}/decision",
                             data={"action": "clear", "comment": "false reject, checked",
                                   "csrf": csrf_of(page.text)}, follow_redirects=False)
        assert answer.status_code == 303, answer.text[-500:]
        [record] = sim.wait_records(1, timeout=40.0)
        assert record.outcome is Outcome.OFFICER_RELEASED
        snap = sim.board.snapshot()
        assert snap.travellers_passed == 1 and snap.travellers_turned_back == 0
        assert sim.board.safety_violations == []
        decided = store.case(case["case_id"])
        assert decided is not None and decided.status != "OPEN"
    finally:
        client.close()
        recorder.close()
        spool.close()


def test_refused_document_opens_a_case_but_a_pass_does_not(
        sim_lane: Factory, tmp_path: Path) -> None:
    from doubles import ScriptedDocumentCheck

    sim = sim_lane(documents=ScriptedDocumentCheck(rejected_document("LOST_OR_STOLEN")))
    recorder, client, store, spool = _review(tmp_path, sim)
    try:
        sim.board.add_traveller(TravellerBehaviour("normal"))
        sim.lane.present_document([])
        [case] = _wait_for_queue(client, timeout=5.0)
        assert case["kind"] == "REJECTION"
        stored = store.case(case["case_id"])
        assert stored is not None and "LOST_OR_STOLEN" in stored.reasons
    finally:
        client.close()
        recorder.close()
        spool.close()


def _record(outcome: Outcome, zone: int = 1, officer: bool = False) -> PassageRecord:
    return PassageRecord("l", 1, outcome, (), 0.0, 0.0, 0.0, {}, 0.0, 0.0, {}, zone, officer)


def test_which_passages_open_a_case() -> None:
    assert case_kind(_record(Outcome.PASSED)) is None
    assert case_kind(_record(Outcome.TURNED_BACK)) is None
    assert case_kind(_record(Outcome.OFFICER_RELEASED)) is None
    assert case_kind(_record(Outcome.FACE_MISMATCH)) == "REJECTION"
    assert case_kind(_record(Outcome.TAILGATING)) == "TAILGATING"
    assert case_kind(_record(Outcome.EMERGENCY)) == "OUT_OF_SERVICE_WITH_TRAVELLER"
    assert case_kind(_record(Outcome.OUT_OF_SERVICE, zone=0)) is None  # nobody inside
    assert case_kind(_record(Outcome.TIMEOUT, zone=0)) is None  # nobody came in
