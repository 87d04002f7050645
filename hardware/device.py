"""What every device in ``hardware`` shares: one error hierarchy and one health picture.

A driver translates its library's errors (pyserial, OpenCV, pyscard, a folder that
vanished) into these at its own boundary, so the lane handles "the camera is gone" and
"the board link is down" the same way: a named reason, out of service, back on its own
when the device returns. ``DeviceHealth.reason`` is a reason code the lane shows on its
lamps and in its logs (``CAMERA_UNAVAILABLE``, ``READER_UNAVAILABLE``, ``LINK_DOWN`` …).
"""

from __future__ import annotations

from dataclasses import dataclass


class DeviceError(Exception):
    """Base of every error a device in ``hardware`` raises."""


class DeviceUnavailable(DeviceError):
    """The device is not there (unplugged, not found, refused the connection)."""


class DeviceTimeout(DeviceError):
    """The device did not answer (or deliver) within its deadline."""


@dataclass(frozen=True)
class DeviceHealth:
    """A device's own judgement of whether the lane may rely on it right now."""

    ok: bool
    reason: str = ""  # reason code when not ok, e.g. CAMERA_UNAVAILABLE
    detail: str = ""  # for maintenance staff: what the driver saw (never personal data)

    @classmethod
    def good(cls, detail: str = "") -> DeviceHealth:
        return cls(True, "", detail)

    @classmethod
    def bad(cls, reason: str, detail: str = "") -> DeviceHealth:
        return cls(False, reason, detail)
