"""The MRZ reader and the document stage on generated pages (real OCR-B, real onnxruntime)."""

from __future__ import annotations

import functools
from datetime import date

import cv2
import numpy as np
import pytest

from gate.document.check import MrzDocumentCheck
from gate.document.policy import DocumentPolicy
from gate.document.reader import MrzReader, decode_image
from gate.stages import DocumentCheck
from hardware.docreader import mrz as icao
from sim.documents import CONDITIONS, Page, capture, generate, random_identity, render_page

TODAY = date(2026, 6, 1)


@functools.lru_cache(maxsize=1)
def _reader() -> MrzReader:
    return MrzReader()


def _page(seed: int, mrz_type: str = "TD3", condition: str = "clean", defect: str = "") -> Page:
    rng = np.random.default_rng(seed)
    ident = random_identity(rng, mrz_type, today=TODAY, defect=defect)
    return capture(render_page(ident, rng), condition, rng)


@pytest.mark.timeout(120)
def test_generated_pages_read_exactly() -> None:
    pages = generate(3, seed=4242, conditions=CONDITIONS, mrz_types=["TD3", "TD1", "TD2"],
                     today=TODAY)
    exact = 0
    for page in pages:
        reading = _reader().read([page.image], TODAY)
        truth = icao.parse(page.mrz, TODAY)
        assert reading.result is not None, (page.condition, reading.reasons)
        if reading.result.lines == truth.lines:
            exact += 1
        else:
            # A wrong read must never pass as valid.
            assert not reading.valid, page.condition
    assert exact >= len(pages) - 1, f"{exact}/{len(pages)} exact"


@pytest.mark.timeout(60)
def test_upside_down_page() -> None:
    page = _page(7)
    reading = _reader().read([cv2.rotate(page.image, cv2.ROTATE_180)], TODAY)
    assert reading.result is not None and reading.result.lines == page.mrz
    assert reading.orientation == 180


@pytest.mark.timeout(60)
def test_frames_are_voted() -> None:
    rng = np.random.default_rng(11)
    ident = random_identity(rng, "TD1", today=TODAY)
    page = render_page(ident, rng)
    frames = [capture(page, c, rng).image for c in ("noise", "blur", "jpeg")]
    reading = _reader().read(frames, TODAY)
    assert reading.valid and reading.result is not None
    assert reading.result.lines == page.mrz
    assert reading.frames == 3 and reading.frames_agreeing >= 2 and reading.stable
    assert reading.to_dict()["name_check_digit_covered"] is False
    assert 0.0 < reading.confidence["name"] <= 1.0


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "IMAGE_EMPTY"), (b"%PDF-1.4 not an image", "IMAGE_UNREADABLE"),
     (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "IMAGE_UNREADABLE")],
)
def test_bad_bytes(data: bytes, reason: str) -> None:
    img, problem = decode_image(data)
    assert img is None and problem == reason


def test_decompression_bomb_refused_before_decoding() -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (12000, 6000)).save(buf, "PNG")  # 72 MP in a few kilobytes
    img, problem = decode_image(buf.getvalue())
    assert img is None and problem == "IMAGE_TOO_LARGE"


@pytest.mark.timeout(60)
def test_bad_images_are_named_outcomes() -> None:
    r = _reader()
    assert r.read([np.zeros((0, 0, 3), np.uint8)]).reasons == ["IMAGE_EMPTY"]
    assert r.read([np.zeros((50, 80, 3), np.uint8)]).reasons == ["IMAGE_TOO_SMALL"]
    huge = np.zeros((8000, 7000), np.uint8)
    assert r.read([huge]).reasons == ["IMAGE_TOO_LARGE"]
    blank = np.full((900, 1200, 3), 235, np.uint8)
    assert r.read([blank]).reasons == ["MRZ_NOT_FOUND"]
    page = _page(3)
    two = np.hstack([page.image, _page(4).image])
    assert r.read([two]).reasons == ["MULTIPLE_DOCUMENTS"]


