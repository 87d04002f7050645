"""The case store: cases, sealed images, decisions, officers, sessions and the audit log.

One schema, two engines: embedded SQLite (WAL) for a lane that keeps its own cases, and
PostgreSQL (``postgresql://...``) for a terminal where many lanes and review servers share
one store. SQL is written once with ``?`` placeholders; the few type names that differ are
filled in per engine. Schema changes are numbered migrations applied under a lock when
the store opens, so a lane's spool flusher and a review server may open the same store at
the same moment.

Nothing here decrypts: images and MRZ data arrive sealed (``gate.review.crypto``) and
leave sealed; only the review server holding the key opens them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import structlog

from gate.review import chain
from gate.review.cases import (
    MAX_LIVE_FRAMES,
    CaseInput,
    check_case_input,
    document_number,
    mask_document_number,
)
from gate.review.crypto import AuditKey, AuditKeyMismatch, AuditKeyMissing, ImageSeal

log = structlog.get_logger(__name__)

OPEN = "OPEN"
ESCALATED = "ESCALATED"
RELEASING = "RELEASING"  # an officer's "clear" is asking the lane to open the exit
CONFIRMED = "CONFIRMED"
CLEARED = "CLEARED"
#: decision action -> resulting status; CONFIRMED and CLEARED close the case.
ACTIONS: dict[str, str] = {"confirm": CONFIRMED, "clear": CLEARED, "escalate": ESCALATED}
CLOSED_STATUSES = (CONFIRMED, CLEARED)

DEFAULT_RETENTION_S = 24 * 3600.0
#: MRZ fields kept after the purge: enough for statistics, nothing that names a person.
MRZ_KEPT_AFTER_PURGE = ("document_type", "issuing_country", "country", "nationality")


class StoreUnavailable(Exception):
    """The store cannot be reached or opened; callers queue and retry."""


class SchemaTooNew(Exception):
    """The store was migrated by newer software than this."""


# --- the sealed case: what the spool writes and the store keeps -----------------------


@dataclass(frozen=True)
class SealedCase:
    case_id: str
    lane_id: str
    kind: str
    opened_at: float
    reasons: list[str]
    score: float | None
    threshold: float | None
    quality: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    document_masked: str
    document_type: str | None
    mrz_sealed: bytes | None
    mrz_kept: dict[str, Any] = field(default_factory=dict)  # survives the purge; no identity
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (slot, sealed JPEG)

    def to_json(self) -> str:
        d = asdict(self)
        d["mrz_sealed"] = _b64(self.mrz_sealed)
        d["images"] = [[slot, _b64(blob)] for slot, blob in self.images]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SealedCase:
        d = json.loads(text)
        d["mrz_sealed"] = _unb64(d["mrz_sealed"])
        d["images"] = [(slot, base64.b64decode(blob)) for slot, blob in d["images"]]
        return cls(**d)


def _b64(blob: bytes | None) -> str | None:
    return None if blob is None else base64.b64encode(blob).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def image_context(case_id: str, slot: str) -> str:
    return f"case/{case_id}/image/{slot}"


def mrz_context(case_id: str) -> str:
    return f"case/{case_id}/mrz"


def _plain(value: Any) -> Any:
    """JSON-safe copy of timeline/quality data (numpy scalars become floats)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def seal_case(case: CaseInput, seal: ImageSeal) -> SealedCase:
    """Everything personal is sealed here, on the lane, before it touches any disk."""
    check_case_input(case)
    case_id = case.case_id or uuid.uuid4().hex
    mrz = _plain(dict(case.mrz))
    shots = [(slot, image) for slot, image in (("portrait", case.portrait),
                                               ("chip-portrait", case.chip_portrait))
             if image is not None]
    shots += [(f"live-{i}", f) for i, f in enumerate(list(case.live_frames)[:MAX_LIVE_FRAMES])]
    images: list[tuple[str, bytes]] = []
    for slot, image in shots:
        try:
            images.append((slot, seal.seal_image(image, image_context(case_id, slot))))
        except (ValueError, cv2.error):
            # An unencodable frame must not cost the officer the rest of the case.
            log.warning("case_image_dropped", reason="IMAGE_UNENCODABLE", slot=slot)
    return SealedCase(
        case_id=case_id,
        lane_id=str(case.lane_id),
        kind=case.kind,
        opened_at=float(case.opened_at),
        reasons=[str(r) for r in case.reasons],
        score=None if case.score is None else float(case.score),
        threshold=None if case.threshold is None else float(case.threshold),
        quality=_plain(list(case.quality)),
        timeline=_plain(list(case.timeline)),
        document_masked=mask_document_number(document_number(case.mrz)),
        document_type=None if not mrz.get("document_type") else str(mrz["document_type"]),
        mrz_sealed=seal.seal(json.dumps(mrz).encode(), mrz_context(case_id)) if mrz else None,
        mrz_kept={k: mrz[k] for k in MRZ_KEPT_AFTER_PURGE if mrz.get(k)},
        images=images,
    )


# --- records read back -------------------------------------------------------------


