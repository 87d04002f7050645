"""``Barrier`` whose serial link lives in a process of its own.

Why: ``SerialBarrier`` keeps the board's watchdog fed from a thread, and a thread only runs
when it gets the GIL. A lane process spends seconds in C code that holds it (loading ONNX
models, a stage's inference): measured from the board, the line then went silent for
0.63–1.15 s and the watchdog (1 s) tripped. :class:`ProcessBarrier` runs the very same
``SerialBarrier`` in a link process (``python -m hardware.barrier.linkd``) that does
nothing else, and is a thin client of it over a socketpair: nothing the lane process does
can delay a POLL.

As the lane sees it, nothing changes (``tests/test_linkproc.py`` checks it on two boards):

- commands block until the board answered and raise ``CommandRejected`` / ``LinkDown``
  exactly as ``SerialBarrier`` does (the exception itself is carried over, pickled);
  while the link is down they fail at once, without a round trip;
- notices (``hardware.barrier.model``: board changes, fresh pictures, link lost and
  restored, board restarted) arrive in the child's order on a notice thread here, so a
  slow handler delays nothing but other notices;
- ``state``/``status``, ``link_up``, ``link_detail`` and ``board_info`` are mirrored from every
  message the child sends (each carries the driver's state as it left).

What a process adds, and how it is handled:

- The link process dies (a crash, a kill): the lane gets ``LinkLost``, pending commands end
  in ``LinkDown``, and the process is started again after a bounded back-off
  (``respawn_min_s`` doubling to ``respawn_max_s``). The new driver is handed what this
  side knows of the board (``LinkMemory``: the picture, the newest event id, the recent
  events), so the board's re-delivered events are recognised as duplicates and a board
  that rebooted meanwhile is reported as restarted. An event the dead child had already
  acknowledged to the board but not yet forwarded is lost; the LINK_UP/STATUS that follow
  the reconnection give the lane the fresh picture, as after any link outage.
- This process dies: the child sees its socket close (or its parent pid change) and
  exits, closing the port, so the board's watchdog trips as it must with no host.
- ``close()`` asks the child to close the port and exit, then ends it by force after a
  bounded wait: it never hangs.

``link_stats()`` returns the counters measured in the link process (the one that owns the
port: its ``max_request_gap_s`` is the silence the board saw), summed over every link
process this object ran, plus ``link_process_spawns`` and ``link_process_deaths``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from typing import Any

import structlog

import hardware
from hardware.barrier.api import (
    Barrier,
    BarrierNotice,
    BarrierState,
    BoardChange,
    BoardRestarted,
    LinkDown,
    LinkLost,
    NoticeHandler,
)
from hardware.barrier.driver import RECENT_EVENT_IDS, LinkMemory, LinkStats
from hardware.barrier.linkd import (
    Call,
    Channel,
    Close,
    Hello,
    LogMsg,
    NoticeMsg,
    Reply,
    Snapshot,
    Started,
    StatsMsg,
    StatsRequest,
)
from hardware.barrier.protocol import (
    DEFAULT_ADDRESS,
    MAX_REQUEST_INTERVAL_S,
    MAX_RETRIES,
    REPLY_TIMEOUT_S,
    BoardEvent,
    BoardInfo,
    BoardStatus,
    Door,
    Side,
    Signal,
)

#: How long ``close()`` lets the child close the port by itself before ending it.
CLOSE_GRACE_S = 3.0
#: A child that lived this long had a fair run: the next respawn starts from the short delay.
STABLE_AFTER_S = 10.0
#: Counters that are a maximum, not a sum, over successive link processes.
_MAX_STATS = frozenset({"max_request_gap_s"})


def _log_level(logger: Any) -> str:
    """The lowest level ``logger`` would emit, so the child forwards nothing it would drop."""
    check = getattr(logger, "is_enabled_for", None)
    if check is None:
        return "info"
    for name, level in (("debug", logging.DEBUG), ("info", logging.INFO),
                        ("warning", logging.WARNING)):
        with contextlib.suppress(Exception):
            if check(level):
                return name
    return "error"


class ProcessBarrier(Barrier):
    """``Barrier`` over a ``SerialBarrier`` run in a link process of its own.

    The arguments are ``SerialBarrier``'s, passed on to the driver in the child; the
    others tune the process: ``respawn_min_s``/``respawn_max_s`` bound the back-off
    between restarts of a dying link process, ``start_timeout_s`` bounds ``start()``,
    ``python`` is the interpreter to run it with (default: this one).
    """

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
        respawn_min_s: float = 0.2,
        respawn_max_s: float = 5.0,
        start_timeout_s: float = 15.0,
        python: str | None = None,
    ) -> None:
        if poll_interval_s > MAX_REQUEST_INTERVAL_S:
            raise ValueError("poll_interval_s above the contract's 250 ms")
        if not 0 < respawn_min_s <= respawn_max_s:
            raise ValueError("need 0 < respawn_min_s <= respawn_max_s")
        self.url = url
        self.address = address
        self._reply_timeout_s = reply_timeout_s
        self._retries = retries
        self._poll_interval_s = poll_interval_s
        self._watchdog_ms = watchdog_ms
        self._reconnect_interval_s = reconnect_interval_s
        self._respawn_min_s = respawn_min_s
        self._respawn_max_s = respawn_max_s
        self._start_timeout_s = start_timeout_s
        self._python = python or sys.executable
        self._root_log = logger or structlog.get_logger("hardware.barrier")
        self._log = self._root_log.bind(port=url, board_address=address)

        self._lock = threading.RLock()
        self._snapshot = Snapshot()
        # call id -> (what the caller asked, the future it waits on)
        self._pending: dict[int, tuple[str, concurrent.futures.Future[Any]]] = {}
        self._ids: Iterator[int] = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._child_pid: int | None = None
        # What this side knows of the board, for a respawned child (see LinkMemory).
        self._recent: OrderedDict[int, BoardEvent] = OrderedDict()
        self._board_last_id = 0
        # Counters: those of dead children, the live child's latest, our own.
        self._stats_done: dict[str, float] = {}
        self._stats_live: dict[str, float] = {}
        self._spawns = 0
        self._deaths = 0
        self._downs_by_death = 0

        self._handlers: list[NoticeHandler] = []
        self._notices: queue.Queue[BarrierNotice | None] | None = None
        self._stopping = threading.Event()
        self._first_attempt = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._notice_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the link process; return once its first connection attempt is over."""
        if self._supervisor is not None:
            return
        self._stopping.clear()
        self._first_attempt.clear()
        with self._lock:
            self._snapshot = Snapshot()
        notices: queue.Queue[BarrierNotice | None] = queue.Queue()
        self._notices = notices
        self._notice_thread = threading.Thread(
            target=self._dispatch_notices, args=(notices,), name="barrier-notices",
            daemon=True)
        self._notice_thread.start()
        self._supervisor = threading.Thread(target=self._supervise, name="barrier-link",
                                            daemon=True)
        self._supervisor.start()
        self._first_attempt.wait(timeout=self._start_timeout_s)

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            proc, channel = self._proc, self._channel
        if proc is not None and channel is not None:
            self._end_child(proc, channel)
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=CLOSE_GRACE_S + 3.0)
        self._supervisor = None
        with self._lock:
            proc, channel = self._proc, self._channel  # one spawned while we were closing
        if proc is not None and channel is not None:
            self._end_child(proc, channel, grace_s=0.0)
        self._fail_pending("barrier closed")
        notices = self._notices
        if notices is not None:
            # As SerialBarrier: notices not yet delivered are dropped, the subscriber is
            # shutting down too and a slow handler must not keep close() waiting.
            while not notices.empty():
                with contextlib.suppress(Exception):
                    notices.get_nowait()
            notices.put(None)
        thread = self._notice_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._notice_thread = None
        with self._lock:
            self._snapshot = replace(self._snapshot, link_up=False, link_detail="closed")

    def subscribe(self, handler: NoticeHandler) -> None:
        self._handlers = [*self._handlers, handler]

    def unsubscribe(self, handler: NoticeHandler) -> None:
        self._handlers = [h for h in self._handlers if h is not handler]

    # ------------------------------------------------------------------ mirrored state

    @property
    def link_up(self) -> bool:
        return bool(self._snapshot.link_up)

    @property
    def link_detail(self) -> str:
        """Why the link is down ("" while it is up)."""
        snap = self._snapshot
        return "" if snap.link_up else snap.link_detail

    @property
    def status(self) -> BoardStatus | None:
        """The picture in protocol v1's own terms (for wire-level tools and tests)."""
        return self._snapshot.status

    @property
    def state(self) -> BarrierState | None:
        status = self._snapshot.status
        return status.state() if status is not None else None

    @property
    def board_info(self) -> BoardInfo | None:
        return self._snapshot.board_info

    @property
    def child_pid(self) -> int | None:
        """The link process's pid while one runs (for diagnostics and tests)."""
        return self._child_pid

    @property
    def stats(self) -> LinkStats:
        """``link_stats()`` as the driver's ``LinkStats`` (summed over link processes)."""
        merged = self.link_stats()
        kwargs = {f.name: type(getattr(LinkStats(), f.name))(merged.get(f.name, 0))
                  for f in fields(LinkStats)}
        return LinkStats(**kwargs)

    def link_stats(self, timeout_s: float = 1.0) -> dict[str, float]:
        """The link counters, fresh from the link process when it answers within
        ``timeout_s`` (else as it last pushed them, at most 0.5 s old)."""
        with contextlib.suppress(LinkDown, concurrent.futures.TimeoutError):
            self._request(StatsRequest, "link statistics", timeout_s=timeout_s,
                          needs_link=False)
        with self._lock:
            merged = dict(self._stats_done)
            for key, value in self._stats_live.items():
                if key in _MAX_STATS:
                    merged[key] = max(merged.get(key, 0.0), value)
                else:
                    merged[key] = merged.get(key, 0) + value
            merged["link_downs"] = merged.get("link_downs", 0) + self._downs_by_death
            merged["link_process_spawns"] = self._spawns
            merged["link_process_deaths"] = self._deaths
        merged.setdefault("requests", 0)
        merged.setdefault("max_request_gap_s", 0.0)
        return merged

    # ------------------------------------------------------------------ commands

    def open_door(self, door: Door) -> None:
        self._call(f"DOOR {door.name} open", "open_door", door)

    def close_door(self, door: Door) -> None:
        self._call(f"DOOR {door.name} close", "close_door", door)

    def set_lamp(self, side: Side, signal: Signal) -> None:
        self._call(f"LAMP {side.name} {signal.name}", "set_lamp", side, signal)

    def reset_faults(self) -> bool:
        return bool(self._call("RESET_FAULTS", "reset_faults"))

    def configure_watchdog(self, watchdog_ms: int) -> None:
        self._call(f"CONFIG {watchdog_ms} ms", "configure_watchdog", watchdog_ms)
        self._watchdog_ms = watchdog_ms  # a respawned link process applies it again

    def info(self) -> BoardInfo:
        info = self._call("GET_INFO", "info")
        assert isinstance(info, BoardInfo)
        return info

    def refresh_status(self) -> BoardStatus:
        status = self._call("refresh STATUS", "refresh_status")
        assert isinstance(status, BoardStatus)
        return status

    def refresh_state(self) -> BarrierState:
        return self.refresh_status().state()

    def _call(self, name: str, method: str, *args: Any) -> Any:
        # As SerialBarrier: the worst case of the jobs queued before this one, each with its
        # retries, and a poll; plus the way to the link process and back.
        attempt_s = self._reply_timeout_s * (self._retries + 1)
        try:
            return self._request(lambda call_id: Call(call_id, method, args), name,
                                 timeout_s=10.0 + 4 * attempt_s + 5.0)
        except concurrent.futures.TimeoutError:
            raise LinkDown(f"{name}: no answer from the barrier link process") from None

    def _request(self, build: Callable[[int], object], name: str, *, timeout_s: float,
                 needs_link: bool = True) -> Any:
        """Send what ``build(call_id)`` makes and wait for the answer with that id."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            channel = self._channel
            snap = self._snapshot
            if channel is None or (needs_link and not snap.link_up):
                detail = snap.link_detail if channel is not None else "link process not running"
                raise LinkDown(f"{name}: link down ({detail})")
            call_id = next(self._ids)
            self._pending[call_id] = (name, future)
        try:
            channel.send(build(call_id))
        except OSError as exc:
            with self._lock:
                self._pending.pop(call_id, None)
            raise LinkDown(f"{name}: link process unreachable ({exc})") from None
        try:
            return future.result(timeout=timeout_s)
        finally:
            with self._lock:
                self._pending.pop(call_id, None)

    def _fail_pending(self, detail: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for name, future in pending.values():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(LinkDown(f"{name}: link down ({detail})"))

    # ------------------------------------------------------------------ the link process

    def _memory(self) -> LinkMemory:
        with self._lock:
            return LinkMemory(status=self._snapshot.status, board_last_id=self._board_last_id,
                              recent=tuple(self._recent.values()))

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Channel]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # The child must find this very package, whatever the working directory.
        root = os.path.dirname(os.path.dirname(os.path.abspath(hardware.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, env.get("PYTHONPATH", "")) if p)
        try:
            proc = subprocess.Popen(
                [self._python, "-m", "hardware.barrier.linkd", "--fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=env, close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        channel = Channel(ours)
        hello = Hello(
            url=self.url, address=self.address, reply_timeout_s=self._reply_timeout_s,
            retries=self._retries, poll_interval_s=self._poll_interval_s,
            watchdog_ms=self._watchdog_ms, reconnect_interval_s=self._reconnect_interval_s,
            parent_pid=os.getpid(), memory=self._memory(),
            log_level=_log_level(self._log))
        with contextlib.suppress(OSError):  # it died at once: the reader sees EOF
            channel.send(hello)
        return proc, channel

    def _supervise(self) -> None:
        """Run a link process, serve it until it ends, start another unless closing."""
        delay = self._respawn_min_s
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                proc, channel = self._spawn()
            except OSError as exc:
                self._child_gone(f"cannot start the link process: {exc}", died=False)
            else:
                with self._lock:
                    self._proc, self._channel = proc, channel
                    self._child_pid = proc.pid
                    self._spawns += 1
                self._log.info("barrier.link_process_started", link_pid=proc.pid)
                if self._stopping.is_set():
                    self._end_child(proc, channel, grace_s=0.0)
                self._serve(channel)
                rc = self._reap(proc)
                with self._lock:
                    self._proc = self._channel = None
                    self._child_pid = None
                channel.close()
                if self._stopping.is_set():
                    break
                self._child_gone(f"link process exited ({_describe_rc(rc)})", died=True)
            if time.monotonic() - began >= STABLE_AFTER_S:
                delay = self._respawn_min_s
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self._respawn_max_s)
        self._first_attempt.set()

    def _serve(self, channel: Channel) -> None:
        while True:
            try:
                message = channel.recv()
            except (EOFError, OSError):
                return
            except Exception:
                self._log.exception("barrier.link_process_bad_message")
                return
            try:
                self._on_message(message)
            except Exception:
                self._log.exception("barrier.link_process_message_failed")

    def _on_message(self, message: object) -> None:
        if isinstance(message, NoticeMsg):
            notice = message.notice
            with self._lock:
                self._snapshot = message.snapshot
                self._remember(notice)
            if self._notices is not None:
                self._notices.put(notice)
        elif isinstance(message, Reply):
            with self._lock:
                self._snapshot = message.snapshot
                entry = self._pending.get(message.call_id)
            future = entry[1] if entry is not None else None
            # InvalidStateError: the caller's wait ended meanwhile (closed, child gone)
            if future is not None:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    if message.ok:
                        future.set_result(message.value)
                    else:
                        future.set_exception(message.value)
        elif isinstance(message, StatsMsg):
            with self._lock:
                self._snapshot = message.snapshot
                self._stats_live = dict(message.stats)
                entry = (self._pending.get(message.call_id)
                         if message.call_id is not None else None)
            future = entry[1] if entry is not None else None
            if future is not None:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_result(None)
        elif isinstance(message, LogMsg):
            log = getattr(self._root_log, message.level, None)
            if log is not None:
                log(message.event, link_pid=self._child_pid, **message.fields)
        elif isinstance(message, Started):
            with self._lock:
                self._snapshot = message.snapshot
            self._first_attempt.set()

    def _remember(self, notice: BarrierNotice) -> None:
        """Keep what a successor needs from the notices as they arrive (see LinkMemory).

        The newest id comes from what was *delivered* here, never from the child's later
        state: an id the child knew but had not forwarded would make the board's resend of
        that event look like ids going backwards, a false restart.
        """
        if isinstance(notice, BoardRestarted):
            self._recent.clear()
        if notice.state is not None and notice.state.last_event_id:
            self._board_last_id = notice.state.last_event_id
        if isinstance(notice, BoardChange) and notice.raw:
            event = BoardEvent.unpack(notice.raw)
            self._board_last_id = event.event_id
            self._recent[event.event_id] = event
            self._recent.move_to_end(event.event_id)
            while len(self._recent) > RECENT_EVENT_IDS:
                self._recent.popitem(last=False)

    def _child_gone(self, detail: str, *, died: bool) -> None:
        with self._lock:
            for key, value in self._stats_live.items():
                if key in _MAX_STATS:
                    self._stats_done[key] = max(self._stats_done.get(key, 0.0), value)
                else:
                    self._stats_done[key] = self._stats_done.get(key, 0) + value
            self._stats_live = {}
            if died:
                self._deaths += 1
            was = self._snapshot.link_up
            self._snapshot = replace(self._snapshot, link_up=False, link_detail=detail)
            if was is not False:
                self._downs_by_death += 1
            status = self._snapshot.status
        self._log.warning("barrier.link_process_gone", detail=detail)
        self._fail_pending(detail)
        if was is not False and self._notices is not None:
            self._log.warning("barrier.link_down", detail=detail)
            self._notices.put(LinkLost(state=status.state() if status is not None else None,
                                       detail=detail))
        self._first_attempt.set()

    def _end_child(self, proc: subprocess.Popen[bytes], channel: Channel,
                   grace_s: float = CLOSE_GRACE_S) -> None:
        """Ask the child to close the port and go; after ``grace_s``, end it by force."""
        if grace_s > 0:
            with contextlib.suppress(OSError):
                channel.send(Close())
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2.0)
        channel.shutdown()  # the supervisor's reader gets EOF, whatever the child did

    def _reap(self, proc: subprocess.Popen[bytes]) -> int | None:
        try:
            return proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            # Its socket ended but it did not: it cannot be trusted with the port.
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                return proc.wait(timeout=2.0)
        return None

    # ------------------------------------------------------------------ notices

    def _dispatch_notices(self, notices: queue.Queue[BarrierNotice | None]) -> None:
        while True:
            notice = notices.get()
            if notice is None:
                return
            for handler in self._handlers:
                try:
                    handler(notice)
                except Exception:
                    self._log.exception("barrier.notice_handler_failed",
                                        notice=type(notice).__name__)


def _describe_rc(rc: int | None) -> str:
    if rc is None:
        return "did not end"
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
        return f"killed by signal {-rc}"
    return f"exit status {rc}"
