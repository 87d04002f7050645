"""Barrier controller serial protocol, version 1: constants, frames and payloads.

Both sides use this module: the host driver (``hardware.barrier.driver``) and the
simulated board (``sim.board``). Nothing here does I/O; the decoder is fed bytes with
the time they arrived so that the 20 ms inter-byte gap rule can be applied by whoever
owns the clock.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from hardware.barrier.model import (
    BarrierState,
    BeamsChanged,
    BoardChange,
    Condition,
    ConditionChanged,
    Door,
    DoorAction,
    DoorMoved,
    DoorState,
    Side,
    Signal,
    ZoneCounted,
)

__all__ = ["Door", "DoorAction", "DoorState", "Side", "Signal"]  # re-exported: the v1 codes

SOF = 0xA5
DEFAULT_ADDRESS = 0x01
MAX_PAYLOAD = 200
HEADER_LEN = 5  # SOF ADDR SEQ TYPE LEN
CRC_LEN = 2
MIN_FRAME_LEN = HEADER_LEN + CRC_LEN
MAX_FRAME_LEN = HEADER_LEN + MAX_PAYLOAD + CRC_LEN
INTER_BYTE_GAP_S = 0.020
PROTOCOL_VERSION = 1

#: Host timing from the contract.
REPLY_TIMEOUT_S = 0.100
MAX_RETRIES = 3
MAX_REQUEST_INTERVAL_S = 0.250
BOARD_REPLY_WITHIN_S = 0.020
WATCHDOG_MS_DEFAULT = 1000
WATCHDOG_MS_MIN = 200
WATCHDOG_MS_MAX = 10000
EVENT_QUEUE_LEN = 64


class MsgType(enum.IntEnum):
    # requests
    POLL = 0x01
    GET_INFO = 0x02
    DOOR = 0x10
    LAMP = 0x11
    CONFIG = 0x13
    RESET_FAULTS = 0x14
    # replies
    ACK = 0x80
    STATUS = 0x81
    EVENT = 0x82
    INFO = 0x83
    NAK = 0x8F


REQUEST_TYPES = frozenset(
    {MsgType.POLL, MsgType.GET_INFO, MsgType.DOOR, MsgType.LAMP, MsgType.CONFIG,
     MsgType.RESET_FAULTS}
)


class NakReason(enum.IntEnum):
    UNKNOWN_TYPE = 2
    BAD_PAYLOAD = 3
    FAULT_ACTIVE = 4
    NOT_ALLOWED = 5


class Beam(enum.IntFlag):
    NONE = 0
    ENTRY = 1
    EXIT = 2


class Flag(enum.IntFlag):
    NONE = 0
    EMERGENCY = 1 << 0
    WATCHDOG = 1 << 1
    TAMPER = 1 << 2
    ON_UPS = 1 << 3
    DOOR_FAULT = 1 << 4
    MAINTENANCE_KEY = 1 << 5
    EVENT_OVERFLOW = 1 << 6


class EventCode(enum.IntEnum):
    DOOR_STATE = 0x01
    ZONE_COUNT = 0x02
    BEAMS = 0x03
    EMERGENCY_ON = 0x04
    EMERGENCY_OFF = 0x05
    TAMPER = 0x06
    POWER = 0x07
    WATCHDOG_TRIPPED = 0x08
    RESTARTED = 0x09
    MAINTENANCE_KEY = 0x0A


class ProtocolError(ValueError):
    """A payload that does not follow the contract."""


def crc16_ccitt_false(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    for byte in bytes(data):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@dataclass(frozen=True, slots=True)
class Frame:
    addr: int
    seq: int
    type: int
    payload: bytes = b""

    def encode(self) -> bytes:
        if not 0 <= self.seq <= 0xFF or not 0 <= self.addr <= 0xFF or not 0 <= self.type <= 0xFF:
            raise ProtocolError("header field out of range")
        if len(self.payload) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        body = bytes((self.addr, self.seq, self.type, len(self.payload))) + self.payload
        return bytes((SOF,)) + body + crc16_ccitt_false(body).to_bytes(2, "big")

    @property
    def type_name(self) -> str:
        try:
            return MsgType(self.type).name
        except ValueError:
            return f"0x{self.type:02X}"


class FrameDecoder:
    """Incremental frame scanner with resynchronisation.

    Feed it whatever the serial port returned, with the monotonic time at which the
    chunk arrived. Garbage is skipped; a candidate frame with LEN > 200 or a bad CRC
    costs only its SOF byte and scanning resumes at the next byte; a gap of more than
    20 ms inside a frame abandons the partial frame.
    """

    def __init__(self, gap_s: float = INTER_BYTE_GAP_S) -> None:
        self._buf = bytearray()
        self._last_rx: float | None = None
        self._gap_s = gap_s
        self.dropped_bytes = 0
        self.bad_crc = 0

    def reset(self) -> None:
        self.dropped_bytes += len(self._buf)
        self._buf.clear()
        self._last_rx = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes, now: float | None = None) -> Iterator[Frame]:
        if now is not None and self._last_rx is not None and self._buf and (
            now - self._last_rx > self._gap_s
        ):
            # A stale partial frame: the sender paused mid-frame. Drop its SOF and rescan
            # what remains, since the new bytes may start a fresh frame.
            self._buf = self._buf[1:]
            self.dropped_bytes += 1
            yield from self._scan(final_gap=True)
        if now is not None:
            self._last_rx = now
        self._buf.extend(data)
        yield from self._scan()

    def _scan(self, final_gap: bool = False) -> Iterator[Frame]:
        buf = self._buf
        while True:
            start = buf.find(SOF)
            if start < 0:
                self.dropped_bytes += len(buf)
                buf.clear()
                return
            if start:
                self.dropped_bytes += start
                del buf[:start]
            if len(buf) < HEADER_LEN:
                if final_gap:
                    del buf[:1]
                    self.dropped_bytes += 1
                    continue
                return
            length = buf[4]
            if length > MAX_PAYLOAD:
                del buf[:1]
                self.dropped_bytes += 1
                continue
            total = HEADER_LEN + length + CRC_LEN
            if len(buf) < total:
                if final_gap:
                    del buf[:1]
                    self.dropped_bytes += 1
                    continue
                return
            body = bytes(buf[1 : HEADER_LEN + length])
            crc = int.from_bytes(buf[HEADER_LEN + length : total], "big")
            if crc16_ccitt_false(body) != crc:
                self.bad_crc += 1
                del buf[:1]
                self.dropped_bytes += 1
                continue
            del buf[:total]
            yield Frame(addr=body[0], seq=body[1], type=body[2], payload=body[4:])


def decode_all(data: bytes) -> list[Frame]:
    """Decode every frame in a complete byte string (no timing)."""
    return list(FrameDecoder().feed(data))


# ---------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True)
class BoardStatus:
    entry: DoorState
    exit: DoorState
    zone_count: int
    beams: Beam
    flags: Flag
    last_event_id: int

    def pack(self) -> bytes:
        return struct.pack(
            ">BBBBHH", self.entry, self.exit, self.zone_count, self.beams, self.flags,
            self.last_event_id,
        )

    @classmethod
    def unpack(cls, payload: bytes) -> BoardStatus:
        if len(payload) != 8:
            raise ProtocolError(f"STATUS payload must be 8 bytes, got {len(payload)}")
        entry, exit_, zone, beams, flags, last = struct.unpack(">BBBBHH", payload)
        try:
            return cls(DoorState(entry), DoorState(exit_), zone, Beam(beams & 0x03),
                       Flag(flags & 0x7F), last)
        except ValueError as exc:
            raise ProtocolError(f"STATUS field out of range: {exc}") from exc

    def door(self, door: Door) -> DoorState:
        return self.entry if door is Door.ENTRY else self.exit

    def state(self) -> BarrierState:
        """This STATUS in the lane's terms."""
        return BarrierState(
            entry=self.entry, exit=self.exit, zone_count=self.zone_count,
            entry_beam=bool(self.beams & Beam.ENTRY), exit_beam=bool(self.beams & Beam.EXIT),
            conditions=frozenset(c for c in Condition if self.flags & Flag[c.name]),
            last_event_id=self.last_event_id)


