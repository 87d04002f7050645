"""The PC/SC backend of the chip reader: ``pyscard``'s ``scard`` layer over ``pcscd``.

``pcsc:READER NAME`` names a reader by its PC/SC name (or the first whose name starts with
it: ``pcsc:OMNIKEY`` matches ``HID Global OMNIKEY 5422 Smartcard Reader 00 00``);
``pcsc:`` is the first reader. Real readers (HID OMNIKEY, Identiv, ACS, a full-page
reader's antenna) and ``vsmartcard-vpcd``'s virtual one are reached alike. Every failure
of pcscd, the reader or the card is one of :mod:`hardware.chip.api`'s errors.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from hardware.chip.api import ChipAbsent, ChipMute, ReaderUnavailable
from hardware.device import DeviceHealth


def _scard() -> Any:
    try:
        from smartcard import scard
    except ImportError as err:  # pyscard builds from source: swig, libpcsclite-dev
        raise ReaderUnavailable(f"pyscard is not installed: {err}") from None
    return scard


class PcscCard:
    """A connected card."""

    def __init__(self, reader: PcscReader, handle: Any, protocol: int) -> None:
        self.reader, self.handle, self.protocol = reader, handle, protocol
        self.closed = False

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        scard = _scard()
        if self.closed:
            raise ChipMute("the card connection is closed")
        hresult, response = scard.SCardTransmit(self.handle, self.protocol, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS:
            raise ChipMute(f"the chip did not answer: {scard.SCardGetErrorMessage(hresult)}")
        if len(response) < 2:
            raise ChipMute(f"a response of {len(response)} bytes")
        data = bytes(response)
        return data[:-2], int.from_bytes(data[-2:], "big")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            scard = _scard()
            scard.SCardDisconnect(self.handle, scard.SCARD_UNPOWER_CARD)


class PcscReader:
    """One PC/SC reader, found by name; connects to the chip in its field."""

    def __init__(self, name: str = "") -> None:
        self.wanted = name
        self.name = name
        # one PC/SC context per thread: pcsc-lite does not take concurrent calls on one
        # context (the lane's health probe beside a chip read in another thread)
        self._local = threading.local()
        self._contexts: list[Any] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> PcscReader:
        if not url.startswith("pcsc:"):
            raise ValueError(f"not a pcsc: reader URL: {url!r}")
        return cls(url[len("pcsc:"):])

    # ------------------------------------------------------------ pcscd

    def _ctx(self) -> Any:
        context = getattr(self._local, "context", None)
        if context is None:
            scard = _scard()
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                raise ReaderUnavailable(
                    f"pcscd is not reachable: {scard.SCardGetErrorMessage(hresult)}")
            self._local.context = context
            with self._lock:
                self._contexts.append(context)
        return context

    def _drop_context(self) -> None:
        """This thread's context (stale after pcscd restarted)."""
        context = getattr(self._local, "context", None)
        if context is not None:
            self._local.context = None
            with self._lock:
                if context in self._contexts:
                    self._contexts.remove(context)
            _scard().SCardReleaseContext(context)

    def readers(self) -> list[str]:
        scard = _scard()
        hresult, names = scard.SCardListReaders(self._ctx(), [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult != scard.SCARD_S_SUCCESS:
            self._drop_context()  # pcscd restarted: the context is stale
            raise ReaderUnavailable(f"pcscd: {scard.SCardGetErrorMessage(hresult)}")
        return list(names)

    def _resolve(self) -> str:
        names = self.readers()
        if not names:
            raise ReaderUnavailable("no PC/SC reader is connected")
        if not self.wanted:
            self.name = names[0]
            return names[0]
        for name in names:
            if name == self.wanted:
                self.name = name
                return name
        for name in names:
            if name.startswith(self.wanted):
                self.name = name
                return name
        raise ReaderUnavailable(f"no PC/SC reader named {self.wanted!r} "
                                f"(readers: {', '.join(names)})")

    def _state(self, timeout_ms: int, known: int) -> int:
        scard = _scard()
        name = self._resolve()
        hresult, states = scard.SCardGetStatusChange(self._ctx(), timeout_ms, [(name, known)])
        if hresult == scard.SCARD_E_TIMEOUT:
            return known
        if hresult != scard.SCARD_S_SUCCESS:
            self._drop_context()
            raise ReaderUnavailable(f"{name}: {scard.SCardGetErrorMessage(hresult)}")
        state: int = states[0][1] & ~scard.SCARD_STATE_CHANGED
        if state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE):
            raise ReaderUnavailable(f"{name} is unavailable")
        return state

    # ------------------------------------------------------------ the interface

    def card_present(self) -> bool:
        scard = _scard()
        return bool(self._state(0, scard.SCARD_STATE_UNAWARE) & scard.SCARD_STATE_PRESENT)

    def _wait(self, timeout_s: float, present: bool) -> bool:
        scard = _scard()
        deadline = time.monotonic() + timeout_s
        state = self._state(0, scard.SCARD_STATE_UNAWARE)
        while bool(state & scard.SCARD_STATE_PRESENT) != present:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            state = self._state(int(min(left, 0.5) * 1000), state)
        return True

    def wait_removed(self, timeout_s: float) -> bool:
        return self._wait(timeout_s, present=False)

    def connect(self, timeout_s: float) -> PcscCard:
        scard = _scard()
        if not self._wait(timeout_s, present=True):
            raise ChipAbsent(f"no chip in the field of {self.name or 'the reader'}")
        hresult, handle, protocol = scard.SCardConnect(
            self._ctx(), self._resolve(), scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        if hresult in (scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_E_PROTO_MISMATCH,
                       scard.SCARD_W_UNPOWERED_CARD):
            raise ChipMute(f"the chip does not respond: {scard.SCardGetErrorMessage(hresult)}")
        if hresult in (scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD):
            raise ChipAbsent("the chip left the field")
        if hresult != scard.SCARD_S_SUCCESS:
            raise ReaderUnavailable(f"connect: {scard.SCardGetErrorMessage(hresult)}")
        return PcscCard(self, handle, protocol)

    def health(self) -> DeviceHealth:
        try:
            name = self._resolve()
        except ReaderUnavailable as err:
            return DeviceHealth.bad(err.reason, str(err))
        return DeviceHealth.good(name)

    def close(self) -> None:
        with self._lock:
            contexts, self._contexts = self._contexts, []
        scard = _scard()
        for context in contexts:
            scard.SCardReleaseContext(context)
        self._local = threading.local()


__all__ = ["PcscCard", "PcscReader"]
