"""Benchmark: does the board see the host go silent while the host holds the GIL?

``python -m hardware.barrier.bench_link [--seconds 3] [--trials 3] [--hogs 2]`` prints one
JSON object. Each trial starts a board in a process of its own (by default the simulated
board, ``gate sim board --report FILE``), connects to it either with the in-process
``SerialBarrier`` (its I/O thread shares the GIL with the load) or with the link process
``ProcessBarrier``, then holds the GIL hard in this process for ``--seconds`` (long C
calls that never release it: ``sorted`` of a big list of floats, a pathological regular
expression, or ONNX session creation) while ``--hogs`` processes spin on the CPUs. What
counts is measured by the *board*: the longest silence between two requests it received
and how often its watchdog tripped. The contract allows 250 ms.

The figures are information, not a verdict: how badly the in-process driver fares depends
on the machine and the load; the link process should stay near its 100 ms poll interval.

Any board command can stand in for the simulator (``--board-cmd``): it must print the
port on its first line of stdout, serve until SIGTERM, then write a JSON object with at
least ``max_request_gap_ms``, ``requests`` and ``watchdog_trips`` to the file given by its
``{report}`` placeholder. This module names no simulator module: it runs a command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hardware.barrier.api import Barrier

CONTRACT_GAP_MS = 250.0
DEFAULT_BOARD_CMD = f"{shlex.quote(sys.executable)} -m gate.cli sim board --report {{report}}"
#: The ONNX model loaded again and again by ``--load onnx`` (the lane's own OCR-B model).
DEFAULT_ONNX = os.path.join(os.path.dirname(__file__), "..", "..", "models", "ocrb", "ocrb.onnx")
MODES = ("in_process_thread", "link_process")


# ------------------------------------------------------------------ the load


def gil_load(seconds: float, kind: str = "sort", *, size: int = 1_000_000,
             onnx_path: str = DEFAULT_ONNX, min_call_s: float = 0.0) -> dict[str, float]:
    """Hold the GIL in long C calls for ``seconds``, in the calling thread.

    ``sort``: ``sorted`` of ``size`` floats (list.sort compares floats in C and never lets
    the GIL go: about 0.5 s a call for a million on a 2020s core). ``regex``: a
    backtracking match of ``(a+)+$`` (sre holds the GIL throughout). ``onnx``: creating an
    ``onnxruntime.InferenceSession`` on ``onnx_path`` again and again, the lane's own
    model load (short with the small OCR-B model, so a gentler load).
    ``min_call_s`` (``sort`` only): grow the list until one call takes at least that long
    on this machine (at most 6 million floats), so a fast CPU still holds the GIL long.
    Returns how many calls ran and the longest one.
    """
    work: Callable[[], object]
    if kind == "sort":
        data = [random.random() for _ in range(size)]
        if min_call_s > 0:
            t = time.monotonic()
            sorted(data)
            took = max(time.monotonic() - t, 1e-3)
            if took < min_call_s:
                grown = min(6_000_000, int(size * 1.3 * min_call_s / took))
                data = [random.random() for _ in range(grown)]

        def work() -> object:
            return sorted(data)
    elif kind == "regex":
        pattern = re.compile(r"(a+)+$")
        text = "a" * 23 + "b"

        def work() -> object:
            return pattern.match(text)
    elif kind == "onnx":
        import onnxruntime

        def work() -> object:
            return onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    else:
        raise ValueError(f"unknown load {kind!r}")
    calls, longest = 0, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        work()
        longest = max(longest, time.monotonic() - t)
        calls += 1
    return {"calls": calls, "longest_call_s": round(longest, 3)}


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes spinning on the CPUs (``while True: pass``) for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(max(0, count))]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)


# ------------------------------------------------------------------ the board


@dataclass
class BoardProcess:
    """A board served by another process, and where its closing figures will be."""

    proc: subprocess.Popen[bytes]
    port: str
    report_path: str

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """SIGTERM, then the figures the board wrote on its way out."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        try:
            with open(self.report_path, encoding="utf-8") as f:
                figures: dict[str, Any] = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"the board left no report: {exc}") from exc
        return figures


