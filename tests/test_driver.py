"""The host driver against a foreign board on a real pty (not our simulator)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serial
import structlog
from foreign_board import EV_BEAMS, ForeignBoard, ForeignFaults

from hardware.barrier.api import (
    BarrierNotice,
    BeamsChanged,
    BoardChange,
    BoardRestarted,
    CommandRejected,
    Condition,
    DoorMoved,
    LinkDown,
    LinkLost,
    LinkRestored,
    StateRefreshed,
)
from hardware.barrier.driver import SerialBarrier, open_port
from hardware.barrier.linkproc import ProcessBarrier
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

QUIET_LOG = structlog.wrap_logger(
    structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
)


class Notices:
    """Every notice a driver published, with a way to wait for one."""

    def __init__(self) -> None:
        self.items: list[BarrierNotice] = []
        self._cond = threading.Condition()

    def __call__(self, notice: BarrierNotice) -> None:
        with self._cond:
            self.items.append(notice)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[BarrierNotice], bool], timeout: float = 3.0,
                 after: int = 0) -> BarrierNotice:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for n in self.items[after:]:
                    if pred(n):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [n.describe() for n in self.items[after:]]
                    raise AssertionError(f"notice not seen within {timeout} s; got {kinds}")
                self._cond.wait(left)

    def of(self, kind: type[BarrierNotice]) -> list[BarrierNotice]:
        with self._cond:
            return [n for n in self.items if isinstance(n, kind)]

    def events(self) -> list[int]:
        return [n.event_id for n in self.of(BoardChange) if isinstance(n, BoardChange)]

def event_id(n: BarrierNotice) -> int | None:
    """The board's event number behind a notice (None: not a board change)."""
    return n.event_id if isinstance(n, BoardChange) else None



@pytest.fixture
def board(tmp_path: object) -> Iterator[ForeignBoard]:
    b = ForeignBoard(link_dir=str(tmp_path))
    b.start()
    yield b
    b.stop()


def make_driver(board: ForeignBoard, **kw: object) -> tuple[SerialBarrier, Notices]:
    driver = SerialBarrier(board.path, address=board.address, logger=QUIET_LOG, **kw)  # type: ignore[arg-type]
    notices = Notices()
    driver.subscribe(notices)
    driver.start()
    return driver, notices


@pytest.fixture
def link(board: ForeignBoard) -> Iterator[tuple[SerialBarrier, Notices]]:
    driver, notices = make_driver(board)
    yield driver, notices
    driver.close()


def max_gap(times: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(times))


@pytest.mark.timeout(20)
def test_request_reply_info_and_door(board: ForeignBoard,
                                     link: tuple[SerialBarrier, Notices]) -> None:
    driver, notices = link
    assert driver.link_up
    # notices arrive on the driver's notice thread: the first one is LINK_UP
    assert isinstance(notices.wait_for(lambda n: True), LinkRestored)
    info = driver.info()
    assert (info.protocol, info.firmware, info.serial) == (1, "acme-gatectl 4.2", "ACME-0042")
    status = driver.status
    assert status is not None and status.entry is DoorState.CLOSED

    driver.open_door(Door.ENTRY)
    notices.wait_for(lambda n: isinstance(n, DoorMoved)
                     and (n.door, n.position) == (Door.ENTRY, DoorState.OPEN))
    assert driver.status is not None and driver.status.entry is DoorState.OPEN
    # the interlock is the board's: the driver reports its NAK as CommandRejected
    with pytest.raises(CommandRejected) as err:
        driver.open_door(Door.EXIT)
    assert err.value.reason is NakReason.NOT_ALLOWED
    # every request had a new SEQ, and none was sent twice
    seqs = [r.seq for r in board.received]
    assert all(a != b for a, b in itertools.pairwise(seqs))
    assert not any(r.duplicate for r in board.received)
    doors = [payload for _seq, kind, payload in board.executed if kind == MsgType.DOOR]
    assert doors == [bytes([1, 1]), bytes([2, 1])]


