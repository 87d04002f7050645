"""BER-TLV (hardware.chip.tlv): the encodings ICAO 9303 files use, and malformed input."""

from __future__ import annotations

import pytest

from hardware.chip import tlv


def test_round_trip_of_short_long_and_multibyte_tags() -> None:
    for tag in (0x5F1F, 0x61, 0x7F61, 0x5F2E, 0x87, 0x9F8101):
        for size in (0, 1, 127, 128, 255, 256, 70_000):
            value = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
            data = tlv.encode(tag, value)
            assert tlv.read(data) == (tag, value, len(data))


def test_lengths_are_minimal_definite_forms() -> None:
    assert tlv.encode_length(0x7F) == b"\x7f"
    assert tlv.encode_length(0x80) == b"\x81\x80"
    assert tlv.encode_length(0x100) == b"\x82\x01\x00"
    assert tlv.encode_length(0x10000) == b"\x83\x01\x00\x00"


def test_nested_find_in_a_dg1_like_structure() -> None:
    mrz = b"P<UTOERIKSSON<<ANNA<MARIA" + b"<" * 19
    dg1 = tlv.encode(0x61, tlv.encode(0x5F1F, mrz))
    assert tlv.find(dg1, 0x61, 0x5F1F) == mrz
    assert tlv.find(dg1, 0x61, 0x5F2E) is None
    assert tlv.unwrap(dg1, 0x61) == tlv.encode(0x5F1F, mrz)
    assert tlv.is_constructed(0x61) and not tlv.is_constructed(0x5F1F)


def test_padding_after_the_last_object_is_ignored() -> None:
    data = tlv.encode(0x60, b"\x01\x02") + b"\x00" * 8
    assert list(tlv.iterate(data)) == [(0x60, b"\x01\x02")]
    assert tlv.unwrap(data, 0x60) == b"\x01\x02"


@pytest.mark.parametrize("bad", [
    b"", b"\x61", b"\x61\x05abc", b"\x5f", b"\x5f\x9f\x9f\x9f\x01\x00", b"\x61\x80\x00\x00",
    b"\x61\x85\x00\x00\x00\x00\x01", b"\x61\x82\x01",
])
def test_malformed_encodings_are_tlv_errors(bad: bytes) -> None:
    with pytest.raises(tlv.TlvError):
        tlv.read(bad)


def test_unwrap_refuses_another_tag_or_trailing_data() -> None:
    with pytest.raises(tlv.TlvError):
        tlv.unwrap(tlv.encode(0x61, b""), 0x75)
    with pytest.raises(tlv.TlvError):
        tlv.unwrap(tlv.encode(0x61, b"") + b"\x01", 0x61)
