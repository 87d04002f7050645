"""The lane's and the station's ends of the row bus: NATS with JetStream (``nats-py``).

Subjects (``<lane>`` is the lane id):

- ``gate.lane.<lane>.state`` — lane → station, core NATS, the lane's state and heartbeat
  (nothing personal); lost while disconnected, by design: the next one replaces it;
- ``gate.cases.<lane>`` — lane → station, the JetStream stream ``GATE_CASES``: sealed cases
  (images encrypted on the lane), de-duplicated by case id (``Nats-Msg-Id``); the lane's
  spool deletes a case only once the stream has acknowledged it
  (:class:`JetStreamCaseSink`), the station writes it to the store idempotently and only
  then acknowledges it to the stream;
- ``gate.cmd.<lane>`` — station → lane, request/reply, never persisted and never buffered:
  both ends connect with ``pending_size=0``, so a command sent while the connection is
  down fails at once instead of going out late (``../shared/docs/lane-row.md``: a buffered
  release arrived 2.71 s after it was issued);
- ``gate.station.heartbeat`` — station → lanes, core NATS, once a second: a lane that has
  not heard it for ``unsupervised_after_s`` stops admitting travellers.

Each end runs its own asyncio loop in a daemon thread; the public methods are plain
blocking calls with timeouts, safe from any thread, and never raise on a broker that is
down: they answer with a named outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, StreamConfig

from gate.review.store import SealedCase, StoreUnavailable
from gate.row.commands import LANE_UNREACHABLE, Answer, LaneCommands

log = structlog.get_logger(__name__)

STREAM = "GATE_CASES"
CASE_SUBJECTS = "gate.cases.*"
HEARTBEAT = "gate.station.heartbeat"
#: the duplicate window of the case stream: a spool re-sending within it adds nothing
DUPLICATE_WINDOW_S = 24 * 3600.0
#: a case the station took but neither acknowledged nor refused (it died meanwhile) is
#: delivered again after this long
ACK_WAIT_S = 10.0
T = TypeVar("T")


def state_subject(lane: str) -> str:
    return f"gate.lane.{lane}.state"


def case_subject(lane: str) -> str:
    return f"gate.cases.{lane}"


def command_subject(lane: str) -> str:
    return f"gate.cmd.{lane}"


class AsyncLoop:
    """An asyncio loop in a daemon thread, and a blocking ``call`` into it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)


async def _connect(url: str, name: str, tls: ssl.SSLContext | None,
                   callbacks: dict[str, Callable[..., Awaitable[None]]]) -> Client:
    """Connect, trying again every half second while the broker is not there yet (a lane
    starts without its broker and joins when it comes)."""
    while True:
        try:
            return await nats.connect(
                servers=[url], name=name, tls=tls, pending_size=0, connect_timeout=1,
                inbox_prefix=f"_INBOX.{name}".encode(),
                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                ping_interval=2, max_outstanding_pings=2, **callbacks)
        except Exception as exc:  # NoServersError, OSError, TLS errors
            log.warning("bus_connect_failed", end=name, reason="BUS_UNAVAILABLE",
                        error=type(exc).__name__)
            await asyncio.sleep(0.5)


async def _ensure_stream(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=[CASE_SUBJECTS],
                                     duplicate_window=DUPLICATE_WINDOW_S))


class _End:
    """What both ends share: the loop, the connection, its state."""

    def __init__(self, url: str, name: str, tls: ssl.SSLContext | None) -> None:
        self.url, self.name, self._tls = url, name, tls
        self._loop = AsyncLoop(name)
        self._nc: Client | None = None
        self.connected = False

    def _callbacks(self) -> dict[str, Callable[..., Awaitable[None]]]:
        async def disconnected() -> None:
            self.connected = False
            log.warning("bus_disconnected", end=self.name, reason="BUS_UNAVAILABLE")

        async def reconnected() -> None:
            self.connected = True
            log.info("bus_reconnected", end=self.name)

        async def error(exc: Exception) -> None:
            log.warning("bus_error", end=self.name, error=type(exc).__name__)

        return {"disconnected_cb": disconnected, "reconnected_cb": reconnected,
                "error_cb": error}

    def _start(self, setup: Callable[[Client], Coroutine[Any, Any, None]],
               timeout: float) -> None:
        async def go() -> None:
            nc = await _connect(self.url, self.name, self._tls, self._callbacks())
            try:
                await setup(nc)
            except Exception as exc:
                log.error("bus_setup_failed", end=self.name, error=type(exc).__name__,
                          detail=str(exc))
                raise
            self._nc = nc
            self.connected = nc.is_connected

        self._loop.spawn(go())
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.connected:
            time.sleep(0.02)

    def close(self) -> None:
        async def bye() -> None:
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()

        with contextlib.suppress(Exception):
            self._loop.call(bye(), 3.0)
        self._loop.stop()


