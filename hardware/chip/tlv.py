"""BER-TLV as ISO/IEC 7816-4 and ICAO 9303 use it: tags of one to three bytes, definite
lengths of up to four bytes. Pure functions on bytes; a malformed encoding raises
:class:`TlvError` (a ``ValueError``), never an ``IndexError``."""

from __future__ import annotations

from collections.abc import Iterator


class TlvError(ValueError):
    """The bytes are not a well-formed BER-TLV encoding."""


def encode_tag(tag: int) -> bytes:
    if tag < 0:
        raise ValueError(f"negative tag {tag}")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode_length(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"negative length {n}")
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    if size > 4:
        raise ValueError(f"length {n} needs more than four bytes")
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def encode(tag: int, value: bytes) -> bytes:
    """One data object: tag, length, value."""
    return encode_tag(tag) + encode_length(len(value)) + value


def is_constructed(tag: int) -> bool:
    """Bit 6 of the tag's first byte: the value is itself a sequence of data objects."""
    first = encode_tag(tag)[0]
    return bool(first & 0x20)


def read(data: bytes, pos: int = 0, end: int | None = None) -> tuple[int, bytes, int]:
    """The data object at ``pos``: (tag, value, position after it)."""
    stop = len(data) if end is None else end
    if pos >= stop:
        raise TlvError("no data object: the input ends")
    start = pos
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # more tag bytes follow while their top bit is set
        while True:
            if pos >= stop or pos - start >= 3:
                raise TlvError("tag longer than three bytes or cut off")
            byte = data[pos]
            tag = (tag << 8) | byte
            pos += 1
            if not byte & 0x80:
                break
    if pos >= stop:
        raise TlvError("length missing")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise TlvError("indefinite length is not used by ICAO 9303")
    else:
        size = first & 0x7F
        if size > 4 or pos + size > stop:
            raise TlvError("length field longer than four bytes or cut off")
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    if pos + length > stop:
        raise TlvError(f"value of tag {tag:X} runs past the end ({length} bytes declared)")
    return tag, data[pos:pos + length], pos + length


def iterate(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Every top-level data object in ``data``, in order (trailing 00/FF padding ends it)."""
    pos = 0
    while pos < len(data):
        if data[pos] in (0x00, 0xFF) and not data[pos:].strip(data[pos:pos + 1]):
            return  # padding to the end of a file
        tag, value, pos = read(data, pos)
        yield tag, value


def objects(data: bytes) -> dict[int, bytes]:
    """Top-level data objects by tag (the first of a repeated tag)."""
    out: dict[int, bytes] = {}
    for tag, value in iterate(data):
        out.setdefault(tag, value)
    return out


def find(data: bytes, *path: int) -> bytes | None:
    """The value at ``path`` of nested tags (``find(dg2, 0x75, 0x7F61)``), or None."""
    value: bytes | None = data
    for tag in path:
        if value is None:
            return None
        value = objects(value).get(tag)
    return value


def unwrap(data: bytes, tag: int) -> bytes:
    """The value of ``data``, which must be exactly one data object with ``tag``."""
    got, value, end = read(data)
    if got != tag:
        raise TlvError(f"expected tag {tag:X}, found {got:X}")
    if data[end:].strip(b"\x00\xff"):
        raise TlvError(f"bytes after tag {tag:X}")
    return value


__all__ = ["TlvError", "encode", "encode_length", "encode_tag", "find", "is_constructed",
           "iterate", "objects", "read", "unwrap"]