@dataclass(frozen=True)
class CaseRecord:
    case_id: str
    lane_id: str
    kind: str
    opened_at: float
    received_at: float
    reasons: list[str]
    score: float | None
    threshold: float | None
    quality: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    document_masked: str
    document_type: str | None
    mrz_sealed: bytes | None
    mrz_kept: dict[str, Any]
    status: str
    decided_by: str | None
    decided_at: float | None
    closed_at: float | None
    images_purged_at: float | None

    def queue_row(self) -> dict[str, Any]:
        """What the queue shows and serves as JSON: masked, nothing biometric."""
        return {
            "case_id": self.case_id,
            "lane_id": self.lane_id,
            "kind": self.kind,
            "opened_at": self.opened_at,
            "reasons": self.reasons,
            "document": self.document_masked,
            "status": self.status,
        }


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: str
    password_hash: str
    failed_attempts: int
    locked_until: float | None
    disabled: bool


#: Officer names: a letter, then letters, digits, ".", "_" or "-"; 2 to 32 in all, kept in
#: lower case and compared ignoring case.
USER_NAME_RE = re.compile(r"[a-z][a-z0-9._-]{1,31}")
#: Names the software itself writes into the audit log; no officer may take them.
RESERVED_USER_NAMES = frozenset({"system", "unknown", "anonymous", "nobody", "root"})


def check_user_name(name: str) -> str:
    """The canonical (lower-case) form of an officer's name, or ValueError saying why not."""
    canonical = name.lower()
    if not USER_NAME_RE.fullmatch(canonical):
        raise ValueError(
            f"officer name {name!r} not allowed: 2-32 characters, a letter first, then "
            "letters, digits, '.', '_' or '-'"
        )
    if canonical in RESERVED_USER_NAMES:
        raise ValueError(f"officer name {name!r} is reserved")
    return canonical


@dataclass(frozen=True)
class SessionRecord:
    token_hash: str
    user_name: str
    role: str
    csrf_token: str
    created_at: float
    last_seen: float


# --- engines and migrations ---------------------------------------------------------

