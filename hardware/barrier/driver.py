"""Host side of the barrier link: protocol v1 over pyserial.

One I/O thread owns the port. It sends a POLL at least every ``poll_interval_s`` whatever
the callers are doing; commands from other threads are queued to it and wait on a future,
so a slow document or face stage elsewhere can never starve the board's watchdog.
Notices go to subscribers from a separate dispatch thread, so a slow subscriber cannot
starve the poll either. A thread still needs the GIL: a process that holds it in long C
calls (model loading) does starve it, which is why the lane runs this driver in a link
process of its own (``hardware.barrier.linkproc``).

The driver must work against any board that follows ``docs/barrier-protocol.md``, not
only our simulator: it relies on nothing but the contract (request/reply, resend of the
same bytes, at-least-once events, ids that wrap and restart).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import random
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import serial

from hardware.barrier.api import (
    Barrier,
    BarrierError,
    BarrierNotice,
    BarrierState,
    BoardRestarted,
    CommandRejected,
    LinkDown,
    LinkLost,
    LinkRestored,
    NoticeHandler,
    StateRefreshed,
)
from hardware.barrier.protocol import (
    DEFAULT_ADDRESS,
    INTER_BYTE_GAP_S,
    MAX_REQUEST_INTERVAL_S,
    MAX_RETRIES,
    REPLY_TIMEOUT_S,
    Beam,
    BoardEvent,
    BoardInfo,
    BoardStatus,
    Door,
    DoorAction,
    DoorState,
    EventCode,
    Flag,
    Frame,
    FrameDecoder,
    MsgType,
    NakReason,
    ProtocolError,
    Side,
    Signal,
    config_payload,
    door_payload,
    event_id_newer,
    lamp_payload,
    nak_reason,
    poll_payload,
)

T = TypeVar("T")

BAUDRATE = 115200
#: Read slice of the I/O thread: short enough to honour the 100 ms reply timeout finely.
READ_SLICE_S = 0.005
#: How many event ids the de-duplication remembers (a resent event is always recent).
RECENT_EVENT_IDS = 256
#: An upper bound on polls while draining the board's queue (64 events plus margin).
MAX_DRAIN_POLLS = 200

_REPLY_TYPES = frozenset({MsgType.ACK, MsgType.STATUS, MsgType.EVENT, MsgType.INFO, MsgType.NAK})


class PortLost(LinkDown):
    """The port itself failed (adapter unplugged, pty gone): close it and reopen later."""


@dataclass
class LinkStats:
    """Counters of the link, for diagnostics and the commissioning report."""

    requests: int = 0  # distinct requests (each with a new SEQ)
    transmissions: int = 0  # frames written, resends included
    retries: int = 0
    timeouts: int = 0  # attempts that ended without a valid reply
    crc_errors: int = 0  # candidate frames dropped for a bad CRC (noise included)
    ignored_replies: int = 0  # valid frames for another ADDR, a stale SEQ, or not replies
    polls: int = 0
    events: int = 0  # new events delivered
    duplicate_events: int = 0  # resent events recognised and dropped
    link_downs: int = 0
    link_ups: int = 0
    board_restarts: int = 0
    max_request_gap_s: float = 0.0  # longest silence between two requests while the link was up


@dataclass(frozen=True)
class LinkMemory:
    """What a driver knows of its board beyond the port, handed to a successor.

    A link process that died and was respawned (``hardware.barrier.linkproc``) starts a
    new driver; given this, its first connection is a *re*connection, as if one driver had
    lost the link and found it again: events the board re-delivers (it was never told we
    had them) are recognised as duplicates, and a board that rebooted meanwhile is noticed
    (RESTARTED, or ids going backwards) instead of being met as a new board.
    """

    status: BoardStatus | None = None
    board_last_id: int = 0  # newest event id the board is known to have assigned
    recent: tuple[BoardEvent, ...] = ()  # the newest events delivered, oldest first


@dataclass
class _Job:
    name: str
    work: Callable[[], Any]
    future: concurrent.futures.Future[Any]


def open_port(url: str, timeout_s: float = READ_SLICE_S) -> serial.SerialBase:
    """Open ``url`` (device path or pyserial URL) at the contract's line settings.

    The lock is POSIX ``flock``: a second opener fails with "Could not exclusively lock
    port". URL handlers that cannot lock (some refuse the argument) are opened without it.
    """
    settings: dict[str, Any] = {
        "baudrate": BAUDRATE,
        "bytesize": serial.EIGHTBITS,
        "parity": serial.PARITY_NONE,
        "stopbits": serial.STOPBITS_ONE,
        "xonxoff": False,
        "rtscts": False,
        "dsrdtr": False,
        "timeout": timeout_s,
        "write_timeout": 1.0,
    }
    try:
        return serial.serial_for_url(url, exclusive=True, **settings)
    except (TypeError, ValueError) as exc:
        if "exclusive" not in str(exc):
            raise
        return serial.serial_for_url(url, **settings)


def _next_event_id(event_id: int) -> int:
    return 1 if event_id >= 0xFFFF else event_id + 1


def _went_backwards(last_event_id: int, known: int) -> bool:
    """True when the board's newest id is older than one it already gave us: it restarted.

    0 ("no event since boot") is outside the 1..65535 ring, so it is handled apart.
    """
    if not known or last_event_id == known:
        return False
    return last_event_id == 0 or not event_id_newer(last_event_id, known)


class SerialBarrier(Barrier):
    """``Barrier`` over a serial line, exactly per protocol v1."""

    def __init__(
        self,
        url: str,
        *,
        address: int = DEFAULT_ADDRESS,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        retries: int = MAX_RETRIES,
        poll_interval_s: float = 0.1,
        watchdog_ms: int | None = None,
        reconnect_interval_s: float = 0.5,
        logger: Any = None,
    ) -> None:
        if poll_interval_s > MAX_REQUEST_INTERVAL_S:
            raise ValueError("poll_interval_s above the contract's 250 ms")
        self.url = url
        self.address = address
        self._reply_timeout_s = reply_timeout_s
        self._retries = retries
        self._poll_interval_s = poll_interval_s
        self._watchdog_ms = watchdog_ms
        self._reconnect_interval_s = reconnect_interval_s
        if logger is None:
            # Imported here, not at the top: the link process (hardware.barrier.linkd) passes
            # its own logger and must start fast; structlog pulls in rich, asyncio...
            import structlog

            logger = structlog.get_logger("hardware.barrier")
        self._log = logger.bind(port=url, board_address=address)
        self.stats = LinkStats()
        self.board_info: BoardInfo | None = None

        self._port: serial.SerialBase | None = None
        self._fd: int | None = None
        self._decoder = FrameDecoder()
        self._seq = random.randrange(256)  # a restarted host must not repeat the last request
        self._last_rx = 0.0
        self._last_tx: float | None = None
        self._last_poll = 0.0

        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._handlers: list[NoticeHandler] = []
        self._notices: queue.Queue[BarrierNotice | None] = queue.Queue()
        self._stopping = threading.Event()
        self._first_attempt = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._notice_thread: threading.Thread | None = None

        # Link state: None before the first attempt, then True/False.
        self._link: bool | None = None
        self._down_detail = "not started"
        self._next_connect = 0.0
        self._open_error_logged = False

        # Board picture and event bookkeeping (I/O thread only, except the reads of _status).
        self._status: BoardStatus | None = None
        self._ack = 0  # newest event id received: what the next POLL acknowledges
        self._board_last_id = 0  # newest event id the board is known to have assigned
        self._recent: OrderedDict[int, BoardEvent] = OrderedDict()  # for de-duplication
        self._drain = False  # the last POLL returned an event: poll again at once
        self._resync = False  # publish the next STATUS as a fresh picture
        self._restart_announced = False  # restart seen from STATUS, RESTARTED may follow
        self._config_due = False
        self._held: list[BarrierNotice] | None = None  # notices held during a handshake

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._io_thread is not None:
            return
        self._stopping.clear()
        self._first_attempt.clear()
        self._link = None
        self._next_connect = 0.0
        self._notice_thread = threading.Thread(
            target=self._dispatch_notices, name="barrier-notices", daemon=True
        )
        self._notice_thread.start()
        self._io_thread = threading.Thread(target=self._run, name="barrier-io", daemon=True)
        self._io_thread.start()
        # Return once the first connection attempt (open, INFO, STATUS) is over, up or down.
        self._first_attempt.wait(timeout=10.0)

    def close(self) -> None:
        self._stopping.set()
        self._jobs.put(None)
        if self._io_thread is not None and self._io_thread is not threading.current_thread():
            self._io_thread.join(timeout=5.0)
        self._io_thread = None
        # Notices not yet delivered are dropped: the subscriber is shutting down too, and
        # a slow handler must not keep the dispatch thread alive long after close().
        while True:
            try:
                self._notices.get_nowait()
            except queue.Empty:
                break
        self._notices.put(None)
        if self._notice_thread is not None and (
            self._notice_thread is not threading.current_thread()
        ):
            self._notice_thread.join(timeout=2.0)
        self._notice_thread = None
        self._close_port()
        self._link = False
        self._down_detail = "closed"

    def subscribe(self, handler: NoticeHandler) -> None:
        self._handlers = [*self._handlers, handler]

    def unsubscribe(self, handler: NoticeHandler) -> None:
        self._handlers = [h for h in self._handlers if h is not handler]

    @property
    def link_up(self) -> bool:
        return bool(self._link)

    @property
    def link_detail(self) -> str:
        """Why the link is down (the last open error or the unanswered request)."""
        return "" if self._link else self._down_detail

    @property
    def status(self) -> BoardStatus | None:
        """The picture in protocol v1's own terms (for wire-level tools and tests)."""
        return self._status

    @property
    def state(self) -> BarrierState | None:
        return self._state()

    @property
    def board_last_event_id(self) -> int:
        """Newest event id the board is known to have assigned (0: none yet)."""
        return self._board_last_id

    def link_stats(self) -> dict[str, float]:
        """``stats`` as a plain dict: measured here, in the process that owns the port."""
        return dict(asdict(self.stats))

    def adopt(self, memory: LinkMemory) -> None:
        """Continue from an earlier driver's picture of the board (call before ``start``).

        Only the bookkeeping that decides what is a new event and what a board restart is
        carried over; counters start at zero.
        """
        if self._io_thread is not None:
            raise RuntimeError("adopt() must be called before start()")
        self._status = memory.status
        self._board_last_id = memory.board_last_id
        self._recent = OrderedDict((e.event_id, e) for e in memory.recent[-RECENT_EVENT_IDS:])

    # ------------------------------------------------------------------ commands

    def open_door(self, door: Door) -> None:
        self._call(f"DOOR {door.name} open",
                   lambda: self._command(MsgType.DOOR, door_payload(door, DoorAction.OPEN)))

    def close_door(self, door: Door) -> None:
        self._call(f"DOOR {door.name} close",
                   lambda: self._command(MsgType.DOOR, door_payload(door, DoorAction.CLOSE)))

    def set_lamp(self, side: Side, signal: Signal) -> None:
        self._call(f"LAMP {side.name} {signal.name}",
                   lambda: self._command(MsgType.LAMP, lamp_payload(side, signal)))

    def reset_faults(self) -> bool:
        def work() -> bool:
            try:
                self._command(MsgType.RESET_FAULTS, b"")
            except CommandRejected as exc:
                if exc.reason == NakReason.FAULT_ACTIVE:
                    return False
                raise
            return True

        return bool(self._call("RESET_FAULTS", work))

    def configure_watchdog(self, watchdog_ms: int) -> None:
        def work() -> None:
            self._command(MsgType.CONFIG, config_payload(watchdog_ms))
            self._watchdog_ms = watchdog_ms  # re-applied after a board restart

        self._call(f"CONFIG {watchdog_ms} ms", work)

    def info(self) -> BoardInfo:
        return self._call("GET_INFO", self._read_info)

    def refresh_status(self) -> BoardStatus:
        def work() -> BoardStatus:
            self._resync = True
            return self._poll_until_status()

        return self._call("refresh STATUS", work)

    def refresh_state(self) -> BarrierState:
        return self.refresh_status().state()

    def _call(self, name: str, work: Callable[[], T]) -> T:
        if threading.current_thread() is self._io_thread:
            return work()
        if not self._link:
            raise LinkDown(f"{name}: link down ({self._down_detail})")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put(_Job(name, work, future))
        # Worst case: the jobs queued before this one, each with its retries, and a poll.
        attempt_s = self._reply_timeout_s * (self._retries + 1)
        try:
            return future.result(timeout=10.0 + 4 * attempt_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise LinkDown(f"{name}: no answer from the barrier I/O thread") from None

    def _command(self, msg_type: MsgType, payload: bytes) -> None:
        reply = self._exchange(msg_type, payload)
        if reply.type == MsgType.ACK:
            return
        if reply.type == MsgType.NAK:
            try:
                reason = nak_reason(reply.payload)
            except ProtocolError:
                reason = -1
            raise CommandRejected(f"{msg_type.name} {payload.hex()}", reason)
        raise BarrierError(f"{msg_type.name}: unexpected reply {reply.type_name}")

    # ------------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    if self._link:
                        self._serve_link()
                    else:
                        self._serve_down()
                except Exception as exc:
                    # A bug or a board answering nonsense must not end the keep-alive:
                    # count the link as down, start afresh from the port.
                    self._log.exception("barrier.io_error")
                    self._close_port()
                    self._set_down(f"internal error: {exc!r}")
                    self._first_attempt.set()
        finally:
            self._close_port()
            self._fail_queued_jobs("barrier closed")
            self._first_attempt.set()

    def _serve_down(self) -> None:
        if time.monotonic() >= self._next_connect:
            up = self._connect()
            self._next_connect = time.monotonic() + self._reconnect_interval_s
            if not up and self._link is not False:
                self._set_down(self._down_detail)
            self._first_attempt.set()
            if up:
                return
        job = self._take_job(max(0.0, self._next_connect - time.monotonic()))
        if job is not None and job.future.set_running_or_notify_cancel():
            job.future.set_exception(LinkDown(f"{job.name}: link down ({self._down_detail})"))

    def _serve_link(self) -> None:
        now = time.monotonic()
        try:
            if self._config_due and self._watchdog_ms is not None:
                self._config_due = False
                self._apply_watchdog(self._watchdog_ms)
            poll_at = now if (self._drain or self._resync) else (
                self._last_poll + self._poll_interval_s)
            job = self._take_job(max(0.0, poll_at - now))
            if job is None:
                if not self._stopping.is_set():
                    self._poll()
                return
            # A stream of commands must not push the POLL (and so events) back: poll first
            # when half the interval has gone, so the job cannot make the POLL late.
            if time.monotonic() - self._last_poll >= self._poll_interval_s / 2:
                self._poll()
            self._run_job(job)
        except LinkDown as exc:
            self._set_down(str(exc))
        except BarrierError as exc:  # e.g. CONFIG answered with something else than ACK/NAK
            self._log.warning("barrier.unexpected_reply", error=str(exc))

    def _take_job(self, timeout: float) -> _Job | None:
        try:
            return self._jobs.get(timeout=timeout) if timeout > 0 else self._jobs.get_nowait()
        except queue.Empty:
            return None

    def _run_job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # the caller gave up waiting: do not act late
        try:
            result = job.work()
        except LinkDown as exc:
            job.future.set_exception(exc)
            raise
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _fail_queued_jobs(self, detail: str) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(LinkDown(f"{job.name}: {detail}"))

    # ------------------------------------------------------------------ link up/down

    def _connect(self) -> bool:
        """Open the port if needed and greet the board: INFO, CONFIG, STATUS."""
        if self._port is None:
            try:
                self._port = open_port(self.url)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._down_detail = f"cannot open port: {exc}"
                if not self._open_error_logged:
                    self._log.warning("barrier.open_failed", error=str(exc))
                    self._open_error_logged = True
                return False
            self._open_error_logged = False
            try:
                self._fd = self._port.fileno()
            except (AttributeError, OSError, ValueError):
                self._fd = None  # loop:// and the like: no descriptor to select on
            self._decoder.reset()
            self._log.info("barrier.port_opened")
        # Events met during the greeting are delivered after LINK_UP, then one STATUS.
        self._held = []
        # POLL from 0: a board that was not reset re-delivers what we may not have
        # acknowledged (recognised as duplicates); one that was shows new content.
        self._ack = 0
        try:
            info = self._read_info()
            if info.protocol != 1:
                self._log.error("barrier.protocol_mismatch", protocol=info.protocol)
            if self._watchdog_ms is not None:
                self._apply_watchdog(self._watchdog_ms)
            self._config_due = False
            self._resync = True
            self._poll_until_status()
        except BarrierError as exc:
            self._down_detail = str(exc)
            self._release_held(keep_status=False)
            return False
        self._link = True
        self.stats.link_ups += 1
        self._log.info("barrier.link_up", firmware=info.firmware, board_serial=info.serial,
                       protocol=info.protocol, watchdog_ms=info.watchdog_ms)
        held, self._held = self._held, None
        self._publish(LinkRestored(
            state=self._state(),
            detail=f"{info.firmware};{info.serial} protocol {info.protocol}"))
        for notice in held:
            if not isinstance(notice, StateRefreshed):
                self._notices.put(notice)
        self._publish(StateRefreshed(state=self._state()))
        return True

    def _release_held(self, *, keep_status: bool) -> None:
        held, self._held = self._held or [], None
        for notice in held:
            if keep_status or not isinstance(notice, StateRefreshed):
                self._notices.put(notice)

    def _set_down(self, detail: str) -> None:
        self._down_detail = detail
        self._drain = False
        was = self._link
        self._link = False
        self._next_connect = time.monotonic() + self._reconnect_interval_s
        if was is not False:
            self.stats.link_downs += 1
            self._log.warning("barrier.link_down", detail=detail)
            self._publish(LinkLost(state=self._state(), detail=detail))
        self._fail_queued_jobs(f"link down ({detail})")

    def _close_port(self) -> None:
        port, self._port = self._port, None
        self._fd = None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()
            self._log.info("barrier.port_closed")

    def _apply_watchdog(self, watchdog_ms: int) -> None:
        try:
            self._command(MsgType.CONFIG, config_payload(watchdog_ms))
        except CommandRejected as exc:
            self._log.error("barrier.watchdog_config_refused", watchdog_ms=watchdog_ms,
                            reason=str(exc.reason))

    def _read_info(self) -> BoardInfo:
        reply = self._exchange(MsgType.GET_INFO, b"")
        if reply.type != MsgType.INFO:
            raise BarrierError(f"GET_INFO: unexpected reply {reply.type_name}")
        try:
            info = BoardInfo.unpack(reply.payload)
        except ProtocolError as exc:
            raise BarrierError(f"GET_INFO: {exc}") from exc
        self.board_info = info
        return info

    # ------------------------------------------------------------------ request/reply

    def _exchange(self, msg_type: MsgType, payload: bytes) -> Frame:
        """One request: a new SEQ, then the same bytes resent on timeout or corrupt reply."""
        if self._port is None:
            raise PortLost("port closed")
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        raw = Frame(self.address, seq, int(msg_type), payload).encode()
        self.stats.requests += 1
        for attempt in range(self._retries + 1):
            if attempt:
                self.stats.retries += 1
            self._write(raw, msg_type, seq, attempt)
            reply = self._await_reply(seq, time.monotonic() + self._reply_timeout_s)
            if reply is not None:
                return reply
            self.stats.timeouts += 1
        raise LinkDown(f"no valid reply to {msg_type.name} after {self._retries} retries")

    def _write(self, raw: bytes, msg_type: MsgType, seq: int, attempt: int) -> None:
        port = self._port
        if port is None:
            raise PortLost("port closed")
        now = time.monotonic()
        if self._link and self._last_tx is not None:
            self.stats.max_request_gap_s = max(self.stats.max_request_gap_s, now - self._last_tx)
        self._last_tx = now
        self._log.debug("barrier.tx", frame=raw.hex(" "), type=msg_type.name, seq=seq,
                        attempt=attempt)
        try:
            port.write(raw)  # no flush (tcdrain): 7 bytes leave in well under 1 ms
        except (serial.SerialException, OSError) as exc:
            self._close_port()
            raise PortLost(f"port write: {exc}") from exc
        self.stats.transmissions += 1

    def _await_reply(self, seq: int, deadline: float) -> Frame | None:
        port = self._port
        if port is None:
            raise PortLost("port closed")
        bad_crc_before = self._decoder.bad_crc
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return None
                corrupt = self._decoder.bad_crc > bad_crc_before
                if corrupt and not self._decoder.pending and now - self._last_rx > 2 * (
                    INTER_BYTE_GAP_S
                ):
                    return None  # a corrupt reply and the line has gone quiet: resend now
                wake = deadline
                if self._decoder.pending:
                    wake = min(wake, self._last_rx + INTER_BYTE_GAP_S + 0.001)
                if corrupt:
                    wake = min(wake, self._last_rx + 2 * INTER_BYTE_GAP_S + 0.001)
                data = self._read_some(port, max(0.0, wake - now))
                now = time.monotonic()
                if data:
                    self._last_rx = now
                    frames = self._decoder.feed(data, now)
                elif self._decoder.pending and now - self._last_rx > INTER_BYTE_GAP_S:
                    frames = self._decoder.feed(b"", now)  # apply the gap rule without new bytes
                else:
                    continue
                for frame in frames:
                    if self._accept(frame, seq):
                        return frame
        except (serial.SerialException, OSError) as exc:
            self._close_port()
            raise PortLost(f"port read: {exc}") from exc
        finally:
            self.stats.crc_errors = self._decoder.bad_crc

    def _read_some(self, port: serial.SerialBase, wait_s: float) -> bytes:
        """Whatever arrives within ``wait_s``, waking as soon as the first byte does.

        On a descriptor (tty, pty, socket://) ``select`` waits the exact time: one wake-up
        per reply, which matters when other threads hold the GIL. Handlers without one
        (loop://) are read in short slices.
        """
        if self._fd is None:
            data = bytes(port.read(1))
            waiting = port.in_waiting if data else 0
            return data + bytes(port.read(waiting)) if waiting else data
        ready, _, _ = select.select([self._fd], [], [], wait_s)
        if not ready:
            return b""
        data = os.read(self._fd, 4096)
        if not data:
            # pyserial's words for it: the adapter or pty is gone.
            raise serial.SerialException(
                "device reports readiness to read but returned no data "
                "(device disconnected or multiple access on port?)")
        return data

    def _accept(self, frame: Frame, seq: int) -> bool:
        self._log.debug("barrier.rx", frame=frame.encode().hex(" "), type=frame.type_name,
                        seq=frame.seq)
        if frame.addr != self.address or frame.seq != seq or frame.type not in _REPLY_TYPES:
            self.stats.ignored_replies += 1
            return False
        return True

    # ------------------------------------------------------------------ polling and events

    def _poll(self) -> Frame:
        self._last_poll = time.monotonic()
        reply = self._exchange(MsgType.POLL, poll_payload(self._ack))
        self.stats.polls += 1
        try:
            if reply.type == MsgType.EVENT:
                self._drain = True
                self._on_event(BoardEvent.unpack(reply.payload))
            elif reply.type == MsgType.STATUS:
                self._drain = False
                self._on_status(BoardStatus.unpack(reply.payload))
            else:
                self._log.warning("barrier.unexpected_poll_reply", type=reply.type_name)
        except ProtocolError as exc:
            self._log.warning("barrier.bad_payload", type=reply.type_name, error=str(exc))
        return reply

    def _poll_until_status(self) -> BoardStatus:
        for _ in range(MAX_DRAIN_POLLS):
            reply = self._poll()
            if reply.type == MsgType.STATUS and self._status is not None:
                return self._status
        raise BarrierError("the board never answered a POLL with STATUS")

    def _on_event(self, event: BoardEvent) -> None:
        eid = event.event_id
        if eid == 0:
            self.stats.ignored_replies += 1
            return
        seen = self._recent.get(eid)
        if seen == event:
            # At-least-once delivery: the same event again. Acknowledge it (after a
            # reconnect we POLL from 0) but deliver nothing.
            self.stats.duplicate_events += 1
            if not self._ack or event_id_newer(eid, self._ack):
                self._ack = eid
            self._log.debug("barrier.duplicate_event", event_id=eid, code=event.code_name)
            return
        known = self._board_last_id
        restarted = (
            event.code == EventCode.RESTARTED
            or seen is not None  # an id we hold with another content: ids started over
            or (bool(known) and not event_id_newer(eid, known))  # ids went backwards
        )
        if restarted and self._status is not None:
            self._recent.clear()
            if self._restart_announced:
                self._restart_announced = False  # already seen from STATUS
            else:
                self._announce_restart(f"event {eid} {event.code_name}")
        elif known and eid != _next_event_id(known):
            # Ids skipped: the board dropped events (queue overflow); the picture built
            # from events cannot be trusted until STATUS is read again.
            self._resync = True
            self._log.warning("barrier.events_lost", after=known, got=eid)
        self._ack = eid
        self._board_last_id = eid
        self._recent[eid] = event
        while len(self._recent) > RECENT_EVENT_IDS:
            self._recent.popitem(last=False)
        self.stats.events += 1
        self._status = self._apply_event(self._status, event)
        self._log.info("barrier.event", event_id=eid, code=event.code_name, arg=event.arg)
        self._publish(event.notice(self._state()))

    def _on_status(self, status: BoardStatus) -> None:
        previous = self._status
        known = self._board_last_id
        if previous is not None and _went_backwards(status.last_event_id, known):
            # Ids went backwards without RESTARTED reaching us: the board restarted.
            self._announce_restart(f"last event id {known} -> {status.last_event_id}")
            self._restart_announced = True
            self._recent.clear()
            self._ack = 0
            self._board_last_id = status.last_event_id
            self._status = status
            self._drain = True  # fetch whatever the board queued since it came back
            return
        self._board_last_id = status.last_event_id or known
        self._restart_announced = False  # the queue is drained: a later RESTARTED is new
        if status.flags & Flag.EVENT_OVERFLOW and not (
            previous is not None and previous.flags & Flag.EVENT_OVERFLOW
        ):
            self._log.warning("barrier.event_overflow")
            self._resync = True
        changed = previous is None or replace(status, last_event_id=0) != replace(
            previous, last_event_id=0)
        self._status = status
        if self._resync or changed:
            self._resync = False
            self._publish(StateRefreshed(state=self._state()))

    def _announce_restart(self, detail: str) -> None:
        self.stats.board_restarts += 1
        self._resync = True
        self._config_due = self._watchdog_ms is not None
        self._log.warning("barrier.board_restarted", detail=detail)
        self._publish(BoardRestarted(state=self._state(), detail=detail))

    @staticmethod
    def _apply_event(status: BoardStatus | None, event: BoardEvent) -> BoardStatus | None:
        """The picture after an event; STATUS replies correct whatever events cannot say."""
        if status is None:
            return None
        status = replace(status, last_event_id=event.event_id)
        code, arg = event.code, event.arg
        flag_events = {
            EventCode.TAMPER: Flag.TAMPER,
            EventCode.POWER: Flag.ON_UPS,
            EventCode.MAINTENANCE_KEY: Flag.MAINTENANCE_KEY,
        }
        try:
            if code == EventCode.DOOR_STATE:
                door, state = event.door_state()
                return replace(status, entry=state) if door is Door.ENTRY else replace(
                    status, exit=state)
            if code == EventCode.ZONE_COUNT:
                return replace(status, zone_count=arg)
            if code == EventCode.BEAMS:
                return replace(status, beams=Beam(arg & 0x03))
            if code == EventCode.EMERGENCY_ON:
                return replace(status, flags=status.flags | Flag.EMERGENCY)
            if code == EventCode.EMERGENCY_OFF:
                return replace(status, flags=status.flags & ~Flag.EMERGENCY)
            if code == EventCode.WATCHDOG_TRIPPED:
                return replace(status, flags=status.flags | Flag.WATCHDOG)
            if code == EventCode.RESTARTED:
                return replace(status, entry=DoorState.CLOSED, exit=DoorState.CLOSED)
            if code in flag_events:
                flag = flag_events[EventCode(code)]
                return replace(status, flags=status.flags | flag if arg else status.flags & ~flag)
        except ValueError:
            pass  # an out-of-range arg: keep the picture, the next STATUS corrects it
        return status

    # ------------------------------------------------------------------ notices

    def _state(self) -> BarrierState | None:
        return self._status.state() if self._status is not None else None

    def _publish(self, notice: BarrierNotice) -> None:
        if self._held is not None:
            self._held.append(notice)
        else:
            self._notices.put(notice)

    def _dispatch_notices(self) -> None:
        while True:
            notice = self._notices.get()
            if notice is None:
                return
            for handler in self._handlers:
                try:
                    handler(notice)
                except Exception:
                    self._log.exception("barrier.notice_handler_failed",
                                        notice=type(notice).__name__)
