"""The keyed audit chain (issue 11, finding 2): every tampering the review found to pass
``gate review audit-verify`` as "intact" is now reported by kind, with exit status 1.

Each test tampers with the SQLite file directly, as someone holding a copy of the store
(but not the audit key, which lives outside it) would, then runs the real command.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_review_support import add_officer, audit_key, new_seal, new_store, put_case, sign_in

from gate.commands import review as cmd
from gate.review import chain
from gate.review.app import ReviewSettings, create_app
from gate.review.crypto import AuditKey, AuditKeyMissing, new_key_text, parse_key
from gate.review.store import MIGRATIONS, CaseStore, audit_row_hash

pytestmark = pytest.mark.timeout(60)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["review", *argv])
    try:
        rc = args.func(args)
    except SystemExit as exc:
        rc = exc.code
    seen = capsys.readouterr()
    return int(rc), seen.out, seen.err


def _world(tmp_path: Path) -> tuple[CaseStore, dict[str, str]]:
    """A store as a day's work leaves it: officers, cases confirmed, escalated and still
    open, views audited."""
    seal, store = new_seal(), new_store(tmp_path)
    add_officer(store, "anna")
    add_officer(store, "sue", "supervisor")
    ids = {name: put_case(store, seal) for name in ("confirmed", "escalated", "open")}
    assert store.decide(ids["confirmed"], "anna", "confirm", "impostor", ("OPEN",))
    assert store.decide(ids["escalated"], "anna", "escalate", "twin?", ("OPEN",))
    for _ in range(3):
        store.audit("anna", "VIEW_CASE", ids["open"])
    return store, ids


def _tamper(tmp_path: Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(tmp_path / "review.sqlite3")
    for st in statements:
        if isinstance(st, tuple):
            conn.execute(*st)
        else:
            conn.execute(st)
    conn.commit()
    conn.close()


def _last_id(tmp_path: Path) -> int:
    conn = sqlite3.connect(tmp_path / "review.sqlite3")
    (n,) = conn.execute("SELECT MAX(id) FROM audit").fetchone()
    conn.close()
    return int(n)


def _broken(err: str, kind: str, row_id: int | None = None) -> bool:
    where = f" at row id {row_id}" if row_id is not None else ""
    return f"audit chain BROKEN: {kind}{where}:" in err


def test_untouched_store_verifies_and_the_key_is_created_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _world(tmp_path)
    key = audit_key()
    assert key.path is not None and stat.S_IMODE(key.path.stat().st_mode) == 0o600
    report = store.verify_audit()
    assert report.intact and report.keyed and report.legacy_rows == 0
    # epoch, 2 USER_ADDED, 2 decisions, 3 views
    assert report.rows == 8 and report.head is not None and report.head.seq == 7
    rc, out, _ = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 0 and "intact: 8 keyed rows" in out


def test_deleting_the_newest_rows_is_caught_by_the_anchor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _world(tmp_path)
    rc, out, _ = _cli(capsys, "audit-anchor", "--db", store.url)
    anchor = audit_key().path.with_name("audit.anchor")  # type: ignore[union-attr]
    assert rc == 0 and "anchored seq 7" in out and anchor.exists()
    assert stat.S_IMODE(anchor.stat().st_mode) == 0o600
    store.close()
    last = _last_id(tmp_path)
    _tamper(tmp_path, f"DELETE FROM audit WHERE id >= {last - 1}")  # the two newest rows
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "TRUNCATED", last) and "seq 5" in err
    # The same with the anchor named explicitly (e.g. a copy shipped off the host).
    copy = tmp_path / "shipped.anchor"
    copy.write_bytes(anchor.read_bytes())
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url, "--anchor", str(copy))
    assert rc == 1 and _broken(err, "TRUNCATED", last)
    # Without an anchor no chain can tell: the command says so rather than pretend.
    rc, out, err = _cli(capsys, "audit-verify", "--db", store.url, "--no-anchor")
    assert rc == 0 and "deleting the newest rows cannot be detected" in err
    # And the truncated chain is not anchored over (that would launder the deletion).
    rc, _, err = _cli(capsys, "audit-anchor", "--db", store.url)
    assert rc == 1 and "TRUNCATED" in err
    with pytest.raises(chain.AuditChainBroken, match="TRUNCATED"):
        new_store(tmp_path).export_audit_anchor(anchor)


def test_inserted_null_hash_row_is_a_break_and_unverified_on_the_audit_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, ids = _world(tmp_path)
    store.close()
    _tamper(tmp_path, ("INSERT INTO audit (at, user_name, action, case_id, detail) VALUES "
                       "(?, 'sue', 'DECIDE_CLEAR', ?, 'cleared by phone')",
                       (time.time(), ids["open"])))
    forged = _last_id(tmp_path)
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "HASHLESS_ROW", forged)
    # The supervisor's /audit page does not pass it off as a real row.
    store = new_store(tmp_path)
    with TestClient(create_app(store, new_seal(), None, ReviewSettings(purge_interval_s=0))) as c:
        assert sign_in(c, "sue").status_code == 303
        page = c.get("/audit").text
    row = re.search(rf'<tr class="chain-(\w+)" data-audit-id="{forged}">(.*?)</tr>', page, re.S)
    assert row is not None and row.group(1) == "unverified"
    assert "cleared by phone" in row.group(2) and "UNVERIFIED" in row.group(2)
    genuine = re.findall(r'<tr class="chain-(\w+)" data-audit-id="(\d+)">', page)
    assert {m for m, i in genuine if int(i) != forged} == {"verified"}


def test_editing_the_last_row_and_nulling_its_hash_is_a_break(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _world(tmp_path)
    store.close()
    last = _last_id(tmp_path)
    _tamper(tmp_path, f"UPDATE audit SET case_id = NULL, detail = 'nothing seen', "
                      f"row_hash = NULL WHERE id = {last}")
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "HASHLESS_ROW", last)
    # Nulling every chain column of it as well changes nothing.
    _tamper(tmp_path, f"UPDATE audit SET key_id = NULL, seq = NULL, prev_hash = NULL "
                      f"WHERE id = {last}")
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "HASHLESS_ROW", last)


def _rehash(tmp_path: Path, from_id: int, mac: Any) -> None:
    """Re-chain every row from ``from_id`` on, as a forger would: ``mac(prev, row)``."""
    conn = sqlite3.connect(tmp_path / "review.sqlite3")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(f"SELECT {chain.AUDIT_COLUMNS} FROM audit ORDER BY id")]
    prev = ""
    for r in rows:
        if r["id"] >= from_id:
            r["prev_hash"], r["row_hash"] = prev, mac(prev, r)
            conn.execute("UPDATE audit SET prev_hash = ?, row_hash = ? WHERE id = ?",
                         (r["prev_hash"], r["row_hash"], r["id"]))
        prev = r["row_hash"]
    conn.commit()
    conn.close()


def test_editing_a_row_and_recomputing_the_chain_without_the_key_is_a_break(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ids = _world(tmp_path)
    store.close()
    conn = sqlite3.connect(tmp_path / "review.sqlite3")
    (viewed,) = conn.execute("SELECT MIN(id) FROM audit WHERE action = 'VIEW_CASE'").fetchone()
    conn.close()
    _tamper(tmp_path, f"UPDATE audit SET user_name = 'sue' WHERE id = {viewed}")
    # Plain SHA-256, the rule the chain had before: everything from the edit on "fits".
    _rehash(tmp_path, viewed, lambda prev, r: audit_row_hash(
        prev, r["at"], r["user_name"], r["action"], r["case_id"], r["detail"]))
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "BAD_MAC", viewed)
    report = new_store(tmp_path).verify_audit()
    assert report.breaks[0] == chain.AuditBreak(
        chain.BAD_MAC, viewed, report.breaks[0].detail)
    assert report.kinds() == {chain.BAD_MAC}
    # An HMAC with a key of the forger's own, under the real key id: no better.
    forger = AuditKey([parse_key(new_key_text())])
    _rehash(tmp_path, viewed, lambda prev, r: forger.mac(chain.row_material(
        r["seq"], prev, r["key_id"], r["at"], r["user_name"], r["action"], r["case_id"],
        r["detail"], r["subject"])))
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "BAD_MAC", viewed)


def test_editing_decisions_is_a_break(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, ids = _world(tmp_path)
    store.close()
    _tamper(tmp_path, ("UPDATE decisions SET comment = 'same person', user_name = 'sue' "
                       "WHERE case_id = ?", (ids["confirmed"],)))
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "DECISION_EDITED")
    assert "comment: 'impostor' chained, 'same person' now" in err
    assert "user_name: 'anna' chained, 'sue' now" in err
    _tamper(tmp_path, ("DELETE FROM decisions WHERE case_id = ?", (ids["confirmed"],)),
            ("INSERT INTO decisions (case_id, at, user_name, action, comment) VALUES "
             "(?, ?, 'sue', 'clear', 'ok')", (ids["escalated"], time.time())))
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "DECISION_DELETED") and _broken(err, "DECISION_UNCHAINED")


def test_editing_a_cases_status_or_decider_is_a_break(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, ids = _world(tmp_path)
    store.close()
    _tamper(tmp_path, ("UPDATE cases SET decided_by = 'sue' WHERE case_id = ?",
                       (ids["confirmed"],)))
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "CASE_STATE_EDITED")
    assert f"case {ids['confirmed']} differs" in err and "decided_by: 'anna' chained" in err
    _tamper(tmp_path, ("UPDATE cases SET decided_by = 'anna' WHERE case_id = ?",
                       (ids["confirmed"],)))
    assert _cli(capsys, "audit-verify", "--db", store.url)[0] == 0  # put back: intact
    # A never-decided case shown as closed, and an escalated one quietly cleared.
    _tamper(tmp_path,
            ("UPDATE cases SET status = 'CONFIRMED', decided_by = 'anna', decided_at = 1, "
             "closed_at = 1 WHERE case_id = ?", (ids["open"],)),
            ("UPDATE cases SET status = 'CLEARED' WHERE case_id = ?", (ids["escalated"],)))
    report = new_store(tmp_path).verify_audit()
    edited = [b.detail for b in report.breaks if b.kind == chain.CASE_STATE_EDITED]
    assert len(edited) == 2 and report.kinds() == {chain.CASE_STATE_EDITED}
    assert any("holds no decision on it" in d and ids["open"] in d for d in edited)
    assert any("status: 'ESCALATED' chained, 'CLEARED' now" in d for d in edited)


def test_release_claim_and_refusal_are_chained(tmp_path: Path) -> None:
    store, ids = _world(tmp_path)
    case = ids["escalated"]
    assert store.claim_for_release(case, ("ESCALATED",), "sue") == "ESCALATED"
    assert store.verify_audit().intact  # RELEASING, as chained
    store.release_refused(case, "ESCALATED", "sue")
    assert store.verify_audit().intact
    trail = [(a["user_name"], a["action"]) for a in store.audit_log(case)]
    assert trail[:2] == [("sue", "RELEASE_REVERTED"), ("sue", "RELEASE_CLAIMED")]
    store.close()
    _tamper(tmp_path, ("UPDATE cases SET status = 'RELEASING' WHERE case_id = ?", (case,)))
    assert new_store(tmp_path).verify_audit().kinds() == {chain.CASE_STATE_EDITED}


def test_forged_anchor_and_anchor_of_another_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _world(tmp_path)
    anchor = tmp_path / "a.anchor"
    written = store.export_audit_anchor(anchor)
    assert written is not None and written.seq == 7
    line = json.loads(anchor.read_text())
    anchor.write_text(json.dumps({**line, "seq": 3}) + "\n")  # moved back, tag kept
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url, "--anchor", str(anchor))
    assert rc == 1 and _broken(err, "ANCHOR_INVALID")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other, _ = _world(other_dir)
    other_anchor = tmp_path / "other.anchor"
    assert other.export_audit_anchor(other_anchor) is not None
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url, "--anchor", str(other_anchor))
    assert rc == 1 and _broken(err, "ANCHOR_OTHER_CHAIN")
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url, "--anchor",
                      str(tmp_path / "missing.anchor"))
    assert rc == 2 and "does not exist" in err


def test_the_server_anchors_at_every_purge_round(tmp_path: Path) -> None:
    store, _ = _world(tmp_path)
    anchor = tmp_path / "served.anchor"
    settings = ReviewSettings(purge_interval_s=0.1, audit_anchor=str(anchor))
    with TestClient(create_app(store, new_seal(), None, settings)):
        deadline = time.monotonic() + 5
        while (not anchor.exists() or len(anchor.read_text().splitlines()) < 2) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
    anchors, bad = chain.read_anchors(anchor, audit_key())
    assert not bad and len(anchors) >= 2 and anchors[-1].seq == store.audit_chain_head().seq  # type: ignore[union-attr]
    assert store.verify_audit(anchor).intact


def test_wrong_or_missing_audit_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = _world(tmp_path)
    other = tmp_path / "other.key"
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url, "--audit-key-file", str(other))
    assert rc == 2 and "does not exist" in err and not other.exists()  # verify never creates
    # A server or command started with a new key must not fork the chain.
    rc, _, err = _cli(capsys, "purge", "--db", store.url, "--audit-key-file", str(other))
    assert rc == 2 and "audit chain is written with audit key" in err
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url, "--audit-key-file", str(other),
                      "--no-anchor")
    assert rc == 1 and "BROKEN: UNKNOWN_KEY at row id" in err
    with pytest.raises(AuditKeyMissing):
        CaseStore(store.url).audit("anna", "VIEW_CASE")  # no key: no unkeyed rows either


def test_key_rotation_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    store, _ids = _world(tmp_path)
    old = audit_key()
    assert old.path is not None
    new_text = new_key_text()
    rotated = tmp_path / "rotated.key"
    rotated.write_text(new_text + "\n" + old.path.read_text())
    store = CaseStore(store.url, audit_key=AuditKey.from_file(rotated))
    store.audit("sue", "VIEW_AUDIT")
    report = store.verify_audit()
    assert report.intact and report.head is not None
    assert report.head.key_id == AuditKey([parse_key(new_text)]).key_id != old.key_id


def _v3_store(path: Path, *, break_old_chain: bool = False) -> None:
    """A store as the software before the keyed chain left it (schema 3): two audit rows
    from before schema 3 without hashes, three hashed under the unkeyed rule, a decided case."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, statements in MIGRATIONS[:3]:
        for st in statements:
            conn.execute(st.format(blob="BLOB", real="REAL",
                                   serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute("INSERT INTO cases (case_id, lane_id, kind, opened_at, received_at, reasons, "
                 "quality, timeline, document_masked, status, decided_by, decided_at, "
                 "closed_at) VALUES ('old', 'lane-9', 'REJECTION', 1, 1, '[]', '[]', '[]', '', "
                 "'CONFIRMED', 'anna', 5.0, 5.0)")
    conn.execute("INSERT INTO decisions (case_id, at, user_name, action, comment) VALUES "
                 "('old', 5.0, 'anna', 'confirm', 'impostor')")
    for at in (1.0, 2.0):
        conn.execute("INSERT INTO audit (at, user_name, action, case_id, detail) VALUES "
                     "(?, 'anna', 'LOGIN', NULL, 'officer')", (at,))
    prev = ""
    for at, action in ((3.0, "VIEW_CASE"), (5.0, "DECIDE_CONFIRM"), (6.0, "LOGOUT")):
        h = audit_row_hash(prev, at, "anna", action, "old", "")
        conn.execute("INSERT INTO audit (at, user_name, action, case_id, detail, prev_hash, "
                     "row_hash) VALUES (?, 'anna', ?, 'old', '', ?, ?)", (at, action, prev, h))
        prev = h
    if break_old_chain:
        conn.execute("UPDATE audit SET detail = 'edited' WHERE action = 'VIEW_CASE'")
    conn.commit()
    conn.close()


def test_old_unkeyed_store_migrates_to_a_keyed_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "review.sqlite3"
    _v3_store(path)
    store = new_store(tmp_path)
    assert store.schema_version() == 4
    # Before any key holder wrote: only the old rule can be checked, and it says so.
    report = store.verify_audit()
    assert report.intact and not report.keyed and report.legacy_rows == 5
    assert any("no keyed chain yet" in n for n in report.notes)
    shown = {a["id"]: a["chain"] for a in store.audit_log()}
    assert sorted(shown.values()) == ["legacy"] * 3 + ["unverified"] * 2  # pre-v3: no hash
    store.audit("sue", "VIEW_AUDIT")  # the first keyed write starts the epoch
    rows = store.audit_log()
    assert [r["action"] for r in rows[:3]] == ["VIEW_AUDIT", "CHAIN_SNAPSHOT", "CHAIN_SNAPSHOT"]
    assert rows[3]["action"] == "CHAIN_EPOCH" and "unkeyed chain intact" in rows[3]["detail"]
    report = store.verify_audit()
    assert report.intact and report.keyed and report.legacy_rows == 5 and report.rows == 4
    rc, out, _ = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 0 and "4 keyed rows, 5 earlier rows pinned" in out
    # The old decision and case were taken into the chain; so were the old rows.
    store.close()
    _tamper(tmp_path, "UPDATE decisions SET comment = 'fine' WHERE case_id = 'old'")
    assert new_store(tmp_path).verify_audit().kinds() == {chain.DECISION_EDITED}
    _tamper(tmp_path, "UPDATE decisions SET comment = 'impostor' WHERE case_id = 'old'",
            "UPDATE cases SET decided_by = 'sue' WHERE case_id = 'old'")
    assert new_store(tmp_path).verify_audit().kinds() == {chain.CASE_STATE_EDITED}
    _tamper(tmp_path, "UPDATE cases SET decided_by = 'anna' WHERE case_id = 'old'",
            "UPDATE audit SET detail = 'x' WHERE id = 1")  # a pre-v3 row, after the epoch
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "LEGACY_EDITED") and "digest" in err
    # Even re-hashing the legacy rows under the old rule does not get past the epoch.
    _tamper(tmp_path, "UPDATE audit SET detail = 'officer' WHERE id = 1",
            "DELETE FROM audit WHERE action = 'LOGOUT'")
    assert new_store(tmp_path).verify_audit().kinds() == {chain.LEGACY_EDITED}


def test_old_store_with_a_broken_unkeyed_chain(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _v3_store(tmp_path / "review.sqlite3", break_old_chain=True)
    store = new_store(tmp_path)
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 1 and _broken(err, "LEGACY_BROKEN", 3)
    store.audit("sue", "VIEW_AUDIT")
    epoch = store.audit_log()[-1 - 5]
    assert epoch["action"] == "CHAIN_EPOCH" and "BROKEN at row id 3" in epoch["detail"]
    # Recorded once at the epoch, then reported as a note, not as a new break.
    rc, _, err = _cli(capsys, "audit-verify", "--db", store.url)
    assert rc == 0 and "already broken at row id 3 when the keyed chain began" in err


def test_lane_spool_writes_cases_without_the_audit_key(tmp_path: Path) -> None:
    """The lane's flusher opens the store without the audit key; intake needs none, and a
    delivered, undecided case is in its intake state, which the chain accepts."""
    from test_review_support import sample_case

    from gate.review.queue import CaseSpool

    store, _ = _world(tmp_path)
    seal = new_seal()
    spool = CaseSpool(tmp_path / "spool", seal, store.url, start=False)
    case_id = spool.submit(sample_case(lane_id="lane-7"))
    assert case_id is not None and spool.flush() == 1
    spool.close()
    assert store.case(case_id) is not None
    assert store.verify_audit().intact
    assert store.decide(case_id, "anna", "confirm", "impostor", ("OPEN",))
    assert store.verify_audit().intact
