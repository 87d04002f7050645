"""The case store: sealing at rest, migrations, decisions, retention purge."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_review_support import new_seal, new_store, sample_case

from gate.review.crypto import ImageSeal, KeyMismatch, KeyMissing, SealError, parse_key
from gate.review.store import (
    MIGRATIONS,
    CaseStore,
    SchemaTooNew,
    image_context,
    mrz_context,
    seal_case,
)

pytestmark = pytest.mark.timeout(60)


def _file_bytes(tmp_path: Path) -> bytes:
    """The database and its WAL, as a thief copying the disk would get them."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("review.sqlite3*")))


def test_images_and_mrz_are_ciphertext_in_the_database(tmp_path: Path) -> None:
    seal = new_seal()
    store = new_store(tmp_path)
    case = sample_case()
    sealed = seal_case(case, seal)
    store.add_case(sealed)
    assert case.portrait is not None
    raw = _file_bytes(tmp_path)
    # The JPEG the store would hold in the clear, and the raw pixels: neither is there.
    ok, jpeg = cv2.imencode(".jpg", case.portrait, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    jpeg_bytes = jpeg.tobytes()
    assert b"\xff\xd8\xff" not in raw  # no JPEG start-of-image marker anywhere
    for start in range(0, len(jpeg_bytes) - 32, 997):
        assert jpeg_bytes[start : start + 32] not in raw
    assert case.portrait.tobytes()[5000:5064] not in raw
    for secret in (b"ERIKSSON", b"ANNA MARIA", b"L898902C3", b"740812"):
        assert secret not in raw
    # ...yet the key holder gets the very same image back.
    blob = store.image(sealed.case_id, "portrait")
    assert blob is not None
    back = cv2.imdecode(np.frombuffer(seal.open(blob, image_context(sealed.case_id, "portrait")),
                                      np.uint8), cv2.IMREAD_COLOR)
    assert back is not None and back.shape == case.portrait.shape
    assert float(np.abs(back.astype(int) - case.portrait.astype(int)).mean()) < 4.0


def test_wrong_key_fails_clearly(tmp_path: Path) -> None:
    seal, other = new_seal(), new_seal()
    sealed = seal_case(sample_case(), seal)
    blob = dict(sealed.images)["portrait"]
    with pytest.raises(KeyMismatch, match=f"sealed with key {seal.key_id_hex}"):
        other.open(blob, image_context(sealed.case_id, "portrait"))
    # A blob moved to another case or slot does not open as that case's image.
    with pytest.raises(SealError, match="damaged or belongs elsewhere"):
        seal.open(blob, image_context(sealed.case_id, "live-0"))
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    with pytest.raises(SealError):
        seal.open(bytes(tampered), image_context(sealed.case_id, "portrait"))
    assert sealed.mrz_sealed is not None
    with pytest.raises(KeyMismatch):
        other.open(sealed.mrz_sealed, mrz_context(sealed.case_id))


def test_key_sources_and_rotation(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("not a key\n")
    with pytest.raises(KeyMissing, match="neither base64 nor hex"):
        ImageSeal.from_environment(str(key_file))
    with pytest.raises(KeyMissing, match="no review key"):
        ImageSeal.from_environment(None, environ={})
    with pytest.raises(KeyMissing, match="32 bytes"):
        parse_key("AAAA")
    import base64
    import secrets

    k_old, k_new = secrets.token_bytes(32), secrets.token_bytes(32)
    old = ImageSeal([k_old])
    blob = old.seal(b"frame", "case/x/image/portrait")
    # Rotation: the new key seals, the old one still opens what it sealed.
    key_file.write_text(base64.b64encode(k_new).decode() + "\n" + k_old.hex() + "\n")
    new = ImageSeal.from_file(key_file)
    assert new.open(blob, "case/x/image/portrait") == b"frame"
    assert new.key_id_hex != old.key_id_hex
    env = {"GATE_REVIEW_KEY": base64.b64encode(k_old).decode()}
    assert ImageSeal.from_environment(None, environ=env).key_id_hex == old.key_id_hex


def test_fresh_store_is_migrated_and_old_store_is_upgraded(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert store.schema_version() == MIGRATIONS[-1][0] == 4
    store.close()
    # A version-1 store, as the first release left it, upgrades in place.
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for stmt in MIGRATIONS[0][1]:
        conn.execute(stmt.format(blob="BLOB", real="REAL",
                                 serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO cases (case_id, lane_id, kind, opened_at, received_at, reasons, quality, "
        "timeline, document_masked, status) VALUES ('old', 'lane-9', 'REJECTION', 1, 1, '[]', "
        "'[]', '[]', '', 'OPEN')"
    )
    conn.commit()
    conn.close()
    upgraded = CaseStore(f"sqlite:///{path}")
    assert upgraded.schema_version() == 4
    old = upgraded.case("old")
    assert old is not None and old.mrz_kept == {} and old.lane_id == "lane-9"
    upgraded.close()
    # Software older than the store refuses it rather than corrupting it.
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew):
        CaseStore(f"sqlite:///{path}")


def test_add_case_is_idempotent_and_decisions_compare_and_set(tmp_path: Path) -> None:
    seal = new_seal()
    store = new_store(tmp_path)
    sealed = seal_case(sample_case(), seal)
    assert store.add_case(sealed) is True
    assert store.add_case(sealed) is False  # a spool re-sending after a crash
    assert store.image_slots(sealed.case_id) == ["portrait", "live-0", "live-1"]
    assert store.decide(sealed.case_id, "anna", "escalate", "unsure", ("OPEN",))
    # An officer may not decide an escalated case; a supervisor may, once.
    assert not store.decide(sealed.case_id, "bert", "confirm", "late", ("OPEN",))
    assert store.decide(sealed.case_id, "sue", "clear", "same person", ("OPEN", "ESCALATED"))
    assert not store.decide(sealed.case_id, "sue", "confirm", "twice", ("OPEN", "ESCALATED"))
    rec = store.case(sealed.case_id)
    assert rec is not None and rec.status == "CLEARED" and rec.decided_by == "sue"
    assert rec.closed_at is not None
    assert [d["action"] for d in store.decisions(sealed.case_id)] == ["escalate", "clear"]
    actions = [a["action"] for a in store.audit_log(sealed.case_id)]
    assert actions == ["DECIDE_CLEAR", "DECIDE_ESCALATE"]


def test_retention_purge_removes_biometrics_keeps_metadata(tmp_path: Path) -> None:
    seal = new_seal()
    store = new_store(tmp_path)
    now = time.time()
    ids = {}
    for name in ("closed_long_ago", "closed_recently", "still_open"):
        sealed = seal_case(sample_case(), seal)
        store.add_case(sealed)
        ids[name] = sealed.case_id
    store.decide(ids["closed_long_ago"], "anna", "confirm", "impostor", ("OPEN",),
                 now=now - 25 * 3600)
    store.decide(ids["closed_recently"], "anna", "confirm", "impostor", ("OPEN",),
                 now=now - 23 * 3600)
    purged_blob = store.image(ids["closed_long_ago"], "portrait")
    assert purged_blob is not None
    assert store.purge(now=now) == 1  # the default retention: 24 h after closing
    gone = store.case(ids["closed_long_ago"])
    assert gone is not None
    assert store.image_slots(gone.case_id) == [] and gone.mrz_sealed is None
    assert gone.images_purged_at == pytest.approx(now)
    # Metadata kept: kind, lane, reasons, scores, decision, what policy keeps of the MRZ.
    assert (gone.kind, gone.lane_id, gone.reasons) == ("REJECTION", "lane-1", ["FACE_MISMATCH"])
    assert gone.score == pytest.approx(0.183) and gone.status == "CONFIRMED"
    assert gone.mrz_kept["nationality"] == "UTO" and gone.document_masked == "••••••2C3"
    assert store.decisions(gone.case_id)[0]["comment"] == "impostor"
    for name in ("closed_recently", "still_open"):
        assert len(store.image_slots(ids[name])) == 3
    assert store.purge(now=now) == 0  # nothing twice
    assert store.purge(retention_s=3600, now=now) == 1  # a shorter policy reaches the other
    assert store.image_slots(ids["still_open"])  # open cases are never purged
    store.close()
    # The purged bytes are really gone from the file, not only unlinked from a row.
    conn = sqlite3.connect(tmp_path / "review.sqlite3")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = conn.execute("SELECT COUNT(*) FROM case_images").fetchone()[0]
    conn.close()
    assert n == 3
    assert purged_blob[-64:] not in _file_bytes(tmp_path)  # overwritten (secure_delete)
    actions = [a["action"] for a in CaseStore(f"sqlite:///{tmp_path / 'review.sqlite3'}")
               .audit_log()]
    assert actions.count("PURGE") == 2


def test_purge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from gate.commands import review as cmd

    seal = new_seal()
    store = new_store(tmp_path)
    sealed = seal_case(sample_case(), seal)
    store.add_case(sealed)
    store.decide(sealed.case_id, "anna", "confirm", "x", ("OPEN",), now=time.time() - 7200)
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    db = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    args = parser.parse_args(["review", "purge", "--db", db, "--retention-hours", "1"])
    assert args.func(args) == 0
    assert "purged images of 1 closed cases" in capsys.readouterr().out
    assert store.image_slots(sealed.case_id) == []


def test_audit_log_is_hash_chained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from gate.commands import review as cmd

    store = new_store(tmp_path)
    for i in range(5):
        store.audit("anna", "VIEW_CASE", f"case-{i}")
    report = store.verify_audit()
    assert report.intact and report.keyed and report.rows == 6  # the epoch row, then 5
    head = store.audit_head()
    assert head is not None and len(head[1]) == 64
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["review", "audit-verify", "--db", store.url])
    assert args.func(args) == 0 and "intact: 6 keyed rows" in capsys.readouterr().out
    store.close()
    # Someone with write access to the file hides what anna looked at.
    conn = sqlite3.connect(tmp_path / "review.sqlite3")
    conn.execute("UPDATE audit SET case_id = 'case-x' WHERE case_id = 'case-2'")
    conn.commit()
    third = conn.execute("SELECT id FROM audit WHERE case_id = 'case-x'").fetchone()[0]
    conn.close()
    report = new_store(tmp_path).verify_audit()
    assert [(b.kind, b.row_id) for b in report.breaks] == [("BAD_MAC", third)]
    assert args.func(args) == 1
    assert f"BROKEN: BAD_MAC at row id {third}" in capsys.readouterr().err
    conn = sqlite3.connect(tmp_path / "review.sqlite3")
    conn.execute("UPDATE audit SET case_id = 'case-2' WHERE case_id = 'case-x'")
    conn.execute("DELETE FROM audit WHERE case_id = 'case-3'")  # deleting a row breaks it too
    conn.commit()
    conn.close()
    assert new_store(tmp_path).verify_audit().kinds() == {"BROKEN_LINK"}
