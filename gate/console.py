"""The maintenance console: a live view of one lane and the actions a technician needs.

A terminal UI (curses, so it runs over SSH on any lane PC without extra packages) on a
complete lane — by default the simulated lane of ``gate sim``; with ``--barrier PORT`` the
real board. It shows the lane state, doors, beams, zone count, board flags, lamps, the
event log and the last decisions, refreshed five times a second, and offers:

    s  run a scenario        f  inject a fault (simulated board only)
    t  run the self-test     r  reset faults (board latches, then the lane)
    o  take the lane out of / back into service     q  quit

:class:`LaneConsole` is the part without curses (state, log, actions), so the screen is a
thin rendering of it; tests drive the real screen through tmux as a technician would.
"""

from __future__ import annotations

import argparse
import contextlib
import curses
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gate.lane import LAMPS, MAINTENANCE, PassageRecord, StateChange
from gate.simlane.peers import PeerOptions, SimLaneDevices, StagesUnavailable
from gate.simlane.runner import RigOptions, SimLaneRig, describe_notice, run_scenario
from gate.simlane.scenario import find_scenario, shipped_names
from hardware.barrier.api import BarrierError, BarrierNotice, BarrierState, Condition, Side
from sim.faults import FaultPlan, FaultStep

#: Faults a technician can inject on the simulated board: key -> (label, action, args).
FAULTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "1": ("fire alarm on", "emergency", {"active": True}),
    "2": ("fire alarm off", "emergency", {"active": False}),
    "3": ("jam ENTRY doorway", "jam", {"door": "entry"}),
    "4": ("clear ENTRY doorway", "clear_jam", {"door": "entry"}),
    "5": ("reboot board", "reboot", {}),
    "6": ("pull the cable", "unplug", {}),
    "7": ("plug the cable back", "replug", {}),
    "8": ("mains off", "mains", {"present": False}),
    "9": ("mains on", "mains", {"present": True}),
    "0": ("open the cabinet", "tamper", {"open": True}),
    "-": ("close the cabinet", "tamper", {"open": False}),
}
SCENARIO_KEYS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class LogLine:
    at: float  # wall clock
    text: str


class LaneConsole:
    """What the console shows and does; no curses here."""

    def __init__(self, rig: SimLaneRig) -> None:
        self.rig = rig
        self.log: deque[LogLine] = deque(maxlen=300)
        self.decisions: deque[PassageRecord] = deque(maxlen=8)
        self.busy = ""  # what a background action is doing, for the status line
        self.last_selftest = ""
        self.scenarios = shipped_names()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        rig.barrier.subscribe(self._on_notice)
        rig.lane.subscribe(self._on_record)
        rig.lane.subscribe_states(self._on_change)
        self.say(f"console started on {rig.board_port}")

    # ------------------------------------------------------------ the log

    def say(self, text: str) -> None:
        with self._lock:
            self.log.append(LogLine(time.time(), text))

    def _on_notice(self, notice: BarrierNotice) -> None:
        described = describe_notice(notice)
        if described is not None:
            self.say(f"{described[0]:<5} {described[1]}")

    def _on_change(self, change: StateChange) -> None:
        self.say(f"lane  {change.source} -> {change.dest} ({change.trigger})")

    def _on_record(self, record: PassageRecord) -> None:
        with self._lock:
            self.decisions.appendleft(record)
        self.say(f"pass  #{record.passage_id} {record.outcome.value} "
                 f"{','.join(record.reasons) or '-'}")

    def lines(self, count: int) -> list[LogLine]:
        with self._lock:
            return list(self.log)[-count:]

    def last_decisions(self) -> list[PassageRecord]:
        with self._lock:
            return list(self.decisions)

    # ------------------------------------------------------------ actions

    def _background(self, label: str, job: Callable[[], None]) -> bool:
        """One action at a time, off the screen's thread, so the view stays live."""
        if self._worker is not None and self._worker.is_alive():
            self.say(f"busy: {self.busy}; '{label}' not started")
            return False
        self.busy = label

        def run() -> None:
            try:
                job()
            except Exception as exc:  # shown to the technician, never a crash of the screen
                self.say(f"{label} failed: {type(exc).__name__}: {exc}")
            finally:
                self.busy = ""

        self._worker = threading.Thread(target=run, name="console-action", daemon=True)
        self._worker.start()
        return True

    def run_scenario(self, name: str) -> bool:
        scenario = find_scenario(name)

        def job() -> None:
            self.say(f"scenario {name}: {scenario.description}")
            result = run_scenario(self.rig, scenario, seed=int(time.time()) % 10_000)
            verdict = "as expected" if result.ok else "NOT as expected"
            self.say(f"scenario {name}: {result.outcome}, {verdict}")
            for check in result.checks:
                if not check.ok:
                    self.say(f"  failed: {check.name} {check.detail}")

        return self._background(f"scenario {name}", job)

    def inject(self, key: str) -> bool:
        if key not in FAULTS:
            return False
        label, action, args = FAULTS[key]
        if self.rig.board is None:
            self.say("faults can only be injected on the simulated board")
            return False
        self.rig.board.run_plan(FaultPlan((FaultStep.from_dict(
            {"at_s": 0.0, "action": action, **args}),)))
        self.say(f"fault {label}")
        return True

    def reset_faults(self) -> bool:
        def job() -> None:
            try:
                cleared = self.rig.barrier.reset_faults()
            except BarrierError as exc:
                self.say(f"reset faults: {type(exc).__name__}: {exc}")
            else:
                self.say("reset faults: board cleared its latches" if cleared
                         else "reset faults: refused, a fault is still active")
            self.rig.lane.reset()

        return self._background("reset faults", job)

    def toggle_service(self) -> None:
        out = self.rig.lane.state != MAINTENANCE
        self.rig.lane.set_maintenance(out)
        self.say("lane taken out of service" if out else "lane back in service")

    def selftest(self) -> bool:
        """The commissioning test on the lane's own link, with the lane in maintenance."""
        from gate.selftest import BoardSelftest, SelftestReport

        def job() -> None:
            lane = self.rig.lane
            was_out = lane.state == MAINTENANCE
            lane.set_maintenance(True)
            if not lane.wait_for_state(MAINTENANCE, timeout=10.0):
                self.say(f"self-test: the lane did not enter maintenance ({lane.state})")
                return
            report = SelftestReport(port=self.rig.board_port, address=1)
            BoardSelftest(self.rig.barrier, report, door_timeout_s=5.0,  # type: ignore[arg-type]
                          lamp_dwell_s=0.2).run()
            passed = sum(1 for c in report.checks if c.passed)
            self.last_selftest = f"{passed}/{len(report.checks)} checks passed"
            self.say(f"self-test: {self.last_selftest}")
            for check in report.checks:
                if not check.passed:
                    self.say(f"  self-test failed: {check.name}: {check.detail}")
            if not was_out:
                lane.set_maintenance(False)

        return self._background("self-test", job)

    def busy_now(self) -> bool:
        return self._worker is not None and self._worker.is_alive()


