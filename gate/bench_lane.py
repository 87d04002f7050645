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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gate.simlane.processes import LaneProcess, SimPeer, event


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passages", type=int, default=10, help="genuine travellers")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside")
    parser.add_argument("--speed", type=float, default=4.0, help="door and walking speed")
    parser.add_argument("--trials", type=int, default=1, help="whole lives to run")


def one_life(passages: int, hogs: int, speed: float) -> dict[str, Any]:
    peers: list[SimPeer] = []
    hog_procs: list[subprocess.Popen[bytes]] = []
    lane: LaneProcess | None = None
    with tempfile.TemporaryDirectory(prefix="egate-bench-") as tmp:
        folder = Path(tmp)
        report_file = folder / "board.json"
        env = {**os.environ, "EGATE_STATE_DIR": str(folder / "state"), "PYTHONUNBUFFERED": "1"}
        try:
            board = SimPeer(["board", "--speed", str(speed), "--report", str(report_file),
                             *(["--traveller", "normal"] * passages)], ready_timeout_s=60)
            peers.append(board)
            camera = SimPeer(["camera", "--scene", "approach", "--person", "astronaut"],
                             ready_timeout_s=60)
            peers.append(camera)
            reader = SimPeer(["reader"], ready_timeout_s=60)
            peers.append(reader)
            for _ in range(hogs):
                hog_procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
            config = folder / "lane.toml"
            config.write_text(
                f'[lane]\nid = "bench"\n[devices]\nbarrier = "{board.address}"\n'
                f'camera = "{camera.address}"\ndocuments = "{reader.address}"\n'
                '[metrics]\nlisten = ""\n[face]\ngpu = "off"\n'
                '[document]\nallow_specimen = true\n')  # the simulator's pages: some are UTO
            lane = LaneProcess(config, env)
            ready = lane.find(event("service.started"), 300)
            startup_s = time.monotonic() - lane.started_at
            outcomes: dict[str, int] = {}
            for _ in range(passages if ready else 0):
                mark = lane.mark()
                reader.post("/place", {"person": "astronaut", "document": "TD3"})
                lane.find(event("lane.transition", source="reading_document"), 60, mark)
                reader.post("/remove")
                record = lane.find(event("lane.passage"), 60, mark)
                outcome = str(record.get("outcome")) if record else "NONE"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                lane.find(event("lane.transition", dest="idle"), 30, mark)
            exit_code = lane.stop(90)
            life_s = time.monotonic() - lane.started_at
            board.stop()  # SIGTERM: the board writes its report
            board_report = json.loads(report_file.read_text()) if report_file.exists() else {}
            return {"lane_started": ready is not None, "startup_s": round(startup_s, 2),
                    "life_s": round(life_s, 2), "exit_code": exit_code,
                    "outcomes": outcomes, "board": board_report}
        finally:
            if lane is not None and lane.proc.poll() is None:
                lane.proc.kill()
                lane.proc.wait(10)
            for hog in hog_procs:
                hog.kill()
                hog.wait(10)
            for peer in reversed(peers):
                peer.kill()


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
