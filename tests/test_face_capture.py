"""Live capture on the simulated lane camera: gates, guidance, timeouts, failures, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate.face.capture import (
    CAMERA_FAILED,
    CANCELLED,
    FACE_NOT_CAPTURED,
    CaptureSettings,
    LiveFaceCapture,
    open_camera,
)
from gate.face.quality import (
    LOOK_AT_CAMERA,
    ONE_PERSON_ONLY,
    UNCOVER_EYES,
    QualitySettings,
    assess,
)
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


def _capture(model: DlibFaceModel, camera: Any, window_s: float = 3.0,
             **kw: Any) -> tuple[Any, list[str], float]:
    settings = CaptureSettings(window_s=window_s, **kw)
    cap = LiveFaceCapture(model, camera, settings)
    hints: list[str] = []
    t = time.monotonic()
    out = cap.capture(hints.append, threading.Event())
    return out, hints, time.monotonic() - t


def test_approaching_traveller_is_captured(model: DlibFaceModel) -> None:
    out, hints, _ = _capture(model, "sim:approach", window_s=8.0)
    assert out.ok and not out.reasons
    assert 1 <= len(out.frames) <= 3
    assert all(f.shape == (720, 1280, 3) for f in out.frames)
    for q in out.quality:
        assert q["faces"] == 1 and q["eye_distance_px"] >= 40 and abs(q["yaw"]) <= 0.3
    assert "CAPTURING" in hints
    assert out.timings_ms["frames"] >= 1


def test_no_face_times_out(model: DlibFaceModel) -> None:
    out, hints, took = _capture(model, "sim:no_face", window_s=1.5)
    assert not out.ok and out.reasons == (FACE_NOT_CAPTURED,)
    assert hints == [LOOK_AT_CAMERA]
    assert took < 4.0


def test_tailgater_is_refused(model: DlibFaceModel) -> None:
    out, hints, _ = _capture(model, "sim:tailgater", window_s=2.0)
    assert out.reasons == (FACE_NOT_CAPTURED,)
    assert ONE_PERSON_ONLY in hints


def test_covered_eyes_are_refused(model: DlibFaceModel) -> None:
    cam = SimCamera("eyes_covered", person_id="tom")
    out, hints, _ = _capture(model, lambda: cam, window_s=2.0)
    assert out.reasons == (FACE_NOT_CAPTURED,)
    assert UNCOVER_EYES in hints


def test_camera_that_stops_delivering_is_a_camera_failure(model: DlibFaceModel) -> None:
    out, _, took = _capture(model, "sim:camera_failure", window_s=8.0)
    assert out.reasons == (CAMERA_FAILED,)
    assert took < 5.0


def test_camera_that_cannot_open(model: DlibFaceModel, tmp_path: Path) -> None:
    out, _, _ = _capture(model, f"file:{tmp_path / 'missing.mp4'}", window_s=1.0)
    assert out.reasons == (CAMERA_FAILED,)


class _HungCamera:
    """A camera whose read blocks until released — a dead USB camera."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, Any]:
        self.released.wait(30)
        return False, None

    def release(self) -> None:
        self.released.set()


def test_hung_camera_does_not_hang_the_capture(model: DlibFaceModel) -> None:
    cam = _HungCamera()
    out, _, took = _capture(model, lambda: cam, window_s=10.0, camera_timeout_s=0.5)
    assert out.reasons == (CAMERA_FAILED,)
    assert took < 2.0
    assert cam.released.is_set()


def test_cancel_returns_promptly(model: DlibFaceModel) -> None:
    cap = LiveFaceCapture(model, "sim:no_face?realtime=1", CaptureSettings(window_s=30))
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


def test_open_camera_schemes() -> None:
    cam = open_camera("sim:approach?person=tom&fps=10")
    assert isinstance(cam, SimCamera) and cam.person.person_id == "tom"
    ok, frame = cam.read()
    assert ok and frame is not None and frame.shape == (720, 1280, 3)
    cam.release()
    assert cam.read() == (False, None)
    with pytest.raises(KeyError):
        open_camera("sim:no_such_scene")