# ------------------------------------------------------------------ the screen


def _flags(state: BarrierState) -> str:
    return " ".join(c.value for c in Condition if state.has(c)) or "-"


def _beams(state: BarrierState) -> str:
    return "+".join(n for n, on in (("ENTRY", state.entry_beam), ("EXIT", state.exit_beam))
                    if on) or "clear"


class Screen:
    def __init__(self, console: LaneConsole) -> None:
        self.console = console
        self.menu = ""  # "", "scenario", "fault"

    def put(self, win: Any, y: int, x: int, text: str, attr: int = 0) -> None:
        h, w = win.getmaxyx()
        if 0 <= y < h and x < w:
            with contextlib.suppress(curses.error):
                win.addnstr(y, x, text, max(0, w - x - 1), attr)

    def draw(self, win: Any) -> None:
        c = self.console
        rig = c.rig
        win.erase()
        h, _ = win.getmaxyx()
        status = rig.barrier.state
        where = (f"simulated board {rig.board_port}" if rig.board is not None
                 else f"board {rig.board_port}")
        self.put(win, 0, 0, f"e-gate maintenance console - lane {rig.lane.lane_id} on {where}",
                 curses.A_BOLD)
        self.put(win, 1, 0, f"State: {rig.lane.state.upper():<16} passage "
                            f"{rig.lane.passage_id or '-':<6} link "
                            f"{'UP' if rig.barrier.link_up else 'DOWN'}"
                            f"{'   busy: ' + c.busy if c.busy else ''}")
        if status is not None:
            self.put(win, 2, 0, f"Doors: ENTRY {status.entry.name:<8} EXIT {status.exit.name:<8}"
                                f"  Beams: {_beams(status):<12} Zone: {status.zone_count}")
            self.put(win, 3, 0, f"Flags: {_flags(status)}")
        else:
            self.put(win, 2, 0, "Doors: unknown (no status from the board)")
        if rig.board is not None:
            snap = rig.board.snapshot()
            lamps = f"entry {snap.lamps[Side.ENTRY].name}  exit {snap.lamps[Side.EXIT].name}"
            people = (f"Travellers: waiting {snap.travellers_waiting} inside "
                      f"{snap.travellers_inside} passed {snap.travellers_passed} back "
                      f"{snap.travellers_turned_back}  unsafe door actions "
                      f"{len(rig.board.safety_violations)}")
        else:
            entry, exit_ = LAMPS[rig.lane.state]
            lamps = f"entry {entry.name}  exit {exit_.name} (as commanded)"
            people = ""
        self.put(win, 4, 0, f"Lamps: {lamps}")
        self.put(win, 5, 0, people)
        self.put(win, 6, 0, f"Self-test: {c.last_selftest or 'not run'}")
        self.put(win, 7, 0, "Last decisions:", curses.A_BOLD)
        row = 8
        for record in c.last_decisions()[:5]:
            verify = record.stages.get("verify", {})
            score = f" score {verify.get('score')}" if verify else ""
            self.put(win, row, 2, f"#{record.passage_id:<4} {record.outcome.value:<18} "
                                  f"{','.join(record.reasons)[:40] or '-':<40}{score} "
                                  f"sys {record.system_ms:.0f} ms")
            row += 1
        row = 14
        menu_rows = self._menu_lines()
        log_rows = max(1, h - row - 2 - len(menu_rows))
        self.put(win, row, 0, "Event log:", curses.A_BOLD)
        for i, line in enumerate(c.lines(log_rows)):
            stamp = time.strftime("%H:%M:%S", time.localtime(line.at))
            self.put(win, row + 1 + i, 2, f"{stamp} {line.text}")
        base = h - 1 - len(menu_rows)
        for i, text in enumerate(menu_rows):
            self.put(win, base + i, 0, text, curses.A_REVERSE if i == 0 else 0)
        self.put(win, h - 1, 0, "[s] scenario  [f] fault  [t] self-test  [r] reset faults  "
                                "[o] out of/in service  [q] quit", curses.A_REVERSE)
        win.refresh()

    def _menu_lines(self) -> list[str]:
        if self.menu == "scenario":
            items = [f"{SCENARIO_KEYS[i]}) {n}" for i, n in
                     enumerate(self.console.scenarios[:len(SCENARIO_KEYS)])]
            rows = ["Run which scenario? (Esc: cancel)"]
            for i in range(0, len(items), 5):
                rows.append("   ".join(f"{x:<18}" for x in items[i:i + 5]))
            return rows
        if self.menu == "fault":
            items = [f"{k}) {label}" for k, (label, _, _) in FAULTS.items()]
            rows = ["Inject which fault? (Esc: cancel)"]
            for i in range(0, len(items), 4):
                rows.append("   ".join(f"{x:<24}" for x in items[i:i + 4]))
            return rows
        return []

    def key(self, ch: str) -> bool:
        """Handle one key; False when the technician quits."""
        c = self.console
        if self.menu == "scenario":
            self.menu = ""
            index = SCENARIO_KEYS.find(ch)
            if 0 <= index < len(c.scenarios):
                c.run_scenario(c.scenarios[index])
            return True
        if self.menu == "fault":
            self.menu = ""
            c.inject(ch)
            return True
        if ch == "q":
            return False
        if ch == "s":
            self.menu = "scenario"
        elif ch == "f":
            self.menu = "fault"
        elif ch == "t":
            c.selftest()
        elif ch == "r":
            c.reset_faults()
        elif ch == "o":
            c.toggle_service()
        return True


