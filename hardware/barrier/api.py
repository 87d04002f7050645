"""What the lane sees of a barrier board: the host-side interface and its notices.

``hardware.barrier.driver.SerialBarrier`` implements it over pyserial (any URL: a device
path, a pty, ``loop://``, ``socket://``); ``hardware.barrier.linkproc.ProcessBarrier``
runs that same driver in a link process of its own, so that a lane process holding the
GIL cannot delay the poll. The lane state machine depends only on this module, never on
how the board is reached nor on its wire protocol: what it sees is the domain picture
(``BarrierState``) and typed notices from ``hardware.barrier.model``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from hardware.barrier.model import (
    BarrierNotice,
    BarrierState,
    BeamsChanged,
    BoardChange,
    BoardRestarted,
    Condition,
    ConditionChanged,
    Door,
    DoorAction,
    DoorMoved,
    DoorState,
    LinkLost,
    LinkRestored,
    Side,
    Signal,
    StateRefreshed,
    ZoneCounted,
)
from hardware.barrier.protocol import BoardInfo, NakReason
from hardware.device import DeviceError, DeviceUnavailable

__all__ = [
    "Barrier", "BarrierError", "BarrierNotice", "BarrierState", "BeamsChanged", "BoardChange",
    "BoardInfo", "BoardRestarted", "CommandRejected", "Condition", "ConditionChanged", "Door",
    "DoorAction", "DoorMoved", "DoorState", "LinkDown", "LinkLost", "LinkRestored",
    "NoticeHandler", "Side", "Signal", "StateRefreshed", "ZoneCounted",
]


class BarrierError(DeviceError):
    """Base of the errors a barrier command can end in."""


class LinkDown(BarrierError, DeviceUnavailable):
    """No valid reply after the contract's retries, or the port is gone.

    It is also a ``DeviceUnavailable``: to the lane a board that does not answer is a
    device that is not there, handled like a camera that vanished.
    """


class CommandRejected(BarrierError):
    """The board answered NAK."""

    def __init__(self, request: str, reason: NakReason | int) -> None:
        name = reason.name if isinstance(reason, NakReason) else str(reason)
        super().__init__(f"{request} refused by the board: {name}")
        self.request = request
        self.reason = reason

    def __reduce__(self) -> tuple[type[CommandRejected], tuple[str, NakReason | int]]:
        # The default reduce would call CommandRejected(message) and fail: rebuild it from
        # its fields, so a refusal crosses a process boundary (the link process) intact.
        return (type(self), (self.request, self.reason))


NoticeHandler = Callable[[BarrierNotice], None]


class Barrier(abc.ABC):
    """Host side of a lane barrier board.

    After ``start()`` the implementation keeps the link alive on its own thread (POLL
    at least every 250 ms whatever the caller is doing) and calls every subscribed
    handler with each notice, in order, on a notice thread of its own, so that even a
    handler that blocks cannot delay the poll. Handlers should still be quick: the lane
    only puts the notice on its own queue.

    Commands block until the board answered (ACK/NAK) and raise ``CommandRejected`` or
    ``LinkDown``; they are safe to call from any thread.
    """

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def subscribe(self, handler: NoticeHandler) -> None: ...

    @abc.abstractmethod
    def unsubscribe(self, handler: NoticeHandler) -> None:
        """Stop calling ``handler``; unknown handlers are ignored."""

    @property
    @abc.abstractmethod
    def link_up(self) -> bool: ...

    @property
    @abc.abstractmethod
    def state(self) -> BarrierState | None:
        """The latest picture of the board (from its status and its events)."""

    @abc.abstractmethod
    def open_door(self, door: Door) -> None: ...

    @abc.abstractmethod
    def close_door(self, door: Door) -> None: ...

    @abc.abstractmethod
    def set_lamp(self, side: Side, signal: Signal) -> None: ...

    @abc.abstractmethod
    def reset_faults(self) -> bool:
        """True when every latched flag was cleared (ACK); False on NAK FAULT_ACTIVE."""

    @abc.abstractmethod
    def configure_watchdog(self, watchdog_ms: int) -> None: ...

    @abc.abstractmethod
    def info(self) -> BoardInfo: ...

    @abc.abstractmethod
    def refresh_state(self) -> BarrierState:
        """Read the board's whole picture now (after the changes it has queued)."""

    def link_stats(self) -> dict[str, float]:
        """Host-side counters of the link, measured where the port is owned.

        At least ``requests`` and ``max_request_gap_s`` (the longest silence between two
        requests the driver sent while the link was up: what the board's watchdog would
        see) when the implementation keeps them; ``{}`` for one that keeps none.
        """
        return {}

    def __enter__(self) -> Barrier:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