class LaneLink(_End):
    """The lane's end: publishes state, answers commands, hears the station."""

    def __init__(self, url: str, lane_id: str, commands: LaneCommands, *,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(url, f"lane-{lane_id}", tls)
        self.lane_id, self.commands = lane_id, commands
        self._station_seen: float | None = None

    def start(self, timeout: float = 2.0) -> LaneLink:
        async def setup(nc: Client) -> None:
            async def on_command(msg: Msg) -> None:
                answer = await asyncio.get_running_loop().run_in_executor(
                    None, self.commands.handle, msg.data)
                log.info("command_answered", lane=self.lane_id, acted=answer.acted,
                         reason=answer.reason, command_id=answer.command_id)
                with contextlib.suppress(Exception):
                    await msg.respond(answer.to_bytes())

            async def on_heartbeat(msg: Msg) -> None:
                self._station_seen = time.monotonic()

            await nc.subscribe(command_subject(self.lane_id), cb=on_command)
            await nc.subscribe(HEARTBEAT, cb=on_heartbeat)

        self._start(setup, timeout)
        return self

    def station_silent_s(self) -> float:
        """Seconds since the station's last heartbeat (infinite: never heard)."""
        seen = self._station_seen
        return math.inf if seen is None else time.monotonic() - seen

    def publish_state(self, state: dict[str, Any]) -> bool:
        """Fire and forget; False when the bus is down (the next state replaces it)."""
        nc = self._nc
        if nc is None or not self.connected:
            return False
        body = json.dumps({**state, "lane": self.lane_id, "sent_at": time.time()}).encode()
        try:
            self._loop.call(nc.publish(state_subject(self.lane_id), body), 1.0)
            return True
        except Exception:
            return False

    def case_sink(self) -> JetStreamCaseSink:
        return JetStreamCaseSink(self)

    def _publish_case(self, case: SealedCase, timeout: float) -> bool:
        nc = self._nc
        if nc is None or not self.connected:
            raise StoreUnavailable("BUS_UNAVAILABLE: not connected to the broker")

        async def publish() -> bool:
            js = nc.jetstream()
            ack = await js.publish(case_subject(self.lane_id), case.to_json().encode(),
                                   timeout=timeout, headers={"Nats-Msg-Id": case.case_id})
            return not ack.duplicate

        try:
            return self._loop.call(publish(), timeout + 1.0)
        except Exception as exc:
            raise StoreUnavailable(f"BUS_UNAVAILABLE: {type(exc).__name__}") from None


class JetStreamCaseSink:
    """The lane spool's store when the lane is one of a row: ``add_case`` returns once the
    stream has the case (then the spool deletes its file), raises StoreUnavailable when
    the broker is down or did not acknowledge it (the file stays; the spool retries)."""

    def __init__(self, link: LaneLink, timeout: float = 2.0) -> None:
        self._link, self._timeout = link, timeout

    def add_case(self, case: SealedCase) -> bool:
        return self._link._publish_case(case, self._timeout)

    def close(self) -> None:
        pass


@dataclass
class LaneView:
    lane: str
    state: dict[str, Any]
    last_seen: float  # monotonic

    def to_json(self, now: float, reachable_within_s: float) -> dict[str, Any]:
        age = now - self.last_seen
        return {**self.state, "lane": self.lane, "reachable": age <= reachable_within_s,
                "last_seen_s": round(age, 2)}


class StationLink(_End):
    """The station's end: the row's lanes, their cases into the store, commands out."""

    def __init__(self, url: str, on_case: Callable[[SealedCase], object], *,
                 tls: ssl.SSLContext | None = None, heartbeat_s: float = 1.0,
                 reachable_within_s: float = 3.0) -> None:
        super().__init__(url, "station", tls)
        self._on_case, self._heartbeat_s = on_case, heartbeat_s
        self.reachable_within_s = reachable_within_s
        self._lanes: dict[str, LaneView] = {}
        self._lock = threading.Lock()
        self.cases_stored = 0

    def start(self, timeout: float = 3.0) -> StationLink:
        async def setup(nc: Client) -> None:
            async def on_state(msg: Msg) -> None:
                try:
                    state = json.loads(msg.data)
                    lane = str(msg.subject.split(".")[2])
                except (ValueError, IndexError):
                    return
                with self._lock:
                    self._lanes[lane] = LaneView(lane, state, time.monotonic())

            await nc.subscribe("gate.lane.*.state", cb=on_state)
            await _ensure_stream(nc)
            asyncio.get_running_loop().create_task(self._beat(nc))
            asyncio.get_running_loop().create_task(self._ingest(nc))

        self._start(setup, timeout)
        return self

    async def _beat(self, nc: Client) -> None:
        while not nc.is_closed:
            with contextlib.suppress(Exception):
                if nc.is_connected:
                    await nc.publish(HEARTBEAT, json.dumps({"t": time.time()}).encode())
            await asyncio.sleep(self._heartbeat_s)

    async def _ingest(self, nc: Client) -> None:
        """Cases from the stream into the store: ack only after the store committed."""
        sub = None
        loop = asyncio.get_running_loop()
        while not nc.is_closed:
            try:
                if sub is None:
                    sub = await nc.jetstream().pull_subscribe(
                        CASE_SUBJECTS, durable="station",
                        config=ConsumerConfig(ack_wait=ACK_WAIT_S))
                msgs = await sub.fetch(16, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:
                log.warning("case_ingest_waiting", reason="BUS_UNAVAILABLE",
                            error=type(exc).__name__)
                sub = None
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    await self._take(msg, loop)
                except Exception as exc:  # an ack lost with the connection: the stream
                    # delivers the case again after ACK_WAIT_S, the store adds it once
                    log.warning("case_ack_failed", reason="BUS_UNAVAILABLE",
                                error=type(exc).__name__)
                    break

    async def _take(self, msg: Msg, loop: asyncio.AbstractEventLoop) -> None:
        try:
            case = SealedCase.from_json(msg.data.decode())
        except (ValueError, TypeError, KeyError):
            log.error("case_message_damaged", reason="CASE_MESSAGE_DAMAGED")
            await msg.term()
            return
        try:
            await loop.run_in_executor(None, self._on_case, case)
        except StoreUnavailable:
            await msg.nak(delay=1.0)  # the stream keeps it: again in a second
            return
        await msg.ack()
        self.cases_stored += 1

    def lanes(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            views = sorted(self._lanes.values(), key=lambda v: v.lane)
        return [v.to_json(now, self.reachable_within_s) for v in views]

    def reachable(self, lane: str) -> bool:
        with self._lock:
            view = self._lanes.get(lane)
        return view is not None and time.monotonic() - view.last_seen <= self.reachable_within_s

    def command(self, lane: str, data: bytes, timeout: float = 1.0) -> Answer:
        """Send one signed command; ``LANE_UNREACHABLE`` at once when the lane's heartbeat
        stopped, the broker is down or nobody answers (never queued for later)."""
        nc = self._nc
        if nc is None or not self.connected or not self.reachable(lane):
            return Answer(False, LANE_UNREACHABLE, lane)
        try:
            reply = self._loop.call(nc.request(command_subject(lane), data, timeout=timeout),
                                    timeout + 1.0)
            return Answer.from_bytes(reply.data)
        except Exception as exc:
            log.warning("command_failed", lane=lane, reason=LANE_UNREACHABLE,
                        error=type(exc).__name__)
            return Answer(False, LANE_UNREACHABLE, lane)
