"""A card emulator's end of ``vsmartcard-vpcd``, the virtual PC/SC reader driver.

pcscd loads vpcd (``/etc/reader.conf.d/vpcd``), which listens on TCP 35963 (reader
``Virtual PCD 00 00``) and 35964 (``… 00 01``). A card is *inserted* by connecting to
that port and *removed* by closing the connection. Every message either way is a 2-byte
big-endian length and its bytes; vpcd sends one-byte control messages (0 power off,
1 power on, 2 reset, 4 send the ATR) and command APDUs, and expects the ATR or the
response APDU back.

``TCP_QUICKACK`` is set again after every read: without it, Nagle and delayed ACKs make an
APDU round trip ~50 ms instead of ~0.25 ms (measured here), and a 16 kB portrait seconds.
vpcd listens on all interfaces: a test rig's thing, never on a lane PC.

:func:`ensure_pcscd` starts ``pcscd`` when none is running (tests and ``gate sim chip``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable

VPCD_PORT = 35963
READER_NAME = "Virtual PCD 00 {:02d}"
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
PCSCD_SOCKET = "/run/pcscd/pcscd.comm"


def reader_name(index: int = 0) -> str:
    return READER_NAME.format(index)


class VpcdCard:
    """One inserted card: a connection to vpcd served by ``process`` in a thread."""

    def __init__(self, process: Callable[[bytes], bytes], atr: bytes, *,
                 reset: Callable[[], None] | None = None, index: int = 0,
                 host: str = "127.0.0.1", mute: bool = False) -> None:
        self.process, self.atr, self.reset, self.mute = process, atr, reset, mute
        self.address = (host, VPCD_PORT + index)
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.apdus = 0
        self.error: str | None = None

    def insert(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = socket.create_connection(self.address, timeout=1.0)
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"vpcd does not listen on {self.address[1]} "
                                          f"(is pcscd running with vsmartcard-vpcd?): {err}"
                                          ) from None
                time.sleep(0.05)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, name="vpcd-card", daemon=True)
        self.thread.start()

    @property
    def inserted(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def remove(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None

    def _recv(self, sock: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            part = sock.recv(n - len(data))
            if not part:
                return None
            data += part
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data

    def _send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(struct.pack(">H", len(data)) + data)

    def _serve(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            while True:
                head = self._recv(sock, 2)
                if head is None:
                    return
                (size,) = struct.unpack(">H", head)
                body = self._recv(sock, size) if size else b""
                if body is None:
                    return
                if size == 1:
                    if body[0] == CTRL_ATR:
                        self._send(sock, self.atr)
                    elif body[0] in (CTRL_RESET, CTRL_OFF) and self.reset is not None:
                        self.reset()
                    continue
                if self.mute:  # a chip that stops answering: the reader loses it
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                self.apdus += 1
                self._send(sock, self.process(body))
        except OSError as err:
            self.error = str(err)
            print(f"vpcd card: connection lost: {err}", file=sys.stderr, flush=True)
        except Exception as err:  # an emulator bug must not hang the reader
            self.error = f"emulator error: {err!r}"
            traceback.print_exc(file=sys.stderr)
            with contextlib.suppress(OSError):
                sock.close()


def pcscd_running() -> bool:
    if not os.path.exists(PCSCD_SOCKET):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(PCSCD_SOCKET)
            return True
        except OSError:
            return False


def ensure_pcscd(timeout_s: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Start ``pcscd`` in the foreground of a child process unless one runs; the child
    (to stop later) or None when one was running already."""
    if pcscd_running():
        return None
    binary = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if not os.path.exists(binary):
        raise FileNotFoundError("pcscd is not installed (Debian package pcscd)")
    proc = subprocess.Popen([binary, "--foreground"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pcscd exited at once ({proc.returncode}): is it allowed to "
                               f"create {PCSCD_SOCKET}?")
        if pcscd_running() and reader_name(0) in _readers():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("pcscd did not come up (or vpcd is not installed)")


def _readers() -> list[str]:
    """PC/SC's reader names (connecting to vpcd's port to probe it would insert a card)."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return []
    try:
        hresult, names = scard.SCardListReaders(context, [])
        return list(names) if hresult == scard.SCARD_S_SUCCESS else []
    finally:
        scard.SCardReleaseContext(context)


__all__ = ["VPCD_PORT", "VpcdCard", "ensure_pcscd", "pcscd_running", "reader_name"]
