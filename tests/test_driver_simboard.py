"""Acceptance: the production driver against our simulated board over a noisy pty.

Every command the test issues must be executed by the board exactly once, in order,
although 5 % of replies are dropped, 5 % corrupted and 5 % preceded by garbage: the
driver resends the same bytes and the board re-answers duplicates without acting again.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from test_driver import Notices

from hardware.barrier.api import (
    BarrierNotice,
    BoardChange,
    BoardRestarted,
    CommandRejected,
    LinkLost,
    LinkRestored,
    StateRefreshed,
)
from hardware.barrier.driver import SerialBarrier
from hardware.barrier.protocol import (
    Door,
    DoorAction,
    DoorState,
    MsgType,
    NakReason,
    Side,
    Signal,
    door_payload,
    lamp_payload,
)

sim_board = pytest.importorskip("sim.board")

QUIET_LOG = structlog.wrap_logger(
    structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
)
COMMANDS = 420


@pytest.fixture
def noisy_board(tmp_path: object) -> Iterator[Any]:
    faults = sim_board.BoardFaults(drop_reply=0.05, corrupt_reply=0.05, noise=0.05)
    board = sim_board.SimBoard(speed=10.0, faults=faults, seed=20261126, link_dir=str(tmp_path))
    board.start()
    yield board
    board.stop()


@pytest.mark.timeout(60)
def test_no_command_lost_or_doubled_over_a_noisy_link(noisy_board: Any) -> None:
    board = noisy_board
    notices: list[BarrierNotice] = []
    driver = SerialBarrier(board.path, logger=QUIET_LOG)
    driver.subscribe(notices.append)
    driver.start()
    assert driver.link_up
    rng = random.Random(5)
    issued: list[tuple[int, bytes]] = []
    refused = 0
    t0 = time.monotonic()
    try:
        for _ in range(COMMANDS):
            if rng.random() < 0.5:
                side, signal = rng.choice(list(Side)), rng.choice(list(Signal))
                issued.append((MsgType.LAMP, lamp_payload(side, signal)))
                driver.set_lamp(side, signal)
            else:
                door, action = rng.choice(list(Door)), rng.choice(list(DoorAction))
                issued.append((MsgType.DOOR, door_payload(door, action)))
                try:
                    if action is DoorAction.OPEN:
                        driver.open_door(door)
                    else:
                        driver.close_door(door)
                except CommandRejected as exc:  # the interlock: still executed, once
                    assert exc.reason is NakReason.NOT_ALLOWED
                    refused += 1
        elapsed = time.monotonic() - t0
        # bring the doors to rest, so the two pictures compared below cannot race a door
        for door in Door:
            issued.append((MsgType.DOOR, door_payload(door, DoorAction.CLOSE)))
            driver.close_door(door)
        deadline = time.monotonic() + 3
        while True:
            final = driver.refresh_status()
            if (final.entry, final.exit) == (DoorState.CLOSED, DoorState.CLOSED):
                break
            assert time.monotonic() < deadline, final
            time.sleep(0.05)
    finally:
        driver.close()

    executed = [(kind, payload) for _seq, kind, payload in board.executed
                if kind in (MsgType.LAMP, MsgType.DOOR)]
    snap = board.snapshot()
    injected = snap.faults_injected
    print(f"{len(board.executed)} requests executed in {elapsed:.1f} s, "
          f"{injected}, driver {driver.stats}, {refused} interlock refusals")

    assert executed == issued  # each command exactly once, in the order issued
    assert len(board.executed) >= 500
    seqs = [seq for seq, kind, _p in board.executed]
    assert all(a != b for a, b in itertools.pairwise(seqs))
    # the faults really happened and were ridden out
    assert injected["dropped_replies"] > 5 and injected["corrupted_replies"] > 5
    assert injected["noise_bursts"] > 5 and injected["duplicates"] > 5
    assert driver.stats.link_downs == 0
    assert not [n for n in notices if isinstance(n, LinkLost)]
    assert snap.watchdog_trips == 0
    assert board.safety_violations == []
    # the driver's picture agrees with the board
    assert (final.entry, final.exit) == (snap.entry, snap.exit)
    assert driver.stats.max_request_gap_s <= 0.25


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stale_ack", ["drop", "keep"])
def test_simboard_reboot_and_replug_are_noticed(tmp_path: object, stale_ack: str) -> None:
    # "drop": the board discards RESTARTED on our stale ack, the restart shows as ids going
    # backwards in STATUS; "keep": RESTARTED arrives with an id we have seen before.
    board = sim_board.SimBoard(speed=10.0, seed=1, link_dir=str(tmp_path), stale_ack=stale_ack)
    board.start()
    notices = Notices()
    driver = SerialBarrier(board.path, logger=QUIET_LOG, watchdog_ms=1500)
    driver.subscribe(notices)
    driver.start()
    try:
        for _ in range(2):
            driver.open_door(Door.ENTRY)
            notices.wait_for(lambda n: n.state is not None and n.state.entry is DoorState.OPEN)
            driver.close_door(Door.ENTRY)
            notices.wait_for(lambda n: n.state is not None
                             and n.state.entry is DoorState.CLOSED and isinstance(n, BoardChange))
        mark = len(notices.items)
        board.reboot()
        notices.wait_for(lambda n: isinstance(n, BoardRestarted), after=mark)
        notices.wait_for(lambda n: isinstance(n, StateRefreshed), after=mark)
        deadline = time.monotonic() + 2
        while board.snapshot().watchdog_ms != 1500 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert board.snapshot().watchdog_ms == 1500  # re-applied after the restart
        # new events after the restart are delivered, not taken for duplicates
        driver.open_door(Door.EXIT)
        notices.wait_for(lambda n: isinstance(n, BoardChange) and n.state is not None
                         and n.state.exit is DoorState.OPEN, after=mark)
        driver.close_door(Door.EXIT)
        assert len(notices.of(BoardRestarted)) == 1

        mark = len(notices.items)
        board.unplug()
        notices.wait_for(lambda n: isinstance(n, LinkLost), after=mark)
        time.sleep(0.3)
        board.replug()
        notices.wait_for(lambda n: isinstance(n, LinkRestored), after=mark, timeout=3)
        driver.set_lamp(Side.ENTRY, Signal.GREEN_ARROW)
        assert board.snapshot().lamps[Side.ENTRY] is Signal.GREEN_ARROW
        assert len(notices.of(BoardRestarted)) == 1  # a replug is no restart
    finally:
        driver.close()
        board.stop()
    assert board.safety_violations == []
