"""The converted dlib networks equal dlib itself; packs are checksummed; GPU policy holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import dlib
import face_recognition_models as frm
import numpy as np
import onnxruntime as ort
import pytest

from models.chip import face_chip
from models.dlib_dat import DatFormatError, read_network
from models.face import DetectedFace, DlibFaceModel, load_face_model
from models.mmod import MmodDetector, plan_pyramid
from models.pack import DLIB_PACK, PackError, build_dlib_pack, resolve_pack, verify_pack
from models.runtime import GpuUnavailable, RuntimeSettings, open_session
from sim.camera import View, document_portrait, render
from sim.people import people, person

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("packs") / "dlib-resnet-v1"
    build_dlib_pack(folder)
    return folder


@pytest.fixture(scope="module")
def model(pack: Path) -> DlibFaceModel:
    m = load_face_model(pack, RuntimeSettings(gpu="off"))
    assert isinstance(m, DlibFaceModel)
    return m


def _dlib_chips() -> list[np.ndarray]:
    """150×150 chips cut by dlib itself, from real photos and simulated lane frames."""
    detector = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    images = [p.face_crop(margin=0.6, size=300) for p in people()]
    images += [render((person("tom"), View(light=0.7, blur=1.0))),
               document_portrait(person("t1-c"))]
    chips = []
    for bgr in images:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rects = detector(rgb, 1)
        assert rects, "reference detector found no face"
        chips.append(np.asarray(dlib.get_face_chip(rgb, sp(rgb, rects[0]), size=150,
                                                   padding=0.25)))
    return chips


def test_reader_decodes_every_byte_of_both_networks() -> None:
    net = read_network(frm.face_recognition_model_location())
    assert net.loss == "loss_metric_2"
    assert net.input_fields["nr"] == net.input_fields["nc"] == 150
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds[-1] == "fc"
    assert net.layers[-1].arrays["weight"].shape == (256, 128)
    mmod = read_network(frm.cnn_face_detector_model_location())
    assert mmod.loss_fields["detector_windows"] == [(80, 80, "")]
    assert [layer.kind for layer in mmod.layers].count("bn_con") == 6


def test_reader_rejects_a_truncated_file(tmp_path: Path) -> None:
    data = Path(frm.face_recognition_model_location()).read_bytes()
    bad = tmp_path / "cut.dat"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatFormatError):
        read_network(bad)


def test_descriptor_equals_dlib(model: DlibFaceModel) -> None:
    """The exactness contract: max |ONNX − dlib| ≤ 1e-4 on the same chips."""
    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    chips = _dlib_chips()
    ours = model.embed(chips)
    ref = np.array([np.asarray(rec.compute_face_descriptor(c)) for c in chips])
    assert ours.shape == ref.shape == (len(chips), 128)
    assert np.abs(ours - ref).max() <= 1e-4
    # batched and single runs agree too
    assert np.abs(model.embed(chips[:1])[0] - ours[0]).max() <= 1e-5


def test_mmod_finds_the_faces_dlib_finds(pack: Path) -> None:
    session, _ = open_session(pack / "detector_mmod.onnx", RuntimeSettings(gpu="off"))
    ours = MmodDetector(session)
    theirs = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
    for pid in ("tom", "astronaut", "t1-a"):
        rgb = cv2.cvtColor(person(pid).face_crop(margin=0.6, size=200), cv2.COLOR_BGR2RGB)
        ref = theirs(rgb, 0)
        got = ours.detect(rgb)
        assert len(got) == len(ref) == 1
        r = ref[0].rect
        (x0, y0, x1, y1), score = got[0]
        ix = max(0, min(x1, r.right() + 1) - max(x0, r.left()))
        iy = max(0, min(y1, r.bottom() + 1) - max(y0, r.top()))
        inter = ix * iy
        union = (x1 - x0) * (y1 - y0) + r.width() * r.height() - inter
        # Same face, same confidence up to the pyramid's resampling: dlib's own
        # pyramid_down filter is not reproduced bit for bit, so boxes may come from the
        # neighbouring level (80 vs 96 px).
        assert inter / union > 0.5
        assert abs(score - ref[0].confidence) < 0.1


def test_pyramid_tiles_do_not_overlap() -> None:
    tiles, h, w = plan_pyramid(720, 1280)
    assert tiles[0].scale == 1.0 and len(tiles) >= 8
    for i, a in enumerate(tiles):
        assert a.x + a.w <= w and a.y + a.h <= h
        for b in tiles[i + 1 :]:
            assert (a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y
                    or b.y + b.h <= a.y)


def test_manifest_catches_a_changed_file(pack: Path, tmp_path: Path) -> None:
    manifest = verify_pack(pack)
    data = json.loads((pack / "manifest.json").read_text())
    assert data["embedder"]["embedding_size"] == 128
    assert set(manifest.files) == {"descriptor.onnx", "detector_mmod.onnx", "landmarks_5.dat"}
    copy = tmp_path / "copy"
    shutil.copytree(pack, copy)
    with open(copy / "descriptor.onnx", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(PackError, match="sha256"):
        verify_pack(copy)
    shutil.copyfile(pack / "descriptor.onnx", copy / "descriptor.onnx")
    verify_pack(copy)
    (copy / "landmarks_5.dat").unlink()
    with pytest.raises(PackError, match="missing"):
        verify_pack(copy)


def test_dlib_pack_is_built_once_into_the_cache(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGATE_CACHE", str(tmp_path))
    folder = resolve_pack(DLIB_PACK)
    assert folder == tmp_path / "packs" / "dlib-resnet-v1"
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert resolve_pack(DLIB_PACK) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(PackError):
        resolve_pack("no-such-pack")
    # a pack from an older converter is rebuilt, not trusted
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["converter_version"] = 0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert resolve_pack(DLIB_PACK) == folder
    assert json.loads((folder / "manifest.json").read_text())["converter_version"] > 0
    verify_pack(folder)


def test_gpu_required_never_falls_back_to_cpu(pack: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        _, info = open_session(pack / "descriptor.onnx", RuntimeSettings(gpu="required"))
        assert info.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    else:
        with pytest.raises(GpuUnavailable):
            load_face_model(pack, RuntimeSettings(gpu="required"))
    _, info = open_session(pack / "descriptor.onnx", RuntimeSettings(gpu="off"))
    assert info.provider == "CPUExecutionProvider" and info.device == "cpu"


def test_insightface_pack_without_its_files_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "buffalo"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({
        "pack_id": "buffalo_l", "kind": "insightface",
        "files": {"det_10g.onnx": {"sha256": "0" * 64, "role": "detector"},
                  "w600k_r50.onnx": {"sha256": "0" * 64, "role": "embedder"}}}))
    with pytest.raises(PackError, match="missing"):
        load_face_model(folder, RuntimeSettings(gpu="off"))


def _lane_face(pid: str, face_px: int, roll: float = 0.0
               ) -> tuple[np.ndarray, dlib.full_object_detection]:
    """A simulated lane frame and dlib's own 5 landmarks on it (RGB, as dlib wants)."""
    frame = render((person(pid), View(face_px=face_px, roll_deg=roll)))
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    rect = dlib.get_frontal_face_detector()(rgb, 0)[0]
    return frame, sp(rgb, rect)


