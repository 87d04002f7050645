"""Image files in, pixels out: the one decoding path of every command and reader.

A page or face image reaches the lane as a file (``gate document``, ``gate verify``,
``gate calibrate``, a full-page reader's hot folder). Whatever the file holds, reading it
ends in pixels or in one named reason, within bounds fixed *before* any decoder runs:

1. **a regular file** — ``os.stat`` first: a directory is ``IS_A_DIRECTORY``; a FIFO, a
   device (``/dev/zero``) or a socket is ``NOT_A_REGULAR_FILE``. The file is then opened
   with ``O_NONBLOCK`` (a FIFO swapped in after the check cannot block the open) and
   checked again on the open descriptor.
2. **a size cap** — over ``max_bytes`` (64 MiB) by ``st_size`` is ``FILE_TOO_LARGE`` without
   reading; at most ``max_bytes + 1`` bytes are ever read (a file growing meanwhile).
3. **a format a lane needs, by its magic bytes** — JPEG (``FF D8 FF``), PNG, and JPEG 2000
   (codestream ``FF 4F FF 51`` or JP2 box ``0000000C 6A502020``) for chip portraits.
   Anything else (Radiance HDR, PAM, PFM, TIFF, GIF, BMP, WebP …, which OpenCV would
   decode, or no image at all) is ``IMAGE_UNREADABLE``: no decoder ever sees it.
4. **the declared size, from the header, parsed here** — PNG ``IHDR``, the JPEG ``SOFn``
   segment, the JPEG 2000 ``SIZ`` segment (and a JP2's ``ihdr``): over ``max_pixels``
   (50 MP; 16 MP for JPEG 2000, whose decoder holds 4 bytes a sample) is
   ``IMAGE_TOO_LARGE`` before anything is allocated for pixels. A header that does not
   parse, or declares what no lane camera makes (more than 4 components, a JPEG coded
   other than baseline/extended/progressive Huffman, over 64 scans, over 4096 JPEG 2000
   tiles, an animated PNG), is ``IMAGE_UNREADABLE`` or ``IMAGE_FORMAT_UNSUPPORTED``.
5. **OpenCV decodes** with ``OPENCV_IO_MAX_IMAGE_PIXELS`` set to the same 50 MP (set here
   before ``cv2`` is first imported, and by the ``gate`` entry point), and the decoded image
   is checked again: its size must be the declared one (or the declared one turned by the
   EXIF orientation). What the native decoders print meanwhile (``libpng warning: …``,
   libjpeg's ``Corrupt JPEG data …``, OpenCV's log) is taken off the process's stderr, so a
   command's error stays one line; other output written meanwhile is passed on.

Commands that take several images are capped per call: :data:`MAX_IMAGES` files
(``TOO_MANY_IMAGES``, before any is opened) and :data:`MAX_TOTAL_PIXELS` declared pixels
together (``TOO_MANY_PIXELS``, before the one that would pass it is decoded).

This module imports nothing of ours: ``gate`` and the hardware readers both use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_PIXELS = 50_000_000  # 50 MP: beyond this a "page" is an attack or a mistake
MAX_J2K_PIXELS = 16_000_000  # OpenJPEG holds an int32 per sample before OpenCV converts
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_IMAGES = 10  # files per call (a lane votes 3 frames of a page, keeps 3 live frames)
MAX_TOTAL_PIXELS = 100_000_000  # declared pixels of one call's images together
MAX_COMPONENTS = 4
MAX_JPEG_SCANS = 64  # a progressive JPEG has about 10; each scan is a pass over the image
MAX_J2K_TILES = 4096

# OpenCV reads its own limit once, when the library loads: set it before the import.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# Reason codes (registered in gate/reasons.py).
FILE_NOT_FOUND = "FILE_NOT_FOUND"
IS_A_DIRECTORY = "IS_A_DIRECTORY"
NOT_A_REGULAR_FILE = "NOT_A_REGULAR_FILE"
FILE_UNREADABLE = "FILE_UNREADABLE"
FILE_TOO_LARGE = "FILE_TOO_LARGE"
IMAGE_EMPTY = "IMAGE_EMPTY"
IMAGE_FORMAT_UNSUPPORTED = "IMAGE_FORMAT_UNSUPPORTED"
IMAGE_UNREADABLE = "IMAGE_UNREADABLE"
IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
TOO_MANY_IMAGES = "TOO_MANY_IMAGES"
TOO_MANY_PIXELS = "TOO_MANY_PIXELS"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
J2K_MAGIC = b"\xff\x4f\xff\x51"
JP2_MAGIC = b"\x00\x00\x00\x0c\x6a\x50\x20\x20\x0d\x0a\x87\x0a"
FORMATS = ("jpeg", "png", "j2k", "jp2")

#: SOF markers a camera or scanner writes: baseline, extended and progressive Huffman.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2})
#: Every other SOF marker (lossless, hierarchical, arithmetic): no lane camera makes them.
_JPEG_OTHER_SOF = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header declares, read without decoding it."""

    format: str  # one of FORMATS
    width: int
    height: int
    components: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------ files