_TYPES = {
    "sqlite": {"blob": "BLOB", "real": "REAL", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"blob": "BYTEA", "real": "DOUBLE PRECISION", "serial": "BIGSERIAL PRIMARY KEY"},
}

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE cases (
                case_id TEXT PRIMARY KEY, lane_id TEXT NOT NULL, kind TEXT NOT NULL,
                opened_at {real} NOT NULL, received_at {real} NOT NULL,
                reasons TEXT NOT NULL, score {real}, threshold {real},
                quality TEXT NOT NULL, timeline TEXT NOT NULL,
                document_masked TEXT NOT NULL, document_type TEXT, mrz_sealed {blob},
                status TEXT NOT NULL, decided_by TEXT, decided_at {real}, closed_at {real},
                images_purged_at {real})""",
            "CREATE INDEX cases_by_status ON cases (status, lane_id, opened_at)",
            """CREATE TABLE case_images (
                case_id TEXT NOT NULL REFERENCES cases (case_id), slot TEXT NOT NULL,
                sealed {blob} NOT NULL, PRIMARY KEY (case_id, slot))""",
            """CREATE TABLE decisions (
                id {serial}, case_id TEXT NOT NULL REFERENCES cases (case_id),
                at {real} NOT NULL, user_name TEXT NOT NULL, action TEXT NOT NULL,
                comment TEXT NOT NULL)""",
            """CREATE TABLE users (
                name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
                failed_attempts INTEGER NOT NULL DEFAULT 0, locked_until {real},
                created_at {real} NOT NULL, disabled INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE sessions (
                token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL REFERENCES users (name),
                csrf_token TEXT NOT NULL, created_at {real} NOT NULL, last_seen {real} NOT NULL)""",
            """CREATE TABLE audit (
                id {serial}, at {real} NOT NULL, user_name TEXT NOT NULL, action TEXT NOT NULL,
                case_id TEXT, detail TEXT NOT NULL)""",
        ],
    ),
    (
        2,
        [
            # After the purge the MRZ is gone; what policy keeps (document type, country)
            # is written in the clear at intake so statistics survive the purge.
            "ALTER TABLE cases ADD COLUMN mrz_kept TEXT NOT NULL DEFAULT '{{}}'",
            "CREATE INDEX audit_by_case ON audit (case_id, at)",
            "CREATE INDEX cases_by_closed ON cases (closed_at)",
        ],
    ),
    (
        3,
        [
            # Tamper evidence: rows written from now on are hash-chained.
            "ALTER TABLE audit ADD COLUMN prev_hash TEXT",
            "ALTER TABLE audit ADD COLUMN row_hash TEXT",
        ],
    ),
    (
        4,
        [
            # The chain is keyed (HMAC, key outside the store) from an epoch row on; rows
            # carry the key's id, their place in the chain and the fact they attest (a
            # decision, a case's state). The epoch is written by the first key holder.
            "ALTER TABLE audit ADD COLUMN key_id TEXT",
            "ALTER TABLE audit ADD COLUMN seq INTEGER",
            "ALTER TABLE audit ADD COLUMN subject TEXT",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


_AUDIT_LOCK = 0x6567617465 + 1  # PostgreSQL advisory lock serialising the audit chain


#: The unkeyed rule of schema 3, kept to check (and pin) rows written before the epoch.
audit_row_hash = chain.legacy_row_hash


class _Tx:
    """One transaction; ``?`` placeholders on both engines, rows as dicts."""

    def __init__(self, conn: Any, engine: str) -> None:
        self._conn = conn
        self._engine = engine

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._engine == "postgresql" else sql

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._conn.execute(self._sql(sql), tuple(params))
        return [dict(r) for r in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._conn.execute(self._sql(sql), tuple(params))
        return int(cur.rowcount)


class CaseStore:
    """Thread-safe: one connection per store, used under a lock (the review server's
    request threads and the purge schedule share it)."""

    def __init__(
        self, url: str, *, connect_timeout_s: float = 5.0, audit_key: AuditKey | None = None
    ) -> None:
        """``audit_key`` keys the audit chain; without it the store still takes cases (a
        lane's flusher needs no audit key) but refuses to write or check audit rows."""
        self.url = url
        self.audit_key = audit_key
        self._lock = threading.RLock()
        self._conn: Any = None
        self._timeout = connect_timeout_s
        if url.startswith(("postgresql://", "postgres://")):
            self.engine = "postgresql"
        elif url.startswith("sqlite:///"):
            self.engine = "sqlite"
            # sqlite:///relative/path or sqlite:////absolute/path, as SQLAlchemy spells them
            self._path = url[len("sqlite:///") :]
        else:
            raise ValueError(f"store URL must be sqlite:///PATH or postgresql://..., got {url!r}")
        with self._tx(migrate=True):
            pass

    @classmethod
    def for_path(cls, path: str | Path, **kw: Any) -> CaseStore:
        return cls("sqlite:///" + str(Path(path).resolve()), **kw)

    # -- connection ------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        conn: Any
        try:
            if self.engine == "sqlite":
                if not Path(self._path).parent.is_dir():
                    raise StoreUnavailable(f"store directory {Path(self._path).parent} missing")
                fresh = not Path(self._path).exists()
                conn = sqlite3.connect(
                    self._path, timeout=self._timeout, isolation_level=None,
                    check_same_thread=False,
                )
                if fresh:
                    os.chmod(self._path, 0o600)  # officers' accounts and the audit trail
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed case survives a power cut, not only a process crash.
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                # Purged images are overwritten, not left in free pages: should the key
                # leak later, what the purge removed stays unrecoverable.
                conn.execute("PRAGMA secure_delete=ON")
            else:
                import psycopg
                from psycopg.rows import dict_row

                conn = psycopg.connect(
                    self.url, autocommit=True, row_factory=dict_row,
                    connect_timeout=max(1, int(self._timeout)),
                )
        except StoreUnavailable:
            raise
        except Exception as exc:  # any driver error here means "not reachable now"
            reason = f"{self.engine} store unreachable: {type(exc).__name__}"
            raise StoreUnavailable(reason) from exc
        self._conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def _read(self) -> AbstractContextManager[_Tx]:
        """A read-only transaction: on SQLite a deferred one, so readers never queue behind
        the lane's flusher (WAL lets them read while it writes)."""
        return self._tx(write=False)

    @contextmanager
    def _tx(self, migrate: bool = False, write: bool = True) -> Iterator[_Tx]:
        with self._lock:
            conn = self._connect()
            try:
                if self.engine == "sqlite":
                    # IMMEDIATE takes the write lock up front: no deadlock-prone upgrade
                    # from a read lock when two processes write at once.
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        tx = _Tx(conn, self.engine)
                        if migrate:
                            self._migrate(tx)
                        yield tx
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                else:
                    with conn.transaction():
                        tx = _Tx(conn, self.engine)
                        if migrate:
                            tx.run("SELECT pg_advisory_xact_lock(?)", (0x6567617465,))
                            self._migrate(tx)
                        yield tx
            except sqlite3.OperationalError as exc:
                self.close()
                raise StoreUnavailable(f"sqlite store: {exc}") from exc
            except Exception as exc:
                if self.engine == "postgresql" and _is_pg_connection_error(exc):
                    self.close()
                    raise StoreUnavailable(f"postgresql store: {type(exc).__name__}") from exc
                raise

    def _migrate(self, tx: _Tx) -> None:
        tx.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = tx.one("SELECT MAX(version) AS v FROM schema_version")
        current = int(row["v"]) if row and row["v"] is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"store schema {current} is newer than this software's {SCHEMA_VERSION}"
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for stmt in statements:
                tx.run(stmt.format(**_TYPES[self.engine]))
            tx.run("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        with self._read() as tx:
            row = tx.one("SELECT MAX(version) AS v FROM schema_version")
            return int(row["v"]) if row and row["v"] is not None else 0

    # -- cases -----------------------------------------------------------------------

    def add_case(self, case: SealedCase, now: float | None = None) -> bool:
        """Idempotent by case id: a spool that re-sends after a crash adds nothing twice.
        Returns whether the case was new."""
        now = time.time() if now is None else now
        with self._tx() as tx:
            added = tx.run(
                """INSERT INTO cases (case_id, lane_id, kind, opened_at, received_at, reasons,
                       score, threshold, quality, timeline, document_masked, document_type,
                       mrz_sealed, mrz_kept, status)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (case_id) DO NOTHING""",
                (
                    case.case_id, case.lane_id, case.kind, case.opened_at, now,
                    json.dumps(case.reasons), case.score, case.threshold,
                    json.dumps(case.quality), json.dumps(case.timeline), case.document_masked,
                    case.document_type, case.mrz_sealed, json.dumps(case.mrz_kept), OPEN,
                ),
            )
            if added:
                for slot, blob in case.images:
                    tx.run(
                        "INSERT INTO case_images (case_id, slot, sealed) VALUES (?, ?, ?)",
                        (case.case_id, slot, blob),
                    )
            return added > 0

    _CASE_COLUMNS = """case_id, lane_id, kind, opened_at, received_at, reasons, score, threshold,
        quality, timeline, document_masked, document_type, mrz_sealed, mrz_kept, status,
        decided_by, decided_at, closed_at, images_purged_at"""

    @staticmethod
    def _record(row: Mapping[str, Any]) -> CaseRecord:
        d = dict(row)
        for key in ("reasons", "quality", "timeline", "mrz_kept"):
            d[key] = json.loads(d[key])
        if d["mrz_sealed"] is not None:
            d["mrz_sealed"] = bytes(d["mrz_sealed"])
        return CaseRecord(**d)

    def cases(
        self, statuses: Sequence[str] = (OPEN,), lane_id: str | None = None, limit: int = 500
    ) -> list[CaseRecord]:
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT {self._CASE_COLUMNS} FROM cases WHERE status IN ({marks})"
        params: list[Any] = list(statuses)
        if lane_id is not None:
            sql += " AND lane_id = ?"
            params.append(lane_id)
        sql += " ORDER BY opened_at LIMIT ?"
        params.append(limit)
        with self._read() as tx:
            return [self._record(r) for r in tx.rows(sql, params)]

    def case(self, case_id: str) -> CaseRecord | None:
        with self._read() as tx:
            row = tx.one(f"SELECT {self._CASE_COLUMNS} FROM cases WHERE case_id = ?", (case_id,))
        return None if row is None else self._record(row)

    def image_slots(self, case_id: str) -> list[str]:
        with self._read() as tx:
            rows = tx.rows("SELECT slot FROM case_images WHERE case_id = ?", (case_id,))
        slots = [str(r["slot"]) for r in rows]
        return sorted(slots, key=lambda s: (s != "portrait", s != "chip-portrait", len(s), s))

    def image(self, case_id: str, slot: str) -> bytes | None:
        with self._read() as tx:
            row = tx.one(
                "SELECT sealed FROM case_images WHERE case_id = ? AND slot = ?", (case_id, slot)
            )
        return None if row is None else bytes(row["sealed"])

    def decide(
        self, case_id: str, user: str, action: str, comment: str, allowed_from: Sequence[str],
        now: float | None = None,
    ) -> bool:
        """Compare-and-set on the status: of two officers deciding at once, one wins and
        the other is told the case was already decided."""
        status = ACTIONS[action]
        now = time.time() if now is None else now
        closed_at = now if status in CLOSED_STATUSES else None
        marks = ", ".join("?" for _ in allowed_from)
        with self._tx() as tx:
            changed = tx.run(
                f"""UPDATE cases SET status = ?, decided_by = ?, decided_at = ?, closed_at = ?
                    WHERE case_id = ? AND status IN ({marks})""",
                (status, user, now, closed_at, case_id, *allowed_from),
            )
            if changed:
                row = tx.one(
                    "INSERT INTO decisions (case_id, at, user_name, action, comment) "
                    "VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (case_id, now, user, action, comment),
                )
                assert row is not None
                decision = {"id": row["id"], "case_id": case_id, "at": now, "user_name": user,
                            "action": action, "comment": comment}
                self._append_audit(
                    tx, now, user, f"DECIDE_{action.upper()}", case_id, comment[:500],
                    {"decision": chain.decision_entry(decision),
                     "case": self._case_state(tx, case_id)},
                )
            return changed > 0

    def claim_for_release(
        self, case_id: str, allowed_from: Sequence[str], user: str = "system"
    ) -> str | None:
        """Mark the case RELEASING before the lane is asked to open its exit, so that of two
        officers clearing at once only one door release happens. Returns the status it
        had (to go back to if the lane refuses), or None when someone else got there."""
        marks = ", ".join("?" for _ in allowed_from)
        with self._tx() as tx:
            row = tx.one(
                f"SELECT status FROM cases WHERE case_id = ? AND status IN ({marks})",
                (case_id, *allowed_from),
            )
            if row is None:
                return None
            tx.run("UPDATE cases SET status = ? WHERE case_id = ?", (RELEASING, case_id))
            self._append_audit(tx, time.time(), user, "RELEASE_CLAIMED", case_id,
                               f"was {row['status']}", {"case": self._case_state(tx, case_id)})
            return str(row["status"])

    def release_refused(self, case_id: str, back_to: str, user: str = "system") -> None:
        with self._tx() as tx:
            if tx.run(
                "UPDATE cases SET status = ? WHERE case_id = ? AND status = ?",
                (back_to, case_id, RELEASING),
            ):
                self._append_audit(tx, time.time(), user, "RELEASE_REVERTED", case_id,
                                   f"back to {back_to}", {"case": self._case_state(tx, case_id)})

    @staticmethod
    def _case_state(tx: _Tx, case_id: str) -> list[Any]:
        row = tx.one("SELECT case_id, status, decided_by, decided_at, closed_at FROM cases "
                     "WHERE case_id = ?", (case_id,))
        assert row is not None
        return chain.case_entry(row)

    def decisions(self, case_id: str) -> list[dict[str, Any]]:
        with self._read() as tx:
            return tx.rows(
                "SELECT at, user_name, action, comment FROM decisions WHERE case_id = ? "
                "ORDER BY id",
                (case_id,),
            )

    def purge(self, retention_s: float = DEFAULT_RETENTION_S, now: float | None = None) -> int:
        """Delete the images and the sealed MRZ of cases closed longer ago than the
        retention; keep the case metadata, the decisions and the audit trail."""
        now = time.time() if now is None else now
        cutoff = now - retention_s
        purged = 0
        with self._tx() as tx:
            due = tx.rows(
                """SELECT case_id, mrz_kept FROM cases WHERE closed_at IS NOT NULL
                   AND closed_at <= ? AND images_purged_at IS NULL""",
                (cutoff,),
            )
            for row in due:
                tx.run("DELETE FROM case_images WHERE case_id = ?", (row["case_id"],))
                tx.run(
                    "UPDATE cases SET mrz_sealed = NULL, images_purged_at = ? WHERE case_id = ?",
                    (now, row["case_id"]),
                )
                purged += 1
            if purged:
                self._append_audit(
                    tx, now, "system", "PURGE", None, f"{purged} cases, kept {retention_s:.0f} s"
                )
        return purged

    # -- audit -----------------------------------------------------------------------

    def _append_audit(
        self, tx: _Tx, at: float, user: str, action: str, case_id: str | None, detail: str,
        subject: Mapping[str, Any] | None = None,
    ) -> None:
        key = self._need_audit_key()
        if self.engine == "postgresql":
            tx.run("SELECT pg_advisory_xact_lock(?)", (_AUDIT_LOCK,))
        head = tx.one("SELECT key_id, seq, row_hash FROM audit WHERE key_id IS NOT NULL "
                      "AND row_hash IS NOT NULL ORDER BY id DESC LIMIT 1")
        if head is None:
            seq, prev = self._start_epoch(tx, key, at)
        else:
            if not key.holds(head["key_id"]):
                raise AuditKeyMismatch(
                    f"the audit chain is written with audit key {head['key_id']}; this "
                    f"process holds {', '.join(key.key_ids)} (wrong --audit-key-file?)"
                )
            seq, prev = int(head["seq"]), str(head["row_hash"])
        self._insert_keyed(tx, key, seq + 1, prev, at, user, action, case_id, detail, subject)

    def _insert_keyed(
        self, tx: _Tx, key: AuditKey, seq: int, prev: str, at: float, user: str, action: str,
        case_id: str | None, detail: str, subject: Mapping[str, Any] | None,
    ) -> str:
        text = chain.subject_text(subject)
        mac = key.mac(chain.row_material(seq, prev, key.key_id, at, user, action, case_id,
                                         detail, text))
        tx.run(
            "INSERT INTO audit (at, user_name, action, case_id, detail, prev_hash, row_hash, "
            "key_id, seq, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (at, user, action, case_id, detail, prev, mac, key.key_id, seq, text),
        )
        return mac

    def _start_epoch(self, tx: _Tx, key: AuditKey, at: float) -> tuple[int, str]:
        """The first keyed row: pins the rows before it, then takes the decisions and the
        decided cases that exist now into the chain (snapshot rows)."""
        legacy = tx.rows(f"SELECT {chain.AUDIT_COLUMNS} FROM audit ORDER BY id")
        pinned = chain.legacy_summary(legacy)
        old = pinned["old_rule"]
        verdict = "intact" if old["intact"] else f"BROKEN at row id {old['broken_at']}"
        if not old["intact"]:
            log.error("audit_legacy_chain_broken", reason="AUDIT_LEGACY_BROKEN",
                      row_id=old["broken_at"])
        subject = {"epoch": {"chain": uuid.uuid4().hex, "legacy": pinned}}
        mac = self._insert_keyed(
            tx, key, 0, "", at, "system", chain.EPOCH, None,
            f"keyed audit chain begins (audit key {key.key_id}); {len(legacy)} earlier rows "
            f"pinned, unkeyed chain {verdict}", subject,
        )
        seq = 0
        decisions = tx.rows("SELECT id, case_id, at, user_name, action, comment FROM decisions "
                            "ORDER BY id")
        decided = tx.rows(
            "SELECT case_id, status, decided_by, decided_at, closed_at FROM cases WHERE NOT "
            "(status = ? AND decided_by IS NULL AND decided_at IS NULL AND closed_at IS NULL) "
            "ORDER BY case_id", (OPEN,),
        )
        for what, rows, entry in (("decisions", decisions, chain.decision_entry),
                                  ("cases", decided, chain.case_entry)):
            for i in range(0, len(rows), chain.SNAPSHOT_CHUNK):
                part = rows[i : i + chain.SNAPSHOT_CHUNK]
                seq += 1
                mac = self._insert_keyed(
                    tx, key, seq, mac, at, "system", chain.SNAPSHOT, None,
                    f"earlier {what} {i + 1}-{i + len(part)} of {len(rows)} taken into the "
                    "keyed chain", {what: [entry(r) for r in part]},
                )
        log.warning("audit_chain_epoch", legacy_rows=len(legacy), decisions=len(decisions),
                    decided_cases=len(decided), audit_key=key.key_id)
        return seq, mac

    def _need_audit_key(self) -> AuditKey:
        if self.audit_key is None:
            raise AuditKeyMissing(
                "this store was opened without the audit key: audit rows cannot be written "
                "or checked (--audit-key-file, GATE_REVIEW_AUDIT_KEY_FILE)"
            )
        return self.audit_key

    def check_audit_key(self) -> None:
        """Raise AuditKeyMismatch when the chain's newest keyed row names a key this store
        does not hold: a server started with the wrong key file must not fork the chain."""
        key = self._need_audit_key()
        with self._read() as tx:
            head = tx.one("SELECT key_id FROM audit WHERE key_id IS NOT NULL "
                          "AND row_hash IS NOT NULL ORDER BY id DESC LIMIT 1")
        if head is not None and not key.holds(head["key_id"]):
            raise AuditKeyMismatch(
                f"the audit chain is written with audit key {head['key_id']}; this process "
                f"holds {', '.join(key.key_ids)}"
            )

    def verify_audit(self, anchor: str | Path | None = None) -> chain.AuditReport:
        """Check the whole chain, the decisions and the case states against it, and (given
        an anchor file) its head against the newest anchor of this chain."""
        key = self._need_audit_key()
        anchors: list[chain.Anchor] | None = None
        problems: list[chain.AuditBreak] = []
        if anchor is not None:
            anchors, problems = chain.read_anchors(anchor, key)
        with self._read() as tx:
            rows = tx.rows(f"SELECT {chain.AUDIT_COLUMNS} FROM audit ORDER BY id")
            decisions = tx.rows("SELECT id, case_id, at, user_name, action, comment "
                                "FROM decisions ORDER BY id")
            cases = tx.rows("SELECT case_id, status, decided_by, decided_at, closed_at "
                            "FROM cases")
        return chain.verify(rows, decisions, cases, key, anchors, problems)

    def audit_chain_head(self) -> chain.AuditHead | None:
        """The newest keyed row (seq, MAC, row id) and the chain's id."""
        with self._read() as tx:
            head = tx.one("SELECT id, key_id, seq, row_hash FROM audit WHERE key_id IS NOT "
                          "NULL AND row_hash IS NOT NULL ORDER BY id DESC LIMIT 1")
            epoch = tx.one("SELECT subject FROM audit WHERE key_id IS NOT NULL AND seq = 0 "
                           "ORDER BY id LIMIT 1")
        if head is None:
            return None
        try:
            chain_id = str(json.loads(epoch["subject"])["epoch"]["chain"]) if epoch else ""
        except (ValueError, KeyError, TypeError):
            chain_id = ""
        return chain.AuditHead(chain_id, int(head["seq"]), str(head["row_hash"]),
                               int(head["id"]), str(head["key_id"]))

    def audit_head(self) -> tuple[int, str] | None:
        """The newest keyed row's id and MAC (logged on a schedule: ``audit_head``)."""
        head = self.audit_chain_head()
        return None if head is None else (head.row_id, head.mac)

    def export_audit_anchor(self, path: str | Path) -> chain.Anchor | None:
        """Append the chain head to the anchor file, after checking that the chain still
        holds the last anchored row unchanged: an anchor never launders a truncation.
        Returns the anchor written (None while there is no keyed chain)."""
        key = self._need_audit_key()
        head = self.audit_chain_head()
        if head is None:
            return None
        prior: list[chain.Anchor] = []
        if Path(path).exists():
            prior = [a for a in chain.read_anchors(path, key)[0] if a.chain == head.chain]
        if prior:
            last = prior[-1]
            with self._read() as tx:
                row = tx.one("SELECT row_hash FROM audit WHERE key_id IS NOT NULL AND seq = ? "
                             "ORDER BY id LIMIT 1", (last.seq,))
            if row is None:
                raise chain.AuditChainBroken(
                    chain.TRUNCATED, f"the last anchor names seq {last.seq}; the chain ends "
                    f"at seq {head.seq}")
            if row["row_hash"] != last.mac:
                raise chain.AuditChainBroken(
                    chain.ANCHOR_MISMATCH, f"seq {last.seq} changed since it was anchored")
        return chain.write_anchor(path, head, key)

    def audit(self, user: str, action: str, case_id: str | None = None, detail: str = "") -> None:
        with self._tx() as tx:
            self._append_audit(
                tx, time.time(), user, action, case_id, detail[:500]
            )

    def audit_log(self, case_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first; each row's ``chain`` says what the chain vouches for it:
        ``verified`` (its MAC checks under the audit key), ``legacy`` (hashed under the old
        unkeyed rule, before the keyed chain began) or ``unverified`` (anything else: no
        MAC, a MAC that does not check, no key here). ``audit-verify`` checks the rest."""
        with self._read() as tx:
            if case_id is None:
                rows = tx.rows(
                    f"SELECT {chain.AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?",
                    (limit,),
                )
            else:
                rows = tx.rows(
                    f"SELECT {chain.AUDIT_COLUMNS} FROM audit WHERE case_id = ? "
                    "ORDER BY id DESC LIMIT ?",
                    (case_id, limit),
                )
            first = tx.one("SELECT id FROM audit WHERE key_id IS NOT NULL ORDER BY id LIMIT 1")
        first_keyed = None if first is None else int(first["id"])
        return [self._shown(r, first_keyed) for r in rows]

    def _shown(self, r: Mapping[str, Any], first_keyed: int | None) -> dict[str, Any]:
        mark = "unverified"
        if r["key_id"] is not None and r["row_hash"] is not None and r["seq"] is not None:
            material = chain.row_material(int(r["seq"]), str(r["prev_hash"]), str(r["key_id"]),
                                          r["at"], r["user_name"], r["action"], r["case_id"],
                                          r["detail"], r["subject"])
            if self.audit_key is not None and self.audit_key.check(
                str(r["key_id"]), material, str(r["row_hash"])
            ):
                mark = "verified"
        elif r["key_id"] is None and r["row_hash"] is not None and (
            first_keyed is None or int(r["id"]) < first_keyed
        ):
            mark = "legacy"
        return {"id": r["id"], "at": r["at"], "user_name": r["user_name"],
                "action": r["action"], "case_id": r["case_id"], "detail": r["detail"],
                "chain": mark}

    # -- the audit page: filters and pages ---------------------------------------------

    def audit_page(
        self, *, user: str | None = None, action: str | None = None,
        since: float | None = None, until: float | None = None,
        before_id: int | None = None, after_id: int | None = None, limit: int = 100,
    ) -> tuple[list[dict[str, Any]], bool, bool]:
        """One page of the audit log, newest first: the rows older than ``before_id`` (or
        newer than ``after_id``; else the newest) that match the filters (officer name
        ignoring case, action, ``since <= at < until``). Returns (rows, older rows exist,
        newer rows exist)."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if user:
            where.append("lower(user_name) = ?")
            params.append(user.lower())
        if action:
            where.append("action = ?")
            params.append(action)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if until is not None:
            where.append("at < ?")
            params.append(until)
        cond = " AND ".join(where)
        cols = chain.AUDIT_COLUMNS
        with self._read() as tx:
            if after_id is not None:
                rows = tx.rows(f"SELECT {cols} FROM audit WHERE {cond} AND id > ? "
                               "ORDER BY id LIMIT ?", (*params, after_id, limit))
                rows.reverse()
            elif before_id is not None:
                rows = tx.rows(f"SELECT {cols} FROM audit WHERE {cond} AND id < ? "
                               "ORDER BY id DESC LIMIT ?", (*params, before_id, limit))
            else:
                rows = tx.rows(f"SELECT {cols} FROM audit WHERE {cond} ORDER BY id DESC "
                               "LIMIT ?", (*params, limit))

            def exists(op: str, edge: int) -> bool:
                return tx.one(f"SELECT id FROM audit WHERE {cond} AND id {op} ? LIMIT 1",
                              (*params, edge)) is not None

            if rows:
                older = exists("<", int(rows[-1]["id"]))
                newer = exists(">", int(rows[0]["id"]))
            else:  # an empty page past either end: offer the way back
                older = after_id is not None and exists("<=", after_id)
                newer = before_id is not None and exists(">=", before_id)
            first = tx.one("SELECT id FROM audit WHERE key_id IS NOT NULL ORDER BY id LIMIT 1")
        first_keyed = None if first is None else int(first["id"])
        return [self._shown(r, first_keyed) for r in rows], older, newer

    # -- officers and sessions ---------------------------------------------------------

    def add_user(self, name: str, role: str, password_hash: str) -> bool:
        """Add an officer; the name must pass :func:`check_user_name` (ValueError if not)
        and is kept in lower case. False when the name exists, in any case."""
        name = check_user_name(name)
        with self._tx() as tx:
            if tx.one("SELECT name FROM users WHERE lower(name) = ?", (name,)) is not None:
                return False
            added = tx.run(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, role, password_hash, time.time()),
            )
            if added:
                self._append_audit(
                    tx, time.time(), "system", "USER_ADDED", None, f"{name} as {role}"
                )
            return added > 0

    def set_password(self, name: str, password_hash: str) -> bool:
        """New password, account unlocked, and every session of it ended."""
        with self._tx() as tx:
            changed = tx.run(
                "UPDATE users SET password_hash = ?, failed_attempts = 0, locked_until = NULL "
                "WHERE name = ?",
                (password_hash, name),
            ) > 0
            if changed:
                tx.run("DELETE FROM sessions WHERE user_name = ?", (name,))
            return changed

    def set_disabled(self, name: str, disabled: bool) -> bool:
        """Disable (every session ended, sign-in refused) or enable an account."""
        with self._tx() as tx:
            changed = tx.run(
                "UPDATE users SET disabled = ? WHERE name = ?", (1 if disabled else 0, name)
            ) > 0
            if changed and disabled:
                tx.run("DELETE FROM sessions WHERE user_name = ?", (name,))
            return changed

    def set_role(self, name: str, role: str) -> bool:
        """A new role; the account's sessions end, so no page stays open under the old one."""
        with self._tx() as tx:
            changed = tx.run("UPDATE users SET role = ? WHERE name = ?", (role, name)) > 0
            if changed:
                tx.run("DELETE FROM sessions WHERE user_name = ?", (name,))
            return changed

    def remove_user(self, name: str) -> bool:
        """Remove an account and its sessions. Its decisions and audit rows stay."""
        with self._tx() as tx:
            tx.run("DELETE FROM sessions WHERE user_name = ?", (name,))
            return tx.run("DELETE FROM users WHERE name = ?", (name,)) > 0

    _USER_COLUMNS = "name, role, password_hash, failed_attempts, locked_until, disabled"

    def user(self, name: str) -> UserRecord | None:
        with self._read() as tx:
            row = tx.one(f"SELECT {self._USER_COLUMNS} FROM users WHERE name = ?", (name,))
        if row is None:
            return None
        row["disabled"] = bool(row["disabled"])
        return UserRecord(**row)

    def find_user(self, name: str) -> UserRecord | None:
        """The account whose name equals ``name`` ignoring case; None when there is none,
        or (in a store from before names were compared so) more than one."""
        with self._read() as tx:
            rows = tx.rows(
                f"SELECT {self._USER_COLUMNS} FROM users WHERE lower(name) = ?", (name.lower(),)
            )
        if len(rows) != 1:
            return None
        return UserRecord(**{**rows[0], "disabled": bool(rows[0]["disabled"])})

    def users(self) -> list[UserRecord]:
        with self._read() as tx:
            rows = tx.rows(f"SELECT {self._USER_COLUMNS} FROM users ORDER BY name")
        return [UserRecord(**{**r, "disabled": bool(r["disabled"])}) for r in rows]

    def login_failed(self, name: str, max_attempts: int, lockout_s: float, now: float) -> str:
        """Count a failure and lock at the limit, in one atomic UPDATE (of any number of
        processes and threads failing at once, exactly one locks). A failure never clears
        a lock, and one against a locked account is not counted.

        Returns ``COUNTED``, ``LOCKED_OUT`` (this failure locked the account) or ``LOCKED``
        (it was locked already, or is gone)."""
        with self._tx() as tx:
            row = tx.one(
                """UPDATE users SET
                       failed_attempts = CASE WHEN failed_attempts + 1 >= ? THEN 0
                                              ELSE failed_attempts + 1 END,
                       locked_until = CASE WHEN failed_attempts + 1 >= ? THEN ?
                                           ELSE locked_until END
                   WHERE name = ? AND (locked_until IS NULL OR locked_until <= ?)
                   RETURNING locked_until""",
                (max_attempts, max_attempts, now + lockout_s, name, now),
            )
        if row is None:
            return "LOCKED"
        until = row["locked_until"]
        return "LOCKED_OUT" if until is not None and float(until) > now else "COUNTED"

    def login_succeeded(
        self, name: str, password_hash: str, now: float, token_hash: str, csrf_token: str,
        max_sessions: int = 0,
    ) -> int | None:
        """Open a session for a verified password, atomically: only while the account is
        enabled, not locked and still has that password (another process may have locked,
        disabled or changed it since the hash was read). Resets the failure count. Keeps
        the newest ``max_sessions`` sessions of the account (0: no limit).

        Returns how many older sessions were ended, or None when refused."""
        with self._tx() as tx:
            ok = tx.run(
                """UPDATE users SET failed_attempts = 0, locked_until = NULL
                   WHERE name = ? AND password_hash = ? AND disabled = 0
                   AND (locked_until IS NULL OR locked_until <= ?)""",
                (name, password_hash, now),
            )
            if not ok:
                return None
            tx.run(
                "INSERT INTO sessions (token_hash, user_name, csrf_token, created_at, last_seen) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_hash, name, csrf_token, now, now),
            )
            return self._cap_sessions(tx, name, max_sessions)

    @staticmethod
    def _cap_sessions(tx: _Tx, name: str, max_sessions: int) -> int:
        if max_sessions <= 0:
            return 0
        keep = tx.rows(
            "SELECT token_hash FROM sessions WHERE user_name = ? "
            "ORDER BY created_at DESC, last_seen DESC LIMIT ?",
            (name, max_sessions),
        )
        marks = ", ".join("?" for _ in keep)
        return tx.run(
            f"DELETE FROM sessions WHERE user_name = ? AND token_hash NOT IN ({marks})",
            (name, *(r["token_hash"] for r in keep)),
        )

    def create_session(
        self, token_hash: str, user: str, csrf_token: str, now: float, max_sessions: int = 0
    ) -> int:
        """A session for ``user`` (no password check: :meth:`login_succeeded` is the
        sign-in). Returns how many older sessions the cap ended."""
        with self._tx() as tx:
            tx.run(
                "INSERT INTO sessions (token_hash, user_name, csrf_token, created_at, last_seen) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_hash, user, csrf_token, now, now),
            )
            return self._cap_sessions(tx, user, max_sessions)

    def session(self, token_hash: str) -> SessionRecord | None:
        with self._read() as tx:
            row = tx.one(
                """SELECT s.token_hash, s.user_name, u.role, s.csrf_token, s.created_at,
                          s.last_seen
                   FROM sessions s JOIN users u ON u.name = s.user_name
                   WHERE s.token_hash = ? AND u.disabled = 0""",
                (token_hash,),
            )
        return None if row is None else SessionRecord(**row)

    def user_sessions(self, name: str) -> int:
        with self._read() as tx:
            row = tx.one("SELECT COUNT(*) AS n FROM sessions WHERE user_name = ?", (name,))
        return int(row["n"]) if row else 0

    def touch_session(self, token_hash: str, now: float) -> None:
        with self._tx() as tx:
            tx.run("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, token_hash))

    def end_session(self, token_hash: str) -> None:
        with self._tx() as tx:
            tx.run("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    def end_sessions_before(self, created_before: float, idle_before: float) -> int:
        with self._tx() as tx:
            return tx.run(
                "DELETE FROM sessions WHERE created_at < ? OR last_seen < ?",
                (created_before, idle_before),
            )


def _is_pg_connection_error(exc: Exception) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