@dataclass(frozen=True, slots=True)
class BoardEvent:
    event_id: int
    code: int
    arg: int
    uptime_ms: int

    def pack(self) -> bytes:
        return struct.pack(">HBBI", self.event_id, self.code, self.arg, self.uptime_ms)

    @classmethod
    def unpack(cls, payload: bytes) -> BoardEvent:
        if len(payload) != 8:
            raise ProtocolError(f"EVENT payload must be 8 bytes, got {len(payload)}")
        return cls(*struct.unpack(">HBBI", payload))

    @property
    def code_name(self) -> str:
        try:
            return EventCode(self.code).name
        except ValueError:
            return f"0x{self.code:02X}"

    def door_state(self) -> tuple[Door, DoorState]:
        """For DOOR_STATE events: which door and its new state."""
        return Door(self.arg >> 4), DoorState(self.arg & 0x0F)

    def notice(self, state: BarrierState | None) -> BoardChange:
        """This event in the lane's terms, with ``state`` the picture after it.

        An argument out of range (or a code this host does not know) still makes a
        notice, a plain ``BoardChange``: the next STATUS corrects the picture.
        """
        eid, raw, name = self.event_id, self.pack(), self.code_name
        code, arg = self.code, self.arg
        try:
            if code == EventCode.DOOR_STATE:
                door, position = self.door_state()
                return DoorMoved(door=door, position=position, state=state, event_id=eid,
                                 raw=raw, name=name)
            if code == EventCode.ZONE_COUNT:
                return ZoneCounted(count=arg, state=state, event_id=eid, raw=raw, name=name)
            if code == EventCode.BEAMS:
                return BeamsChanged(entry=bool(arg & Beam.ENTRY), exit=bool(arg & Beam.EXIT),
                                    state=state, event_id=eid, raw=raw, name=name)
        except ValueError:
            pass
        else:
            if code in _CONDITION_EVENTS:
                condition, raised = _CONDITION_EVENTS[code]
                return ConditionChanged(condition=condition,
                                        raised=bool(arg) if raised is None else raised,
                                        state=state, event_id=eid, raw=raw, name=name)
        return BoardChange(state=state, event_id=eid, raw=raw, name=name)


