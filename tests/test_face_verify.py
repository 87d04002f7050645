"""1:1 verification, the decision record, calibration and the ``gate verify`` contract."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.commands import calibrate as calibrate_cmd
from gate.commands import verify as verify_cmd
from gate.face import FaceConfig, face_stage
from gate.face.calibrate import (
    LabelledPair,
    Scores,
    calibrate,
    fmr_fnmr,
    plot_det,
    score_pairs,
    threshold_for_fmr,
)
from gate.face.verify import (
    NO_FACE_IN_DOCUMENT,
    NO_FACE_IN_LIVE,
    PRESENTATION_ATTACK,
    SCORE_BELOW_THRESHOLD,
    FaceMatch,
    PadResult,
)
from gate.stages import CaptureOutcome, DocumentOutcome
from hardware.camera import open_camera
from models.face import DlibFaceModel, load_face_model
from models.pack import build_dlib_pack
from models.runtime import RuntimeSettings
from sim.camera import View, document_page, document_portrait, live_variants, render
from sim.people import person

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


def _live(pid: str, seed: int = 1) -> np.ndarray:
    return render((person(pid), live_variants(1, seed=seed)[0]), seed=seed)


def test_genuine_matches_and_impostor_does_not(model: DlibFaceModel) -> None:
    match = FaceMatch(model)
    ref = document_portrait(person("tom"))
    genuine = match.compare(ref, [_live("tom")])
    impostor = match.compare(ref, [_live("t1-c")])
    assert genuine.match and not genuine.reasons
    assert not impostor.match and impostor.reasons == (SCORE_BELOW_THRESHOLD,)
    assert genuine.score > impostor.score
    rec = genuine.record
    assert rec["pack"] == "dlib-resnet-v1" and len(rec["pack_hash"]) == 64
    assert rec["provider"] == "CPUExecutionProvider"
    assert rec["target_fmr"] == 1e-3
    assert rec["threshold_source"].startswith("calibration:")  # the shipped one
    assert rec["pad"] == {"checked": False}
    assert {"detect_ms", "align_ms", "embed_ms", "total_ms"} <= set(rec["timings_ms"])


def test_verify_uses_the_captured_face_box(model: DlibFaceModel) -> None:
    frame = render((person("astronaut"), View()))
    face = model.detect(frame)[0]
    x0, y0, x1, y1 = face.box
    capture = CaptureOutcome(ok=True, frames=(frame,), quality=(
        {"box_x0": x0, "box_y0": y0, "box_x1": x1, "box_y1": y1},))
    doc = DocumentOutcome(accepted=True, portrait=document_portrait(person("astronaut")))
    decision = FaceMatch(model).verify(doc, capture)
    assert decision.match
    assert "detect_ms" in decision.record["timings_ms"]


def test_missing_faces_are_named_outcomes(model: DlibFaceModel) -> None:
    match = FaceMatch(model)
    empty = render(None)
    ok_capture = CaptureOutcome(ok=True, frames=(_live("tom"),))
    assert match.verify(DocumentOutcome(accepted=True), ok_capture).reasons == (
        NO_FACE_IN_DOCUMENT,)
    doc = DocumentOutcome(accepted=True, portrait=empty[:300, :300])
    assert match.verify(doc, ok_capture).reasons == (NO_FACE_IN_DOCUMENT,)
    doc = DocumentOutcome(accepted=True, portrait=document_portrait(person("tom")))
    failed = CaptureOutcome(ok=False, reasons=("FACE_NOT_CAPTURED",))
    assert match.verify(doc, failed).reasons == (NO_FACE_IN_LIVE,)
    d = match.compare(document_portrait(person("tom")), [empty])
    assert d.reasons == (NO_FACE_IN_LIVE,) and math.isnan(d.score)


class _RejectAll:
    def check(self, frames: Sequence[np.ndarray],
              quality: Sequence[Mapping[str, float]]) -> PadResult:
        return PadResult(bona_fide=False, score=0.9, method="test-double")


def test_presentation_attack_hook(model: DlibFaceModel) -> None:
    match = FaceMatch(model, pad=_RejectAll())
    d = match.compare(document_portrait(person("tom")), [_live("tom")])
    assert not d.match and d.reasons == (PRESENTATION_ATTACK,)
    assert d.record["pad"] == {"checked": True, "bona_fide": False, "score": 0.9,
                               "method": "test-double"}


def test_threshold_for_fmr_counts_impostors() -> None:
    impostor = np.arange(1000) / 1000.0  # 0.000 … 0.999
    t, measurable = threshold_for_fmr(impostor, 1e-2)  # 10 may still match
    assert measurable
    fmr, _ = fmr_fnmr(Scores(np.array([1.0]), impostor, 0), np.array([t]))
    assert fmr[0] <= 1e-2 and 0.989 < t <= 0.990 + 1e-9
    t4, measurable4 = threshold_for_fmr(impostor, 1e-4)  # below 1/1000: not measurable
    assert not measurable4 and t4 > impostor.max()
    fmr, fnmr = fmr_fnmr(Scores(np.array([0.2, 0.95, 1.0]), impostor, 0), np.array([0.5]))
    assert fmr[0] == pytest.approx(0.5) and fnmr[0] == pytest.approx(1 / 3)


def test_calibration_is_written_and_used(model: DlibFaceModel, pack: Path,
                                         tmp_path: Path) -> None:
    ids = ("tom", "astronaut", "t1-a", "t1-c")
    refs = {pid: document_portrait(person(pid)) for pid in ids}
    lives = {pid: [_live(pid, s) for s in (1, 2)] for pid in ids}
    pairs = [LabelledPair(refs[a], live, a == b) for a in ids for b in ids for live in lives[b]]
    scores = score_pairs(model, pairs)
    assert len(scores.genuine) == 8 and len(scores.impostor) == 24
    assert np.median(scores.genuine) > np.median(scores.impostor)
    result = calibrate(scores, [1e-3, 0.2])
    # 24 impostors cannot show FMR ≤ 1e-3 (2995 needed): no threshold, never a figure
    assert result["operating_points"][0]["measurable"] is False
    assert result["operating_points"][0]["threshold"] is None
    assert "1e-03" not in result["thresholds"]
    # FMR ≤ 0.2 they can: with no false match the 95 % bound is 1 − 0.05^(1/24) = 0.117
    assert result["operating_points"][1]["measurable"] is True
    assert result["operating_points"][1]["fmr_ci"]["trials"] == 24
    plot_det(scores, tmp_path / "det.png", "test")
    assert cv2.imread(str(tmp_path / "det.png")) is not None
    from gate.face.calibrate import write_calibration

    write_calibration(pack, model, result, "test")
    try:
        m = FaceMatch(model, target_fmr=0.2)
        assert m.threshold_source.startswith("calibration")
        assert m.threshold == pytest.approx(result["thresholds"]["2e-01"])
        unmeasured = FaceMatch(model, target_fmr=1e-3)
        assert unmeasured.threshold_source == "pack-default"
        assert unmeasured.threshold == model.default_threshold
        assert FaceMatch(model, target_fmr=1e-3, threshold=0.5).threshold == 0.5
    finally:
        (pack / "calibration.json").unlink()


def _run_verify(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    p = argparse.ArgumentParser()
    verify_cmd.configure(p)
    rc = verify_cmd.run(p.parse_args(argv))
    out = capsys.readouterr().out.strip()
    return rc, json.loads(out)


def test_gate_verify_json_contract(pack: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.png"
    cv2.imwrite(str(page), document_page(person("tom")))
    live = tmp_path / "live.jpg"
    cv2.imwrite(str(live), _live("tom"))
    other = tmp_path / "other.jpg"
    cv2.imwrite(str(other), _live("t1-f"))
    empty = tmp_path / "empty.jpg"
    cv2.imwrite(str(empty), render(None))
    base = ["--json", "--gpu", "off", "--pack", str(pack)]

    rc, data = _run_verify([str(page), str(live), *base], capsys)
    assert rc == 0 and data["match"] is True
    for key in ("score", "threshold", "pack", "provider", "quality", "timings_ms"):
        assert key in data
    assert [q["file"] for q in data["quality"]] == [str(page), str(live)]
    assert data["quality"][1]["faces"] == 1

    rc, data = _run_verify([str(page), str(other), *base], capsys)
    assert rc == 1 and data["match"] is False and data["reasons"] == [SCORE_BELOW_THRESHOLD]

    rc, data = _run_verify([str(page), str(empty), *base], capsys)
    assert rc == 2 and data["reasons"] == [NO_FACE_IN_LIVE] and data["score"] is None

    rc, data = _run_verify([str(tmp_path / "nope.jpg"), str(live), *base], capsys)
    assert rc == 2 and data["reasons"] == ["UNREADABLE_IMAGE", "FILE_NOT_FOUND"]
    assert data["files"] == [{"file": str(tmp_path / "nope.jpg"), "reason": "FILE_NOT_FOUND"}]


def test_gate_calibrate_on_a_folder(pack: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ids"
    for pid in ("tom", "astronaut", "t1-d"):
        (root / pid).mkdir(parents=True)
        cv2.imwrite(str(root / pid / "0_ref.png"), document_portrait(person(pid)))
        cv2.imwrite(str(root / pid / "1.jpg"), _live(pid, 3))
    p = argparse.ArgumentParser()
    calibrate_cmd.configure(p)
    out = tmp_path / "cal"
    rc = calibrate_cmd.run(p.parse_args(["--pack", str(pack), "--gpu", "off", "--pairs",
                                         str(root), "--out", str(out), "--json"]))
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert data["genuine_pairs"] == 3 and data["impostor_pairs"] == 6
    saved = json.loads((out / "calibration.json").read_text())
    # 6 impostor pairs measure neither 1e-3 nor 1e-4: the file says so, with no threshold
    assert saved["pack_hash"] and saved["thresholds"] == {}
    assert [op["measurable"] for op in saved["operating_points"]] == [False, False]


def test_face_stage_from_config(pack: Path) -> None:
    config = FaceConfig.from_mapping({"pack": str(pack), "gpu": "off",
                                      "capture": {"window_s": 5.0}})
    camera = open_camera("http://127.0.0.1:9/stream.mjpg")  # never started: not needed
    capture, verifier = face_stage(config, camera)
    assert capture.settings.window_s == 5.0
    assert capture.camera is camera  # the lane's device, not one opened per capture
    assert verifier.threshold_source.startswith("calibration:")  # models/calibration
    with pytest.raises(ValueError):
        FaceConfig.from_mapping({"gpu": "sometimes"})
    with pytest.raises(ValueError):
        FaceConfig.from_mapping({"colour": "blue"})
    with pytest.raises(ValueError, match=r"\[devices\] camera"):
        FaceConfig.from_mapping({"camera": "camera:0"})  # moved: the camera is a device
