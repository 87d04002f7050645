"""``gate document`` and ``gate bench document``: the command-line contracts."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.commands import document
from sim.documents import capture, random_identity, render_page

TODAY = date(2026, 6, 1)
KEYS = {"mrz_type", "document_type", "issuing_state", "document_number", "surname",
        "given_names", "nationality", "date_of_birth", "date_of_expiry", "sex",
        "optional_data", "checks", "valid", "eligible", "reasons", "photo"}


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    document.add_parser(sub)
    args = parser.parse_args(["document", *argv])
    return int(args.func(args))


def _write_page(path: Path, seed: int, defect: str = "") -> None:
    rng = np.random.default_rng(seed)
    page = capture(render_page(random_identity(rng, "TD3", today=TODAY, defect=defect), rng),
                   "clean", rng)
    cv2.imwrite(str(path), page.image)


@pytest.mark.timeout(60)
def test_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "page.png"
    _write_page(img, 1)
    rc = _run([str(img), "--json", "--today", TODAY.isoformat()])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out["reasons"]
    assert set(out) >= KEYS
    assert out["valid"] and out["eligible"] and out["reasons"] == []
    assert out["mrz_type"] == "TD3" and len(out["date_of_birth"]) == 10
    assert all(out["checks"].values()) and len(out["checks"]) == 5
    assert len(out["photo"]["box"]) == 4 and out["photo"]["face_found"]


@pytest.mark.timeout(60)
def test_not_eligible_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "page.jpg"
    _write_page(img, 2, defect="expired")
    rc = _run([str(img), "--json", "--today", TODAY.isoformat()])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["valid"] and not out["eligible"] and "EXPIRED" in out["reasons"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"hello, not a picture", "IMAGE_UNREADABLE"), (b"GIF89a garbage", "IMAGE_UNREADABLE"),
     (b"", "IMAGE_EMPTY"), (None, "FILE_NOT_FOUND")],
)
def test_unreadable_input_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, reason: str
) -> None:
    f = tmp_path / "x.png"
    if content is not None:
        f.write_bytes(content)
    rc = _run([str(f), "--json"])
    cap = capsys.readouterr()
    assert rc == 2
    assert json.loads(cap.out) == {"valid": False, "eligible": False, "reasons": [reason]}
    assert len(cap.err.strip().splitlines()) == 1 and reason in cap.err
    assert "Traceback" not in cap.err


@pytest.mark.timeout(60)
def test_no_mrz_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "blank.png"
    cv2.imwrite(str(f), np.full((600, 800, 3), 200, np.uint8))
    rc = _run([str(f), "--json"])
    cap = capsys.readouterr()
    assert rc == 2 and json.loads(cap.out)["valid"] is False
    assert "MRZ_NOT_FOUND" in cap.err


@pytest.mark.timeout(120)
def test_bench_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from gate.document import bench

    parser = argparse.ArgumentParser()
    bench.configure(parser)
    out_json = tmp_path / "b.json"
    args = parser.parse_args(["--pages", "3", "--conditions", "clean", "--json", str(out_json)])
    assert bench.run(args) == 0
    text = capsys.readouterr().out
    assert "all-fields-exact" in text and "valid-but-wrong" in text
    figures = json.loads(out_json.read_text())
    assert figures["clean"]["ours"]["pages"] == 3


def test_bench_rejects_unknown_condition(capsys: pytest.CaptureFixture[str]) -> None:
    from gate.document import bench

    parser = argparse.ArgumentParser()
    bench.configure(parser)
    assert bench.run(parser.parse_args(["--pages", "1", "--conditions", "blur+fog"])) == 2
    assert "fog" in capsys.readouterr().out
