"""Live face capture: frames from the lane camera → the best few frames that pass the gates.

Reading a camera can block for seconds (an RTSP stream that stalls, a USB camera that was
pulled), so frames are read by a *grabber thread* that only ever keeps the newest frame;
the capture loop waits on it with a timeout. That way the capture honours its window, its
cancel event and camera failure without ever blocking its caller — and the lane calls it
on a worker thread anyway, never on the thread that polls the barrier.

Camera sources are chosen by a configuration string (``camera:0``, ``file:/path.mp4``,
``rtsp://…``, ``sim:approach``); the capture code never asks which kind it got.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import structlog

from gate.face.quality import (
    LOOK_AT_CAMERA,
    ONE_PERSON_ONLY,
    FrameQuality,
    QualitySettings,
    assess,
)
from gate.stages import CaptureOutcome, Guidance
from models.face import FaceModel

log = structlog.get_logger(__name__)

FACE_NOT_CAPTURED = "FACE_NOT_CAPTURED"
CAMERA_FAILED = "CAMERA_FAILED"
CANCELLED = "CANCELLED"
CAPTURING = "CAPTURING"  # guidance while good frames are being collected


class FrameSource(Protocol):
    """The part of ``cv2.VideoCapture`` the capture uses."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, Any]: ...

    def release(self) -> None: ...


def _open_cv2(target: int | str) -> FrameSource:
    import cv2

    cap = cv2.VideoCapture(target)
    return cap


#: scheme → opener. ``sim`` is resolved by module path so the product path does not
#: import the simulator unless configured to.
CAMERA_SCHEMES: dict[str, str | Callable[[str], FrameSource]] = {
    "camera": lambda spec: _open_cv2(int(spec.split(":", 1)[1] or 0)),
    "file": lambda spec: _open_cv2(spec.split(":", 1)[1]),
    "rtsp": _open_cv2,
    "rtsps": _open_cv2,
    "http": _open_cv2,
    "https": _open_cv2,
    "sim": "sim.camera:open_sim_camera",
}


def open_camera(spec: str) -> FrameSource:
    """Open a camera from its configuration string (see ``CAMERA_SCHEMES``)."""
    scheme = spec.split(":", 1)[0] if ":" in spec else ""
    if scheme not in CAMERA_SCHEMES:
        if spec.isdigit():
            return _open_cv2(int(spec))
        return _open_cv2(spec)  # a plain file path
    opener = CAMERA_SCHEMES[scheme]
    if isinstance(opener, str):
        module, _, name = opener.partition(":")
        opener = getattr(importlib.import_module(module), name)
    return opener(spec)


@dataclass(frozen=True)
class CaptureSettings:
    window_s: float = 10.0  # give up after this long: FACE_NOT_CAPTURED
    settle_s: float = 0.6  # after the first good frame, keep looking this long for better
    best_frames: int = 3
    camera_timeout_s: float = 2.0  # no frame for this long: CAMERA_FAILED
    file_source: bool = False  # end of stream = no more frames, not a camera failure
    quality: QualitySettings = field(default_factory=QualitySettings)


class _Grabber(threading.Thread):
    """Reads frames as fast as the source gives them; keeps only the newest."""

    def __init__(self, source: FrameSource) -> None:
        super().__init__(name="face-camera-grabber", daemon=True)
        self.source = source
        self.cond = threading.Condition()
        self.frame: np.ndarray | None = None
        self.seq = 0
        self.failed = False
        self.ended = False
        self.stop = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                ok, frame = self.source.read()
            except Exception:  # a driver error is a camera failure, not a crash
                ok, frame = False, None
            with self.cond:
                if ok and frame is not None:
                    failures = 0
                    self.frame = frame
                    self.seq += 1
                else:
                    failures += 1
                    if failures >= 3:
                        self.ended = True
                        self.cond.notify_all()
                        return
                self.cond.notify_all()

    def next_frame(self, after: int, timeout: float) -> tuple[int, np.ndarray | None]:
        with self.cond:
            self.cond.wait_for(lambda: self.seq > after or self.ended, timeout=timeout)
            if self.seq > after and self.frame is not None:
                return self.seq, self.frame
            return after, None


@dataclass
class _Candidate:
    frame: np.ndarray
    quality: FrameQuality


