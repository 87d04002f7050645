"""The maintenance console, used the way a technician uses it: keys into a terminal.

The console runs in a real terminal (a detached tmux session) on a complete simulated lane
with the real stages; the test types keys with ``send-keys`` and reads the screen with
``capture-pane``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

ROOT = Path(__file__).resolve().parents[1]


class Terminal:
    def __init__(self, session: str) -> None:
        self.session = session

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session],
                              capture_output=True, text=True, check=False).stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.session, key], check=True)
            time.sleep(0.15)

    def wait_for(self, what: str | Callable[[str], bool], timeout: float = 20.0) -> str:
        test = what if callable(what) else (lambda s: what in s)
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.screen()
            if test(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{what!r} not on screen after {timeout} s:\n{screen}")

    def alive(self) -> bool:
        out = subprocess.run(["tmux", "list-panes", "-t", self.session, "-F",
                              "#{pane_dead}"], capture_output=True, text=True, check=False)
        return out.returncode == 0 and out.stdout.strip() == "0"


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    session = f"egate-console-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "lane.log"
    command = (f"cd {ROOT} && {sys.executable} -m gate.console --speed 10 --gpu off "
               f"--log-file {log} --log-level INFO")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "45",
                    command], check=True)
    subprocess.run(["tmux", "set-option", "-t", session, "remain-on-exit", "on"], check=True)
    try:
        yield Terminal(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def _state(screen: str) -> str:
    for line in screen.splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return ""


@pytest.mark.timeout(120)
def test_technician_session(terminal: Terminal) -> None:
    t = terminal
    # the lane shows its idle lamps a poll after it reaches idle
    screen = t.wait_for(lambda s: _state(s) == "IDLE" and "Lamps: entry WAIT" in s, timeout=40)
    assert "Doors: ENTRY CLOSED" in screen and "EXIT CLOSED" in screen and "Zone: 0" in screen

    # run a scenario from the menu: the genuine traveller passes
    t.keys("s")
    menu = t.wait_for("Run which scenario?")
    key = next(line.split(")")[0][-1] for line in menu.splitlines() if ") genuine" in line)
    t.keys(key)
    screen = t.wait_for("scenario genuine: PASSED, as expected", timeout=40)
    assert "#1" in screen and "PASSED" in screen.split("Last decisions:")[1]
    assert "lane  closing_exit -> idle" in screen

    # inject a fault: the fire alarm opens both doors, the lane mirrors it
    t.keys("f")
    t.wait_for("Inject which fault?")
    t.keys("1")
    screen = t.wait_for(lambda s: _state(s) == "EMERGENCY")
    t.wait_for("ENTRY OPEN")
    t.keys("f", "2")
    t.wait_for(lambda s: _state(s) == "IDLE" and "ENTRY CLOSED" in s, timeout=20)

    # out of service and back
    t.keys("o")
    t.wait_for(lambda s: _state(s) == "MAINTENANCE")
    t.wait_for("Lamps: entry OUT_OF_SERVICE")  # the lamps say so to travellers
    t.keys("o")
    t.wait_for(lambda s: _state(s) == "IDLE")

    # the self-test runs on the lane's own link, with the lane in maintenance meanwhile
    t.keys("t")
    screen = t.wait_for("Self-test: ", timeout=5)
    screen = t.wait_for(lambda s: "checks passed" in s.split("Self-test:")[1].splitlines()[0],
                        timeout=40)
    line = screen.split("Self-test:")[1].splitlines()[0]
    passed, total = line.split()[0].split("/")
    assert passed == total, line
    t.wait_for(lambda s: _state(s) == "IDLE")

    # a jam latches DOOR_FAULT on the board only when a close is blocked; reset clears it
    t.keys("f", "6")
    t.wait_for(lambda s: "link DOWN" in s, timeout=10)
    t.keys("f", "7")
    t.wait_for(lambda s: "link UP" in s and _state(s) == "IDLE", timeout=20)
    t.keys("r")
    t.wait_for("reset faults:", timeout=10)
    assert "unsafe door actions 0" in t.screen()

    t.keys("q")
    end = time.monotonic() + 10
    while t.alive() and time.monotonic() < end:
        time.sleep(0.2)
    assert not t.alive(), "the console did not quit on q"
