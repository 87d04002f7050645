"""Builds the lane's devices from configuration URLs.

``sim`` starts the simulated board in this process, on a pseudo-terminal, and connects
the production driver to it — the same bytes as a cabinet on ``/dev/ttyUSB0``. Anything
else is handed to the driver as a pyserial URL. The lane only ever sees a ``Barrier``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from gate.config import BarrierLink, LaneConfig
from hardware.barrier.api import Barrier

SIM_SCHEME = "sim"


@dataclass
class BarrierConnection:
    """A started barrier, and the simulated board behind it when there is one."""

    barrier: Barrier
    board: Any = None  # sim.board.SimBoard for "sim", else None

    def close(self) -> None:
        try:
            self.barrier.close()
        finally:
            if self.board is not None:
                self.board.stop()

    def __enter__(self) -> BarrierConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def port_of(url: str) -> str:
    """What pyserial gets: ``serial:///dev/ttyUSB0`` → ``/dev/ttyUSB0``; others as they are."""
    if url.startswith("serial://"):
        return url[len("serial://"):]
    return url


def _sim_options(url: str) -> dict[str, Any]:
    """``sim?speed=10&seed=3&watchdog_ms=1000`` → SimBoard keyword arguments."""
    _, _, query = url.partition("?")
    options: dict[str, Any] = {}
    for key, values in parse_qs(query, strict_parsing=bool(query)).items():
        value = values[-1]
        if key == "speed":
            options["speed"] = float(value)
        elif key in ("seed", "watchdog_ms", "address"):
            options[key] = int(value)
        else:
            raise ValueError(f"unknown sim option {key!r} in {url!r}")
    return options


def connect_barrier(url: str, link: BarrierLink | None = None, *, logger: Any = None,
                    sim_options: dict[str, Any] | None = None) -> BarrierConnection:
    """Open the barrier named by ``url`` and start its driver (link up, or retrying)."""
    from hardware.barrier.driver import SerialBarrier

    link = link if link is not None else BarrierLink()
    board = None
    if url == SIM_SCHEME or url.startswith(SIM_SCHEME + "?"):
        from sim.board import SimBoard

        options = {"address": link.address, **_sim_options(url), **(sim_options or {})}
        board = SimBoard(**options)
        port = board.start()
    else:
        port = port_of(url)
    try:
        barrier = SerialBarrier(
            port, address=link.address, reply_timeout_s=link.reply_timeout_s,
            retries=link.retries, poll_interval_s=link.poll_interval_s,
            watchdog_ms=link.watchdog_ms or None, logger=logger)
        barrier.start()
    except BaseException:
        if board is not None:
            with contextlib.suppress(Exception):
                board.stop()
        raise
    return BarrierConnection(barrier, board)


def connect_lane_barrier(config: LaneConfig, *, logger: Any = None) -> BarrierConnection:
    return connect_barrier(config.devices.barrier, config.barrier, logger=logger)


@dataclass
class RunningLane:
    """A started lane and the barrier connection it runs on; ``stop()`` ends both."""

    lane: Any  # gate.lane.Lane (typed loosely: this module must not import the lane eagerly)
    connection: BarrierConnection

    def stop(self) -> None:
        try:
            self.lane.stop()
        finally:
            self.connection.close()

    def __enter__(self) -> RunningLane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_lane(config: LaneConfig, document_check: Any, face_capture: Any, face_verifier: Any,
               *, logger: Any = None) -> RunningLane:
    """Connect the configured barrier, build the lane on it and start its owner thread."""
    from gate.lane import Lane

    connection = connect_lane_barrier(config, logger=logger)
    try:
        lane = Lane(connection.barrier, document_check, face_capture, face_verifier, config,
                    logger=logger)
        lane.start()
    except BaseException:
        connection.close()
        raise
    return RunningLane(lane, connection)
