"""Live face capture: frames from the lane camera → the best few frames that pass the gates.

The camera is a device (:class:`hardware.camera.Camera`), opened once when the lane
starts and watched for health from then on, so a dead camera takes the lane out of
service before a traveller is let in — not once they are shut inside. A capture only
*takes* frames from it: ``next_frame`` hands out the newest frame with a timeout, so the
capture honours its window, its cancel event and a camera that fails mid-capture without
ever blocking its caller (the lane calls it on a worker thread anyway, never on the thread
that polls the barrier). Only frames that arrive after the capture began are judged: the
frame waiting in the camera may show the previous traveller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog

from gate.face.quality import (
    LOOK_AT_CAMERA,
    ONE_PERSON_ONLY,
    FrameQuality,
    QualitySettings,
    assess,
)
from gate.schema import setting
from gate.stages import CaptureOutcome, Guidance
from hardware.camera import Camera
from models.face import FaceModel

log = structlog.get_logger(__name__)

FACE_NOT_CAPTURED = "FACE_NOT_CAPTURED"
CAMERA_FAILED = "CAMERA_FAILED"
CANCELLED = "CANCELLED"
CAPTURING = "CAPTURING"  # guidance while good frames are being collected


@dataclass(frozen=True)
class CaptureSettings:
    # give up after this long: FACE_NOT_CAPTURED
    window_s: float = setting(10.0, above=0, high=60.0, unit="seconds")
    # after the first good frame, keep looking this long for better
    settle_s: float = setting(0.6, low=0, high=10.0, unit="seconds")
    # frames kept for verification (a case holds at most 5 live frames)
    best_frames: int = setting(3, low=1, high=5)
    # no frame for this long (or camera unhealthy): CAMERA_FAILED
    camera_timeout_s: float = setting(2.0, above=0, high=30.0, unit="seconds")
    quality: QualitySettings = setting(factory=QualitySettings)


@dataclass
class _Candidate:
    frame: np.ndarray
    quality: FrameQuality


class LiveFaceCapture:
    """The lane's :class:`gate.stages.FaceCapture` on the lane camera device.

    Each ``capture`` watches the (already started) camera for at most ``window_s`` and
    returns the best ``best_frames`` frames that passed every gate, with their quality
    measures (face box included, so verification need not detect again). The camera is
    not owned here: whoever started it closes it.

    Reasons: ``CAMERA_FAILED`` (camera unhealthy, or no new frame for
    ``camera_timeout_s``), ``FACE_NOT_CAPTURED`` (window over without a good frame, or a
    video file that ended: a file running out is no camera failure), ``CANCELLED``.
    """

    def __init__(self, model: FaceModel, camera: Camera,
                 settings: CaptureSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.camera = camera
        self.settings = settings or CaptureSettings()
        self.clock = clock

    def capture(self, guidance: Guidance, cancel: threading.Event) -> CaptureOutcome:
        t0 = self.clock()
        failed = self._camera_failure()
        if failed is not None:
            return self._outcome(False, (failed,), [], t0, frames=0)
        return self._watch(guidance, cancel, t0)

    def _camera_failure(self) -> str | None:
        """The reason to stop on the camera's own word, or None while it is healthy."""
        if self.camera.ended:
            return FACE_NOT_CAPTURED
        health = self.camera.health
        if health.ok:
            return None
        log.warning("face_capture_camera", reason=health.reason, detail=health.detail)
        return CAMERA_FAILED

    def _watch(self, guidance: Guidance, cancel: threading.Event, t0: float
               ) -> CaptureOutcome:
        s = self.settings
        seq = self.camera.seq  # only frames that arrive from now on
        frames = 0
        last_frame_at = self.clock()
        first_good: float | None = None
        last_hint: str | None = None
        guided = False  # the first judgement is always shown, a good frame included
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
            seq, frame = self.camera.next_frame(seq, timeout=wait)
            if frame is None:
                reason = self._camera_failure()
                if reason is None and self.clock() - last_frame_at > s.camera_timeout_s:
                    reason = CAMERA_FAILED
                if reason is not None:
                    if best:
                        break
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
            if hint != last_hint or not guided:
                guidance(hint or CAPTURING)
                last_hint, guided = hint, True
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
           "CaptureSettings", "LiveFaceCapture"]
