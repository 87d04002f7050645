"""The link process: one ``SerialBarrier`` on the board's port, alone in a process of its own.

``hardware.barrier.linkproc.ProcessBarrier`` starts it as ``python -m hardware.barrier.linkd
--fd N`` and talks to it over the socket ``N`` (a ``socketpair`` end it inherited). Why a
process: the lane process holds the GIL for long stretches of C code (an ONNX model load,
an OCR pass) and a driver *thread* there cannot send its POLL until the GIL comes back;
the board's watchdog then trips. Here nothing else runs, so the poll is on time whatever
the lane does.

It therefore imports only the standard library, ``hardware.barrier`` (pyserial,
structlog) and nothing of the lane: it must start in a fraction of a second, also when it
is respawned after a crash (``python -X importtime -m hardware.barrier.linkd --help``).

The wire: length-prefixed pickles (:class:`Channel`), both ends ours, over a private
socketpair. Parent → child: :class:`Hello` first, then :class:`Call`,
:class:`StatsRequest`, :class:`Close`. Child → parent: :class:`Started`,
:class:`NoticeMsg`, :class:`Reply`, :class:`StatsMsg`, :class:`LogMsg`, each with a
:class:`Snapshot` of the driver taken when it is sent, so the parent's mirror of
``link_up``/``status`` moves forward in the child's order.

The child lives as long as its parent wants it: it exits on :class:`Close`, on EOF of the
socket (the parent died or dropped it), or when ``os.getppid()`` changes (the parent
died and something else still holds the socket's other end). The board's watchdog then
trips, as it should when no host is in charge. SIGINT is ignored: a Ctrl-C in a terminal
reaches the whole process group, and the parent closes its link process in order.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import queue
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hardware.barrier.api import BarrierError, BarrierNotice
from hardware.barrier.driver import LinkMemory, SerialBarrier
from hardware.barrier.protocol import BoardInfo, BoardStatus

#: How often the child checks that its parent is still there, and pushes its counters.
TICK_S = 0.5
#: A child that cannot finish its own shutdown within this is ended by force.
EXIT_DEADLINE_S = 4.0
#: Methods of ``SerialBarrier`` the parent may call (nothing else is reachable).
COMMANDS = frozenset({"open_door", "close_door", "set_lamp", "reset_faults",
                      "configure_watchdog", "info", "refresh_status"})
LEVELS = ("debug", "info", "warning", "error")


# ------------------------------------------------------------------ messages


@dataclass(frozen=True)
class Hello:
    """The link process's orders: the driver's arguments and what the last one knew."""

    url: str
    address: int
    reply_timeout_s: float
    retries: int
    poll_interval_s: float
    watchdog_ms: int | None
    reconnect_interval_s: float
    parent_pid: int
    memory: LinkMemory = field(default_factory=LinkMemory)
    log_level: str = "info"  # the lowest level worth sending to the parent


@dataclass(frozen=True)
class Call:
    call_id: int
    method: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class StatsRequest:
    call_id: int


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Snapshot:
    """The driver's state as the parent mirrors it."""

    link_up: bool | None = None  # None: the first connection attempt is not over yet
    link_detail: str = "not started"
    status: BoardStatus | None = None
    board_info: BoardInfo | None = None


@dataclass(frozen=True)
class Started:
    """``SerialBarrier.start()`` returned: the first connection attempt is over."""

    snapshot: Snapshot
    pid: int


@dataclass(frozen=True)
class NoticeMsg:
    notice: BarrierNotice
    snapshot: Snapshot


@dataclass(frozen=True)
class Reply:
    call_id: int
    ok: bool
    value: Any = None  # the result, or the exception to raise in the parent
    snapshot: Snapshot = field(default_factory=Snapshot)


@dataclass(frozen=True)
class StatsMsg:
    call_id: int | None  # None: the periodic push
    stats: dict[str, float]
    snapshot: Snapshot


@dataclass(frozen=True)
class LogMsg:
    level: str
    event: str
    fields: dict[str, Any]


# ------------------------------------------------------------------ the wire