def read_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES
              ) -> tuple[bytes | None, str | None]:
    """The bytes of a regular file of at most ``max_bytes``, or None and a reason."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, FILE_NOT_FOUND
    except (OSError, ValueError):  # permission, a symlink loop, a NUL in the name
        return None, FILE_UNREADABLE
    problem = _not_regular(st)
    if problem:
        return None, problem
    if st.st_size > max_bytes:
        return None, FILE_TOO_LARGE
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None, FILE_NOT_FOUND
    except IsADirectoryError:
        return None, IS_A_DIRECTORY
    except OSError:
        return None, FILE_UNREADABLE
    try:
        st = os.fstat(fd)
        problem = _not_regular(st)  # swapped between the stat and the open
        if problem:
            return None, problem
        chunks: list[bytes] = []
        got = 0
        while got <= max_bytes:
            chunk = os.read(fd, min(max_bytes + 1 - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError:
        return None, FILE_UNREADABLE
    finally:
        os.close(fd)
    if got > max_bytes:
        return None, FILE_TOO_LARGE
    if got == 0:
        return None, IMAGE_EMPTY
    return b"".join(chunks), None


def _not_regular(st: os.stat_result) -> str | None:
    if stat.S_ISDIR(st.st_mode):
        return IS_A_DIRECTORY
    if not stat.S_ISREG(st.st_mode):
        return NOT_A_REGULAR_FILE
    return None


# ------------------------------------------------------------------ headers


def sniff(data: bytes) -> str | None:
    """The format by its magic bytes: ``jpeg``, ``png``, ``j2k``, ``jp2`` or None."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(J2K_MAGIC):
        return "j2k"
    if data.startswith(JP2_MAGIC):
        return "jp2"
    return None


def probe(data: bytes, *, max_pixels: int = MAX_PIXELS) -> tuple[ImageInfo | None, str | None]:
    """The header's declared size, checked against the limits; nothing is decoded."""
    if not data:
        return None, IMAGE_EMPTY
    fmt = sniff(data)
    if fmt is None:  # not a format a lane reads: no decoder sees it
        return None, IMAGE_UNREADABLE
    try:
        if fmt == "png":
            info = _png_info(data)
        elif fmt == "jpeg":
            info = _jpeg_info(data)
        elif fmt == "j2k":
            info = _j2k_info(data, 0, len(data), "j2k")
        else:
            info = _jp2_info(data)
    except _Refused as refused:
        return None, refused.reason
    except (struct.error, IndexError):
        return None, IMAGE_UNREADABLE  # the header ends before it says what it must
    if info.width <= 0 or info.height <= 0:
        return None, IMAGE_UNREADABLE
    if not 1 <= info.components <= MAX_COMPONENTS:
        return None, IMAGE_FORMAT_UNSUPPORTED
    limit = min(max_pixels, MAX_J2K_PIXELS) if fmt in ("j2k", "jp2") else max_pixels
    if info.pixels > limit:
        return None, IMAGE_TOO_LARGE
    return info, None


def _png_info(data: bytes) -> ImageInfo:
    pos = len(PNG_MAGIC)
    length, kind = struct.unpack_from(">I4s", data, pos)
    if kind != b"IHDR" or length != 13 or len(data) < pos + 12 + length:
        raise _Refused(IMAGE_UNREADABLE)
    width, height, depth, colour, _comp, _filt, interlace = struct.unpack_from(
        ">IIBBBBB", data, pos + 8)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16) or interlace > 1 \
            or width > 2**31 - 1 or height > 2**31 - 1:
        raise _Refused(IMAGE_UNREADABLE)
    # Walk the chunks before the pixels: each must fit in the file; animation is refused.
    pos += 12 + length
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind in (b"acTL", b"fcTL"):
            raise _Refused(IMAGE_FORMAT_UNSUPPORTED)  # an animated PNG
        if length > 2**31 - 1 or pos + 12 + length > len(data):
            raise _Refused(IMAGE_UNREADABLE)
        pos += 12 + length
    return ImageInfo("png", width, height, channels)


