"""The document reader devices: the camera-based reader on the simulated reader peer (a
process of its own, through the real OpenCV camera over HTTP MJPEG), its judgement frame by
frame, and the hot-folder reader."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.document.check import MrzDocumentCheck
from hardware.docreader import (
    READER_UNAVAILABLE,
    DocumentReader,
    ReaderNotice,
    ReaderNoticeKind,
    open_document_reader,
)
from hardware.docreader.camera import CameraDocumentReader, GlassSettings, GlassWatch
from hardware.docreader.folder import FolderDocumentReader
from sim.reader_server import GLASS_SIZE, ReaderPeer

PLACED, REMOVED = ReaderNoticeKind.PLACED, ReaderNoticeKind.REMOVED


class Notices:
    """What a subscriber received, with the time each notice came."""

    def __init__(self, reader: DocumentReader) -> None:
        self._cond = threading.Condition()
        self.got: list[tuple[float, ReaderNotice]] = []
        reader.subscribe(self)

    def __call__(self, notice: ReaderNotice) -> None:
        with self._cond:
            self.got.append((time.monotonic(), notice))
            self._cond.notify_all()

    @property
    def kinds(self) -> list[ReaderNoticeKind]:
        with self._cond:
            return [n.kind for _, n in self.got]

    def wait(self, count: int, timeout: float = 10.0) -> list[ReaderNotice]:
        """The first ``count`` notices, waiting up to ``timeout`` for them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.got) >= count, timeout)
            assert len(self.got) >= count, f"{len(self.got)} notices, wanted {count}"
            return [n for _, n in self.got[:count]]

    def at(self, index: int) -> float:
        with self._cond:
            return self.got[index][0]


def wait_until(what: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return what()


# --- the camera-based reader on the simulated reader peer -----------------------------------


@pytest.fixture(scope="module")
def peer() -> Iterator[ReaderPeer]:
    with ReaderPeer() as p:
        yield p


@pytest.fixture()
def reader(peer: ReaderPeer) -> Iterator[CameraDocumentReader]:
    """A fresh reader over the peer's stream, started on an empty glass."""
    peer.replug()
    peer.remove()
    r = open_document_reader(peer.url)
    assert isinstance(r, CameraDocumentReader)
    r.start()
    try:
        assert wait_until(lambda: r.health.ok and r.watch.learned, 20), r.health
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def document_stage() -> MrzDocumentCheck:
    return MrzDocumentCheck(log_outcomes=False)  # the default policy, as a lane without one


@pytest.mark.timeout(60)
def test_one_placement_is_one_passage(peer: ReaderPeer, reader: CameraDocumentReader,
                                      document_stage: MrzDocumentCheck) -> None:
    notices = Notices(reader)
    info = peer.place(person="astronaut", document="TD3", condition="clean", seed=1)
    laid = time.monotonic()  # the peer answers once the page shows on its stream
    placed = notices.wait(1)[0]
    first_s = notices.at(0) - laid
    assert placed.kind is PLACED and placed.placement is not None
    assert placed.placement_number == placed.placement.number == 1
    assert len(placed.placement.frames) == GlassSettings().keep_frames == 3
    for frame in placed.placement.frames:
        assert frame.shape == (GLASS_SIZE[1], GLASS_SIZE[0], 3)
    assert reader.document_present and reader.placement is placed.placement

    # The frames handed over read as the page that was laid: the real document stage.
    outcome = document_stage.check(placed.placement.frames)
    assert outcome.accepted, outcome.reasons
    assert outcome.mrz is not None and outcome.mrz["lines"] == info["mrz"]
    assert outcome.mrz["document_number"] == info["document_number"]
    assert outcome.mrz["frames"] == 3

    # Left lying on the glass: never reported again.
    time.sleep(2.0)
    assert notices.kinds == [PLACED]

    peer.remove()
    removed = notices.wait(2)[1]
    assert removed.kind is REMOVED and removed.placement_number == 1
    assert removed.placement is None and not reader.document_present

    peer.place(person="astronaut", document="TD1", seed=2)
    laid = time.monotonic()
    again = notices.wait(3)[2]
    second_s = notices.at(2) - laid
    assert again.kind is PLACED and again.placement_number == 2
    print(f"\nlaid -> PLACED: {first_s:.2f} s, {second_s:.2f} s; "
          f"{len(placed.placement.frames)} frames of {GLASS_SIZE[0]}x{GLASS_SIZE[1]}; "
          f"reader stats {reader.stats()}")


@pytest.mark.timeout(90)
def test_reader_gone_and_back(peer: ReaderPeer, reader: CameraDocumentReader) -> None:
    notices = Notices(reader)
    peer.place(person="astronaut", seed=3)
    assert notices.wait(1)[0].kind is PLACED

    # The cable pulled: the peer's process is killed, its port refuses.
    peer.kill()
    assert wait_until(lambda: not reader.health.ok, 20), reader.health
    health = reader.health
    assert health.reason == READER_UNAVAILABLE and "CAMERA_UNAVAILABLE" in health.detail
    assert reader.document_present  # nobody saw it go: still the same placement
    peer.start()  # plugged back at the same URL; a fresh process shows an empty glass
    assert wait_until(lambda: reader.health.ok, 30), reader.health
    kinds = notices.wait(2, timeout=15)
    assert [n.kind for n in kinds] == [PLACED, REMOVED]

    # The gentler fault: streams cut and refused (503) while the process lives on.
    peer.unplug()
    assert wait_until(lambda: not reader.health.ok, 20), reader.health
    assert reader.health.reason == READER_UNAVAILABLE
    peer.replug()
    assert wait_until(lambda: reader.health.ok, 30), reader.health
    peer.place(person="astronaut", seed=4)
    assert notices.wait(3)[2].kind is PLACED


def test_peer_refuses_what_it_does_not_have(peer: ReaderPeer) -> None:
    with pytest.raises(RuntimeError, match="400"):
        peer.place(person="astronaut", colour="red")
    with pytest.raises(RuntimeError, match="condition"):
        peer.place(condition="wet")
    state = peer.state()
    assert state["url"] == peer.url and state["plugged"] is True


# --- the watch's judgement, frame by frame --------------------------------------------------


def _glass(rng: np.random.Generator) -> np.ndarray:
    return np.clip(50 + rng.normal(0, 2, (240, 320, 3)), 0, 255).astype(np.uint8)


def _with_page(glass: np.ndarray, dx: int = 0, blur: float = 0.0) -> np.ndarray:
    out = glass.copy()
    page = np.full((120, 170, 3), 225, np.uint8)
    for y in range(10, 110, 8):  # lines of print
        cv2.putText(page, "P<UTOERIKSSON<<ANNA", (5, y), cv2.FONT_HERSHEY_PLAIN, 0.6,
                    (30, 30, 30), 1)
    out[60:180, 70 + dx:240 + dx] = page
    if blur:  # the camera does not focus on it: print and outline alike
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), blur))
    return out


