"""Commissioning test of a barrier board: does this board follow protocol v1?

Run by a technician when a lane cabinet is installed or a board is replaced, against a
real board or any board that follows the contract (our simulator included). It uses the
production driver, waits for DOOR_STATE events rather than fixed times, and leaves the
board as it found it: doors closed, lamps off, the watchdog at its original setting.

Each check is one line of the report. Exit code: 0 every check passed, 1 some failed,
2 the port could not be opened or the link went down.
"""

from __future__ import annotations

import contextlib
import json
import queue
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hardware.barrier.api import (
    BarrierNotice,
    CommandRejected,
    DoorMoved,
    LinkDown,
    LinkLost,
)
from hardware.barrier.driver import SerialBarrier
from hardware.barrier.protocol import (
    PROTOCOL_VERSION,
    WATCHDOG_MS_DEFAULT,
    WATCHDOG_MS_MAX,
    WATCHDOG_MS_MIN,
    BoardStatus,
    Door,
    DoorState,
    NakReason,
    Side,
    Signal,
)

#: A watchdog value the commissioning test sets and reads back, and one the board must refuse.
TEST_WATCHDOG_MS = 2000
REFUSED_WATCHDOG_MS = WATCHDOG_MS_MIN - 100


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    elapsed_s: float = 0.0


@dataclass
class SelftestReport:
    port: str
    address: int
    checks: list[CheckResult] = field(default_factory=list)
    link_lost: bool = False
    link_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.link_lost:
            return 2
        return 0 if self.checks and all(c.passed for c in self.checks) else 1

    @property
    def verdict(self) -> str:
        return {0: "PASS", 1: "FAIL", 2: "LINK DOWN"}[self.exit_code]

    def text(self) -> str:
        width = max((len(c.name) for c in self.checks), default=10)
        lines = [f"barrier self-test  port {self.port}  address {self.address}"]
        for c in self.checks:
            lines.append(f"{'PASS' if c.passed else 'FAIL'}  {c.name:<{width}}  {c.detail}")
        failed = sum(not c.passed for c in self.checks)
        lines.append(f"{self.verdict}: {len(self.checks) - failed} of {len(self.checks)} "
                     "checks passed")
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps({
            "port": self.port,
            "address": self.address,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "checks": [asdict(c) for c in self.checks],
            "link_stats": self.link_stats,
        }, indent=2)


class _CheckFailed(Exception):
    """A check's own failure (its detail is the message)."""