@pytest.mark.parametrize(("pid", "face_px", "roll"), [
    ("tom", 180, -10),      # plain bilinear sampling
    ("astronaut", 240, 0),  # the benchmark face: one pyramid_down level
    ("t1-c", 300, 5),
    ("t1-a", 700, -8),      # chip reaches past the frame edge: dlib's black border
])
def test_chips_are_dlibs_chips(model: DlibFaceModel, pid: str, face_px: int,
                              roll: float) -> None:
    """The default aligner gives dlib's chip exactly; models.chip (aligner "opencv") cuts
    the chip dlib's get_face_chip cuts (measured: ≥ 99.8 % of pixels
    identical, the rest within a few grey levels) and the descriptor does not notice
    (measured ≤ 8e-4 apart; dlib's same-person cut is 0.6)."""
    frame, shape = _lane_face(pid, face_px, roll)
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    ref = np.asarray(dlib.get_face_chip(rgb, shape, size=150, padding=0.25))
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float32)
    x0, y0 = pts.min(0) - 40
    x1, y1 = pts.max(0) + 40
    face = DetectedFace((float(x0), float(y0), float(x1), float(y1)), 1.0, pts)
    # the default aligner: dlib itself on the BGR frame, pixel for pixel
    assert model.aligner == "dlib"
    assert np.array_equal(model.align(frame, face), ref)
    ours = face_chip(frame, pts)[..., ::-1]
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - ref)
    assert (diff == 0).mean() >= 0.99 and diff.mean() < 0.05
    emb = model.embed([ref, ours])
    assert float(np.linalg.norm(emb[0] - emb[1])) < 5e-3