@pytest.mark.timeout(20)
def test_dropped_replies_are_resent_as_the_same_bytes(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, _ = link
    board.drop_next_replies(2)
    driver.set_lamp(Side.ENTRY, Signal.GREEN_ARROW)
    lamps = board.requests_of(MsgType.LAMP)
    assert len(lamps) == 3
    assert lamps[0].raw == lamps[1].raw == lamps[2].raw
    assert [r.duplicate for r in lamps] == [False, True, True]
    assert len([e for e in board.executed if e[1] == MsgType.LAMP]) == 1
    assert board.lamps[1] == Signal.GREEN_ARROW
    # the resends came after the 100 ms reply timeout, not before
    assert lamps[1].at - lamps[0].at >= 0.095
    assert driver.stats.retries >= 2 and driver.stats.timeouts >= 2


@pytest.mark.timeout(20)
def test_corrupt_reply_is_resent_without_waiting_out_the_timeout(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, _ = link
    board.corrupt_next_replies(1)
    driver.set_lamp(Side.EXIT, Signal.RED_CROSS)
    lamps = board.requests_of(MsgType.LAMP)
    assert len(lamps) == 2 and lamps[0].raw == lamps[1].raw and lamps[1].duplicate
    assert len([e for e in board.executed if e[1] == MsgType.LAMP]) == 1
    assert board.lamps[2] == Signal.RED_CROSS
    assert driver.stats.crc_errors >= 1


@pytest.mark.timeout(20)
def test_replies_for_another_address_or_stale_seq_are_ignored(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, _ = link
    before = driver.stats.ignored_replies
    board.decoy_next_replies(3)  # each real reply is preceded by two NAK decoys
    driver.set_lamp(Side.ENTRY, Signal.WAIT)  # would raise CommandRejected on a decoy
    driver.set_lamp(Side.EXIT, Signal.WAIT)
    assert board.lamps == {1: Signal.WAIT, 2: Signal.WAIT}
    assert driver.stats.ignored_replies - before >= 4


@pytest.mark.timeout(20)
def test_link_down_after_three_retries_then_back_up(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, notices = link
    mark = len(board.received)
    board.mute(True)
    t0 = time.monotonic()
    with pytest.raises(LinkDown):
        driver.set_lamp(Side.ENTRY, Signal.OFFICER_CALLED)
    notices.wait_for(lambda n: isinstance(n, LinkLost))
    assert not driver.link_up
    silent = board.received[mark:]
    # the first unanswered request went out 4 times (1 + 3 retries), byte-identical
    assert len({r.raw for r in silent[:4]}) == 1 and len(silent) >= 4
    assert silent[3].at - silent[0].at >= 0.28
    assert time.monotonic() - t0 < 1.5
    # while down, commands fail fast
    t1 = time.monotonic()
    with pytest.raises(LinkDown):
        driver.close_door(Door.ENTRY)
    assert time.monotonic() - t1 < 0.09  # well under one 100 ms reply timeout
    board.mute(False)
    notices.wait_for(lambda n: isinstance(n, LinkRestored) and n is not notices.items[0],
                     timeout=3.0)
    assert driver.link_up
    driver.set_lamp(Side.ENTRY, Signal.OFF)
    assert driver.stats.link_downs == 1


@pytest.mark.timeout(20)
def test_resent_events_are_delivered_once_across_the_id_wrap(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, notices = link
    board.inject_events(EV_BEAMS, [1, 0] * 5, redeliver=4)
    notices.wait_for(lambda n: event_id(n) == 4)
    driver.refresh_status()
    assert notices.events() == [65530, 65531, 65532, 65533, 65534, 65535, 1, 2, 3, 4]
    assert driver.stats.duplicate_events >= 2
    # every POLL acknowledged the newest event received so far
    acks = [int.from_bytes(r.payload, "big") for r in board.requests_of(MsgType.POLL)]
    assert acks[-1] == 4
    assert not notices.of(BoardRestarted)


@pytest.mark.timeout(20)
def test_board_restart_is_detected_and_the_watchdog_reconfigured(board: ForeignBoard) -> None:
    driver, notices = make_driver(board, watchdog_ms=1500)
    try:
        assert board.watchdog_ms == 1500
        board.inject_events(EV_BEAMS, [1, 0])
        notices.wait_for(lambda n: event_id(n) == 65531)
        mark = len(notices.items)
        board.reboot()
        notices.wait_for(lambda n: isinstance(n, BoardRestarted), after=mark)
        st = notices.wait_for(lambda n: isinstance(n, StateRefreshed), after=mark)
        assert st.state is not None and st.state.last_event_id == 1
        deadline = time.monotonic() + 2
        while board.watchdog_ms != 1500 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert board.watchdog_ms == 1500
        assert len(notices.of(BoardRestarted)) == 1
        assert driver.stats.board_restarts == 1
        # later events (ids from 2) are new, not taken for duplicates
        board.inject_events(EV_BEAMS, [2])
        notices.wait_for(lambda n: event_id(n) == 2)
    finally:
        driver.close()


@pytest.mark.timeout(20)
def test_restart_without_restarted_event_seen_from_ids_going_backwards(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    _driver, notices = link
    board.inject_events(EV_BEAMS, [1, 0, 1])
    notices.wait_for(lambda n: event_id(n) == 65532)
    mark = len(notices.items)
    board.reboot(announce=False)
    notices.wait_for(lambda n: isinstance(n, BoardRestarted), after=mark)
    board.inject_events(EV_BEAMS, [0])
    ev = notices.wait_for(lambda n: event_id(n) == 1, after=mark)
    assert isinstance(ev, BeamsChanged)
    assert len(notices.of(BoardRestarted)) == 1


@pytest.mark.timeout(20)
def test_event_overflow_makes_the_driver_reread_status(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, notices = link
    mark = len(notices.items)
    board.inject_events(EV_BEAMS, [i % 2 for i in range(100)])
    st = notices.wait_for(lambda n: isinstance(n, StateRefreshed) and n.state is not None
                          and n.state.has(Condition.EVENT_OVERFLOW), after=mark)
    assert st.state is not None
    events = [n for n in notices.items[mark:] if isinstance(n, BoardChange)]
    assert len(events) == 64  # the 36 oldest were lost on the board
    assert driver.reset_faults() is True
    notices.wait_for(lambda n: isinstance(n, StateRefreshed) and n.state is not None
                     and not n.state.has(Condition.EVENT_OVERFLOW), after=mark)


@pytest.mark.timeout(20)
def test_reconnects_when_the_port_vanishes_and_comes_back(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, notices = link
    board.unplug()
    notices.wait_for(lambda n: isinstance(n, LinkLost))
    with pytest.raises(LinkDown):
        driver.set_lamp(Side.ENTRY, Signal.GREEN_ARROW)
    time.sleep(0.6)  # at least one reopen attempt fails while the path is gone
    assert not driver.link_up
    board.replug()
    notices.wait_for(lambda n: isinstance(n, LinkRestored) and n is not notices.items[0],
                     timeout=3.0)
    driver.set_lamp(Side.ENTRY, Signal.GREEN_ARROW)
    assert board.lamps[1] == Signal.GREEN_ARROW
    assert driver.stats.link_downs == 1 and driver.stats.link_ups == 2


@pytest.mark.timeout(20)
def test_the_port_is_opened_exclusively(board: ForeignBoard,
                                        link: tuple[SerialBarrier, Notices]) -> None:
    with pytest.raises(serial.SerialException, match="exclusively lock"):
        open_port(board.path)
    second = SerialBarrier(board.path, address=board.address, logger=QUIET_LOG)
    notices = Notices()
    second.subscribe(notices)
    second.start()
    try:
        assert not second.link_up
        assert "exclusively lock" in second.link_detail
        notices.wait_for(lambda n: isinstance(n, LinkLost))
        with pytest.raises(LinkDown):
            second.set_lamp(Side.ENTRY, Signal.OFF)
    finally:
        second.close()
    assert link[0].link_up


def test_loop_url_opens_without_a_lock() -> None:
    port = open_port("loop://")
    try:
        port.write(b"\xa5")
        assert port.read(1) == b"\xa5"
    finally:
        port.close()


def _board_process(link_dir: str, done: Any, out: Any) -> None:
    """A foreign board in its own process: its timing does not share our GIL, as with
    real hardware, so what is measured is the driver's keep-alive alone."""
    board = ForeignBoard(link_dir=link_dir)
    out.put(board.start())
    done.wait(20)
    out.put(([(r.at, r.kind) for r in board.received], board.watchdog_trip_times))
    board.stop()


@pytest.mark.timeout(30)
def test_polls_keep_coming_while_callers_are_busy(tmp_path: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    done = ctx.Event()
    child = ctx.Process(target=_board_process, args=(str(tmp_path), done, results))
    child.start()
    try:
        path = results.get(timeout=10)
        # the product's link: the driver in a process of its own, so this process's
        # GIL-bound stage cannot delay the poll (in-process it reached 0.25-0.35 s)
        driver = ProcessBarrier(path, address=0x07, logger=QUIET_LOG)
        driver.start()
        assert driver.link_up
        t0 = time.monotonic()
        stop = t0 + 2.0

        def cpu_bound_stage() -> None:  # a pure-Python OCR stand-in hogging the GIL
            x = 0
            while time.monotonic() < stop:
                x = (x * 31 + 7) % 1000003

        def slow_stage() -> None:  # a stage that blocks for long (I/O, a model load)
            time.sleep(2.0)

        def chatty_caller() -> None:
            while time.monotonic() < stop:
                driver.set_lamp(Side.ENTRY, Signal.WAIT)

        workers = [threading.Thread(target=f) for f in
                   (cpu_bound_stage, slow_stage, chatty_caller)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        driver.close()
        done.set()
        received, trip_times = results.get(timeout=10)
    finally:
        done.set()
        child.join(timeout=5)
    seen = [(at, kind) for at, kind in received if t0 <= at <= stop]
    polls = [at for at, kind in seen if kind == MsgType.POLL]
    assert len(seen) > 20
    print("requests", len(seen), "polls", len(polls), "max gap", max_gap([at for at, _ in seen]),
          "max poll gap", max_gap(polls), "driver", driver.link_stats())
    assert max_gap([at for at, _ in seen]) <= 0.25
    assert max_gap(polls) <= 0.25  # even a stream of commands does not push POLL out
    assert not [t for t in trip_times if t <= stop]
    assert driver.link_stats()["max_request_gap_s"] <= 0.25


@pytest.mark.timeout(20)
def test_a_blocking_notice_handler_does_not_starve_polling(
        board: ForeignBoard, link: tuple[SerialBarrier, Notices]) -> None:
    driver, _notices = link
    blocked = threading.Event()

    def slow_handler(notice: BarrierNotice) -> None:
        if isinstance(notice, BoardChange):
            blocked.set()
            time.sleep(1.0)  # a handler doing what handlers must not do

    driver.subscribe(slow_handler)
    mark = len(board.received)
    board.inject_events(EV_BEAMS, [1, 0])
    assert blocked.wait(1.0)
    time.sleep(2.0)
    seen = [r.at for r in board.received[mark:]]
    assert max_gap(seen) <= 0.25
    assert board.counters.watchdog_trips == 0
    # commands still work while the handler sleeps
    driver.set_lamp(Side.EXIT, Signal.GREEN_ARROW)
    assert driver.stats.max_request_gap_s <= 0.25


@pytest.mark.timeout(30)
def test_no_command_lost_or_doubled_against_a_noisy_foreign_board(tmp_path: Any) -> None:
    board = ForeignBoard(link_dir=str(tmp_path), open_s=0.05, close_s=0.05, seed=11,
                         faults=ForeignFaults(drop_reply=0.05, corrupt_reply=0.05, noise=0.05))
    board.start()
    driver, notices = make_driver(board)
    rng = random.Random(3)
    issued: list[tuple[int, bytes]] = []
    try:
        for _ in range(100):
            if rng.random() < 0.5:
                side, signal = rng.choice(list(Side)), rng.choice(list(Signal))
                issued.append((MsgType.LAMP, lamp_payload(side, signal)))
                driver.set_lamp(side, signal)
            else:
                door, action = rng.choice(list(Door)), rng.choice(list(DoorAction))
                issued.append((MsgType.DOOR, door_payload(door, action)))
                with contextlib.suppress(CommandRejected):  # the interlock may refuse
                    (driver.open_door if action is DoorAction.OPEN else driver.close_door)(door)
    finally:
        driver.close()
        board.stop()
    executed = [(k, p) for _s, k, p in board.executed if k in (MsgType.LAMP, MsgType.DOOR)]
    assert executed == issued
    c = board.counters
    assert c.replies_dropped > 3 and c.replies_corrupted > 3 and c.noise_bursts > 3
    assert driver.stats.link_downs == 0 and not notices.of(LinkLost)
    assert board.counters.watchdog_trips == 0


@pytest.mark.timeout(20)
def test_socket_url_without_a_lock_or_a_tty(tmp_path: Any) -> None:
    board = ForeignBoard(link_dir=str(tmp_path))
    url = board.start_tcp()
    driver = SerialBarrier(url, address=board.address, logger=QUIET_LOG)
    notices = Notices()
    driver.subscribe(notices)
    driver.start()
    try:
        assert driver.link_up, driver.link_detail
        board.drop_next_replies(1)
        driver.set_lamp(Side.EXIT, Signal.GREEN_ARROW)
        lamps = board.requests_of(MsgType.LAMP)
        # The dropped reply forces at least one resend (more if the loaded machine delays
        # the next reply past the timeout), and every resend is the same bytes.
        assert len(lamps) >= 2 and all(lamp.raw == lamps[0].raw for lamp in lamps)
        driver.open_door(Door.ENTRY)
        notices.wait_for(lambda n: n.state is not None and n.state.entry is DoorState.OPEN)
    finally:
        driver.close()
        board.stop()
