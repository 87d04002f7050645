"""``gate selftest`` against boards that follow the contract, and boards that do not."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Iterator

import pytest
from foreign_board import ForeignBoard

from gate.commands import selftest as command
from gate.selftest import run_selftest

EXPECTED_CHECKS = [
    "link", "INFO", "CONFIG watchdog", "RESET_FAULTS (start)", "lamps entry side",
    "lamps exit side", "doors closed to begin", "ENTRY opens", "interlock: EXIT refused",
    "ENTRY closes", "EXIT opens", "interlock: ENTRY refused", "EXIT closes",
    "sensors (STATUS)", "RESET_FAULTS (end)",
]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gate")
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def foreign(tmp_path: object) -> Iterator[ForeignBoard]:
    board = ForeignBoard(link_dir=str(tmp_path))
    board.start()
    yield board
    board.stop()


@pytest.mark.timeout(30)
def test_selftest_passes_against_the_foreign_board(
        foreign: ForeignBoard, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli(["selftest", "--port", foreign.path, "--address", "0x07", "--lamp-dwell", "0",
              "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["verdict"] == "PASS"
    assert [c["name"] for c in out["checks"]] == EXPECTED_CHECKS
    assert all(c["passed"] for c in out["checks"])
    # it really drove the board: both doors moved, the lamps ended off, the watchdog restored
    doors = [p for _s, kind, p in foreign.executed if kind == 0x10]
    assert bytes([1, 1]) in doors and bytes([2, 1]) in doors
    assert bytes([2, 1]) == doors[doors.index(bytes([1, 1])) + 1]  # the refused interlock try
    assert foreign.lamps == {1: 0, 2: 0}
    assert foreign.watchdog_ms == 1000
    assert all(d.state == 0 for d in foreign.doors.values())
    assert foreign.counters.watchdog_trips == 0


@pytest.mark.timeout(30)
def test_selftest_passes_against_the_simulated_board(tmp_path: object) -> None:
    sim_board = pytest.importorskip("sim.board")
    board = sim_board.SimBoard(speed=4.0, link_dir=str(tmp_path))
    path = board.start()
    try:
        report = run_selftest(path, lamp_dwell_s=0)
    finally:
        board.stop()
    assert report.exit_code == 0, report.text()
    assert [c.name for c in report.checks] == EXPECTED_CHECKS
    assert board.safety_violations == []
    assert board.snapshot().watchdog_trips == 0


@pytest.mark.timeout(30)
def test_selftest_text_report_has_one_line_per_check(
        foreign: ForeignBoard, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli(["selftest", "--port", foreign.path, "--address", "7", "--lamp-dwell", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert len(lines) == 1 + len(EXPECTED_CHECKS) + 1
    assert all(line.startswith("PASS  ") for line in lines[1:-1])
    assert lines[-1] == f"PASS: {len(EXPECTED_CHECKS)} of {len(EXPECTED_CHECKS)} checks passed"


@pytest.mark.timeout(30)
def test_a_board_without_interlock_fails_the_selftest(tmp_path: object) -> None:
    board = ForeignBoard(link_dir=str(tmp_path), interlock=False)
    board.start()
    try:
        report = run_selftest(board.path, address=7, lamp_dwell_s=0)
    finally:
        board.stop()
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert report.exit_code == 1
    assert set(failed) == {"interlock: EXIT refused", "interlock: ENTRY refused"}
    assert "interlock is not enforced" in failed["interlock: EXIT refused"]
    assert all(d.state == 0 for d in board.doors.values())  # shut again


@pytest.mark.timeout(30)
def test_a_stuck_door_and_a_persistent_fault_fail_with_their_reason(tmp_path: object) -> None:
    board = ForeignBoard(link_dir=str(tmp_path), open_s=30.0)
    board.persistent_fault = True
    board.start()
    try:
        report = run_selftest(board.path, address=7, lamp_dwell_s=0, door_timeout_s=0.5)
    finally:
        board.stop()
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert report.exit_code == 1
    assert "ENTRY not OPEN within 0.5 s (OPENING)" in failed["ENTRY opens"]
    assert "FAULT_ACTIVE" in failed["RESET_FAULTS (start)"]


@pytest.mark.timeout(30)
def test_wrong_address_or_missing_port_is_exit_code_2(
        foreign: ForeignBoard, tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    missing = os.path.join(str(tmp_path), "no-such-tty")
    assert cli(["selftest", "--port", missing, "--lamp-dwell", "0"]) == 2
    assert "cannot open port" in capsys.readouterr().out
    # the board at address 7 ignores frames for address 1: no reply, link down
    assert cli(["selftest", "--port", foreign.path, "--lamp-dwell", "0"]) == 2
    assert "no valid reply to GET_INFO" in capsys.readouterr().out


@pytest.mark.timeout(30)
def test_link_lost_during_the_test_is_exit_code_2(foreign: ForeignBoard) -> None:
    def pull_the_cable_at_the_first_door_command() -> None:
        deadline = time.monotonic() + 10
        while not foreign.requests_of(0x10) and time.monotonic() < deadline:
            time.sleep(0.005)
        foreign.mute(True)

    cutter = threading.Thread(target=pull_the_cable_at_the_first_door_command)
    cutter.start()
    report = run_selftest(foreign.path, address=7, lamp_dwell_s=0)
    cutter.join()
    assert report.exit_code == 2
    assert report.verdict == "LINK DOWN"
    last = report.checks[-1]
    assert not last.passed and last.detail.startswith("link down")
    assert [c.passed for c in report.checks[:-1]] == [True] * (len(report.checks) - 1)