def test_landmarks_on_the_bgr_frame_are_dlibs(model: DlibFaceModel) -> None:
    """The shape predictor reads mean intensity, so the BGR frame gives dlib's points."""
    for pid, px, roll in (("astronaut", 240, 0), ("tom", 400, 12), ("t1-a", 160, -15)):
        frame = render((person(pid), View(face_px=px, roll_deg=roll)))
        face = model.detect(frame)[0]
        got = model.landmarks(frame, face).landmarks
        x0, y0, x1, y1 = (round(v) for v in face.box)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        ref = model._shape(rgb, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        assert got is not None
        assert got.tolist() == [[ref.part(i).x, ref.part(i).y] for i in range(5)]


def test_mmod_pyramid_in_the_graph_finds_the_same_faces(pack: Path) -> None:
    """The GPU path (pyramid inside the ONNX graph) and the host path (OpenCV pyramid)
    give the same boxes; scores differ by the resampling's rounding only."""
    import onnx

    from models.mmod import pyramid_model

    settings = RuntimeSettings(gpu="off")
    session, _ = open_session(pack / "detector_mmod.onnx", settings, fixed_shape=False)
    graph = pyramid_model(onnx.load(str(pack / "detector_mmod.onnx")), 360, 640)
    fused, info = open_session(pack / "detector_mmod.onnx", settings, sha256="x",
                               model=graph.SerializeToString(), name="fused")
    assert info.model == "fused"
    host, device = MmodDetector(session), MmodDetector(session, fused={(360, 640): fused})
    for pid, px in (("astronaut", 240), ("t1-a", 400), ("tom", 180)):
        small = cv2.resize(render((person(pid), View(face_px=px))), (640, 360),
                           interpolation=cv2.INTER_AREA)
        a, b = host.detect(small, bgr=True), device.detect(small, bgr=True)
        assert a == host.detect(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))  # bgr= is a no-op
        assert len(a) == len(b) == 1
        assert np.allclose(a[0][0], b[0][0]) and abs(a[0][1] - b[0][1]) < 0.05


def test_conv_search_settings_reach_the_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """DEFAULT means cuDNN's fallback engines in onnxruntime ≥ 1.20: never the default."""
    from models import runtime

    monkeypatch.setattr(runtime.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    settings = RuntimeSettings(gpu="preferred")
    fixed = runtime._provider_list(settings, fixed_shape=True)[0][1]
    variable = runtime._provider_list(settings, fixed_shape=False)[0][1]
    assert fixed["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert variable["cudnn_conv_algo_search"] == "HEURISTIC"
    with pytest.raises(ValueError, match="conv search"):
        open_session("unused.onnx", RuntimeSettings(conv_search_variable="FAST"))