def _jpeg_info(data: bytes) -> ImageInfo:
    if data.count(b"\xff\xda") > MAX_JPEG_SCANS:  # FF is stuffed as FF 00 in scan data
        raise _Refused(IMAGE_FORMAT_UNSUPPORTED)
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise _Refused(IMAGE_UNREADABLE)
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or a scan before any frame
            raise _Refused(IMAGE_UNREADABLE)
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > len(data):
            raise _Refused(IMAGE_UNREADABLE)
        if marker in _JPEG_OTHER_SOF:
            raise _Refused(IMAGE_FORMAT_UNSUPPORTED)
        if marker in _JPEG_SOF:
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 2)
            if precision not in (8, 12) or height == 0:  # height 0: a DNL later
                raise _Refused(IMAGE_UNREADABLE)
            return ImageInfo("jpeg", width, height, components)
        pos += length


def _j2k_info(data: bytes, start: int, end: int, fmt: str) -> ImageInfo:
    """The SIZ segment, which must follow SOC at ``start``."""
    if data[start:start + 4] != J2K_MAGIC:
        raise _Refused(IMAGE_UNREADABLE)
    (lsiz, _rsiz, xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz, csiz) = \
        struct.unpack_from(">HHIIIIIIIIH", data, start + 4)
    if start + 4 + lsiz > end or lsiz != 38 + 3 * csiz:
        raise _Refused(IMAGE_UNREADABLE)
    if xosiz >= xsiz or yosiz >= ysiz or xtsiz == 0 or ytsiz == 0 \
            or xtosiz > xosiz or ytosiz > yosiz:
        raise _Refused(IMAGE_UNREADABLE)
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    if tiles > MAX_J2K_TILES:
        raise _Refused(IMAGE_FORMAT_UNSUPPORTED)
    for i in range(min(csiz, MAX_COMPONENTS + 1)):
        ssiz, xrsiz, yrsiz = struct.unpack_from(">BBB", data, start + 42 + 3 * i)
        if (ssiz & 0x7F) + 1 > 16 or xrsiz == 0 or yrsiz == 0:
            raise _Refused(IMAGE_UNREADABLE)
    return ImageInfo(fmt, xsiz - xosiz, ysiz - yosiz, csiz)


def _jp2_info(data: bytes) -> ImageInfo:
    """Top-level boxes: the ``jp2h`` box's ``ihdr`` and the ``jp2c`` codestream's SIZ."""
    declared: tuple[int, int] | None = None
    pos = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if length == 1:
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            head = 16
        elif length == 0:
            length = len(data) - pos
        if length < head or pos + length > len(data):
            raise _Refused(IMAGE_UNREADABLE)
        if kind == b"jp2h":
            sub = pos + head
            while sub + 8 <= pos + length:
                sub_len, sub_kind = struct.unpack_from(">I4s", data, sub)
                if sub_kind == b"ihdr":
                    height, width = struct.unpack_from(">II", data, sub + 8)
                    declared = (width, height)
                    break
                if sub_len < 8:
                    raise _Refused(IMAGE_UNREADABLE)
                sub += sub_len
        elif kind == b"jp2c":
            info = _j2k_info(data, pos + head, pos + length, "jp2")
            if declared is not None and declared != (info.width, info.height):
                raise _Refused(IMAGE_UNREADABLE)  # the two headers disagree
            return info
        pos += length
    raise _Refused(IMAGE_UNREADABLE)  # no codestream


# ------------------------------------------------------------------ decoding

#: What native decoders print on their own (libpng, libjpeg, OpenJPEG, OpenCV's log).
_NATIVE = re.compile(
    rb"^(libpng (warning|error)|\[ *(WARN|ERROR|INFO|DEBUG)|\[(WARNING|ERROR|INFO)\]"
    rb"|Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters"
    rb"|Unsupported marker type|Warning: unknown JFIF|JPEG datastream|Bogus |Inconsistent "
    rb"|Invalid JPEG file structure|Not a JPEG file|Unsupported JPEG process|Huffman table"
    rb"|Scan script|Improper call|Bogus marker|Corrupt)")
_STDERR_LOCK = threading.Lock()


def _flush_stderr() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()


