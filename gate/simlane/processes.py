"""The simulated devices and the lane service as processes, as a maintainer starts them.

``SimPeer`` is ``gate sim board|camera|reader …`` in a process of its own (its address on
the first stdout line: the board's pty or the MJPEG URL); ``LaneProcess`` is ``gate run
--config FILE`` with its JSON log collected line by line, so a tool or a test waits on
what the lane logged rather than on a clock. ``gate bench lane`` and the service tests
use both.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.peerproc import PeerProcess

GATE = [sys.executable, "-m", "gate.cli"]

LogMatch = Callable[[dict[str, Any]], bool]


class SimPeer(PeerProcess):
    """``gate sim ARGS`` — the command a maintainer runs — as a peer process."""

    def __init__(self, args: Sequence[str], *, ready_timeout_s: float = 30.0) -> None:
        self.args = list(args)
        self.name = f"gate sim {args[0]}" if args else "gate sim"
        super().__init__(ready_timeout_s=ready_timeout_s)

    def command(self) -> list[str]:
        return ["-m", "gate.cli", "sim", *self.args]

    def ready(self, first_line: str) -> bool:
        return bool(first_line)  # a pty path for the board, a URL for the others

    @property
    def address(self) -> str:
        """Where it serves: the board's pty, or the camera's / reader's MJPEG URL."""
        return self.url

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Control endpoint of an HTTP peer (camera, reader)."""
        return self.call("POST", path, body, timeout_s=10)

    def stop(self) -> int | None:
        code = super().stop()
        time.sleep(0.1)  # the reader thread drains the last lines (the exit report)
        return code

    def last_json(self) -> dict[str, Any]:
        """The last JSON object the peer printed (``gate sim board``'s exit report)."""
        for line in reversed(self.lines):
            if line.startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        return {}


class LaneProcess:
    """``gate run --config FILE`` with its JSON log (stderr) collected line by line."""

    def __init__(self, config: Path, env: Mapping[str, str], *,
                 args: Sequence[str] = ()) -> None:
        self.lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([*GATE, "run", "--config", str(config), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=dict(env))
        threading.Thread(target=self._read, daemon=True, name="lane-log").start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"event": "raw", "text": line.rstrip()}
            with self._cond:
                self.lines.append(entry if isinstance(entry, dict) else {"event": "raw"})
                self._cond.notify_all()

    def find(self, match: LogMatch, timeout: float, after: int = 0) -> dict[str, Any] | None:
        """The first entry after ``after`` that matches, waiting up to ``timeout``; None
        when it did not come (or the lane exited)."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for entry in self.lines[after:]:
                    if match(entry):
                        return entry
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self._cond.wait(min(left, 0.5))

    def wait_for(self, match: LogMatch, timeout: float, after: int = 0) -> dict[str, Any]:
        """As ``find``, but a missing entry is an ``AssertionError`` naming the last events."""
        entry = self.find(match, timeout, after)
        if entry is None:
            with self._cond:
                tail = [e.get("event") for e in self.lines[-15:]]
            raise AssertionError(f"not seen in the lane's log; last events {tail}")
        return entry

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.lines if e.get("event") == name]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the service's safe shutdown) and its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def event(name: str, **fields: Any) -> LogMatch:
    """A log match: ``event == name`` and every given field equal."""
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
