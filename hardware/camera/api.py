"""What the lane sees of a camera: a long-lived device that hands out its newest frame.

A camera is opened once, when the lane starts, and kept open: the lane must know that
its camera is dead *before* it shuts a traveller inside, not when the face capture asks
for a frame. So a :class:`Camera` connects in the background (``start`` never raises for
a camera that is absent: it keeps trying), says through ``health`` whether frames are
flowing, and gives consumers the newest frame with ``next_frame`` — never a queue of old
ones, because a face capture behind by a second would judge a traveller who has moved on.

The frame slot, the health rule and the counters live here in the base, so a backend only
has to deliver frames (``_publish``) and say when its connection comes and goes; the lane
cannot tell an OpenCV stream from any other backend.

Health reasons (``DeviceHealth.reason``):

* ``CAMERA_UNAVAILABLE`` — not connected: cannot open the device, connection refused or
  lost, not started, closed;
* ``CAMERA_STALLED`` — connected, but no frame for ``stall_s`` (a hung stream, a USB
  camera that stopped delivering);
* ``CAMERA_ENDED`` — a video file played to its end (only files end; ``?loop=1`` loops).
"""

from __future__ import annotations

import abc
import collections
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from hardware.device import DeviceHealth

CAMERA_UNAVAILABLE = "CAMERA_UNAVAILABLE"
CAMERA_STALLED = "CAMERA_STALLED"
CAMERA_ENDED = "CAMERA_ENDED"

#: The fps estimate looks at up to this many frames of the last few seconds.
_FPS_WINDOW = 30
_FPS_SPAN_S = 3.0


def redact_url(url: str) -> str:
    """``url`` fit for a log line: no user name or password, no query values.

    Camera URLs carry credentials (``rtsp://admin:secret@cam/…``) and tokens in queries;
    logs leave the lane PC, so neither may appear in them.
    """
    parts = urlsplit(url)
    if "://" not in url or not parts.netloc:  # a path, file:///…, sqlite:///…: no host part
        path, sep, _ = url.partition("?")
        return path + ("?…" if sep else "")
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username is not None or parts.password is not None:
        host = f"***@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


class Camera(abc.ABC):
    """A lane camera: started once, healthy while frames flow, newest frame on demand.

    Frames handed out are shared between consumers: treat them as read-only (copy before
    drawing on one). Sequence numbers only grow, across reconnects too, so a consumer can
    ask for "a frame newer than the last one I saw" whatever happened in between.
    """

    def __init__(self, url: str | int, *, stall_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if stall_s <= 0:
            raise ValueError("stall_s must be > 0")
        self.url = str(url)
        self.stall_s = stall_s
        self.clock = clock
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._taken = True  # the newest frame went to a consumer (for the drop count)
        self._last_frame_at: float | None = None
        self._connected_at: float | None = None  # None: not connected
        self._fault = (CAMERA_UNAVAILABLE, "not started")
        self._ended = False
        self._closed = False
        self._frame_times: collections.deque[float] = collections.deque(maxlen=_FPS_WINDOW)
        self._frames = 0
        self._dropped = 0
        self._reconnects = 0
        self._stalls = 0

    # ------------------------------------------------------------------ the interface

    @abc.abstractmethod
    def start(self) -> None:
        """Begin connecting in the background; returns at once and never raises because
        the device is absent (``health`` says so until it is there)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop for good: release the device; waiting consumers return without a frame."""

    def describe(self) -> str:
        """What this camera is, for logs and the maintenance page: no credentials."""
        return f"{type(self).__name__} {redact_url(self.url)}"

    @property
    def seq(self) -> int:
        """Sequence number of the newest frame (0 before the first): pass it to
        ``next_frame`` to wait for frames that arrive from now on."""
        with self._cond:
            return self._seq

    @property
    def ended(self) -> bool:
        """A file source played to its end and will deliver nothing more."""
        with self._cond:
            return self._ended

    def next_frame(self, after_seq: int, timeout: float) -> tuple[int, np.ndarray | None]:
        """The newest frame if it is newer than ``after_seq``, waiting up to ``timeout``.

        Returns ``(seq, frame)``, or ``(after_seq, None)`` on timeout, once the camera is
        closed or once a file has ended. Frames in between are dropped on purpose.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._seq > after_seq or self._closed or self._ended,
                timeout=max(0.0, timeout))
            if self._seq > after_seq and self._frame is not None:
                self._taken = True
                return self._seq, self._frame
            return after_seq, None

    @property
    def health(self) -> DeviceHealth:
        """Computed from the frame times at the moment of asking, so it is never older
        than the question: ok while a frame came within ``stall_s``."""
        with self._cond:
            now = self.clock()
            if self._closed:
                return DeviceHealth.bad(CAMERA_UNAVAILABLE, "closed")
            if self._ended:
                return DeviceHealth.bad(CAMERA_ENDED, "end of file")
            last = self._last_frame_at
            if last is not None and now - last <= self.stall_s:
                return DeviceHealth.good(f"{self._fps_locked(now):.1f} fps")
            if self._connected_at is not None:
                since = max(self._connected_at, last if last is not None else -1e18)
                if now - since > self.stall_s:
                    return DeviceHealth.bad(
                        CAMERA_STALLED, f"connected, no frame for {now - since:.1f} s")
            reason, detail = self._fault
            return DeviceHealth.bad(reason, detail)

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and the maintenance page."""
        with self._cond:
            now = self.clock()
            last = self._last_frame_at
            return {
                "frames": self._frames,
                "dropped": self._dropped,
                "reconnects": self._reconnects,
                "stalls": self._stalls,
                "fps": round(self._fps_locked(now), 2),
                "last_frame_age_s": None if last is None else round(now - last, 3),
                "connected": self._connected_at is not None,
            }

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ for the backends

    def _publish(self, frame: np.ndarray) -> None:
        """A new frame: it replaces the one before (dropped if nobody took it)."""
        with self._cond:
            now = self.clock()
            if not self._taken:
                self._dropped += 1
            self._frame = frame
            self._seq += 1
            self._taken = False
            self._frames += 1
            self._last_frame_at = now
            self._frame_times.append(now)
            self._cond.notify_all()

    def _set_connected(self) -> None:
        with self._cond:
            self._connected_at = self.clock()
            self._cond.notify_all()

    def _set_disconnected(self, reason: str, detail: str) -> None:
        """Connection gone (or never made); ``reason``/``detail`` is what health says
        until frames flow again."""
        with self._cond:
            self._connected_at = None
            self._fault = (reason, detail)
            self._cond.notify_all()

    def _set_fault(self, reason: str, detail: str) -> None:
        with self._cond:
            self._fault = (reason, detail)

    def _set_ended(self) -> None:
        with self._cond:
            self._connected_at = None
            self._ended = True
            self._cond.notify_all()

    def _set_closed(self) -> None:
        with self._cond:
            self._closed = True
            self._connected_at = None
            self._cond.notify_all()

    def _count(self, *, reconnects: int = 0, stalls: int = 0) -> None:
        with self._cond:
            self._reconnects += reconnects
            self._stalls += stalls

    def _fps_locked(self, now: float) -> float:
        """Frames per second over the recent frames only: an outage must not drag the
        estimate down for long after the stream is back."""
        recent = [t for t in self._frame_times if now - t <= _FPS_SPAN_S]
        if len(recent) < 2 or now - recent[-1] > self.stall_s:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


__all__ = ["CAMERA_ENDED", "CAMERA_STALLED", "CAMERA_UNAVAILABLE", "Camera", "redact_url"]
