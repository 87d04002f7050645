"""A simulated HTTP device in a process of its own: start it, read its URL, drive it, end it.

The camera and reader peers (``python -m sim.camera_server`` / ``sim.reader_server``, or
``gate sim camera`` / ``gate sim reader``) print their URL on the first stdout line and
take orders over a small JSON control API beside the stream. ``PeerProcess`` is the one
launcher for all of them: ``kill()`` is a pulled plug (SIGKILL), ``start()`` after it
brings the same device back on the same port, ``stop()`` is SIGTERM and the peer's clean
exit. Both pipes are drained all the time, so a chatty peer never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)


class PeerRefused(ValueError, RuntimeError):
    """The peer answered an order with an HTTP error (an unknown scene, a bad page …)."""


class PeerProcess:
    """One peer process; subclasses say how it is started (``command``)."""

    #: what the peer is called in error messages
    name = "peer"
    stop_timeout_s = 15.0

    def __init__(self, *, port: int = 0, ready_timeout_s: float = 30.0) -> None:
        self.port = port
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: deque[str] = deque(maxlen=500)  # stdout after the URL line
        self.errors: deque[str] = deque(maxlen=50)  # stderr's last lines
        self.start()

    def command(self) -> Sequence[str]:
        """The peer's command line, after the interpreter (``-m module …``)."""
        raise NotImplementedError

    def ready(self, first_line: str) -> bool:
        """Whether the first stdout line is where the peer serves (an HTTP URL here)."""
        return first_line.startswith("http")

    @property
    def base(self) -> str:
        """The control API's root (the URL without its last part)."""
        return self.url.rsplit("/", 1)[0]

    def start(self) -> None:
        """Start the process (again, on the port it had) and wait for its URL."""
        if self.proc is not None and self.proc.poll() is None:
            return
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(
                   p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
        proc = subprocess.Popen([sys.executable, *self.command()], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        self.proc = proc
        first: list[str] = []
        got = threading.Event()
        lines, errors = self.lines, self.errors

        def out() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if not got.is_set():
                    first.append(line.strip())
                    got.set()
                else:
                    lines.append(line.rstrip("\n"))
            got.set()

        def err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                errors.append(line.rstrip("\n"))

        threading.Thread(target=out, daemon=True, name=f"{self.name}-peer-out").start()
        threading.Thread(target=err, daemon=True, name=f"{self.name}-peer-err").start()
        if not got.wait(self.ready_timeout_s) or not first or not self.ready(first[0]):
            self.kill()
            raise RuntimeError(f"the simulated {self.name} printed no address: "
                               + " | ".join(list(errors)[-5:]))
        self.url = first[0]
        if self.url.startswith("http"):
            self.port = int(self.url.split(":")[2].split("/")[0])

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout_s: float = 30.0) -> dict[str, Any]:
        """One order to the control API; its JSON answer, or ``PeerRefused``."""
        data = json.dumps(body if body is not None else {}).encode() if method != "GET" \
            else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                answer: dict[str, Any] = json.loads(reply.read().decode() or "{}")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                message = str(json.loads(text).get("error", text))
            except (ValueError, AttributeError):
                message = text
            raise PeerRefused(f"{self.name} {path}: {exc.code} {message}") from None
        return answer

    def kill(self) -> None:
        """The pulled plug: SIGKILL, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> int | None:
        """SIGTERM and wait for the peer's clean exit; its exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
