"""A second barrier board, written from the protocol page alone, to test the host driver.

It is deliberately *not* ``sim/board.py`` and shares no code with ``hardware.barrier``
(own CRC, own frame parser): a driver that only works against our own simulator, or a
codec bug mirrored on both sides, shows up here. It also differs where the contract
leaves room: a non-default address, slower replies (~15 ms), doors that travel faster
(or instantly), event ids that start near the wrap, a watchdog that arms only with the
first request, and different firmware/serial strings.

It serves on a real pseudo-terminal from its own thread and can be told to misbehave:
drop or corrupt the next N replies, send decoy replies (another ADDR, a stale SEQ),
re-deliver an acknowledged event, burst events into an overflow, reboot with or
without the RESTARTED event, go silent, or vanish from its device path and come back.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import struct
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_SOF = 0xA5


def _make_crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n << 8
        for _ in range(8):
            c = (c << 1) ^ 0x1021 if c & 0x8000 else c << 1
        table.append(c & 0xFFFF)
    return table


_CRC_TABLE = _make_crc_table()


def crc_ccitt(data: bytes) -> int:
    """Table-driven CRC-16/CCITT-FALSE (the codec under test computes it bit by bit)."""
    crc = 0xFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def build_frame(addr: int, seq: int, kind: int, payload: bytes = b"") -> bytes:
    body = struct.pack("BBBB", addr, seq, kind, len(payload)) + payload
    return bytes([_SOF]) + body + struct.pack(">H", crc_ccitt(body))


# door states / flags / event codes as the page numbers them
CLOSED, OPENING, OPEN, CLOSING = 0, 1, 2, 3
F_EMERGENCY, F_WATCHDOG, F_OVERFLOW = 0x01, 0x02, 0x40
EV_DOOR, EV_ZONE, EV_BEAMS, EV_WATCHDOG, EV_RESTARTED = 0x01, 0x02, 0x03, 0x08, 0x09
NAK_UNKNOWN, NAK_PAYLOAD, NAK_FAULT, NAK_NOT_ALLOWED = 2, 3, 4, 5


@dataclass
class _Door:
    state: int = CLOSED
    target: int = CLOSED
    arrives_at: float = 0.0


@dataclass
class Received:
    """One well-formed request seen by the board (its raw bytes and arrival time)."""

    at: float
    raw: bytes
    seq: int
    kind: int
    payload: bytes
    duplicate: bool


@dataclass
class ForeignFaults:
    drop_reply: float = 0.0
    corrupt_reply: float = 0.0
    noise: float = 0.0


@dataclass
class _Counters:
    drop_next: int = 0
    corrupt_next: int = 0
    decoy_next: int = 0
    redeliver_next: int = 0
    watchdog_trips: int = 0
    replies_dropped: int = 0
    replies_corrupted: int = 0
    noise_bursts: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class ForeignBoard:
    def __init__(
        self,
        *,
        address: int = 0x07,
        reply_delay_s: float = 0.015,
        open_s: float = 0.25,
        close_s: float = 0.15,
        first_event_id: int = 65530,
        watchdog_ms: int = 1000,
        firmware: str = "acme-gatectl 4.2",
        serial: str = "ACME-0042",
        link_dir: str | None = None,
        faults: ForeignFaults | None = None,
        seed: int = 7,
        interlock: bool = True,
    ) -> None:
        self.address = address
        self.reply_delay_s = reply_delay_s
        self.open_s = open_s
        self.close_s = close_s
        self.watchdog_ms = watchdog_ms
        self.firmware = firmware
        self.serial = serial
        self.faults = faults or ForeignFaults()
        self.interlock = interlock  # False: a non-conforming board, for the self-test
        self._rng = random.Random(seed)
        self._dir = link_dir or tempfile.mkdtemp(prefix="foreign-board-")
        self.path = os.path.join(self._dir, "ttyBARRIER")

        self.received: list[Received] = []
        self.executed: list[tuple[int, int, bytes]] = []
        self.rx_bytes = bytearray()
        self.counters = _Counters()
        self.watchdog_trip_times: list[float] = []

        self._master: int | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._slave: int | None = None
        self._rxbuf = bytearray()
        self._rx_last = 0.0
        self._last_request: bytes | None = None
        self._last_reply: bytes | None = None
        self._muted = False
        self._armed_at: float | None = None  # watchdog armed by the first request
        self._tripped = False

        self.doors = {1: _Door(), 2: _Door()}
        self.lamps = {1: 0, 2: 0}
        self.zone_count = 0
        self.beams = 0
        self.flags = 0
        self.persistent_fault = False  # RESET_FAULTS then answers NAK FAULT_ACTIVE
        self._events: deque[tuple[int, int, int, int]] = deque()
        self._next_id = first_event_id
        self._last_id = 0
        self._boot = time.monotonic()

        self._todo: deque[tuple[Callable[[], Any], threading.Event, list[Any]]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> str:
        self._plug()
        self._thread = threading.Thread(target=self._serve, name="foreign-board", daemon=True)
        self._thread.start()
        return self.path

    def start_tcp(self) -> str:
        """Serve one TCP client instead of a pty (a serial server in the cabinet);
        returns the pyserial URL."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, name="foreign-board", daemon=True)
        self._thread.start()
        return f"socket://127.0.0.1:{self._listener.getsockname()[1]}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._unplug()

    def _do(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the board thread, between two requests, and wait for it."""
        done = threading.Event()
        out: list[Any] = []
        self._todo.append((fn, done, out))
        if not done.wait(2.0):
            raise TimeoutError("foreign board thread does not answer")
        return out[0] if out else None

    def drop_next_replies(self, n: int) -> None:
        self._do(lambda: setattr(self.counters, "drop_next", n))

    def corrupt_next_replies(self, n: int) -> None:
        self._do(lambda: setattr(self.counters, "corrupt_next", n))

    def decoy_next_replies(self, n: int) -> None:
        self._do(lambda: setattr(self.counters, "decoy_next", n))

    def redeliver_events(self, polls: int) -> None:
        """The next ``polls`` POLLs' acknowledgements are ignored: events come again."""
        self._do(lambda: setattr(self.counters, "redeliver_next", polls))

    def mute(self, on: bool) -> None:
        self._do(lambda: setattr(self, "_muted", on))

    def inject_events(self, code: int, args: list[int], *, redeliver: int = 0) -> None:
        """Queue events at once; ``redeliver`` POLLs after that ignore their ack."""

        def work() -> None:
            for arg in args:
                self._queue(code, arg)
            self.counters.redeliver_next = redeliver

        self._do(work)

    def set_zone(self, count: int) -> None:
        def work() -> None:
            self.zone_count = count
            self._queue(EV_ZONE, count)

        self._do(work)

    def reboot(self, *, announce: bool = True) -> None:
        def work() -> None:
            self.doors = {1: _Door(), 2: _Door()}
            self.lamps = {1: 0, 2: 0}
            self.flags = 0
            self._events.clear()
            self._next_id = 1
            self._last_id = 0
            self._last_request = self._last_reply = None
            self._rxbuf.clear()
            self._armed_at = None
            self._tripped = False
            self.watchdog_ms = 1000
            self._boot = time.monotonic()
            if announce:
                self._queue(EV_RESTARTED, 0)

        self._do(work)

    def unplug(self) -> None:
        self._do(self._unplug)

    def replug(self) -> None:
        self._do(self._plug)

    def requests_of(self, kind: int) -> list[Received]:
        return [r for r in list(self.received) if r.kind == kind]

    # ------------------------------------------------------------------ the pty

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # raw before the host opens it: no echo, no line editing
        self._master, self._slave = master, slave
        tmp = self.path + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)

    def _unplug(self) -> None:
        if self._listener is not None:
            for sock in (self._client, self._listener):
                if sock is not None:
                    sock.close()
            self._client = self._listener = None
            self._master = None
            return
        if os.path.lexists(self.path):
            os.unlink(self.path)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        self._rxbuf.clear()

    # ------------------------------------------------------------------ board thread

    def _serve(self) -> None:
        while not self._stop.is_set():
            while self._todo:
                fn, done, out = self._todo.popleft()
                out.append(fn())
                done.set()
            self._physics(time.monotonic())
            if self._listener is not None and self._client is None:
                waiting, _, _ = select.select([self._listener], [], [], 0.005)
                if waiting:
                    self._client, _ = self._listener.accept()
                    self._master = self._client.fileno()
                continue
            master = self._master
            if master is None:
                time.sleep(0.005)
                continue
            ready, _, _ = select.select([master], [], [], 0.005)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                time.sleep(0.005)
                continue
            now = time.monotonic()
            if self._rxbuf and now - self._rx_last > 0.020:
                self._rxbuf.clear()  # a gap inside a frame abandons it
            self._rx_last = now
            self.rx_bytes += chunk
            self._rxbuf += chunk
            for raw in self._frames():
                self._on_request(raw, now)

    def _frames(self) -> list[bytes]:
        out: list[bytes] = []
        buf = self._rxbuf
        while True:
            i = buf.find(bytes([_SOF]))
            if i < 0:
                buf.clear()
                return out
            del buf[:i]
            if len(buf) < 5:
                return out
            n = buf[4]
            if n > 200:
                del buf[:1]
                continue
            if len(buf) < n + 7:
                return out
            raw = bytes(buf[: n + 7])
            if crc_ccitt(raw[1 : n + 5]) != struct.unpack(">H", raw[n + 5 :])[0]:
                del buf[:1]
                continue
            del buf[: n + 7]
            out.append(raw)

    def _on_request(self, raw: bytes, now: float) -> None:
        addr, seq, kind, _n = raw[1], raw[2], raw[3], raw[4]
        payload = raw[5:-2]
        if addr != self.address:
            return
        duplicate = raw == self._last_request
        self.received.append(Received(now, raw, seq, kind, payload, duplicate))
        self._armed_at = now
        self._tripped = False
        if self._muted:
            return
        if duplicate and self._last_reply is not None:
            reply = self._last_reply
        else:
            self.executed.append((seq, kind, payload))
            rkind, rpayload = self._execute(kind, payload)
            reply = build_frame(self.address, seq, rkind, rpayload)
            self._last_request, self._last_reply = raw, reply
        time.sleep(self.reply_delay_s)
        self._transmit(reply, seq)

    def _transmit(self, reply: bytes, seq: int) -> None:
        c = self.counters
        if c.drop_next > 0 or self._rng.random() < self.faults.drop_reply:
            c.drop_next = max(0, c.drop_next - 1)
            c.replies_dropped += 1
            return
        out = bytearray()
        if self._rng.random() < self.faults.noise:
            c.noise_bursts += 1
            out += bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(1, 12)))
        if c.decoy_next > 0:
            c.decoy_next -= 1
            nak = bytes([NAK_NOT_ALLOWED])
            out += build_frame((self.address + 1) & 0xFF, seq, 0x8F, nak)  # another board
            out += build_frame(self.address, (seq - 1) & 0xFF, 0x8F, nak)  # a stale SEQ
        body = bytearray(reply)
        if c.corrupt_next > 0 or self._rng.random() < self.faults.corrupt_reply:
            c.corrupt_next = max(0, c.corrupt_next - 1)
            c.replies_corrupted += 1
            body[self._rng.randrange(1, len(body))] ^= 0x10
        out += body
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, bytes(out))

    # ------------------------------------------------------------------ behaviour

    def _queue(self, code: int, arg: int) -> None:
        eid = self._next_id
        self._next_id = 1 if eid == 0xFFFF else eid + 1
        self._last_id = eid
        uptime = int((time.monotonic() - self._boot) * 1000) & 0xFFFFFFFF
        self._events.append((eid, code, arg, uptime))
        if len(self._events) > 64:
            self._events.popleft()
            self.flags |= F_OVERFLOW

    def _status(self) -> bytes:
        return struct.pack(">BBBBHH", self.doors[1].state, self.doors[2].state,
                           self.zone_count, self.beams, self.flags, self._last_id)

    def _execute(self, kind: int, p: bytes) -> tuple[int, bytes]:
        if kind == 0x01 and len(p) == 2:  # POLL
            ack = struct.unpack(">H", p)[0]
            ids = [e[0] for e in self._events]
            if self.counters.redeliver_next > 0:
                self.counters.redeliver_next -= 1
            elif ack in ids:
                for _ in range(ids.index(ack) + 1):
                    self._events.popleft()
            if self._events:
                return 0x82, struct.pack(">HBBI", *self._events[0])
            return 0x81, self._status()
        if kind == 0x02 and not p:  # GET_INFO
            text = f"{self.firmware};{self.serial}".encode()
            return 0x83, struct.pack(">BH", 1, self.watchdog_ms) + text
        if kind == 0x10 and len(p) == 2:  # DOOR
            return self._door_request(p[0], p[1])
        if kind == 0x11 and len(p) == 2:  # LAMP
            if p[0] not in (1, 2) or p[1] > 5:
                return 0x8F, bytes([NAK_PAYLOAD])
            self.lamps[p[0]] = p[1]
            return 0x80, b""
        if kind == 0x13 and len(p) == 2:  # CONFIG
            ms = struct.unpack(">H", p)[0]
            if not 200 <= ms <= 10000:
                return 0x8F, bytes([NAK_PAYLOAD])
            self.watchdog_ms = ms
            return 0x80, b""
        if kind == 0x14 and not p:  # RESET_FAULTS
            self.flags &= ~(F_WATCHDOG | F_OVERFLOW)
            return (0x8F, bytes([NAK_FAULT])) if self.persistent_fault else (0x80, b"")
        if kind in (0x01, 0x02, 0x10, 0x11, 0x13, 0x14):
            return 0x8F, bytes([NAK_PAYLOAD])
        return 0x8F, bytes([NAK_UNKNOWN])

    def _door_request(self, door: int, action: int) -> tuple[int, bytes]:
        if door not in (1, 2) or action not in (0, 1):
            return 0x8F, bytes([NAK_PAYLOAD])
        if self.flags & (F_EMERGENCY | F_WATCHDOG):
            return 0x8F, bytes([NAK_FAULT])
        d = self.doors[door]
        if action == 1:
            if d.state in (OPEN, OPENING):
                return 0x80, b""
            if self.interlock and self.doors[3 - door].state != CLOSED:
                return 0x8F, bytes([NAK_NOT_ALLOWED])
            self._move(door, OPEN, OPENING, self.open_s)
        else:
            if d.state in (CLOSED, CLOSING):
                return 0x80, b""
            self._move(door, CLOSED, CLOSING, self.close_s)
        return 0x80, b""

    def _move(self, door: int, target: int, moving: int, travel_s: float) -> None:
        d = self.doors[door]
        d.target = target
        if travel_s <= 0:
            d.state = target
            self._queue(EV_DOOR, door << 4 | target)
        else:
            d.state = moving
            d.arrives_at = time.monotonic() + travel_s
            self._queue(EV_DOOR, door << 4 | moving)

    def _physics(self, now: float) -> None:
        for number, d in self.doors.items():
            if d.state != d.target and now >= d.arrives_at:
                d.state = d.target
                self._queue(EV_DOOR, number << 4 | d.state)
        if (self._armed_at is not None and not self._tripped
                and now - self._armed_at > self.watchdog_ms / 1000):
            self._tripped = True
            self.counters.watchdog_trips += 1
            self.watchdog_trip_times.append(now)
            self.flags |= F_WATCHDOG
            self.lamps = {1: 5, 2: 5}
            for number, d in self.doors.items():
                if d.state != CLOSED:
                    self._move(number, CLOSED, CLOSING, self.close_s)
            self._queue(EV_WATCHDOG, 0)