@contextlib.contextmanager
def board_process(command: str = DEFAULT_BOARD_CMD,
                  start_timeout_s: float = 20.0) -> Iterator[BoardProcess]:
    """Start ``command`` (``{report}`` is replaced by a file path) and wait for its port."""
    with tempfile.TemporaryDirectory(prefix="egate-bench-link-") as tmp:
        report = os.path.join(tmp, "board.json")
        argv = [a.replace("{report}", report) for a in shlex.split(command)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], start_timeout_s)
            line = proc.stdout.readline().decode().strip() if ready else ""
            if not line:
                raise RuntimeError(f"board command printed no port: {command}")
            yield BoardProcess(proc, line, report)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5.0)


# ------------------------------------------------------------------ one trial


def _quiet_logger() -> Any:
    import structlog

    return structlog.wrap_logger(
        structlog.PrintLogger(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # the board goes first


def make_barrier(mode: str, port: str, logger: Any = None) -> Barrier:
    logger = logger or _quiet_logger()
    if mode == "link_process":
        from hardware.barrier.linkproc import ProcessBarrier

        return ProcessBarrier(port, logger=logger)
    if mode == "in_process_thread":
        from hardware.barrier.driver import SerialBarrier

        return SerialBarrier(port, logger=logger)
    raise ValueError(f"unknown mode {mode!r}")


def trial(mode: str, *, seconds: float, hogs: int, load: str,
          board_cmd: str = DEFAULT_BOARD_CMD) -> dict[str, Any]:
    """One board, one driver, ``seconds`` of GIL load beside ``hogs`` CPU hogs."""
    with board_process(board_cmd) as board:
        barrier = make_barrier(mode, board.port)
        barrier.start()
        try:
            if not barrier.link_up:
                raise RuntimeError(f"{mode}: no link to the board on {board.port}")
            with cpu_hogs(hogs):
                time.sleep(0.3)  # the hogs are spinning before the load starts
                ran = gil_load(seconds, load)
            host = barrier.link_stats()
            # The board's figures first, while the driver still polls: stopping the
            # driver first would leave a silence the board's watchdog counts.
            figures = board.stop()
        finally:
            barrier.close()
    return {
        "mode": mode,
        "board_max_gap_ms": figures.get("max_request_gap_ms"),
        "board_requests": figures.get("requests"),
        "board_watchdog_trips": figures.get("watchdog_trips"),
        "host_max_gap_ms": round(float(host.get("max_request_gap_s", 0.0)) * 1000.0, 1),
        **ran,
    }


def measure(*, seconds: float, trials: int, hogs: int, load: str,
        board_cmd: str = DEFAULT_BOARD_CMD) -> dict[str, Any]:
    """Alternate the two modes ``trials`` times each (so drift hits both alike)."""
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for _ in range(trials):
        for mode in MODES:
            results[mode].append(trial(mode, seconds=seconds, hogs=hogs, load=load,
                                       board_cmd=board_cmd))
    summary: dict[str, Any] = {}
    for mode, runs in results.items():
        gaps = [float(r["board_max_gap_ms"] or 0.0) for r in runs]
        summary[mode] = {
            "max_gap_ms": gaps,
            "worst_gap_ms": max(gaps) if gaps else None,
            "trials_over_250ms": sum(g > CONTRACT_GAP_MS for g in gaps),
            "watchdog_trips": [r["board_watchdog_trips"] for r in runs],
            "host_max_gap_ms": [r["host_max_gap_ms"] for r in runs],
            "longest_gil_call_s": max((r["longest_call_s"] for r in runs), default=None),
        }
    return {"seconds": seconds, "trials": trials, "cpu_hogs": hogs, "load": load,
            "cpus": os.cpu_count(), "contract_gap_ms": CONTRACT_GAP_MS,
            "board_cmd": board_cmd, "modes": summary}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="GIL load per trial")
    parser.add_argument("--trials", type=int, default=3, help="trials per mode")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside")
    parser.add_argument("--load", choices=("sort", "regex", "onnx"), default="sort")
    parser.add_argument("--board-cmd", default=DEFAULT_BOARD_CMD,
                        help="command serving a board (see the module doc)")


def run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.trials < 1:
        print("--seconds must be > 0 and --trials >= 1", file=sys.stderr)
        return 2
    result = measure(seconds=args.seconds, trials=args.trials, hogs=args.hogs,
                     load=args.load, board_cmd=args.board_cmd)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hardware.barrier.bench_link",
        description="Longest silence an out-of-process board sees while this process holds "
                    "the GIL: in-process driver thread vs link process.")
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
