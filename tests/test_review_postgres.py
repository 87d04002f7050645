"""The same store on PostgreSQL: a throw-away cluster started from Debian's postgresql.

Skips, saying why, when PostgreSQL's server binaries or the psycopg driver are absent.
The cluster runs on a Unix socket in a temporary directory (no TCP port), as the
``postgres`` user when the tests run as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pgcluster import _BIN, Cluster, _psycopg
from test_review_support import add_officer, new_seal, sample_case, sign_in

from gate.review import chain
from gate.review.app import ReviewSettings, create_app
from gate.review.crypto import AuditKey, new_key_text, parse_key
from gate.review.queue import CaseSpool
from gate.review.store import CaseStore, StoreUnavailable, seal_case

pytestmark = pytest.mark.timeout(90)

#: One audit key for the module's cluster: its tests share one store, hence one chain.
_AUDIT_KEY = AuditKey([parse_key(new_key_text())])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not _BIN:
        pytest.skip("PostgreSQL server binaries absent (apt-get install postgresql)")
    if not _psycopg():
        pytest.skip("psycopg not installed (pip install psycopg)")
    base = Path(f"/tmp/egate-pg-{os.getpid()}")  # short: Unix socket paths are limited
    base.mkdir()
    c = Cluster(base)
    try:
        c.init()
        c.start()
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            c.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_store_on_postgresql(cluster: Cluster) -> None:
    seal = new_seal()
    store = CaseStore(cluster.url, audit_key=_AUDIT_KEY)
    assert store.schema_version() == 4
    assert CaseStore(cluster.url).schema_version() == 4  # a second opener migrates nothing
    sealed = seal_case(sample_case(lane_id="lane-pg"), seal)
    assert store.add_case(sealed) and not store.add_case(sealed)
    assert store.image_slots(sealed.case_id) == ["portrait", "live-0", "live-1"]
    blob = store.image(sealed.case_id, "portrait")
    assert blob is not None and seal.open(blob, f"case/{sealed.case_id}/image/portrait")
    assert store.decide(sealed.case_id, "anna", "confirm", "impostor", ("OPEN",),
                        now=time.time() - 25 * 3600)
    assert not store.decide(sealed.case_id, "bert", "clear", "late", ("OPEN",))
    assert store.purge() >= 1
    rec = store.case(sealed.case_id)
    assert rec is not None and rec.images_purged_at is not None and rec.mrz_sealed is None
    assert store.image_slots(sealed.case_id) == []
    assert rec.mrz_kept["nationality"] == "UTO"
    report = store.verify_audit()
    assert report.intact and report.rows >= 3  # the epoch, the decision and the purge
    store.close()


def test_spool_survives_postgresql_outage(cluster: Cluster, tmp_path: Path) -> None:
    seal = new_seal()
    store = CaseStore(cluster.url, audit_key=_AUDIT_KEY)
    add_officer(store, "pg-anna")
    cluster.stop()
    try:
        with pytest.raises(StoreUnavailable):
            store.cases()
        spool = CaseSpool(tmp_path / "spool", seal, cluster.url, retry_min_s=0.05,
                          retry_max_s=0.2)
        case_id = spool.submit(sample_case(lane_id="lane-pg-2"))
        assert case_id is not None and spool.pending() == 1
    finally:
        cluster.start()
    deadline = time.monotonic() + 10
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    spool.close()
    assert spool.pending() == 0
    # The review server on the same PostgreSQL store shows it to an officer.
    with TestClient(create_app(store, seal, None, ReviewSettings(purge_interval_s=0))) as c:
        assert sign_in(c, "pg-anna").status_code == 303
        rows = c.get("/api/queue").json()["cases"]
        assert case_id in [r["case_id"] for r in rows]
        assert c.get(f"/cases/{case_id}/images/portrait").content.startswith(b"\xff\xd8")


def test_tampering_on_postgresql_is_caught(cluster: Cluster, tmp_path: Path) -> None:
    import psycopg

    seal = new_seal()
    store = CaseStore(cluster.url, audit_key=_AUDIT_KEY)
    sealed = seal_case(sample_case(lane_id="lane-pg-3"), seal)
    assert store.add_case(sealed)
    assert store.decide(sealed.case_id, "anna", "confirm", "impostor", ("OPEN",))
    store.audit("anna", "VIEW_CASE", sealed.case_id)
    anchor = tmp_path / "pg.anchor"
    assert store.verify_audit().intact and store.export_audit_anchor(anchor) is not None
    assert store.verify_audit(anchor).intact

    def tamper(sql: str, params: tuple[object, ...] = ()) -> set[str]:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(sql, params)
        return store.verify_audit(anchor).kinds()

    case = sealed.case_id
    assert tamper("UPDATE decisions SET comment = 'fine' WHERE case_id = %s", (case,)) == {
        chain.DECISION_EDITED}
    tamper("UPDATE decisions SET comment = 'impostor' WHERE case_id = %s", (case,))
    assert tamper("UPDATE cases SET decided_by = 'sue' WHERE case_id = %s", (case,)) == {
        chain.CASE_STATE_EDITED}
    tamper("UPDATE cases SET decided_by = 'anna' WHERE case_id = %s", (case,))
    assert tamper("INSERT INTO audit (at, user_name, action, detail) VALUES "
                  "(1, 'sue', 'LOGIN', '')") == {chain.HASHLESS_ROW}
    tamper("DELETE FROM audit WHERE row_hash IS NULL AND key_id IS NULL "
           "AND user_name = 'sue' AND at = 1")
    assert tamper("DELETE FROM audit WHERE id = (SELECT MAX(id) FROM audit)") == {
        chain.TRUNCATED}
    store.close()
