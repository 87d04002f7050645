"""The lane camera on OpenCV's ``VideoCapture``: USB/V4L2 cameras, RTSP, HTTP MJPEG, files.

Reading a camera blocks, sometimes for ever: an RTSP or HTTP stream whose sender hangs
keeps ``read()`` inside FFmpeg, a pulled USB camera can leave V4L2 waiting. So there are
two threads. A *reader* opens the source and reads it as fast as it delivers, keeping only
the newest frame (consumers that fall behind get the latest, never a backlog). A
*watchdog* looks at the reader: if it sits in ``open`` or ``read`` past its deadline the
watchdog abandons it — the stuck call stays on its daemon thread until the driver lets go,
and it is never touched again — and opens the source afresh on a new reader, with a
bounded backoff, counting stalls and reconnects. OpenCV's own open/read timeouts are set
too where the backend honours them (FFmpeg); the watchdog is for the ones that do not.

Sources are chosen by URL; the caller never asks which kind it got:

=============================  ============================================
``0``, ``camera:0``            camera index (V4L2 on Linux)
``/dev/video0``                a V4L2 device node
``rtsp://…``, ``rtsps://…``    RTSP (FFmpeg)
``http://…``, ``https://…``    MJPEG over HTTP (FFmpeg)
``file:PATH``, ``PATH``        a video file, played at its own frame rate
=============================  ============================================

Local devices take ``?width=&height=&fps=``; files take ``?loop=1`` (a file that ends is
*ended* — health ``CAMERA_ENDED`` — unless it loops). Network URLs are passed to FFmpeg
untouched, query included. Anything else is a ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from hardware.camera.api import CAMERA_STALLED, CAMERA_UNAVAILABLE, Camera, redact_url

#: After this many failed reads in a row the connection counts as lost (a single bad
#: packet on a stream is not a lost camera).
_READ_FAILURES = 3
#: The watchdog's look interval: how late, at most, it notices a stuck reader.
_TICK_S = 0.1


class FrameSource(Protocol):
    """The part of ``cv2.VideoCapture`` the camera uses (a test may hand in its own)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, Any]: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class Source:
    """A parsed camera URL: what OpenCV is asked to open, and how."""

    kind: str  # index | v4l2 | rtsp | mjpeg | file
    target: int | str
    loop: bool = False
    options: dict[str, float] = field(default_factory=dict)  # width / height / fps

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_NETWORK = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "mjpeg", "https": "mjpeg"}
_DEVICE_OPTIONS = ("width", "height", "fps")
_USAGE = ("use an index (0, camera:0), /dev/videoN, rtsp://…, http://… (MJPEG), "
          "file:PATH or a video path")


def _query(text: str, allowed: tuple[str, ...], url: str) -> dict[str, str]:
    pairs = parse_qsl(text, keep_blank_values=True)
    unknown = sorted({k for k, _ in pairs} - set(allowed))
    if unknown:
        raise ValueError(f"camera URL {url!r}: unknown option(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(allowed)})")
    return dict(pairs)


def _device_options(text: str, url: str) -> dict[str, float]:
    options: dict[str, float] = {}
    for key, value in _query(text, _DEVICE_OPTIONS, url).items():
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if number <= 0:
            raise ValueError(f"camera URL {url!r}: {key} must be a positive number")
        options[key] = number
    return options


def parse_source(url: str | int) -> Source:
    """``url`` → :class:`Source`, or ``ValueError`` saying in one line what is wrong."""
    if isinstance(url, int) and not isinstance(url, bool):
        if url < 0:
            raise ValueError(f"camera index must be >= 0, got {url}")
        return Source("index", url)
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"camera URL is empty; {_USAGE}")
    text = url.strip()
    head, _, query = text.partition("?")
    if head.isdigit():
        return Source("index", int(head), options=_device_options(query, text))
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme in _NETWORK:
        rest = text[len(scheme) + 1:]
        if not rest.startswith("//") or len(rest) <= 2 or rest[2] in "/?#":
            raise ValueError(f"camera URL {text!r}: no host")
        return Source(_NETWORK[scheme], text)
    if scheme == "camera":
        index = head[len("camera:"):]
        if not index.isdigit():
            raise ValueError(f"camera URL {text!r}: camera:N takes a index >= 0")
        return Source("index", int(index), options=_device_options(query, text))
    if head.startswith("/dev/video"):
        return Source("v4l2", head, options=_device_options(query, text))
    if scheme == "file":
        path = head[len("file:"):]
        if path.startswith("//"):  # file:///abs/path
            path = path[2:]
        if not path:
            raise ValueError(f"camera URL {text!r}: file: needs a path")
        return Source("file", path, loop=_loop(query, text))
    if scheme and not text.startswith(("/", ".")):
        raise ValueError(f"camera URL {text!r}: unknown scheme {scheme!r}; {_USAGE}")
    return Source("file", head, loop=_loop(query, text))


