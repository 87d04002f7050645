"""Command APDUs (ISO/IEC 7816-4): short and extended length, parsed and encoded.

A command is ``CLA INS P1 P2 [Lc data] [Le]``. ``le`` is the number of bytes expected, with
``None`` for none and 256 / 65536 for the encodings ``00`` / ``0000`` ("as many as there
are"). Encoding picks the short form when both Lc and Le fit it, extended otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_AUTH_FAILED = 0x6300
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_SM_OBJECTS_MISSING = 0x6987
SW_SM_OBJECTS_INCORRECT = 0x6988
SW_WRONG_DATA = 0x6A80
SW_FILE_NOT_FOUND = 0x6A82
SW_WRONG_P1P2 = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_REFERENCED_DATA_NOT_FOUND = 0x6A88
SW_END_OF_FILE = 0x6282


class ApduError(ValueError):
    """Bytes that are not a command APDU."""


@dataclass(frozen=True)
class Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # 1..65536; None: no Le field

    @property
    def header(self) -> bytes:
        return bytes([self.cla, self.ins, self.p1, self.p2])

    def encode(self, *, extended: bool | None = None) -> bytes:
        if len(self.data) > 65535:
            raise ApduError(f"command data of {len(self.data)} bytes")
        if self.le is not None and not 1 <= self.le <= 65536:
            raise ApduError(f"Le {self.le}")
        if extended is None:
            extended = len(self.data) > 255 or (self.le is not None and self.le > 256)
        out = bytearray(self.header)
        if extended:
            if self.data:
                out += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
            if self.le is not None:
                le = self.le & 0xFFFF  # 65536 -> 0000
                out += (b"" if self.data else b"\x00") + le.to_bytes(2, "big")
        else:
            if self.data:
                out += bytes([len(self.data)]) + self.data
            if self.le is not None:
                out.append(self.le & 0xFF)  # 256 -> 00
        return bytes(out)


def parse(apdu: bytes) -> Command:
    """The command in ``apdu`` (cases 1-4, short or extended)."""
    if len(apdu) < 4:
        raise ApduError(f"{len(apdu)} bytes: shorter than a header")
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:
        return Command(cla, ins, p1, p2)
    if len(body) == 1:  # case 2 short
        return Command(cla, ins, p1, p2, b"", body[0] or 256)
    if body[0] == 0 and len(body) >= 3:  # extended
        n = int.from_bytes(body[1:3], "big")
        if len(body) == 3:  # case 2 extended
            return Command(cla, ins, p1, p2, b"", n or 65536)
        if n == 0 or len(body) not in (3 + n, 5 + n):
            raise ApduError("extended length does not match the body")
        data = body[3:3 + n]
        le = None
        if len(body) == 5 + n:
            le = int.from_bytes(body[3 + n:], "big") or 65536
        return Command(cla, ins, p1, p2, data, le)
    n = body[0]
    if len(body) == 1 + n:  # case 3 short
        return Command(cla, ins, p1, p2, body[1:])
    if len(body) == 2 + n:  # case 4 short
        return Command(cla, ins, p1, p2, body[1:1 + n], body[-1] or 256)
    raise ApduError("short length does not match the body")


def split_response(response: bytes) -> tuple[bytes, int]:
    """A response APDU's data and status word."""
    if len(response) < 2:
        raise ApduError(f"a response of {len(response)} bytes has no status word")
    return response[:-2], int.from_bytes(response[-2:], "big")


__all__ = ["ApduError", "Command", "parse", "split_response"]