@pytest.mark.timeout(60)
def test_half_covered_mrz_is_never_valid() -> None:
    page = _page(5)
    img = page.image.copy()
    w = img.shape[1]
    # A thumb over the right half of the second MRZ line.
    hm = page.homography
    y_mm = 79.8 * 300 / 25.4
    p = hm @ np.array([700.0, y_mm, 1.0])
    x, y = int(p[0] / p[2]), int(p[1] / p[2])
    cv2.rectangle(img, (x, y - 25), (w, y + 30), (225, 225, 230), -1)
    reading = _reader().read([img], TODAY)
    assert not reading.valid
    assert (reading.reasons and reading.reasons[0] in ("MRZ_INCOMPLETE", "MRZ_NOT_FOUND")) \
        or "CHECK_COMPOSITE" in reading.reasons


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("defect", "reason"),
    [("", None), ("expired", "EXPIRED"), ("minor", "UNDER_MINIMUM_AGE"),
     ("bad_check", "CHECK_DATE_OF_BIRTH"), ("unknown_state", "NATIONALITY_UNKNOWN"),
     ("stolen", "DOCUMENT_LISTED")],
)
def test_document_stage_outcomes(defect: str, reason: str | None) -> None:
    page = _page(21, "TD3", "clean", defect)
    policy = DocumentPolicy(today=TODAY, allow_specimen=True, listed_numbers=frozenset(
        {page.identity.document_number} if defect == "stolen" else ()))
    stage: DocumentCheck = MrzDocumentCheck(policy, _reader())
    outcome = stage.check([page.image])
    if reason is None:
        assert outcome.accepted, outcome.reasons
        assert outcome.portrait is not None and outcome.portrait.shape[2] == 3
        assert outcome.mrz["eligible"] is True
    else:
        assert not outcome.accepted
        assert reason in outcome.reasons
    assert outcome.timings_ms["total_ms"] > 0
    summary = outcome.log_summary()
    assert "surname" not in str(summary) and page.identity.document_number not in str(summary)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mrz_type", ["TD3", "TD2", "TD1"])
def test_portrait_box_matches_layout(mrz_type: str) -> None:
    page = _page(31, mrz_type, "perspective")
    outcome, _, portrait, _ = MrzDocumentCheck(DocumentPolicy(today=TODAY), _reader()).examine(
        [page.image])
    assert portrait is not None and portrait.box is not None and portrait.reason is None
    ax, ay, aw, ah = portrait.box
    bx, by, bw, bh = page.photo_box
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    iou = inter / (aw * ah + bw * bh - inter)
    assert iou > 0.6, iou
    assert outcome.portrait is not None


@pytest.mark.parametrize("shape", [(2, 44), (2, 36), (3, 30)])
def test_decoding_random_grids_never_raises(shape: tuple[int, int]) -> None:
    from gate.document.ocr import decode

    rng = np.random.default_rng(shape[1])
    for _ in range(30):
        probs = rng.dirichlet(np.full(37, 0.3), size=shape).astype(np.float32)
        d = decode(probs)
        r = icao.parse(d.lines, TODAY)
        assert len(d.lines) == shape[0] and all(len(x) == shape[1] for x in d.lines)
        assert d.conf.shape == shape and isinstance(r.to_dict(), dict)


def test_repair_fixes_only_covered_confusables() -> None:
    from gate.document.ocr import decode

    lines = ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
             "L898902C36UTO7408122F1204159ZE184226B<<<<<10")
    probs = np.full((2, 44, 37), 1e-5, np.float32)
    for r, line in enumerate(lines):
        for c, ch in enumerate(line):
            probs[r, c, icao.ALPHABET.index(ch)] = 1.0
    # The classifier prefers O over 0 in the document number ('L898902C3' -> 'L8989O2C3'),
    # and 'I' over 'M' in the name (no check digit there).
    probs[1, 5, icao.ALPHABET.index("O")] = 1.5
    probs[0, 20, icao.ALPHABET.index("I")] = 1.5
    probs /= probs.sum(-1, keepdims=True)
    d = decode(probs)
    assert d.lines[1] == lines[1] and d.corrections == 1
    assert d.lines[0][20] == "I"  # names are never "corrected"
    assert d.conf[0, 20] < 0.9