def _feed(watch: GlassWatch, frames: list[np.ndarray]) -> list[ReaderNoticeKind]:
    kinds = []
    for i, frame in enumerate(frames):
        change = watch.feed(frame, float(i))
        if change is not None:
            kinds.append(change.kind)
    return kinds


def test_watch_counts_a_document_left_lying_once() -> None:
    rng = np.random.default_rng(1)
    glass = _glass(rng)
    watch = GlassWatch()
    assert _feed(watch, [glass] * 10) == [] and watch.learned
    page = _with_page(glass)
    assert _feed(watch, [page] * 200) == [PLACED]
    assert _feed(watch, [glass] * 5) == [REMOVED]
    assert _feed(watch, [page] * 10) == [PLACED]


def test_watch_keeps_only_still_sharp_frames() -> None:
    rng = np.random.default_rng(2)
    glass = _glass(rng)
    watch = GlassWatch()
    _feed(watch, [glass] * 5)
    sliding = [_with_page(glass, dx=8 * i) for i in range(10)]  # still being put down
    blurred = [_with_page(glass, blur=4.0)] * 20  # out of focus: lifted off the glass
    assert _feed(watch, sliding + blurred) == []
    change = None
    for i in range(10):
        change = watch.feed(_with_page(glass), 100.0 + i) or change
    assert change is not None and change.kind is PLACED
    assert change.placed_at < 100.0  # the document was there from the first sliding frame
    assert all(f is not None and f.shape == glass.shape for f in change.frames)


