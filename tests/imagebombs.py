"""Hostile image files for the input tests, made byte by byte (no encoder involved).

Each one is the kind of file the security review (issue 11) fed to ``gate document`` and
``gate verify``: small on disk, huge once decoded, or no file at all.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    value = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", value)


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid 1-bit grey PNG of ``width`` × ``height`` zeros: ~110 KB on disk for
    30000 × 30000, 2.7 GB as the BGR image OpenCV makes of it."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                     + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b""))
    return path


def hdr_bomb(path: Path, width: int = 12000, height: int = 12000) -> Path:
    """A run-length Radiance HDR (RGBE) of ``width`` × ``height``: 9 MB on disk for
    12000 × 12000, 1.7 GB of float pixels decoded (Pillow cannot identify it)."""
    runs = bytearray()
    left = width
    while left:
        n = min(127, left)
        runs += bytes((128 + n, 0))
        left -= n
    line = bytes((2, 2, width >> 8, width & 0xFF)) + bytes(runs) * 4
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode()
    path.write_bytes(header + line * height)
    return path


def pam_bomb(path: Path) -> Path:
    """54 bytes of PAM header declaring a 3-gigapixel image."""
    path.write_bytes(b"P7\nWIDTH 60000\nHEIGHT 50000\nDEPTH 3\nMAXVAL 255\nENDHDR\n")
    return path


def pfm_negative(path: Path) -> Path:
    """A PFM whose header declares a negative width."""
    path.write_bytes(b"PF\n-640 480\n-1.0\n" + b"\0" * 64)
    return path


def sparse_file(path: Path, size: int = 2 << 30) -> Path:
    """A 2 GiB file of zeros that takes no disk space."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def fifo(path: Path) -> Path:
    """A named pipe nobody writes to: opening it for reading blocks for ever."""
    os.mkfifo(path)
    return path


def grey_png(width: int, height: int, level: int = 200,
             extra: tuple[bytes, ...] = ()) -> bytes:
    """An 8-bit grey PNG, with ``extra`` chunks (whole, as :func:`png_chunk` makes them)
    put after IHDR."""
    raw = b"".join(b"\0" + bytes((level,)) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(extra)
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def png_warning_chunks() -> dict[str, bytes]:
    """Ancillary chunks libpng warns about and skips (the image still decodes)."""
    return {
        # a text chunk whose CRC is wrong: "libpng warning: tEXt: CRC error"
        "bad_crc": png_chunk(b"tEXt", b"Comment\0hello", crc=0x12345678),
        # an ICC profile that is not one: "libpng warning: iCCP: ..."
        "bad_iccp": png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 200)),
    }