@contextlib.contextmanager
def native_output_captured() -> Iterator[list[str]]:
    """Take what C libraries write to file descriptor 2 off stderr for the block.

    The lines native decoders print land in the yielded list (to log, if wanted); any other
    line written to stderr meanwhile (another thread's log) is written on afterwards.
    """
    caught: list[str] = []
    with _STDERR_LOCK:
        _flush_stderr()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to protect
            yield caught
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield caught
            finally:
                _flush_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                passed: list[bytes] = []
                for line in sink.read().splitlines(keepends=True):
                    if _NATIVE.match(line):
                        caught.append(line.decode("utf-8", "replace").rstrip())
                    else:
                        passed.append(line)
                if passed:
                    with contextlib.suppress(OSError):
                        os.write(2, b"".join(passed))


def decode(data: bytes, *, max_pixels: int = MAX_PIXELS, flags: int = cv2.IMREAD_COLOR
           ) -> tuple[np.ndarray | None, str | None]:
    """Bytes -> an image (BGR for the default ``flags``) or None and a reason."""
    info, problem = probe(data, max_pixels=max_pixels)
    if info is None:
        return None, problem
    return _decode(data, info, flags)


def _decode(data: bytes, info: ImageInfo, flags: int) -> tuple[np.ndarray | None, str | None]:
    try:
        with native_output_captured():
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None, IMAGE_UNREADABLE
    if img is None or not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or not img.size:
        return None, IMAGE_UNREADABLE
    h, w = img.shape[:2]
    if (w, h) not in ((info.width, info.height), (info.height, info.width)):
        return None, IMAGE_UNREADABLE  # not what the header declared: trust neither
    return img, None


def load(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS,
         max_bytes: int = MAX_FILE_BYTES, flags: int = cv2.IMREAD_COLOR
         ) -> tuple[np.ndarray | None, str | None]:
    """A file -> an image or None and a reason (:func:`read_file`, then :func:`decode`)."""
    data, problem = read_file(path, max_bytes=max_bytes)
    if data is None:
        return None, problem
    return decode(data, max_pixels=max_pixels, flags=flags)


@dataclass(frozen=True)
class Loaded:
    """One file of a call: its image, or the reason it has none."""

    path: str
    image: np.ndarray | None
    reason: str | None


def load_all(paths: Sequence[str | os.PathLike[str]], *, max_images: int = MAX_IMAGES,
             max_total_pixels: int = MAX_TOTAL_PIXELS, max_pixels: int = MAX_PIXELS,
             max_bytes: int = MAX_FILE_BYTES, flags: int = cv2.IMREAD_COLOR
             ) -> tuple[list[Loaded], str | None]:
    """The files of one call, in order, within the per-call caps.

    More than ``max_images`` files: nothing is opened, the call's reason is
    ``TOO_MANY_IMAGES``. Otherwise each file is read and decoded in turn (its bytes dropped
    before the next is read); a file whose declared pixels would take the call past
    ``max_total_pixels`` is not decoded (``TOO_MANY_PIXELS``).
    """
    if len(paths) > max_images:
        return [], TOO_MANY_IMAGES
    out: list[Loaded] = []
    budget = max_total_pixels
    for path in paths:
        name = os.fspath(path)
        data, problem = read_file(path, max_bytes=max_bytes)
        info: ImageInfo | None = None
        if data is not None:
            info, problem = probe(data, max_pixels=max_pixels)
        if data is None or info is None:
            out.append(Loaded(name, None, problem))
            continue
        if info.pixels > budget:
            out.append(Loaded(name, None, TOO_MANY_PIXELS))
            continue
        img, problem = _decode(data, info, flags)
        del data
        if img is not None:
            budget -= info.pixels
        out.append(Loaded(name, img, problem))
    return out, None


__all__ = [
    "FILE_NOT_FOUND", "FILE_TOO_LARGE", "FILE_UNREADABLE", "FORMATS", "IMAGE_EMPTY",
    "IMAGE_FORMAT_UNSUPPORTED", "IMAGE_TOO_LARGE", "IMAGE_UNREADABLE", "IS_A_DIRECTORY",
    "MAX_FILE_BYTES", "MAX_IMAGES", "MAX_J2K_PIXELS", "MAX_PIXELS", "MAX_TOTAL_PIXELS",
    "NOT_A_REGULAR_FILE", "TOO_MANY_IMAGES", "TOO_MANY_PIXELS", "ImageInfo", "Loaded",
    "decode", "load", "load_all", "native_output_captured", "probe", "read_file", "sniff",
]