#: Condition events: the condition and whether it is raised (None: the arg says, 1 = on).
_CONDITION_EVENTS: dict[int, tuple[Condition, bool | None]] = {
    EventCode.EMERGENCY_ON: (Condition.EMERGENCY, True),
    EventCode.EMERGENCY_OFF: (Condition.EMERGENCY, False),
    EventCode.WATCHDOG_TRIPPED: (Condition.WATCHDOG, True),
    EventCode.TAMPER: (Condition.TAMPER, None),
    EventCode.POWER: (Condition.ON_UPS, None),
    EventCode.MAINTENANCE_KEY: (Condition.MAINTENANCE_KEY, None),
}


@dataclass(frozen=True, slots=True)
class BoardInfo:
    protocol: int
    watchdog_ms: int
    firmware: str
    serial: str

    def pack(self) -> bytes:
        text = f"{self.firmware};{self.serial}".encode("ascii")
        return struct.pack(">BH", self.protocol, self.watchdog_ms) + text

    @classmethod
    def unpack(cls, payload: bytes) -> BoardInfo:
        if len(payload) < 3:
            raise ProtocolError("INFO payload too short")
        protocol, watchdog = struct.unpack(">BH", payload[:3])
        text = payload[3:].decode("ascii", errors="replace")
        firmware, _, serial = text.partition(";")
        return cls(protocol, watchdog, firmware, serial)


def poll_payload(ack_event_id: int) -> bytes:
    return struct.pack(">H", ack_event_id & 0xFFFF)


def door_payload(door: Door, action: DoorAction) -> bytes:
    return bytes((int(door), int(action)))


def lamp_payload(side: Side, signal: Signal) -> bytes:
    return bytes((int(side), int(signal)))


def config_payload(watchdog_ms: int) -> bytes:
    return struct.pack(">H", watchdog_ms)


def nak_reason(payload: bytes) -> NakReason | int:
    if len(payload) != 1:
        raise ProtocolError("NAK payload must be 1 byte")
    try:
        return NakReason(payload[0])
    except ValueError:
        return payload[0]


def event_id_newer(candidate: int, reference: int) -> bool:
    """True when ``candidate`` is newer than ``reference`` in the 1..65535 wrapping space.

    Ids are compared in a half-window of the ring so that a wrap from 65535 to 1 still
    counts as newer, while a board restart (ids starting again at 1 after a large id)
    is detected separately by the RESTARTED event or by ids going backwards a long way.
    """
    if candidate == 0:  # 0 is "no event", outside the 1..65535 ring: never newer
        return False
    if reference == 0:
        return True
    diff = (candidate - reference) % 65535
    return 0 < diff < 32768
