"""A document reader made of a camera looking at the reader's glass.

Most e-gate readers are a camera under (or over) a glass plate. Nothing tells the lane
that a document was laid down: the reader has to see it. :class:`GlassWatch` decides
from the frames alone, with three cheap measures on a small grey copy of each frame
(``width`` pixels wide, 320 by default: a few milliseconds a frame):

* **covered** — the fraction of the view that differs from the *empty glass*. The empty
  glass is learnt from the first frames, then follows slow changes (daylight, a lamp
  ageing) — but only while the glass is empty, so a document lying there for minutes
  never becomes part of the "empty" picture;
* **motion** — the mean change from the previous frame: a page still being put down, or
  a hand over it, moves;
* **sharpness** — the variance of the Laplacian: a page in focus has crisp print.

A document is *placed* once the view has differed from the empty glass for
``confirm_frames`` frames in a row; the watch then keeps ``keep_frames`` frames that are
both stable and sharp and reports PLACED with them (the MRZ reader votes across them).
It is *removed* once the view has matched the empty glass for ``confirm_frames`` frames.
A document left lying is reported once: nothing new happens until it is gone.

When the camera goes away the reader says ``READER_UNAVAILABLE`` and forgets half-seen
arrivals, but keeps what it had reported: a document that was on the glass and still is
when the camera returns is not reported a second time (one placement, one passage). The
limitation that follows: a document swapped for another *during* an outage is seen as
the same one.

The empty glass is learnt from what the camera shows first, so a document already lying
there when the reader starts is taken for the glass. The watch recovers on its own: a
view that differs from the learnt glass but stays still and *featureless* (not sharp) for
``relearn_frames`` frames is no document — it is the bare glass (or the light changed) —
and becomes the new empty-glass picture. Nothing is reported for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from hardware.camera.api import Camera
from hardware.device import DeviceHealth
from hardware.docreader.api import READER_UNAVAILABLE, DocumentReader, ReaderNoticeKind


@dataclass(frozen=True)
class GlassSettings:
    """How the watch tells a document from the empty glass (defaults: a dark reader
    glass seen at about 1 to 2 megapixels, 5 to 30 fps)."""

    width: int = 320  # the measures run on a grey copy this many pixels wide
    learn_frames: int = 5  # steady frames averaged into the first empty-glass picture
    confirm_frames: int = 3  # N: frames in a row that differ (placed) or match (removed)
    keep_frames: int = 3  # K: stable, sharp frames handed over with PLACED
    diff_level: float = 18.0  # grey levels: a pixel this far from the empty glass differs
    min_covered: float = 0.03  # a document covers at least this fraction of the view
    max_motion: float = 2.0  # mean grey-level change between frames still called stable
    min_sharpness: float = 40.0  # variance of the Laplacian; the empty glass is near 4
    adapt_rate: float = 0.05  # how fast the empty-glass picture follows an empty glass
    relearn_frames: int = 40  # still, featureless, yet "different": the glass itself

    def __post_init__(self) -> None:
        if self.width < 32:
            raise ValueError("width must be at least 32 pixels")
        if min(self.learn_frames, self.confirm_frames, self.keep_frames,
               self.relearn_frames) < 1:
            raise ValueError("learn_frames, confirm_frames, keep_frames and relearn_frames "
                             "must be >= 1")
        if not 0.0 < self.min_covered < 1.0:
            raise ValueError("min_covered must be between 0 and 1")
        if not 0.0 <= self.adapt_rate <= 1.0:
            raise ValueError("adapt_rate must be between 0 and 1")


@dataclass(frozen=True)
class FrameMeasure:
    """What the watch measured on one frame (also shown on the maintenance page)."""

    covered: float  # fraction of the view that differs from the empty glass
    motion: float  # mean grey-level change from the previous frame (inf: no previous)
    sharpness: float  # variance of the Laplacian of the small grey frame


@dataclass(frozen=True)
class GlassChange:
    """A decision of the watch: PLACED with its frames, or REMOVED."""

    kind: ReaderNoticeKind
    frames: tuple[np.ndarray, ...] = ()
    placed_at: float = 0.0


@dataclass
class _Arrival:
    first_seen: float
    kept: list[np.ndarray] = field(default_factory=list)
    featureless: int = 0  # still but not sharp, in a row


class GlassWatch:
    """Frames in, PLACED / REMOVED decisions out: the whole judgement, with no thread and
    no clock of its own, so it can be driven frame by frame (and tested so)."""

    def __init__(self, settings: GlassSettings | None = None) -> None:
        self.settings = settings or GlassSettings()
        self._reference: np.ndarray | None = None
        self._learning: list[np.ndarray] = []
        self._previous: np.ndarray | None = None
        self._differ_run = 0  # frames in a row that differ from the empty glass
        self._match_run = 0  # frames in a row that match it
        self._run_started = 0.0  # when the current run of differing frames began
        self._arrival: _Arrival | None = None  # confirmed, not yet reported
        self._reported = False
        self.last: FrameMeasure | None = None

    @property
    def learned(self) -> bool:
        return self._reference is not None

    @property
    def reported(self) -> bool:
        """A document was reported PLACED and has not been seen to go."""
        return self._reported

    def interrupt(self) -> None:
        """The frames stopped (camera gone): forget what was half seen, keep the empty
        glass and whether a document was reported."""
        self._previous = None
        self._differ_run = self._match_run = 0
        self._arrival = None

    def feed(self, frame: np.ndarray, now: float) -> GlassChange | None:
        """Judge one frame taken at ``now``; returns a change when one is decided."""
        s = self.settings
        small = _small_grey(frame, s.width)
        smooth = cv2.GaussianBlur(small, (5, 5), 0)
        previous, self._previous = self._previous, small
        if previous is not None and previous.shape != small.shape:
            previous = None  # the camera changed its resolution: start over
            self._reference, self._learning = None, []
        motion = float(np.mean(np.abs(small - previous))) if previous is not None else np.inf
        if self._reference is None:
            self._learn(smooth, motion)
            return None
        covered = float(np.mean(np.abs(smooth - self._reference) > s.diff_level))
        sharpness = float(cv2.Laplacian(small, cv2.CV_32F).var())
        self.last = FrameMeasure(covered, motion, sharpness)
        stable = motion <= s.max_motion
        if covered >= s.min_covered:
            if self._differ_run == 0:
                self._run_started = now
            self._differ_run += 1
            self._match_run = 0
        else:
            self._match_run += 1
            self._differ_run = 0

        if self._match_run >= s.confirm_frames:
            self._arrival = None
            if self._reported:
                self._reported = False
                return GlassChange(ReaderNoticeKind.REMOVED)
        if self._match_run > 0:
            if self._arrival is None and not self._reported and stable:
                rate = s.adapt_rate
                self._reference = (1.0 - rate) * self._reference + rate * smooth
            return None
        if self._reported:
            return None  # the document already reported is still there
        if self._arrival is None and self._differ_run >= s.confirm_frames:
            self._arrival = _Arrival(self._run_started)
        if self._arrival is None:
            return None
        sharp = sharpness >= s.min_sharpness
        if stable and sharp:
            self._arrival.kept.append(frame)
        self._arrival.featureless = self._arrival.featureless + 1 if stable and not sharp else 0
        if self._arrival.featureless >= s.relearn_frames:
            self._reference = smooth.copy()  # no document looks like that: it is the glass
            self._arrival = None
            self._differ_run = 0
            return None
        if len(self._arrival.kept) < s.keep_frames:
            return None
        arrival, self._arrival = self._arrival, None
        self._reported = True
        return GlassChange(ReaderNoticeKind.PLACED, tuple(arrival.kept), arrival.first_seen)

    def _learn(self, smooth: np.ndarray, motion: float) -> None:
        if motion > self.settings.max_motion:
            self._learning = []  # something moves: not a picture of the empty glass yet
        self._learning.append(smooth)
        if len(self._learning) >= self.settings.learn_frames:
            self._reference = np.mean(np.stack(self._learning), axis=0).astype(np.float32)
            self._learning = []


def _small_grey(frame: np.ndarray, width: int) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    h, w = grey.shape[:2]
    height = max(1, round(h * width / w))
    small = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.float32)


class CameraDocumentReader(DocumentReader):
    """A :class:`DocumentReader` over a document camera (:class:`hardware.camera.Camera`).

    With ``own_camera`` (the default) the reader starts and closes the camera itself; a
    caller that shares the camera passes False and manages it.
    """

    def __init__(self, camera: Camera, settings: GlassSettings | None = None, *,
                 own_camera: bool = True, frame_timeout_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, logger: Any = None) -> None:
        super().__init__(logger=logger)
        self.camera = camera
        self.watch = GlassWatch(settings)
        self.own_camera = own_camera
        self.frame_timeout_s = frame_timeout_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._frames = 0
        self._errors = 0

    def describe(self) -> str:
        return f"{type(self).__name__} on {self.camera.describe()}"

    def start(self) -> None:
        if self._thread is not None or self._closed:
            return
        if self.own_camera:
            self.camera.start()
        self._thread = threading.Thread(target=self._watch, name="docreader-camera",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        if self.own_camera:
            self.camera.close()

    @property
    def health(self) -> DeviceHealth:
        if self._closed:
            return DeviceHealth.bad(READER_UNAVAILABLE, "closed")
        if self._thread is None:
            return DeviceHealth.bad(READER_UNAVAILABLE, "not started")
        if not self._thread.is_alive():
            return DeviceHealth.bad(READER_UNAVAILABLE, "the watch stopped")
        camera = self.camera.health
        if not camera.ok:
            return DeviceHealth.bad(READER_UNAVAILABLE,
                                    f"document camera {camera.reason}: {camera.detail}")
        if not self.watch.learned:
            return DeviceHealth.good("learning the empty glass")
        return DeviceHealth.good(camera.detail)

    def stats(self) -> dict[str, Any]:
        """Counters and the latest measures, for metrics and the maintenance page."""
        last = self.watch.last
        return {
            "frames": self._frames,
            "errors": self._errors,
            "placements": self._placements,
            "present": self.document_present,
            "covered": None if last is None else round(last.covered, 4),
            "motion": None if last is None else round(last.motion, 3),
            "sharpness": None if last is None else round(last.sharpness, 1),
        }

    def _watch(self) -> None:
        """The reader's thread: frames from the camera, decisions, notices."""
        seq = 0
        lost = False
        while not self._stop.is_set():
            new_seq, frame = self.camera.next_frame(seq, self.frame_timeout_s)
            if self._stop.is_set():
                break
            if frame is None:
                camera = self.camera.health
                if not camera.ok:
                    if not lost:
                        lost = True
                        self.watch.interrupt()
                        self._log.warning("docreader.source_lost", reason=camera.reason,
                                          detail=camera.detail)
                    self._stop.wait(0.1)  # a closed or ended camera answers at once
                continue
            if lost:
                lost = False
                self._log.info("docreader.source_back")
            seq = new_seq
            self._frames += 1
            try:
                change = self.watch.feed(frame, self.clock())
            except Exception:  # one odd frame (a broken decode) must not end the watch
                self._errors += 1
                self._log.exception("docreader.frame_failed")
                continue
            if change is None:
                continue
            if change.kind is ReaderNoticeKind.PLACED:
                self._placed(change.frames, change.placed_at)
            else:
                self._removed()


__all__ = ["CameraDocumentReader", "FrameMeasure", "GlassChange", "GlassSettings",
           "GlassWatch"]
