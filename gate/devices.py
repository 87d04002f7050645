"""Opens the lane's barrier board from its configuration URL.

A URL is a port — ``serial:///dev/ttyUSB0``, ``/dev/ttyACM0``, ``socket://host:port``,
any pyserial URL — or the name of a board *backend* registered under the entry-point
group ``egate.boards`` (``sim`` is the simulated board, which the ``sim`` package
registers: this package never names it). A backend is started first, in a process of
its own, and hands back the port it serves; from there every board is reached the same
way, through the production driver.

The driver runs in a link process of its own (:class:`hardware.barrier.linkproc.ProcessBarrier`):
the lane process can hold the GIL for seconds (model loading, a stage in C code) and the
board is still polled on time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol
from urllib.parse import parse_qs

from gate.config import BarrierLink
from hardware.barrier.api import Barrier

BOARD_BACKENDS = "egate.boards"


class BoardPeer(Protocol):
    """A board backend started for a URL: where it serves, and how to stop it."""

    port: str

    def stop(self) -> None: ...


@dataclass
class BarrierConnection:
    """A started barrier, and the board backend behind it when the URL named one."""

    barrier: Barrier
    peer: Any = None  # a BoardPeer; for ``sim`` it also has ``.board``, the control proxy

    @property
    def board(self) -> Any:
        """The simulated board's control side (for scenarios), or None on a real board."""
        return getattr(self.peer, "board", None)

    def close(self) -> None:
        try:
            self.barrier.close()
        finally:
            if self.peer is not None:
                self.peer.stop()

    def __enter__(self) -> BarrierConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def port_of(url: str) -> str:
    """What pyserial gets: ``serial:///dev/ttyUSB0`` → ``/dev/ttyUSB0``; others as they are."""
    if url.startswith("serial://"):
        return url[len("serial://"):]
    return url


def board_backends() -> dict[str, Any]:
    """Registered board backends by name (entry points of group ``egate.boards``)."""
    return {ep.name: ep for ep in entry_points(group=BOARD_BACKENDS)}


def backend_options(url: str) -> tuple[str, dict[str, str]]:
    """``sim?speed=10&seed=3`` → ("sim", {"speed": "10", "seed": "3"})."""
    name, _, query = url.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    return name, options


def connect_barrier(url: str, link: BarrierLink | None = None, *,
                    logger: Any = None) -> BarrierConnection:
    """Open the barrier named by ``url`` and start its driver (link up, or retrying)."""
    from hardware.barrier.linkproc import ProcessBarrier

    link = link if link is not None else BarrierLink()
    name, options = backend_options(url)
    peer = None
    backend = board_backends().get(name) if "/" not in name and ":" not in name else None
    if backend is not None:
        peer = backend.load()(address=link.address, **options)
        port = peer.port
    else:
        port = port_of(url)
    try:
        barrier = ProcessBarrier(
            port, address=link.address, reply_timeout_s=link.reply_timeout_s,
            retries=link.retries, poll_interval_s=link.poll_interval_s,
            watchdog_ms=link.watchdog_ms or None, logger=logger)
        barrier.start()
    except BaseException:
        if peer is not None:
            with contextlib.suppress(Exception):
                peer.stop()
        raise
    return BarrierConnection(barrier, peer)
