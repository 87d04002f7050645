"""The lane camera device: the OpenCV backend on the simulated MJPEG peer in another
process (frames, health, a killed / hung / unplugged camera, several clients), its
watchdog and URL handling on in-process frame sources, and the face capture on the peer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from gate.face.capture import CAMERA_FAILED, CaptureSettings, LiveFaceCapture
from hardware.camera import (
    BACKENDS,
    CAMERA_ENDED,
    CAMERA_STALLED,
    CAMERA_UNAVAILABLE,
    Camera,
    open_camera,
)
from hardware.camera.opencv import FrameSource, OpenCVCamera, parse_source
from models.face import DlibFaceModel, load_face_model
from models.pack import build_dlib_pack
from models.runtime import RuntimeSettings
from sim.camera import render
from sim.camera_server import CameraPeer

pytestmark = pytest.mark.timeout(60)


def wait_for(what: Callable[[], bool], timeout: float, label: str) -> float:
    """Seconds until ``what()`` held; fails the test after ``timeout``."""
    t0 = time.monotonic()
    while not what():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{label}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


@pytest.fixture
def cameras() -> Iterator[list[Camera]]:
    made: list[Camera] = []
    yield made
    for cam in made:
        cam.close()


@pytest.fixture
def peers() -> Iterator[Callable[..., CameraPeer]]:
    made: list[CameraPeer] = []

    def make(scene: str = "approach", **kw: Any) -> CameraPeer:
        kw.setdefault("fps", 8.0)  # a 2-core box renders, decodes and detects at once
        peer = CameraPeer(scene, **kw)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.stop()


def _camera(cameras: list[Camera], url: str, **opts: Any) -> Camera:
    opts.setdefault("stall_s", 1.0)
    opts.setdefault("backoff_max_s", 1.0)
    cam = open_camera(url, **opts)
    cameras.append(cam)
    cam.start()
    return cam


# ------------------------------------------------------------------ on the MJPEG peer


def test_frames_arrive_from_the_peer(peers: Callable[..., CameraPeer],
                                     cameras: list[Camera]) -> None:
    peer = peers("approach")
    assert peer.url.startswith("http://127.0.0.1:") and peer.url.endswith("/stream.mjpg")
    cam = _camera(cameras, peer.url)
    wait_for(lambda: cam.health.ok, 10, "health ok")
    seq, frame = cam.next_frame(cam.seq, timeout=3.0)
    assert frame is not None and frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a picture, not a blank buffer
    seq2, _ = cam.next_frame(seq, timeout=3.0)
    assert seq2 > seq
    wait_for(lambda: cam.stats()["fps"] > 2, 5, "fps estimate")
    stats = cam.stats()
    assert stats["frames"] >= 2 and stats["reconnects"] == 0 and stats["stalls"] == 0
    state = peer.state()
    assert state["clients"] == 1 and state["scene"] == "approach" and state["frames_served"] > 0
    cam.close()
    assert cam.health.reason == CAMERA_UNAVAILABLE and cam.health.detail == "closed"
    assert peer.stop() == 0  # SIGTERM: a clean exit
    assert any('"frames_served"' in line for line in peer.lines)


def test_each_frame_is_rendered_once_for_all_clients(peers: Callable[..., CameraPeer],
                                                     cameras: list[Camera]) -> None:
    peer = peers("no_face")
    a, b = _camera(cameras, peer.url), _camera(cameras, peer.url)
    wait_for(lambda: a.health.ok and b.health.ok, 10, "both cameras ok")
    wait_for(lambda: peer.state()["clients"] == 2, 5, "two clients")
    before = peer.state()
    time.sleep(2.0)
    after = peer.state()
    rendered = after["frames_rendered"] - before["frames_rendered"]
    served = after["frames_served"] - before["frames_served"]
    assert rendered >= 4
    assert 1.6 <= served / rendered <= 2.1  # one render, two deliveries


def test_killed_peer_is_unavailable_and_comes_back_on_its_own(
        peers: Callable[..., CameraPeer], cameras: list[Camera]) -> None:
    peer = peers("no_face")
    cam = _camera(cameras, peer.url)
    wait_for(lambda: cam.health.ok, 10, "health ok")
    peer.kill()
    wait_for(lambda: cam.health.reason == CAMERA_UNAVAILABLE, 5, "unavailable after kill")
    time.sleep(1.5)  # it keeps failing to connect, and says so
    assert cam.health.reason == CAMERA_UNAVAILABLE
    peer.start()  # same port: the lane's URL is unchanged
    assert peer.url == cam.url
    wait_for(lambda: cam.health.ok, 15, "health ok after the peer came back")
    assert cam.stats()["reconnects"] >= 1
    _, frame = cam.next_frame(cam.seq, timeout=3.0)
    assert frame is not None


def test_hung_stream_is_stalled_then_recovers(peers: Callable[..., CameraPeer],
                                              cameras: list[Camera]) -> None:
    """``camera_failure`` stops sending 0.4 s in, the connection staying open."""
    peer = peers("no_face")
    cam = _camera(cameras, peer.url, open_timeout_s=2.0)
    wait_for(lambda: cam.health.ok, 10, "health ok")
    peer.show("camera_failure")
    wait_for(lambda: cam.health.reason == CAMERA_STALLED, 6, "stalled")
    wait_for(lambda: cam.stats()["stalls"] >= 1, 5, "stall counted")
    time.sleep(1.5)  # reconnecting to a camera that sends nothing is still a stall
    assert cam.health.reason == CAMERA_STALLED, cam.health
    assert cam.stats()["last_frame_age_s"] > 1.0
    peer.show("no_face")
    wait_for(lambda: cam.health.ok, 15, "health ok after the stream resumed")


def test_unplugged_peer_refuses_until_replugged(peers: Callable[..., CameraPeer],
                                                cameras: list[Camera]) -> None:
    peer = peers("no_face")
    cam = _camera(cameras, peer.url)
    wait_for(lambda: cam.health.ok, 10, "health ok")
    assert peer.unplug()["unplugged"] is True
    wait_for(lambda: cam.health.reason == CAMERA_UNAVAILABLE, 5, "unavailable when unplugged")
    time.sleep(1.5)
    assert cam.health.reason == CAMERA_UNAVAILABLE and peer.state()["clients"] == 0
    peer.replug()
    wait_for(lambda: cam.health.ok, 10, "health ok after replug")


def test_peer_control_rejects_unknown_scenes_and_people(
        peers: Callable[..., CameraPeer]) -> None:
    peer = peers("no_face")
    with pytest.raises(ValueError, match="unknown scene"):
        peer.show("moonwalk")
    with pytest.raises(ValueError, match="unknown person"):
        peer.show("approach", person="nobody")
    answer = peer.show("tailgater", person="tom", seed=3)
    assert (answer["scene"], answer["person"], answer["seed"]) == ("tailgater", "tom", 3)
    assert peer.state()["scene"] == "tailgater"


# ------------------------------------------------------------------ files


def _clip(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (1280, 720))
    for i in range(frames):
        writer.write(render(None, seed=i))
    writer.release()
    return path


def test_a_file_plays_at_its_rate_and_ends(tmp_path: Path, cameras: list[Camera]) -> None:
    clip = _clip(tmp_path / "lane.avi", 12)
    cam = _camera(cameras, f"file:{clip}")
    took = wait_for(lambda: cam.ended, 10, "file ended")
    assert cam.stats()["frames"] == 12
    assert took >= 0.4  # 12 frames at 15 fps: played as a camera, not decoded at once
    assert cam.health.reason == CAMERA_ENDED
    assert cam.next_frame(cam.seq, timeout=5.0) == (cam.seq, None)  # at once: no more


def test_a_looping_file_keeps_delivering(tmp_path: Path, cameras: list[Camera]) -> None:
    clip = _clip(tmp_path / "lane.avi", 6)
    cam = _camera(cameras, f"{clip}?loop=1")
    wait_for(lambda: cam.stats()["frames"] > 15, 10, "more frames than the file holds")
    assert cam.health.ok and not cam.ended
    assert cam.stats()["reconnects"] == 0  # a loop is not a reconnect


# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize(("url", "kind", "target"), [
    ("0", "index", 0),
    (2, "index", 2),
    ("camera:1", "index", 1),
    ("camera:0?width=1280&height=720", "index", 0),
    ("/dev/video3", "v4l2", "/dev/video3"),
    ("rtsp://user:pw@10.0.0.5:554/h264?subtype=0", "rtsp",
     "rtsp://user:pw@10.0.0.5:554/h264?subtype=0"),
    ("rtsps://cam.lane/1", "rtsp", "rtsps://cam.lane/1"),
    ("http://127.0.0.1:8080/stream.mjpg", "mjpeg", "http://127.0.0.1:8080/stream.mjpg"),
    ("https://cam.lane/video", "mjpeg", "https://cam.lane/video"),
    ("file:/tmp/lane.mp4", "file", "/tmp/lane.mp4"),
    ("file:///tmp/lane.mp4", "file", "/tmp/lane.mp4"),
    ("clips/lane.avi", "file", "clips/lane.avi"),
])
def test_sources_by_url(url: str | int, kind: str, target: int | str) -> None:
    source = parse_source(url)
    assert (source.kind, source.target) == (kind, target)


def test_url_options() -> None:
    assert parse_source("file:/x.mp4?loop=1").loop is True
    assert parse_source("/x.mp4").loop is False
    assert parse_source("camera:0?width=640&fps=30").options == {"width": 640.0, "fps": 30.0}


@pytest.mark.parametrize("url", [
    "", "   ", "sim:approach", "ftp://cam/x", "camera:", "camera:front", "rtsp://", "http:///x",
    "file:", "/dev/video0?colour=blue", "camera:0?width=-5", "file:/x.mp4?loop=maybe", -1,
])
def test_bad_urls_are_one_line_value_errors(url: str | int) -> None:
    with pytest.raises(ValueError) as err:
        open_camera(url)
    assert "\n" not in str(err.value) and str(err.value)


def test_backends_are_a_table_imported_lazily() -> None:
    assert BACKENDS["opencv"] == ("hardware.camera.opencv", "OpenCVCamera")
    cam = open_camera("http://127.0.0.1:9/stream.mjpg")
    assert isinstance(cam, OpenCVCamera)
    assert cam.health.reason == CAMERA_UNAVAILABLE and cam.health.detail == "not started"
    with pytest.raises(ValueError, match="unknown camera backend"):
        open_camera("0", backend="gige")


def test_describe_keeps_credentials_out_of_logs() -> None:
    cam = open_camera("rtsp://admin:s3cret@10.0.0.5:554/h264?token=abc123")
    text = cam.describe()
    assert "10.0.0.5:554/h264" in text and "rtsp" in text
    assert "admin" not in text and "s3cret" not in text and "abc123" not in text


# ------------------------------------------------------------------ the watchdog, isolated


class _Source:
    """A scripted frame source: ``frames`` frames every ``interval`` s, then a read that
    blocks until ``release`` (a driver stuck in ``read``); ``frames=None``: endless."""

    def __init__(self, frames: int | None = None, interval: float = 0.02) -> None:
        self.frames = frames
        self.interval = interval
        self.sent = 0
        self.released = threading.Event()

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, Any]:
        if self.frames is not None and self.sent >= self.frames:
            self.released.wait(30)
            return False, None
        time.sleep(self.interval)
        self.sent += 1
        return True, np.full((4, 4, 3), self.sent % 256, np.uint8)

    def release(self) -> None:
        self.released.set()


def _isolated(cameras: list[Camera], opener: Callable[[], FrameSource],
              **opts: Any) -> OpenCVCamera:
    cam = OpenCVCamera("rtsp://in-process.test/cam", opener=opener, **opts)
    cameras.append(cam)
    cam.start()
    return cam


def test_consumer_gets_the_newest_frame_and_old_ones_are_dropped(
        cameras: list[Camera]) -> None:
    source = _Source(interval=0.005)
    cam = _isolated(cameras, lambda: source)
    seq, frame = cam.next_frame(0, timeout=5.0)
    assert frame is not None
    time.sleep(0.3)  # a slow consumer
    seq2, frame2 = cam.next_frame(seq, timeout=5.0)
    assert frame2 is not None and seq2 - seq > 5  # no backlog: straight to the newest
    assert int(frame2[0, 0, 0]) == seq2 % 256  # the frame is the one its number says
    assert cam.stats()["dropped"] > 0


def test_watchdog_abandons_a_stuck_read_and_reconnects(cameras: list[Camera]) -> None:
    stuck, good = _Source(frames=5), _Source()
    sources = iter([stuck, good])
    try:
        cam = _isolated(cameras, lambda: next(sources), stall_s=0.5, backoff_s=0.05)
        wait_for(lambda: cam.health.reason == CAMERA_STALLED, 5, "stalled")
        wait_for(lambda: cam.health.ok, 5, "ok on a fresh reader")
        stats = cam.stats()
        assert stats["stalls"] == 1 and stats["reconnects"] == 1
        assert stats["abandoned_reads"] == 1  # the stuck read is left, not joined
        assert good.sent > 0 and stuck.sent == 5
    finally:
        stuck.released.set()


def test_an_absent_camera_keeps_being_retried_with_bounded_backoff(
        cameras: list[Camera]) -> None:
    attempts: list[float] = []

    def opener() -> FrameSource:
        attempts.append(time.monotonic())
        raise OSError("no such device")

    cam = _isolated(cameras, opener, backoff_s=0.05, backoff_max_s=0.2)  # start: no raise
    time.sleep(2.5)
    health = cam.health
    assert health.reason == CAMERA_UNAVAILABLE and health.detail == "open failed: OSError"
    recent = [t for t in attempts if t > attempts[-1] - 1.0]
    assert len(recent) >= 3  # still trying about every 0.2 s (unbounded doubling: ≤ 1)
    assert cam.stats()["reconnects"] == len(attempts) - 1


def test_an_open_stuck_in_the_driver_is_abandoned(cameras: list[Camera]) -> None:
    hold = threading.Event()

    def opener() -> FrameSource:
        hold.wait(30)
        return _Source()

    try:
        cam = _isolated(cameras, opener, open_timeout_s=0.3, backoff_s=0.05)
        wait_for(lambda: cam.health.detail == "open timed out", 5, "open timed out")
        assert cam.health.reason == CAMERA_UNAVAILABLE
        wait_for(lambda: cam.stats()["reconnects"] >= 1, 5, "reopened")
    finally:
        hold.set()
    wait_for(lambda: cam.health.ok, 5, "ok once the driver lets go")


def test_close_wakes_a_waiting_consumer_and_releases_the_device(
        cameras: list[Camera]) -> None:
    hung = _Source(frames=1)
    cam = _isolated(cameras, lambda: hung, stall_s=30)
    try:
        wait_for(lambda: cam.seq == 1, 5, "first frame")
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(cam.next_frame(1, timeout=20)))
        waiter.start()
        time.sleep(0.2)
        t = time.monotonic()
        cam.close()
        waiter.join(5)
        assert not waiter.is_alive() and got == [(1, None)]
        assert time.monotonic() - t < 3.0
    finally:
        hung.released.set()  # let the stuck read go (the camera never releases under it)
    flowing = _Source()
    cam = _isolated(cameras, lambda: flowing)
    wait_for(lambda: cam.health.ok, 5, "ok")
    cam.close()
    assert flowing.released.wait(2.0)  # the reader lets the device go on close


# ------------------------------------------------------------------ the face capture on the peer


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> DlibFaceModel:
    folder = tmp_path_factory.mktemp("packs") / "dlib-resnet-v1"
    build_dlib_pack(folder)
    m = load_face_model(folder, RuntimeSettings(gpu="off"))
    assert isinstance(m, DlibFaceModel)
    return m


def test_face_capture_on_the_peer(model: DlibFaceModel, peers: Callable[..., CameraPeer],
                                  cameras: list[Camera]) -> None:
    peer = peers("no_face", fps=10.0)
    cam = _camera(cameras, peer.url, stall_s=2.0)
    wait_for(lambda: cam.health.ok, 10, "health ok")
    capture = LiveFaceCapture(model, cam, CaptureSettings(window_s=8.0, camera_timeout_s=1.0))

    peer.show("approach", person="astronaut")
    out = capture.capture(lambda _: None, threading.Event())
    assert out.ok and not out.reasons, out.reasons
    assert 1 <= len(out.frames) <= 3 and out.frames[0].shape == (720, 1280, 3)
    assert all(q["faces"] == 1 and q["eye_distance_px"] >= 40 for q in out.quality)

    # The peer's camera hangs 0.4 s into the scene (a good frame may come before that,
    # and a capture that has one keeps it): begin the capture once it has hung, while
    # the device has not yet called it stalled, so the capture finds out itself.
    peer.show("camera_failure", person="astronaut")
    wait_for(lambda: peer.state()["alive"] is False, 5, "peer camera hung")
    t = time.monotonic()
    out = capture.capture(lambda _: None, threading.Event())
    assert out.reasons == (CAMERA_FAILED,) and not out.ok
    assert out.timings_ms["frames"] <= 1  # at most one in flight when it hung
    assert time.monotonic() - t < 5.0
    wait_for(lambda: cam.health.reason == CAMERA_STALLED, 5, "device says stalled too")


def test_redacted_urls_keep_local_paths_whole() -> None:
    """Credentials and query values go; a URL without a host part stays readable."""
    from hardware.camera.api import redact_url

    assert redact_url("rtsp://admin:secret@cam:554/s1?token=9") == "rtsp://***@cam:554/s1?…"
    assert redact_url("postgresql://anna:pw@db/egate") == "postgresql://***@db/egate"
    assert redact_url("sqlite:////var/lib/egate/review.sqlite3") == (
        "sqlite:////var/lib/egate/review.sqlite3")
    assert redact_url("file:///srv/clip.mp4?loop=1") == "file:///srv/clip.mp4?…"
