"""The codec against the contract's own examples, and the decoder's resync as properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.barrier.protocol import (
    MAX_PAYLOAD,
    SOF,
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
    crc16_ccitt_false,
    decode_all,
    door_payload,
    event_id_newer,
    nak_reason,
    poll_payload,
)

# (hex, frame) — the table of docs/barrier-protocol.md, verbatim
SPEC_EXAMPLES = [
    ("a5 01 00 02 00 94 16", Frame(1, 0, MsgType.GET_INFO)),
    ("a5 01 07 01 02 00 00 34 b0", Frame(1, 7, MsgType.POLL, poll_payload(0))),
    ("a5 01 08 10 02 01 01 1f 4a",
     Frame(1, 8, MsgType.DOOR, door_payload(Door.ENTRY, DoorAction.OPEN))),
    ("a5 01 08 80 00 40 4d", Frame(1, 8, MsgType.ACK)),
    ("a5 01 09 8f 01 05 3c d5", Frame(1, 9, MsgType.NAK, bytes([NakReason.NOT_ALLOWED]))),
    ("a5 01 07 81 08 00 00 00 00 00 00 00 00 0c bf", Frame(1, 7, MsgType.STATUS, bytes(8))),
    ("a5 01 0c 82 08 00 03 01 12 00 01 e2 40 b3 db",
     Frame(1, 12, MsgType.EVENT, BoardEvent(3, EventCode.DOOR_STATE, 0x12, 123456).pack())),
]


def test_crc_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


@pytest.mark.parametrize(("hex_frame", "frame"), SPEC_EXAMPLES)
def test_spec_examples_encode_and_decode(hex_frame: str, frame: Frame) -> None:
    raw = bytes.fromhex(hex_frame)
    assert frame.encode() == raw
    assert decode_all(raw) == [frame]


def test_spec_example_payloads_mean_what_the_table_says() -> None:
    status = BoardStatus.unpack(decode_all(bytes.fromhex(SPEC_EXAMPLES[5][0]))[0].payload)
    assert (status.entry, status.exit, status.zone_count, status.flags, status.last_event_id) == (
        DoorState.CLOSED, DoorState.CLOSED, 0, Flag.NONE, 0)
    event = BoardEvent.unpack(decode_all(bytes.fromhex(SPEC_EXAMPLES[6][0]))[0].payload)
    assert (event.event_id, event.code_name, event.uptime_ms) == (3, "DOOR_STATE", 123456)
    assert event.door_state() == (Door.ENTRY, DoorState.OPEN)
    assert nak_reason(bytes.fromhex("05")) is NakReason.NOT_ALLOWED


def test_payload_round_trips_and_errors() -> None:
    info = BoardInfo(1, 1000, "egate-sim 1.0", "SIM0001")
    assert BoardInfo.unpack(info.pack()) == info
    with pytest.raises(ProtocolError):
        BoardStatus.unpack(bytes(7))
    with pytest.raises(ProtocolError):
        BoardStatus.unpack(bytes([9, 0, 0, 0, 0, 0, 0, 0]))  # door state 9 does not exist
    with pytest.raises(ProtocolError):
        Frame(1, 1, MsgType.LAMP, bytes(MAX_PAYLOAD + 1)).encode()


def test_event_ids_wrap_from_65535_to_1() -> None:
    assert event_id_newer(1, 65535)
    assert event_id_newer(65535, 65534)
    assert not event_id_newer(65535, 1)
    assert not event_id_newer(5, 5)
    assert event_id_newer(1, 0)
    assert not event_id_newer(0, 65532)


def test_frame_split_by_a_long_pause_is_abandoned() -> None:
    raw = Frame(1, 3, MsgType.ACK).encode()
    dec = FrameDecoder()
    assert list(dec.feed(raw[:4], now=0.0)) == []
    assert list(dec.feed(raw[4:], now=0.05)) == []  # 50 ms gap > 20 ms: abandoned
    assert list(dec.feed(raw, now=0.06)) == [Frame(1, 3, MsgType.ACK)]
    # within 20 ms it is one frame
    dec2 = FrameDecoder()
    assert list(dec2.feed(raw[:4], now=1.0)) == []
    assert list(dec2.feed(raw[4:], now=1.015)) == [Frame(1, 3, MsgType.ACK)]


# ------------------------------------------------------------------ properties

frames = st.builds(
    Frame,
    addr=st.integers(0, 255),
    seq=st.integers(0, 255),
    type=st.integers(0, 255),
    payload=st.binary(max_size=MAX_PAYLOAD),
)
garbage = st.binary(max_size=40).map(lambda b: b.replace(bytes([SOF]), b"\x00"))
noisy_garbage = st.binary(max_size=40)  # may contain SOF bytes


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(garbage, frames), min_size=1, max_size=8), tail=garbage,
       cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_frames_in_garbage_split_anyhow_are_all_recovered_in_order(
        items: list[tuple[bytes, Frame]], tail: bytes, cuts: list[int]) -> None:
    stream = b"".join(g + f.encode() for g, f in items) + tail
    dec = FrameDecoder()
    got = [f for chunk in split(stream, cuts) for f in dec.feed(chunk, now=0.0)]
    assert got == [f for _, f in items]


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(noisy_garbage, frames), min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_garbage_holding_sof_bytes_does_not_hide_the_frames_after_it(
        items: list[tuple[bytes, Frame]], cuts: list[int]) -> None:
    # Garbage with SOF bytes can look like a header that claims the bytes of the real
    # frames after it; the CRC fails, the scan resumes one byte later, and once the line
    # goes quiet (the 20 ms rule) nothing is left waiting.
    stream = b"".join(g + f.encode() for g, f in items)
    dec = FrameDecoder()
    got = [f for chunk in split(stream, cuts) for f in dec.feed(chunk, now=0.0)]
    got += list(dec.feed(b"", now=1.0))
    expected = [f for _, f in items]
    it = iter(got)
    assert all(any(g == f for g in it) for f in expected), "a frame was lost or reordered"
    assert all(f.encode() in stream for f in got)
    assert dec.pending == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_garbage_alone_never_raises(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder()
    t = 0.0
    for i, chunk in enumerate(split(data, cuts)):
        t += 0.007 if i % 3 else 0.03  # some pauses longer than the 20 ms rule
        for f in dec.feed(chunk, now=t):
            # a "frame" found in pure garbage must at least carry a valid CRC
            assert f.encode() in data
    list(dec.feed(b"", now=t + 1))


@settings(max_examples=200, deadline=None)
@given(bad=frames, good=frames, pos=st.integers(1, 10_000), bit=st.integers(0, 7),
       lead=garbage)
def test_corrupted_frame_is_dropped_and_the_next_good_one_found(
        bad: Frame, good: Frame, pos: int, bit: int, lead: bytes) -> None:
    raw = bytearray(bad.encode())
    i = 1 + pos % (len(raw) - 1)  # flip one bit anywhere after SOF
    raw[i] ^= 1 << bit
    dec = FrameDecoder()
    got = list(dec.feed(lead + bytes(raw) + good.encode(), now=0.0))
    got += list(dec.feed(b"", now=1.0))  # the line goes quiet: the gap rule applies
    assert got == [good]