def test_watch_started_on_a_document_learns_the_glass() -> None:
    """A document lying there at start is taken for the glass; once it is gone the bare
    glass (still, featureless) becomes the reference, and documents count again."""
    rng = np.random.default_rng(3)
    glass = _glass(rng)
    page = _with_page(glass)
    watch = GlassWatch()
    assert _feed(watch, [page] * 5 + [glass] * 60) == []
    assert _feed(watch, [page] * 10 + [glass] * 5) == [PLACED, REMOVED]


# --- the hot-folder reader ------------------------------------------------------------------


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)  # lossless: the frame can be compared exactly
    assert ok
    return bytes(buf)


def _drop(folder: Path, name: str, image: np.ndarray) -> None:
    """Write-then-rename, as a reader SDK that publishes finished files does."""
    tmp = folder / f".{name}.part"
    tmp.write_bytes(_png(image))
    os.replace(tmp, folder / name)


@pytest.fixture()
def folder_reader(tmp_path: Path) -> Iterator[tuple[FolderDocumentReader, Path]]:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "old.png").write_bytes(_png(_image(0)))  # from before the lane started
    r = open_document_reader(f"folder:{folder}")
    assert isinstance(r, FolderDocumentReader)
    r.start()
    try:
        assert wait_until(lambda: r.health.ok, 5), r.health
        yield r, folder
    finally:
        r.close()


@pytest.mark.timeout(30)
def test_folder_placed_removed_never_twice(
        folder_reader: tuple[FolderDocumentReader, Path]) -> None:
    reader, folder = folder_reader
    notices = Notices(reader)
    time.sleep(0.5)
    assert notices.kinds == []  # old.png is history, not a document

    first = _image(1)
    _drop(folder, "a.png", first)
    placed = notices.wait(1)[0]
    assert placed.kind is PLACED and placed.placement is not None
    assert len(placed.placement.frames) == 1
    assert np.array_equal(placed.placement.frames[0], first)

    _drop(folder, "b.PNG", _image(2))  # the next document: the first was taken away
    kinds = [n.kind for n in notices.wait(3)]
    assert kinds == [PLACED, REMOVED, PLACED]
    (folder / "b.PNG").unlink()
    assert notices.wait(4)[3].kind is REMOVED
    (folder / "notes.txt").write_text("not a page")
    (folder / "c.gif").write_bytes(b"GIF89a")
    time.sleep(1.0)
    assert len(notices.kinds) == 4  # a.png, old.png never again; other files never

    _drop(folder, "a.png", _image(3))  # the same name written anew is a new document
    assert notices.wait(5)[4].kind is PLACED and reader.document_present


@pytest.mark.timeout(30)
def test_folder_waits_for_a_complete_file(
        folder_reader: tuple[FolderDocumentReader, Path]) -> None:
    reader, folder = folder_reader
    notices = Notices(reader)
    image = _image(4)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = bytes(buf)
    with open(folder / "slow.jpg", "wb") as out:  # written in place, in pieces
        for i in range(0, len(data), len(data) // 8):
            out.write(data[i:i + len(data) // 8])
            out.flush()
            time.sleep(0.15)
            assert notices.kinds == [], "read before it was complete"
    placed = notices.wait(1)[0]
    assert placed.placement is not None
    frame = placed.placement.frames[0]
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(frame, expected)
    time.sleep(1.0)
    assert len(notices.kinds) == 1


@pytest.mark.timeout(30)
def test_folder_vanishing_is_an_unavailable_reader(
        folder_reader: tuple[FolderDocumentReader, Path]) -> None:
    reader, folder = folder_reader
    notices = Notices(reader)
    _drop(folder, "a.png", _image(5))
    assert notices.wait(1)[0].kind is PLACED
    shutil.rmtree(folder)
    assert wait_until(lambda: not reader.health.ok, 5)
    assert reader.health.reason == READER_UNAVAILABLE and "not found" in reader.health.detail
    back = folder.with_name("out.new")  # the folder comes back with a page in it
    back.mkdir()
    (back / "a.png").write_bytes(_png(_image(5)))
    back.rename(folder)
    assert wait_until(lambda: reader.health.ok, 5), reader.health
    # the page it had is not there any more; what came back with the folder is history
    assert notices.wait(2)[1].kind is REMOVED
    time.sleep(0.8)
    assert len(notices.kinds) == 2
    _drop(folder, "b.png", _image(6))
    assert notices.wait(3)[2].kind is PLACED


def test_factory_refuses_what_names_no_reader() -> None:
    for url in ("", "folder:"):
        with pytest.raises(ValueError):
            open_document_reader(url)
