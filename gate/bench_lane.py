"""A whole ``gate run`` life, timed by the board: start-up, passages, SIGTERM, beside CPU hogs.

Starts ``gate sim board`` (with ``--report``), ``gate sim camera`` and ``gate sim reader``
as processes of their own, N CPU-bound processes beside them, then ``gate run`` on a
lane.toml naming the three — from its first byte (interpreter start, imports, model
loading and warm-up) through the given number of genuine travellers to SIGTERM and its
safe shutdown. The figure that matters is measured by the board, from outside the lane:
the longest silence between two valid requests (the protocol allows 250 ms) and whether
its watchdog tripped. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

GATE = [sys.executable, "-m", "gate.cli"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passages", type=int, default=10, help="genuine travellers")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside")
    parser.add_argument("--speed", type=float, default=4.0, help="door and walking speed")
    parser.add_argument("--trials", type=int, default=1, help="whole lives to run")


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline().strip())
                              if proc.stdout else None, daemon=True)
    reader.start()
    reader.join(timeout)
    if not got or not got[0]:
        raise RuntimeError(f"{' '.join(proc.args)} printed no address")  # type: ignore[arg-type]
    return got[0]


def _post(url: str, path: str, body: dict[str, Any] | None = None) -> None:
    base = url.rsplit("/", 1)[0]
    request = urllib.request.Request(base + path, data=json.dumps(body or {}).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


class _Log:
    """The lane's JSON log on stderr, line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(entry)
                self.cond.notify_all()

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float,
             after: int = 0) -> dict[str, Any] | None:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for entry in self.lines[after:]:
                    if match(entry):
                        return entry
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.5))


def one_life(passages: int, hogs: int, speed: float) -> dict[str, Any]:
    started: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory(prefix="egate-bench-") as tmp:
        folder = Path(tmp)
        report_file = folder / "board.json"
        env = {**os.environ, "EGATE_STATE_DIR": str(folder / "state"), "PYTHONUNBUFFERED": "1"}
        try:
            def peer(*args: str) -> str:
                proc = subprocess.Popen([*GATE, "sim", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=env)
                started.append(proc)
                return _first_line(proc, 60)

            board = peer("board", "--speed", str(speed), "--report", str(report_file),
                         *(["--traveller", "normal"] * passages))
            camera = peer("camera", "--scene", "approach", "--person", "astronaut")
            reader = peer("reader")
            for _ in range(hogs):
                started.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
            config = folder / "lane.toml"
            config.write_text(
                f'[lane]\nid = "bench"\n[devices]\nbarrier = "{board}"\ncamera = "{camera}"\n'
                f'documents = "{reader}"\n[metrics]\nlisten = ""\n[face]\ngpu = "off"\n'
                '[document]\nallow_specimen = true\n')  # the simulator's pages: some are UTO
            t0 = time.monotonic()
            lane = subprocess.Popen([*GATE, "run", "--config", str(config)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, env=env)
            started.append(lane)
            log = _Log(lane)
            ready = log.wait(lambda e: e.get("event") == "service.started", 300)
            startup_s = time.monotonic() - t0
            outcomes: dict[str, int] = {}
            for _ in range(passages if ready else 0):
                mark = len(log.lines)
                _post(reader, "/place", {"person": "astronaut", "document": "TD3"})
                log.wait(lambda e: e.get("event") == "lane.transition"
                         and e.get("source") == "reading_document", 60, mark)
                _post(reader, "/remove")
                record = log.wait(lambda e: e.get("event") == "lane.passage", 60, mark)
                outcome = str(record.get("outcome")) if record else "NONE"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                log.wait(lambda e: e.get("event") == "lane.transition"
                         and e.get("dest") == "idle", 30, mark)
            lane.send_signal(signal.SIGTERM)
            lane.wait(90)
            life_s = time.monotonic() - t0
            started[0].send_signal(signal.SIGTERM)  # the board writes its report
            started[0].wait(30)
            board_report = json.loads(report_file.read_text()) if report_file.exists() else {}
            return {"lane_started": ready is not None, "startup_s": round(startup_s, 2),
                    "life_s": round(life_s, 2), "exit_code": lane.returncode,
                    "outcomes": outcomes, "board": board_report}
        finally:
            for proc in reversed(started):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)


def run(args: argparse.Namespace) -> int:
    lives = [one_life(args.passages, args.hogs, args.speed) for _ in range(args.trials)]
    gaps = [life["board"].get("max_request_gap_ms") for life in lives]
    print(json.dumps({
        "what": "largest gap between board requests over whole gate run lives, measured by "
                "the board in its own process (contract: 250 ms)",
        "trials": len(lives), "hogs": args.hogs, "passages_per_life": args.passages,
        "max_request_gap_ms": gaps,
        "watchdog_trips": [life["board"].get("watchdog_trips") for life in lives],
        "lives": lives}, indent=2))
    return 0