class _DoorWatch:
    """DOOR_STATE events as they arrive, so the test waits on the board, not on a clock."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[Door, DoorState] | str] = queue.Queue()

    def __call__(self, notice: BarrierNotice) -> None:
        if isinstance(notice, LinkLost):
            self.events.put(notice.detail)  # stop waiting for a door that cannot report
        elif isinstance(notice, DoorMoved):
            self.events.put((notice.door, notice.position))
        # a DOOR_STATE event with an undefined door or state comes as a plain BoardChange
        # and is dropped: the wait then reports the timeout

    def drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    def wait_for(self, door: Door, target: DoorState, timeout_s: float) -> list[DoorState]:
        """States this door went through up to ``target``; raises on BLOCKED/JAMMED/timeout."""
        seen: list[DoorState] = []
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                states = " -> ".join(s.name for s in seen) or "no DOOR_STATE event"
                raise _CheckFailed(f"{door.name} not {target.name} within {timeout_s:.1f} s "
                                   f"({states})")
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(item, str):
                raise LinkDown(item)
            which, state = item
            if which is not door:
                continue
            seen.append(state)
            if state is target:
                return seen
            if state in (DoorState.BLOCKED, DoorState.JAMMED):
                raise _CheckFailed(f"{door.name} went {state.name} "
                                   f"({' -> '.join(s.name for s in seen)})")


def _describe(status: BoardStatus) -> str:
    flags = status.flags.name if status.flags else "none"
    beams = status.beams.name if status.beams else "clear"
    return (f"ENTRY {status.entry.name}, EXIT {status.exit.name}, zone count "
            f"{status.zone_count}, beams {beams}, flags {flags}")


class BoardSelftest:
    """The sequence of checks, one method each, run in order against one board."""

    def __init__(self, barrier: SerialBarrier, report: SelftestReport, *,
                 door_timeout_s: float, lamp_dwell_s: float) -> None:
        self.barrier = barrier
        self.report = report
        self.door_timeout_s = door_timeout_s
        self.lamp_dwell_s = lamp_dwell_s
        self.watch = _DoorWatch()
        barrier.subscribe(self.watch)
        self.original_watchdog_ms = WATCHDOG_MS_DEFAULT

    def check(self, name: str, fn: Callable[[], str]) -> bool:
        t0 = time.monotonic()
        try:
            detail, passed = fn(), True
        except _CheckFailed as exc:
            detail, passed = str(exc), False
        except CommandRejected as exc:
            detail, passed = str(exc), False
        except LinkDown as exc:
            detail, passed = f"link down: {exc}", False
            self.report.link_lost = True
        self.report.checks.append(CheckResult(name, passed, detail, time.monotonic() - t0))
        return passed

    def run(self) -> None:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("INFO", self.check_info),
            ("CONFIG watchdog", self.check_watchdog_config),
            ("RESET_FAULTS (start)", self.check_reset_faults),
            ("lamps entry side", lambda: self.check_lamps(Side.ENTRY)),
            ("lamps exit side", lambda: self.check_lamps(Side.EXIT)),
            ("doors closed to begin", self.check_doors_closed),
            ("ENTRY opens", lambda: self.check_door(Door.ENTRY, open_=True)),
            ("interlock: EXIT refused", lambda: self.check_interlock(Door.EXIT)),
            ("ENTRY closes", lambda: self.check_door(Door.ENTRY, open_=False)),
            ("EXIT opens", lambda: self.check_door(Door.EXIT, open_=True)),
            ("interlock: ENTRY refused", lambda: self.check_interlock(Door.ENTRY)),
            ("EXIT closes", lambda: self.check_door(Door.EXIT, open_=False)),
            ("sensors (STATUS)", self.check_sensors),
            ("RESET_FAULTS (end)", self.check_reset_faults),
        ]
        for name, fn in steps:
            self.check(name, fn)
            if self.report.link_lost:
                return
        self.restore()

    # ------------------------------------------------------------------ checks

    def check_info(self) -> str:
        info = self.barrier.info()
        self.original_watchdog_ms = info.watchdog_ms
        detail = (f"protocol {info.protocol}, firmware {info.firmware!r}, serial "
                  f"{info.serial!r}, watchdog {info.watchdog_ms} ms")
        if info.protocol != PROTOCOL_VERSION:
            raise _CheckFailed(f"protocol {info.protocol} is not {PROTOCOL_VERSION}: {detail}")
        if not WATCHDOG_MS_MIN <= info.watchdog_ms <= WATCHDOG_MS_MAX:
            raise _CheckFailed(f"watchdog out of the contract's range: {detail}")
        return detail

    def check_watchdog_config(self) -> str:
        self.barrier.configure_watchdog(TEST_WATCHDOG_MS)
        reported = self.barrier.info().watchdog_ms
        if reported != TEST_WATCHDOG_MS:
            raise _CheckFailed(f"CONFIG {TEST_WATCHDOG_MS} ms ACKed but INFO reports "
                               f"{reported} ms")
        try:
            self.barrier.configure_watchdog(REFUSED_WATCHDOG_MS)
        except CommandRejected as exc:
            if exc.reason != NakReason.BAD_PAYLOAD:
                raise _CheckFailed(f"CONFIG {REFUSED_WATCHDOG_MS} ms refused with "
                                   f"{exc.reason!s}, not BAD_PAYLOAD") from exc
        else:
            raise _CheckFailed(f"CONFIG {REFUSED_WATCHDOG_MS} ms (out of range) was ACKed")
        self.barrier.configure_watchdog(self.original_watchdog_ms)
        return (f"{TEST_WATCHDOG_MS} ms set and read back, {REFUSED_WATCHDOG_MS} ms refused "
                f"(BAD_PAYLOAD), {self.original_watchdog_ms} ms restored")

    def check_reset_faults(self) -> str:
        before = self.barrier.refresh_status()
        cleared = self.barrier.reset_faults()
        after = self.barrier.refresh_status()
        was = before.flags.name if before.flags else "none"
        now = after.flags.name if after.flags else "none"
        if not cleared:
            raise _CheckFailed(f"NAK FAULT_ACTIVE: a cause persists (flags before {was}, "
                               f"after {now})")
        return f"ACK (flags before {was}, after {now})"

    def check_lamps(self, side: Side) -> str:
        for signal in Signal:
            self.barrier.set_lamp(side, signal)
            if self.lamp_dwell_s:
                time.sleep(self.lamp_dwell_s)  # long enough for the technician to see it
        self.barrier.set_lamp(side, Signal.OFF)
        return f"{len(Signal)} signals ACKed ({', '.join(s.name for s in Signal)}), then OFF"

    def check_doors_closed(self) -> str:
        status = self.barrier.refresh_status()
        closed_now = []
        for door in Door:
            if status.door(door) is not DoorState.CLOSED:
                self.watch.drain()
                self.barrier.close_door(door)
                self.watch.wait_for(door, DoorState.CLOSED, self.door_timeout_s)
                closed_now.append(door.name)
        if closed_now:
            return f"closed {', '.join(closed_now)} first"
        return "both doors CLOSED"

    def check_door(self, door: Door, *, open_: bool) -> str:
        target = DoorState.OPEN if open_ else DoorState.CLOSED
        self.watch.drain()
        t0 = time.monotonic()
        if open_:
            self.barrier.open_door(door)
        else:
            self.barrier.close_door(door)
        seen = self.watch.wait_for(door, target, self.door_timeout_s)
        return (f"{target.name} after {time.monotonic() - t0:.2f} s "
                f"({' -> '.join(s.name for s in seen)})")

    def check_interlock(self, door: Door) -> str:
        other = Door.ENTRY if door is Door.EXIT else Door.EXIT
        try:
            self.barrier.open_door(door)
        except CommandRejected as exc:
            if exc.reason == NakReason.NOT_ALLOWED:
                return f"opening {door.name} while {other.name} is open: NAK NOT_ALLOWED"
            raise _CheckFailed(f"refused with {exc.reason!s}, not NOT_ALLOWED") from exc
        # The board opened a mantrap door against the interlock: shut it at once.
        self.barrier.close_door(door)
        raise _CheckFailed(f"opening {door.name} while {other.name} is open was ACKed: "
                           "the interlock is not enforced")

    def check_sensors(self) -> str:
        status = self.barrier.refresh_status()
        detail = _describe(status)
        if status.zone_count > 3:
            raise _CheckFailed(f"zone count {status.zone_count} out of range (0..3): {detail}")
        if status.zone_count or status.beams:
            detail += " (the lane is not empty)"
        return detail

    def restore(self) -> None:
        """Leave the board as found; failures here are not part of the verdict."""
        for side in Side:
            with contextlib.suppress(LinkDown, CommandRejected):
                self.barrier.set_lamp(side, Signal.OFF)


def run_selftest(url: str, *, address: int = 1, door_timeout_s: float = 5.0,
                 lamp_dwell_s: float = 0.25, logger: Any = None) -> SelftestReport:
    report = SelftestReport(port=url, address=address)
    barrier = SerialBarrier(url, address=address, logger=logger)
    t0 = time.monotonic()
    barrier.start()
    try:
        if not barrier.link_up:
            report.link_lost = True
            report.checks.append(CheckResult("link", False, barrier.link_detail,
                                             time.monotonic() - t0))
            return report
        report.checks.append(CheckResult(
            "link", True, "port opened, INFO and STATUS answered",
            time.monotonic() - t0))
        BoardSelftest(barrier, report, door_timeout_s=door_timeout_s,
                      lamp_dwell_s=lamp_dwell_s).run()
    finally:
        barrier.close()
        report.link_stats = asdict(barrier.stats)
    return report