def _loop(query: str, url: str) -> bool:
    value = _query(query, ("loop",), url).get("loop", "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"camera URL {url!r}: loop must be 0 or 1")
    return value in ("1", "true", "yes")


def open_capture(source: Source, open_timeout_s: float, read_timeout_s: float
                 ) -> FrameSource:
    """A ``cv2.VideoCapture`` on ``source`` with its timeouts set where they take effect.

    FFmpeg honours open/read timeouts given at open time; V4L2 would refuse to open with
    parameters it does not know, so there they are only ``set`` afterwards (best effort).
    """
    import cv2

    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(read_timeout_s * 1000)]
    if source.kind in ("rtsp", "mjpeg", "file"):
        cap = cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG, timeouts)
    else:
        api = cv2.CAP_V4L2 if hasattr(cv2, "CAP_V4L2") else cv2.CAP_ANY
        cap = cv2.VideoCapture(source.target, api)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(read_timeout_s * 1000))
            props = {"width": cv2.CAP_PROP_FRAME_WIDTH, "height": cv2.CAP_PROP_FRAME_HEIGHT,
                     "fps": cv2.CAP_PROP_FPS}
            for key, value in source.options.items():
                cap.set(props[key], value)
    return cap


class _Session:
    """One connection attempt: its reader thread and what the watchdog needs to judge it."""

    def __init__(self, number: int, started_at: float) -> None:
        self.number = number
        self.started_at = started_at
        self.state = "opening"  # opening | open | failed | ended
        self.detail = ""
        self.opened_at: float | None = None
        self.last_frame_at: float | None = None
        self.frames = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None


