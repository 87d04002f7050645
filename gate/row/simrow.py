"""``gate sim row``: a whole simulated row on this machine, every part its own process.

:class:`SimRow` starts, in a run folder of its own: ``nats-server`` with JetStream, the
officers' station (``gate station``) on 127.0.0.1 with a SQLite store, and N lane services
(``gate sim --row``), each on its own simulated board, camera and reader peers with a
stream of travellers. The keys are made for the run (:mod:`gate.row.pki`, as ``gate pki
init``): the row's CA and every part's certificate (mTLS to the broker, per-subject
permissions), the station's Ed25519 signing key (the lanes pin its public half), the
image key the lanes seal with and the station opens with, the audit chain's key. The
officer is created as a supervisor before the station starts. ``stop()`` stops every
process it started, lanes first (each finishes or hands over its traveller), then the
station and the broker.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from gate.review.crypto import create_key_file
from gate.row.broker import LocalBroker, free_port
from gate.row.pki import STATION, RowPki, init_row


@dataclass(frozen=True)
class LaneSpec:
    """One lane of the row: its stream of travellers."""

    lane_id: str
    mix: str = ""  # as ``gate sim --mix``; "" = the default mix
    passages: int = 100_000  # "until interrupted"
    speed: float = 1.0
    seed: int = 0


@dataclass
class SimRow:
    folder: Path
    lanes: list[LaneSpec]
    port: int = 0  # the station's web port; 0 = a free one
    officer: tuple[str, str] | None = None  # (name, password); None = generated
    unsupervised_after_s: float = 30.0
    store: str = ""  # the station's store URL; "" = SQLite in the folder
    stagger_s: float = 0.0  # lane k starts k x this after the first
    broker: LocalBroker | None = None
    station: subprocess.Popen[bytes] | None = None
    lane_procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        return self.store or f"sqlite:///{self.folder / 'station.sqlite3'}"

    def _review_args(self) -> list[str]:
        return ["--db", self.db_url, "--key-file", str(self.folder / "review.key"),
                "--audit-key-file", str(self.folder / "audit.key")]

    def _gate(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gate.cli", *args]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """The child's stdout in NAME.out, its log (stderr) in NAME.log."""
        out = open(self.folder / f"{name}.out", "ab")  # noqa: SIM115 - kept for the child
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115
        self._logs += [out, log]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(argv, stdout=out, stderr=log, env=env)

    # ------------------------------------------------------------ start

    def start(self, station_timeout: float = 60.0) -> SimRow:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._keys()
            assert self.broker is not None
            self.broker.start()
            self._add_officer()
            self._start_station(station_timeout)
            for k, spec in enumerate(self.lanes):
                if k and self.stagger_s:
                    time.sleep(self.stagger_s)
                self.start_lane(spec)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pki(self) -> RowPki:
        return RowPki(self.folder / "pki")

    @property
    def signing_key(self) -> Path:
        return self.pki.station_dir / "signing.key"

    def _keys(self) -> None:
        """The run's PKI (gate pki): CA, broker, station and lane certificates, the
        station's signing key; the image and audit keys."""
        port = free_port()
        init_row(self.pki.folder, [spec.lane_id for spec in self.lanes], port=port,
                 listen="127.0.0.1", store_dir=self.folder / "nats")
        self.broker = LocalBroker(self.folder / "nats", port,
                                  self.pki.folder / "broker" / "nats-server.conf")
        create_key_file(self.folder / "review.key")
        create_key_file(self.folder / "audit.key")

    def _add_officer(self) -> None:
        if self.officer is None:
            self.officer = ("officer", secrets.token_urlsafe(12))
        name, password = self.officer
        done = subprocess.run(
            self._gate("review", "adduser", name, "--role", "supervisor", "--password-stdin",
                       *self._review_args()),
            input=(password + "\n").encode(), capture_output=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"the officer could not be created: "
                               f"{done.stderr.decode(errors='replace').strip()[-300:]}")

    def _start_station(self, timeout: float) -> None:
        assert self.broker is not None
        self.port = self.port or free_port()
        ca, cert, key = self.pki.tls_of(STATION)
        self.station = self._spawn("station", self._gate(
            "station", "--broker", self.broker.url, "--signing-key", str(self.signing_key),
            "--bus-ca", ca, "--bus-cert", cert, "--bus-key", key, "--port", str(self.port),
            "--purge-interval-s", "600", *self._review_args()))
        import urllib.request

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.station.poll() is not None:
                raise RuntimeError(f"the station exited {self.station.returncode}; see "
                                   f"{self.folder / 'station.log'}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.url + "/login", timeout=1).close()
                return
            time.sleep(0.2)
        raise RuntimeError(f"the station did not answer on {self.url} within {timeout:.0f} s")

    def lane_file(self, lane_id: str) -> Path:
        assert self.broker is not None
        path = self.folder / f"{lane_id}.toml"
        ca, cert, key = self.pki.tls_of(lane_id)
        path.write_text(
            f'[lane]\nid = "{lane_id}"\n\n'
            f'[row]\nbroker = "{self.broker.url}"\n'
            f'station_key = "{self.pki.lane_dir(lane_id) / "station.pub"}"\n'
            f'tls_ca = "{ca}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
            f"unsupervised_after_s = {self.unsupervised_after_s}\n\n"
            f'[cases]\nspool = "{self.folder / "spool" / lane_id}"\n'
            f'key_file = "{self.folder / "review.key"}"\n')
        return path

    def start_lane(self, spec: LaneSpec) -> subprocess.Popen[bytes]:
        argv = self._gate("sim", "--row", str(self.lane_file(spec.lane_id)), "--passages",
                          str(spec.passages), "--speed", f"{spec.speed:g}", "--seed",
                          str(spec.seed), "--json")
        if spec.mix:
            argv += ["--mix", spec.mix]
        proc = self._spawn(spec.lane_id, argv)
        self.lane_procs[spec.lane_id] = proc
        return proc

    # ------------------------------------------------------------ stop

    def stop_lane(self, lane_id: str, timeout: float = 30.0) -> int | None:
        proc = self.lane_procs.get(lane_id)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the lane shuts down safely, its peers with it
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def kill_station(self) -> None:
        """SIGKILL: the station gone without goodbye (a power cut at the centre)."""
        if self.station is not None and self.station.poll() is None:
            self.station.kill()
            self.station.wait(5)

    def restart_station(self, timeout: float = 60.0) -> None:
        self._start_station(timeout)

    def stop_station(self) -> None:
        station = self.station
        if station is not None and station.poll() is None:
            station.send_signal(signal.SIGINT)
            try:
                station.wait(15)
            except subprocess.TimeoutExpired:
                station.kill()
                station.wait(5)

    def stop(self) -> None:
        for lane_id in list(self.lane_procs):
            self.stop_lane(lane_id)
        self.stop_station()
        if self.broker is not None:
            self.broker.stop()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> SimRow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
