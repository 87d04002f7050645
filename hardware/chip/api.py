"""The chip reader's interface: one ``transmit(apdu) -> (data, sw)`` seam per card.

A backend (PC/SC on pyscard, or a vendor SDK later) implements :class:`ChipReader`; the
access path, the reads and the authentication above it are the same for every backend.
Errors are :mod:`hardware.device` errors with a reason code the lane shows.
"""

from __future__ import annotations

from typing import Protocol

from hardware.device import DeviceError, DeviceHealth, DeviceTimeout, DeviceUnavailable

#: reason codes of the chip path (registered in gate/reasons.py)
CHIP_READER_UNAVAILABLE = "CHIP_READER_UNAVAILABLE"
CHIP_ABSENT = "CHIP_ABSENT"
CHIP_NOT_RESPONDING = "CHIP_NOT_RESPONDING"
CHIP_ACCESS_DENIED = "CHIP_ACCESS_DENIED"
CHIP_READ_FAILED = "CHIP_READ_FAILED"


class ChipError(DeviceError):
    """A chip that could not be read; ``reason`` is its reason code."""

    reason = CHIP_READ_FAILED

    def __init__(self, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        if reason is not None:
            self.reason = reason


class ReaderUnavailable(ChipError, DeviceUnavailable):
    reason = CHIP_READER_UNAVAILABLE


class ChipAbsent(ChipError, DeviceTimeout):
    """No chip in the reader's field (no document, or a document without a chip)."""

    reason = CHIP_ABSENT


class ChipMute(ChipError, DeviceTimeout):
    """A chip is in the field but does not answer (or stopped answering)."""

    reason = CHIP_NOT_RESPONDING


class AccessDenied(ChipError):
    """Neither PACE nor BAC opened the chip with the keys from the MRZ (or the CAN)."""

    reason = CHIP_ACCESS_DENIED


class Card(Protocol):
    """One connected chip."""

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send a command APDU; the response's data and status word. Raises ChipMute."""
        ...

    def close(self) -> None: ...


class ChipReader(Protocol):
    """A chip reader (one antenna)."""

    name: str

    def connect(self, timeout_s: float) -> Card:
        """The chip in the field, waiting up to ``timeout_s`` for one (ChipAbsent)."""
        ...

    def card_present(self) -> bool: ...

    def wait_removed(self, timeout_s: float) -> bool:
        """True once no chip is in the field (False if one still is after ``timeout_s``)."""
        ...

    def health(self) -> DeviceHealth: ...

    def close(self) -> None: ...


__all__ = [
    "CHIP_ABSENT",
    "CHIP_ACCESS_DENIED",
    "CHIP_NOT_RESPONDING",
    "CHIP_READER_UNAVAILABLE",
    "CHIP_READ_FAILED",
    "AccessDenied",
    "Card",
    "ChipAbsent",
    "ChipError",
    "ChipMute",
    "ChipReader",
    "ReaderUnavailable",
]
