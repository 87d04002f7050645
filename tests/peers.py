"""Simulated devices as separate processes, started through the CLI a maintainer uses.

Each peer prints where it serves on its first stdout line (``gate sim board``: the pty;
``gate sim camera`` / ``gate sim reader``: the MJPEG URL). ``Peer.kill()`` is a pulled
plug; ``Peer.restart()`` brings the same device back where it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

GATE = [sys.executable, "-m", "gate.cli"]


class Peer:
    def __init__(self, args: Sequence[str], *, ready_timeout_s: float = 30.0) -> None:
        self.args = list(args)
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.stdout: list[str] = []
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*GATE, "sim", *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        first: list[str] = []
        got = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if not got.is_set():
                    first.append(line.strip())
                    got.set()
                else:
                    self.stdout.append(line.rstrip("\n"))
            got.set()

        threading.Thread(target=read, daemon=True).start()
        if not got.wait(self.ready_timeout_s) or not first:
            self.kill()
            raise RuntimeError(f"gate sim {' '.join(self.args)} printed no address")
        self.address = first[0]

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Control endpoint of an HTTP peer (camera, reader)."""
        base = self.address.rsplit("/", 1)[0]
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(base + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read().decode() or "{}"
        result: dict[str, Any] = json.loads(text)
        return result

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait: the peer's own clean exit (its exit report, if any)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        time.sleep(0.1)  # the reader thread drains the last lines
        return self.proc.returncode

    def last_json(self) -> dict[str, Any]:
        for line in reversed(self.stdout):
            if line.startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        return {}
