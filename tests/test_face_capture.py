"""Live capture on the lane camera device: gates, guidance, timeouts, failures, cancel.

The camera here is the product's :class:`OpenCVCamera` (reader thread, watchdog, health)
with an in-process frame source in place of ``cv2.VideoCapture``, so the capture logic is
tested fast and on its own; ``tests/test_camera.py`` runs the same capture on the MJPEG
peer in another process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from gate.face.capture import (
    CAMERA_FAILED,
    CANCELLED,
    FACE_NOT_CAPTURED,
    CaptureSettings,
    LiveFaceCapture,
)
from gate.face.quality import (
    LOOK_AT_CAMERA,
    ONE_PERSON_ONLY,
    UNCOVER_EYES,
    QualitySettings,
    assess,
)
from hardware.camera import CAMERA_ENDED, Camera
from hardware.camera.opencv import FrameSource, OpenCVCamera
from models.face import DetectedFace, DlibFaceModel, load_face_model
from models.pack import build_dlib_pack
from models.runtime import RuntimeSettings
from sim.camera import SimCamera, View, render
from sim.people import person

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> DlibFaceModel:
    folder = tmp_path_factory.mktemp("packs") / "dlib-resnet-v1"
    build_dlib_pack(folder)
    m = load_face_model(folder, RuntimeSettings(gpu="off"))
    assert isinstance(m, DlibFaceModel)
    return m


@pytest.fixture
def cameras() -> Iterator[list[Camera]]:
    """Cameras a test started; all closed at teardown."""
    started: list[Camera] = []
    yield started
    for cam in started:
        cam.close()


def _started(cameras: list[Camera], url: str, source: FrameSource | None = None,
             healthy: bool = True, **opts: Any) -> OpenCVCamera:
    opener = (lambda: source) if source is not None else None
    cam = OpenCVCamera(url, opener=opener, **opts)
    cameras.append(cam)
    cam.start()
    if healthy:  # delivering (or a file already played through)
        end = time.monotonic() + 10
        while not (cam.health.ok or cam.ended) and time.monotonic() < end:
            time.sleep(0.02)
        assert cam.health.ok or cam.ended, cam.health
    return cam


def _sim(cameras: list[Camera], scene: str, person_id: str = "astronaut",
         **opts: Any) -> OpenCVCamera:
    """The simulated scene, paced like a device, as a live stream."""
    return _started(cameras, f"rtsp://in-process.test/{scene}",
                    SimCamera(scene, person_id=person_id, realtime=True), **opts)


def _capture(model: DlibFaceModel, camera: Camera, window_s: float = 3.0,
             **kw: Any) -> tuple[Any, list[str], float]:
    settings = CaptureSettings(window_s=window_s, **kw)
    cap = LiveFaceCapture(model, camera, settings)
    hints: list[str] = []
    t = time.monotonic()
    out = cap.capture(hints.append, threading.Event())
    return out, hints, time.monotonic() - t


def test_approaching_traveller_is_captured(model: DlibFaceModel,
                                           cameras: list[Camera]) -> None:
    out, hints, _ = _capture(model, _sim(cameras, "approach"), window_s=8.0)
    assert out.ok and not out.reasons
    assert 1 <= len(out.frames) <= 3
    assert all(f.shape == (720, 1280, 3) for f in out.frames)
    for q in out.quality:
        assert q["faces"] == 1 and q["eye_distance_px"] >= 40 and abs(q["yaw"]) <= 0.3
    assert "CAPTURING" in hints
    assert out.timings_ms["frames"] >= 1


def test_no_face_times_out(model: DlibFaceModel, cameras: list[Camera]) -> None:
    out, hints, took = _capture(model, _sim(cameras, "no_face"), window_s=1.5)
    assert not out.ok and out.reasons == (FACE_NOT_CAPTURED,)
    assert hints == [LOOK_AT_CAMERA]
    assert took < 4.0


def test_tailgater_is_refused(model: DlibFaceModel, cameras: list[Camera]) -> None:
    out, hints, _ = _capture(model, _sim(cameras, "tailgater"), window_s=2.0)
    assert out.reasons == (FACE_NOT_CAPTURED,)
    assert ONE_PERSON_ONLY in hints


def test_covered_eyes_are_refused(model: DlibFaceModel, cameras: list[Camera]) -> None:
    out, hints, _ = _capture(model, _sim(cameras, "eyes_covered", "tom"), window_s=2.0)
    assert out.reasons == (FACE_NOT_CAPTURED,)
    assert UNCOVER_EYES in hints


def test_camera_that_stops_delivering_is_a_camera_failure(model: DlibFaceModel,
                                                          cameras: list[Camera]) -> None:
    out, _, took = _capture(model, _sim(cameras, "camera_failure"), window_s=8.0)
    assert out.reasons == (CAMERA_FAILED,)
    assert took < 5.0


def test_camera_that_cannot_open(model: DlibFaceModel, cameras: list[Camera],
                                 tmp_path: Path) -> None:
    cam = _started(cameras, f"file:{tmp_path / 'missing.mp4'}", healthy=False)
    end = time.monotonic() + 10
    while cam.health.detail != "cannot open" and time.monotonic() < end:
        time.sleep(0.02)
    assert cam.health.reason == "CAMERA_UNAVAILABLE", cam.health
    out, _, took = _capture(model, cam, window_s=5.0)
    assert out.reasons == (CAMERA_FAILED,)
    assert out.timings_ms["frames"] == 0
    assert took < 1.0  # the device already said so: no waiting for frames


class _Feed:
    """Frames of a scene at 15 fps until ``hang`` is set, then a read that blocks until
    ``release`` — a camera that stops mid-stream with the driver stuck in ``read``."""

    def __init__(self, frames: int | None = None, face: bool = False) -> None:
        main = (person("astronaut"), View()) if face else None
        self.frame = render(main)
        self.hang = threading.Event()
        self.release_read = threading.Event()
        self.frames = frames  # hang by itself after this many frames
        self.sent = 0

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, Any]:
        if self.frames is not None and self.sent >= self.frames:
            self.hang.set()
        if self.hang.is_set():
            self.release_read.wait(30)
            return False, None
        time.sleep(1 / 15)
        self.sent += 1
        return True, self.frame

    def release(self) -> None:
        self.release_read.set()


def test_hung_camera_does_not_hang_the_capture(model: DlibFaceModel,
                                               cameras: list[Camera]) -> None:
    feed = _Feed()
    cam = _started(cameras, "rtsp://in-process.test/hangs", feed, stall_s=5.0)
    threading.Timer(0.5, feed.hang.set).start()
    try:
        out, _, took = _capture(model, cam, window_s=10.0, camera_timeout_s=0.5)
    finally:
        feed.release_read.set()
    assert out.reasons == (CAMERA_FAILED,)
    assert out.timings_ms["frames"] >= 1  # it was delivering when the capture began
    assert took < 2.5


def test_a_frame_from_before_the_capture_is_not_judged(model: DlibFaceModel,
                                                       cameras: list[Camera]) -> None:
    """The camera's newest frame may show the previous traveller: a capture waits for a
    frame taken after it started, so one good face that came before is not captured."""
    feed = _Feed(frames=1, face=True)
    cam = _started(cameras, "rtsp://in-process.test/one-frame", feed, stall_s=10.0)
    try:
        assert cam.seq == 1 and cam.health.ok
        out, _, _ = _capture(model, cam, window_s=5.0, camera_timeout_s=0.5)
    finally:
        feed.release_read.set()
    assert out.reasons == (CAMERA_FAILED,)
    assert out.timings_ms["frames"] == 0


def test_a_video_file_that_ends_is_no_camera_failure(model: DlibFaceModel,
                                                     cameras: list[Camera],
                                                     tmp_path: Path) -> None:
    clip = tmp_path / "empty-lane.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (1280, 720))
    for i in range(8):
        writer.write(render(None, seed=i))
    writer.release()
    cam = _started(cameras, f"file:{clip}")
    out, _, took = _capture(model, cam, window_s=8.0)
    assert out.reasons == (FACE_NOT_CAPTURED,)
    assert cam.ended and cam.health.reason == CAMERA_ENDED
    assert took < 5.0  # it ended with the file, not with the window


def test_cancel_returns_promptly(model: DlibFaceModel, cameras: list[Camera]) -> None:
    cap = LiveFaceCapture(model, _sim(cameras, "no_face"), CaptureSettings(window_s=30))
    cancel = threading.Event()
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(cap.capture(lambda _: None, cancel)))
    t = time.monotonic()
    worker.start()
    time.sleep(0.5)
    cancel.set()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert result[0].reasons == (CANCELLED,)
    assert time.monotonic() - t < 3.0


def test_pose_gate_from_landmarks() -> None:
    frame = render((person("astronaut"), View()))
    eyes = np.array([[600, 300], [630, 300], [670, 300], [700, 300]], np.float32)
    frontal = DetectedFace((560, 240, 740, 420), 1.0,
                           np.vstack([eyes, [[650, 370]]]).astype(np.float32))
    turned = DetectedFace(frontal.box, 1.0,
                          np.vstack([eyes, [[690, 370]]]).astype(np.float32))
    s = QualitySettings()
    assert LOOK_AT_CAMERA not in assess(frame, frontal, s).failures
    assert LOOK_AT_CAMERA in assess(frame, turned, s).failures
    q = assess(frame, frontal, s, others=1)
    assert q.failures[0] == ONE_PERSON_ONLY