def _loop(win: Any, console: LaneConsole) -> None:
    curses.curs_set(0)
    win.timeout(200)
    screen = Screen(console)
    while True:
        screen.draw(win)
        code = win.getch()
        if code == -1:
            continue
        ch = "\x1b" if code == 27 else (chr(code) if 0 <= code < 256 else "")
        if not screen.key(ch):
            return


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "console", help="maintenance console: live view and actions on a lane",
        description="Maintenance console on a complete lane (simulated unless --barrier).")
    p.add_argument("--speed", type=float, default=1.0,
                   help="door travel and walking speed of the simulated board")
    p.add_argument("--barrier", metavar="PORT", help="a real board's port instead of the sim")
    p.add_argument("--camera", metavar="URL", help="a real lane camera instead of the peer")
    p.add_argument("--documents", metavar="URL",
                   help="a real document reader (document camera URL or folder:/path)")
    p.add_argument("--gpu", choices=("required", "preferred", "off"), default="preferred")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--log-file", default=os.devnull,
                   help="where the lane's JSON log goes (default: nowhere; it would tear the "
                        "screen)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gate.logsetup import configure_logging

    if args.speed <= 0:
        print("gate console: --speed must be > 0", file=sys.stderr)
        return 2
    try:
        log_stream = open(args.log_file, "a", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"gate console: --log-file: {exc}", file=sys.stderr)
        return 2
    try:
        configure_logging(args.log_level, json=True, stream=log_stream)
        devices = SimLaneDevices(PeerOptions(speed=args.speed, gpu=args.gpu,
                                             camera=args.camera or "",
                                             documents=args.documents or ""))
    except (StagesUnavailable, OSError, ValueError) as exc:
        print(f"gate console: {exc}", file=sys.stderr)
        log_stream.close()
        return 2
    try:
        rig = SimLaneRig(devices, RigOptions(speed=args.speed, barrier=args.barrier))
    except (OSError, ValueError) as exc:
        print(f"gate console: {exc}", file=sys.stderr)
        devices.close()
        log_stream.close()
        return 2
    try:
        console = LaneConsole(rig)
        curses.wrapper(_loop, console)
    finally:
        rig.close()
        devices.close()
        log_stream.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m gate.console``: the same as ``gate console``."""
    parser = argparse.ArgumentParser(prog="gate")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["console", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