class Channel:
    """Length-prefixed pickles over a stream socket; ``send`` is safe from any thread."""

    _HEADER = struct.Struct(">I")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            self.sock.sendall(self._HEADER.pack(len(data)) + data)

    def recv(self) -> object:
        """The next message; ``EOFError`` when the other end is gone."""
        (size,) = self._HEADER.unpack(self._read_exact(self._HEADER.size))
        return pickle.loads(self._read_exact(size))

    def readable(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        return bool(ready)

    def _read_exact(self, size: int) -> bytes:
        chunks: list[bytes] = []
        left = size
        while left:
            try:
                chunk = self.sock.recv(min(left, 1 << 20))
            except (ConnectionError, OSError) as exc:
                raise EOFError(str(exc)) from exc
            if not chunk:
                raise EOFError("channel closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def shutdown(self) -> None:
        """Wake a reader blocked in ``recv`` (it gets EOF); ``close`` it afterwards."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# ------------------------------------------------------------------ logging to the parent


class ForwardingLogger:
    """The driver's logger in the link process: records go to the parent's logger.

    It only queues (``emit`` must never block: the driver logs from its I/O thread), and
    drops what is below the parent's level so that per-frame debug lines cost nothing.
    """

    def __init__(self, emit: Callable[[LogMsg], None], min_level: str = "info",
                 context: dict[str, Any] | None = None) -> None:
        self._emit = emit
        self._min = LEVELS.index(min_level) if min_level in LEVELS else 1
        self._context = dict(context or {})

    def bind(self, **fields: Any) -> ForwardingLogger:
        logger = ForwardingLogger(self._emit, LEVELS[self._min], {**self._context, **fields})
        return logger

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS.index(level) < self._min:
            return
        merged = {k: _plain(v) for k, v in {**self._context, **fields}.items()}
        self._emit(LogMsg(level, event, merged))

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log("error", event, {**fields, "traceback": traceback.format_exc()})


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (so the parent raises the very same class), else a
    ``BarrierError`` that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return BarrierError(f"{type(exc).__name__}: {exc}")
    return exc


# ------------------------------------------------------------------ the link process


class LinkDaemon:
    """Serves one parent: runs the driver, forwards what it says, runs what it is told."""

    def __init__(self, channel: Channel, hello: Hello) -> None:
        self.channel = channel
        self.hello = hello
        self._outbox: queue.Queue[object] = queue.Queue()
        self._stop = threading.Event()
        self.driver = SerialBarrier(
            hello.url, address=hello.address, reply_timeout_s=hello.reply_timeout_s,
            retries=hello.retries, poll_interval_s=hello.poll_interval_s,
            watchdog_ms=hello.watchdog_ms, reconnect_interval_s=hello.reconnect_interval_s,
            logger=ForwardingLogger(self._outbox.put, hello.log_level))
        self.driver.adopt(hello.memory)
        self.driver.subscribe(self._on_notice)

    def snapshot(self) -> Snapshot:
        d = self.driver
        up = d.link_up
        return Snapshot(link_up=up, link_detail="" if up else d.link_detail, status=d.status,
                        board_info=d.board_info)

    def _on_notice(self, notice: BarrierNotice) -> None:
        self._outbox.put(notice)

    def run(self) -> int:
        sender = threading.Thread(target=self._send_loop, name="linkd-send", daemon=True)
        sender.start()
        try:
            self.driver.start()
            self._outbox.put(Started(self.snapshot(), os.getpid()))
            self._receive_loop()
        finally:
            self._stop.set()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends us at once
            # Whatever happens below, this process ends soon: the port must be freed.
            killer = threading.Timer(EXIT_DEADLINE_S, os._exit, (3,))
            killer.daemon = True
            killer.start()
            self.driver.close()
            self._outbox.put(None)
            sender.join(timeout=1.0)
            self.channel.close()
        return 0

    def _parent_gone(self) -> bool:
        return os.getppid() != self.hello.parent_pid

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            if self._parent_gone():
                return
            try:
                if not self.channel.readable(TICK_S):
                    continue
                message = self.channel.recv()
            except (EOFError, OSError):
                return  # the parent closed its end or died
            if isinstance(message, Call):
                threading.Thread(target=self._run_call, args=(message,),
                                 name=f"linkd-call-{message.call_id}", daemon=True).start()
            elif isinstance(message, StatsRequest):
                self._outbox.put(_StatsDue(message.call_id))
            elif isinstance(message, Close):
                return

    def _run_call(self, call: Call) -> None:
        try:
            if call.method not in COMMANDS:
                raise BarrierError(f"link process: no command {call.method!r}")
            value = getattr(self.driver, call.method)(*call.args)
        except BaseException as exc:
            self._outbox.put(_Result(call.call_id, False, portable_error(exc)))
        else:
            self._outbox.put(_Result(call.call_id, True, value))

    def _send_loop(self) -> None:
        """The only writer of the socket: each message gets a snapshot taken as it leaves,
        and the counters go out every ``TICK_S`` however busy the line is."""
        next_stats = time.monotonic() + TICK_S
        while True:
            try:
                item: object = self._outbox.get(timeout=max(0.0, next_stats - time.monotonic()))
            except queue.Empty:
                if self._stop.is_set():
                    return
                item = _StatsDue(None)
            if item is None:
                return
            try:
                self.channel.send(self._message(item))
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + TICK_S
                    if not isinstance(item, _StatsDue):
                        self.channel.send(self._message(_StatsDue(None)))
            except (OSError, pickle.PicklingError):
                self._stop.set()  # the parent is gone: the receive loop ends us
                return

    def _message(self, item: object) -> object:
        if isinstance(item, BarrierNotice):
            return NoticeMsg(item, self.snapshot())
        if isinstance(item, _StatsDue):
            return StatsMsg(item.call_id, self.driver.link_stats(), self.snapshot())
        if isinstance(item, _Result):
            return Reply(item.call_id, item.ok, item.value, self.snapshot())
        return item  # Started, LogMsg


@dataclass(frozen=True)
class _StatsDue:
    call_id: int | None


@dataclass(frozen=True)
class _Result:
    call_id: int
    ok: bool
    value: Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hardware.barrier.linkd",
        description="The barrier link process (started by hardware.barrier.linkproc).")
    parser.add_argument("--fd", type=int, required=True,
                        help="the inherited socket to the parent")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=args.fd))
    if not channel.readable(10.0):
        print("linkd: no orders from the parent", file=sys.stderr)
        return 2
    try:
        hello = channel.recv()
    except EOFError:
        return 2
    if not isinstance(hello, Hello):
        print(f"linkd: unexpected first message {type(hello).__name__}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)  # close the port in order, then go

    signal.signal(signal.SIGTERM, on_term)
    return LinkDaemon(channel, hello).run()


if __name__ == "__main__":
    # Run the copy imported under its own name: the messages the parent pickles name
    # ``hardware.barrier.linkd.Hello``, not ``__main__.Hello``.
    from hardware.barrier import linkd

    raise SystemExit(linkd.main())