class LiveFaceCapture:
    """The lane's :class:`gate.stages.FaceCapture` on a real (or simulated) camera.

    Each ``capture`` opens the camera source, watches it for at most ``window_s``, and
    returns the best ``best_frames`` frames that passed every gate, with their quality
    measures (face box included, so verification need not detect again).
    """

    def __init__(self, model: FaceModel, camera: str | Callable[[], FrameSource],
                 settings: CaptureSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.settings = settings or CaptureSettings()
        spec = camera
        self._open: Callable[[], FrameSource] = (
            (lambda: open_camera(spec)) if isinstance(spec, str) else spec)
        self._file = self.settings.file_source or (
            isinstance(camera, str) and camera.startswith("file:"))
        self.clock = clock

    def capture(self, guidance: Guidance, cancel: threading.Event) -> CaptureOutcome:
        t0 = self.clock()
        try:
            source = self._open()
            opened = source.isOpened()
        except Exception as exc:
            log.warning("camera_open_failed", error=type(exc).__name__)
            return self._outcome(False, (CAMERA_FAILED,), [], t0, frames=0)
        if not opened:
            return self._outcome(False, (CAMERA_FAILED,), [], t0, frames=0)
        grabber = _Grabber(source)
        grabber.start()
        try:
            return self._watch(grabber, guidance, cancel, t0)
        finally:
            grabber.stop.set()
            try:
                source.release()
            except Exception:
                log.warning("camera_release_failed")
            grabber.join(timeout=0.5)  # a stuck read stays on its daemon thread

    def _watch(self, grabber: _Grabber, guidance: Guidance, cancel: threading.Event,
               t0: float) -> CaptureOutcome:
        s = self.settings
        seq = 0
        frames = 0
        last_frame_at = self.clock()
        first_good: float | None = None
        last_hint: str | None = None
        best: list[_Candidate] = []
        detect_ms: list[float] = []
        while True:
            now = self.clock()
            if cancel.is_set():
                return self._outcome(False, (CANCELLED,), [], t0, frames, detect_ms)
            if first_good is not None and (now - first_good >= s.settle_s
                                           or len(best) >= s.best_frames * 3):
                break
            if now - t0 >= s.window_s:
                if best:
                    break
                return self._outcome(False, (FACE_NOT_CAPTURED,), [], t0, frames, detect_ms)
            wait = min(0.1, max(0.0, s.window_s - (now - t0)))
            seq, frame = grabber.next_frame(seq, timeout=wait)
            if frame is None:
                if grabber.ended or self.clock() - last_frame_at > s.camera_timeout_s:
                    if best:
                        break
                    reason = FACE_NOT_CAPTURED if (self._file and grabber.ended) \
                        else CAMERA_FAILED
                    return self._outcome(False, (reason,), [], t0, frames, detect_ms)
                continue
            last_frame_at = self.clock()
            frames += 1
            td = time.perf_counter()
            hint, candidate = self._judge(frame)
            detect_ms.append((time.perf_counter() - td) * 1000)
            if candidate is not None:
                best.append(candidate)
                if first_good is None:
                    first_good = self.clock()
            if hint != last_hint:
                guidance(hint or CAPTURING)
                last_hint = hint
        best.sort(key=lambda c: -c.quality.score)
        return self._outcome(True, (), best[: s.best_frames], t0, frames, detect_ms)

    def _judge(self, frame: np.ndarray) -> tuple[str | None, _Candidate | None]:
        faces = self.model.detect(frame)
        if not faces:
            return LOOK_AT_CAMERA, None
        main = faces[0]
        others = sum(1 for f in faces[1:]
                     if f.width >= self.settings.quality.other_face_fraction * main.width)
        main = self.model.landmarks(frame, main)
        quality = assess(frame, main, self.settings.quality, others=others)
        if quality.failures:
            return quality.failures[0], None
        return None, _Candidate(frame.copy(), quality)

    def _outcome(self, ok: bool, reasons: tuple[str, ...], best: list[_Candidate], t0: float,
                 frames: int, per_frame_ms: list[float] | None = None) -> CaptureOutcome:
        timings = {"capture_ms": round((self.clock() - t0) * 1000, 1), "frames": float(frames)}
        if per_frame_ms:
            arr = np.asarray(per_frame_ms)
            timings["frame_p50_ms"] = round(float(np.percentile(arr, 50)), 2)
        outcome = CaptureOutcome(
            ok=ok, reasons=reasons, frames=tuple(c.frame for c in best),
            quality=tuple(c.quality.measures for c in best), timings_ms=timings)
        log.info("face_capture", **outcome.log_summary())
        return outcome


__all__ = ["CAMERA_FAILED", "CANCELLED", "FACE_NOT_CAPTURED", "ONE_PERSON_ONLY",
           "CaptureSettings", "FrameSource", "LiveFaceCapture", "open_camera"]