class OpenCVCamera(Camera):
    """A :class:`Camera` on ``cv2.VideoCapture`` (see the module docstring for URLs).

    ``opener`` replaces ``cv2.VideoCapture`` (anything with ``isOpened``/``read``/
    ``release``): the reader, watchdog, backoff and health logic then run on it unchanged.
    ``pace`` plays a file at ``file_fps`` (its own rate when OpenCV knows it) instead of as
    fast as it decodes, so a file stands in for a camera; ``None`` paces files only.
    """

    def __init__(self, url: str | int, *, opener: Callable[[], FrameSource] | None = None,
                 stall_s: float = 2.0, open_timeout_s: float = 5.0,
                 read_timeout_s: float | None = None, backoff_s: float = 0.25,
                 backoff_max_s: float = 5.0, pace: bool | None = None,
                 file_fps: float = 15.0, max_abandoned: int = 4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = parse_source(url)
        super().__init__(url, stall_s=stall_s, clock=clock)
        if open_timeout_s <= 0 or backoff_s <= 0 or backoff_max_s < backoff_s:
            raise ValueError("open_timeout_s, backoff_s > 0 and backoff_max_s >= backoff_s")
        self.open_timeout_s = open_timeout_s
        # FFmpeg's own read timeout: later than the watchdog (which acts at stall_s), so
        # it only frees an abandoned reader's thread.
        self.read_timeout_s = read_timeout_s if read_timeout_s is not None \
            else max(2 * stall_s, 5.0)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.pace = self.source.is_file if pace is None else pace
        self.file_fps = file_fps
        self.max_abandoned = max_abandoned
        self._opener: Callable[[], FrameSource] = opener or (
            lambda: open_capture(self.source, self.open_timeout_s, self.read_timeout_s))
        self._current: _Session | None = None
        self._abandoned: list[_Session] = []
        self._wake = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._sessions = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._cond:
            if self._watchdog is not None or self._closed:
                return
            self._fault = (CAMERA_UNAVAILABLE, "connecting")
            self._watchdog = threading.Thread(target=self._supervise, daemon=True,
                                              name="camera-watchdog")
        self._watchdog.start()

    def close(self) -> None:
        self._set_closed()
        self._wake.set()
        with self._cond:
            session = self._current
        if session is not None:
            session.stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=2.0)
        if session is not None and session.thread is not None:
            session.thread.join(timeout=1.0)  # a read stuck in the driver stays a daemon

    def describe(self) -> str:
        loop = " loop" if self.source.loop else ""
        return f"opencv {self.source.kind}{loop} {redact_url(self.url)}"

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        with self._cond:
            self._abandoned = [s for s in self._abandoned
                               if s.thread is not None and s.thread.is_alive()]
            out["abandoned_reads"] = len(self._abandoned)
        return out

    # ------------------------------------------------------------------ the reader

    def _read(self, session: _Session) -> None:
        """One connection: open, then read until told to stop or the source fails."""
        try:
            source = self._opener()
        except Exception as exc:  # a driver error is an absent camera, not a crash
            self._session_over(session, "failed", f"open failed: {type(exc).__name__}")
            return
        try:
            try:
                opened = bool(source.isOpened())
            except Exception:
                opened = False
            if session.stop.is_set():
                return  # abandoned while opening: the watchdog has moved on
            if not opened:
                self._session_over(session, "failed", "cannot open")
                return
            self._opened(session, source)
            interval = self._pace_interval(source)
            due = time.monotonic()
            failures = 0
            while not session.stop.is_set():
                try:
                    ok, frame = source.read()
                except Exception:
                    ok, frame = False, None
                if session.stop.is_set():
                    return
                if ok and frame is not None:
                    failures = 0
                    self._deliver(session, frame)
                    if interval:
                        due += interval
                        delay = due - time.monotonic()
                        if delay > 0:
                            session.stop.wait(delay)
                        else:
                            due = time.monotonic()
                    continue
                failures += 1
                if failures >= _READ_FAILURES:
                    if self.source.is_file:
                        self._session_over(session, "ended", "end of file")
                    else:
                        self._session_over(session, "failed", "read failed: connection lost")
                    return
        finally:
            with contextlib.suppress(Exception):
                source.release()

    def _pace_interval(self, source: FrameSource) -> float:
        if not self.pace:
            return 0.0
        fps = self.file_fps
        get = getattr(source, "get", None)
        if callable(get):
            with contextlib.suppress(Exception):
                import cv2

                value = float(get(cv2.CAP_PROP_FPS))
                if 1.0 <= value <= 240.0:
                    fps = value
        return 1.0 / fps

    def _opened(self, session: _Session, source: FrameSource) -> None:
        with self._cond:
            if session is not self._current or session.stop.is_set():
                return
            session.state = "open"
            session.opened_at = self.clock()
            self._set_connected()
            if self._fault[0] == CAMERA_UNAVAILABLE:
                self._fault = (CAMERA_UNAVAILABLE, "connected, waiting for the first frame")
        self._wake.set()

    def _deliver(self, session: _Session, frame: Any) -> None:
        with self._cond:
            if session is not self._current or session.stop.is_set():
                return  # a late frame from an abandoned reader
            session.last_frame_at = self.clock()
            session.frames += 1
            self._publish(frame)

    def _session_over(self, session: _Session, state: str, detail: str) -> None:
        with self._cond:
            if session.stop.is_set():
                return
            session.state = state
            session.detail = detail
        self._wake.set()

    # ------------------------------------------------------------------ the watchdog

    def _supervise(self) -> None:
        """Keep a reader connected: judge it, abandon it when stuck, reopen with backoff."""
        backoff = self.backoff_s
        first = True
        while not self._closed:
            if not first:
                self._count(reconnects=1)
            first = False
            session = self._begin()
            outcome = self._watch(session)
            if outcome == "closed":
                return
            if outcome == "ended":
                if not self.source.loop:
                    self._set_ended()
                    return
                self._wait_for_abandoned()
                first = True  # a loop is not a reconnect
                continue
            if session.frames:
                backoff = self.backoff_s  # it worked for a while: retry quickly
            self._wait(backoff)
            backoff = min(self.backoff_max_s, backoff * 2)
            self._wait_for_abandoned()

    def _begin(self) -> _Session:
        with self._cond:
            self._sessions += 1
            session = _Session(self._sessions, self.clock())
            self._current = session
        session.thread = threading.Thread(target=self._read, args=(session,), daemon=True,
                                          name=f"camera-reader-{session.number}")
        session.thread.start()
        return session

    def _watch(self, session: _Session) -> str:
        while True:
            self._wake.wait(_TICK_S)
            self._wake.clear()
            with self._cond:
                if self._closed:
                    session.stop.set()
                    return "closed"
                now = self.clock()
                if session.state == "ended":
                    if not session.frames:  # opens, holds nothing: do not spin on it
                        self._set_disconnected(CAMERA_UNAVAILABLE, "file has no frames")
                        return "failed"
                    self._connected_at = None
                    return "ended"
                if session.state == "failed":
                    self._set_disconnected(CAMERA_UNAVAILABLE, session.detail)
                    return "failed"
                if session.state == "opening":
                    if now - session.started_at > self.open_timeout_s + 1.0:
                        self._abandon(session)
                        self._set_disconnected(CAMERA_UNAVAILABLE, "open timed out")
                        return "failed"
                    continue
                since = session.last_frame_at or session.opened_at or now
                if now - since > self.stall_s:
                    self._abandon(session)
                    self._count(stalls=1)
                    self._set_disconnected(CAMERA_STALLED,
                                           f"no frame for {now - since:.1f} s; reconnecting")
                    return "stalled"

    def _abandon(self, session: _Session) -> None:
        """Leave a reader that is stuck in the driver; its frames are never used."""
        session.stop.set()
        self._abandoned.append(session)

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._closed and time.monotonic() < end:
            self._wake.wait(min(_TICK_S, max(0.0, end - time.monotonic())))
            self._wake.clear()

    def _wait_for_abandoned(self) -> None:
        """Do not pile up threads stuck in a driver: wait while too many are."""
        while not self._closed:
            with self._cond:
                self._abandoned = [s for s in self._abandoned
                                   if s.thread is not None and s.thread.is_alive()]
                if len(self._abandoned) < self.max_abandoned:
                    return
            self._wait(0.5)


__all__ = ["FrameSource", "OpenCVCamera", "Source", "open_capture", "parse_source"]
