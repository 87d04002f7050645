"""The audit chain: keyed, anchored outside the store, and covering decisions and case states.

Every audit row written since the chain's *epoch* carries ``seq`` (0 for the epoch row,
then +1), ``prev_hash`` (the previous row's MAC), ``key_id`` and ``row_hash``: an
HMAC-SHA256, under the audit key (``gate.review.crypto.AuditKey``, never in the store), of
the row's fields, ``seq``, ``prev_hash`` and ``subject``. ``subject`` is the fact a row
attests besides its text: a decision row as the ``decisions`` table holds it, a case's
status/decided_by/decided_at/closed_at after a change. Verification (:func:`verify`)
therefore also checks the ``decisions`` and ``cases`` tables against the chain: a
decision that the chain does not hold, or holds differently, and a case whose state is
not the one the chain last recorded (or, never decided, not the intake state) are breaks.

The epoch row is written by the first process that appends an audit row with the key.
It pins the rows written before it under the old unkeyed rule (their count, last id and
a digest of their full contents, plus that rule's verdict at that moment), and is
followed by snapshot rows that take the decisions and the decided cases existing then
into the chain. After the epoch a row without a MAC, or with a MAC the key does not
confirm, is a break, never a row to skip.

The *anchor* is the chain head exported outside the store (a JSON-lines file, each line
tagged with the audit key; and the ``audit_head`` log line). Comparing against it is
what reveals deleted newest rows, which no chain can show on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.review.crypto import AuditKey

EPOCH = "CHAIN_EPOCH"
SNAPSHOT = "CHAIN_SNAPSHOT"
SNAPSHOT_CHUNK = 200
#: A case the lane delivered and nobody decided yet: status, decided_by, decided_at, closed_at.
INTAKE_STATE = ("OPEN", None, None, None)

#: Kinds of break :func:`verify` reports.
HASHLESS_ROW = "HASHLESS_ROW"  # a row without a MAC after the chain began
UNKEYED_ROW = "UNKEYED_ROW"  # a row hashed without the key after the chain began
BAD_MAC = "BAD_MAC"  # edited, or re-hashed by someone without the key
UNKNOWN_KEY = "UNKNOWN_KEY"  # names an audit key this process does not hold
BROKEN_LINK = "BROKEN_LINK"  # rows missing (or moved) before this one
EPOCH_MISSING = "EPOCH_MISSING"  # keyed rows, but no epoch row first
LEGACY_EDITED = "LEGACY_EDITED"  # rows from before the epoch changed since it pinned them
LEGACY_BROKEN = "LEGACY_BROKEN"  # no keyed chain yet, and the old unkeyed chain is broken
DECISION_EDITED = "DECISION_EDITED"
DECISION_UNCHAINED = "DECISION_UNCHAINED"  # a decision row the chain never recorded
DECISION_DELETED = "DECISION_DELETED"
CASE_STATE_EDITED = "CASE_STATE_EDITED"
CASE_DELETED = "CASE_DELETED"
TRUNCATED = "TRUNCATED"  # the anchor names a row the chain no longer has: newest rows deleted
ANCHOR_MISMATCH = "ANCHOR_MISMATCH"  # the anchored row is there with another MAC
ANCHOR_INVALID = "ANCHOR_INVALID"  # the anchor's own tag does not verify
ANCHOR_OTHER_CHAIN = "ANCHOR_OTHER_CHAIN"  # the anchor file holds no line for this chain

AUDIT_COLUMNS = ("id, at, user_name, action, case_id, detail, prev_hash, row_hash, key_id, "
                 "seq, subject")


class AuditChainBroken(Exception):
    """Refusing to anchor a chain that does not extend the last anchor."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def legacy_row_hash(prev: str, at: float, user: str, action: str, case_id: str | None,
                    detail: str) -> str:
    """The rule before the chain was keyed (schema 3): plain SHA-256, no secret."""
    material = json.dumps([prev, repr(float(at)), user, action, case_id, detail])
    return hashlib.sha256(material.encode()).hexdigest()


def row_material(seq: int, prev: str, key_id: str, at: float, user: str, action: str,
                 case_id: str | None, detail: str, subject: str | None) -> bytes:
    return json.dumps(
        [seq, prev, key_id, repr(float(at)), user, action, case_id, detail, subject]
    ).encode()


def subject_text(subject: Mapping[str, Any] | None) -> str | None:
    return None if subject is None else json.dumps(subject, separators=(",", ":"))


def decision_entry(row: Mapping[str, Any]) -> list[Any]:
    return [int(row["id"]), row["case_id"], float(row["at"]), row["user_name"], row["action"],
            row["comment"]]


def case_entry(row: Mapping[str, Any]) -> list[Any]:
    return [row["case_id"], row["status"], row["decided_by"],
            None if row["decided_at"] is None else float(row["decided_at"]),
            None if row["closed_at"] is None else float(row["closed_at"])]


@dataclass(frozen=True)
class AuditBreak:
    kind: str
    row_id: int | None
    detail: str

    def __str__(self) -> str:
        where = f" at row id {self.row_id}" if self.row_id is not None else ""
        return f"{self.kind}{where}: {self.detail}"


@dataclass(frozen=True)
class AuditHead:
    chain: str  # the epoch's random chain id
    seq: int
    mac: str
    row_id: int
    key_id: str


@dataclass(frozen=True)
class Anchor:
    chain: str
    seq: int
    mac: str
    row_id: int
    key_id: str
    exported_at: float
    tag: str

    def fields(self) -> dict[str, Any]:
        return {"chain": self.chain, "seq": self.seq, "mac": self.mac, "row_id": self.row_id,
                "key_id": self.key_id, "exported_at": self.exported_at}


@dataclass
class AuditReport:
    keyed: bool  # a keyed chain exists (an epoch row was found)
    rows: int  # keyed rows checked
    legacy_rows: int  # rows before the epoch (or all rows, with no keyed chain yet)
    breaks: list[AuditBreak] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    head: AuditHead | None = None
    anchor: Anchor | None = None  # the anchor compared against, if any

    @property
    def intact(self) -> bool:
        return not self.breaks

    def kinds(self) -> set[str]:
        return {b.kind for b in self.breaks}


# --- the rows before the epoch --------------------------------------------------------


def check_old_rule(rows: Sequence[Mapping[str, Any]]) -> tuple[bool, int | None, str]:
    """The unkeyed chain as schema 3 wrote it, with the hole closed: once a hashed row has
    been seen, a row without a hash is a break. Returns (intact, first bad id, head)."""
    prev, seen_hashed = "", False
    for r in rows:
        if r["row_hash"] is None:
            if seen_hashed:
                return False, int(r["id"]), prev
            continue
        seen_hashed = True
        expected = legacy_row_hash(prev, r["at"], r["user_name"], r["action"], r["case_id"],
                                   r["detail"])
        if r["prev_hash"] != prev or r["row_hash"] != expected:
            return False, int(r["id"]), prev
        prev = str(r["row_hash"])
    return True, None, prev


def legacy_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the epoch row pins of the rows before it: any later edit, insertion or deletion
    among them changes the count, the last id or the digest."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps(
            [int(r["id"]), repr(float(r["at"])), r["user_name"], r["action"], r["case_id"],
             r["detail"], r["prev_hash"], r["row_hash"], r["key_id"], r["seq"], r["subject"]]
        ).encode() + b"\n")
    intact, broken_at, head = check_old_rule(rows)
    return {
        "rows": len(rows),
        "last_id": int(rows[-1]["id"]) if rows else None,
        "digest": digest.hexdigest(),
        "old_rule": {"intact": intact, "broken_at": broken_at, "head": head},
    }


# --- verification -----------------------------------------------------------------------


def _subject(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(row["subject"]) if row["subject"] else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def verify(
    rows: Sequence[Mapping[str, Any]],
    decisions: Iterable[Mapping[str, Any]],
    cases: Iterable[Mapping[str, Any]],
    key: AuditKey,
    anchors: Sequence[Anchor] | None = None,
    anchor_problems: Sequence[AuditBreak] = (),
) -> AuditReport:
    """Check the audit rows (ordered by id), the decisions and the case states against the
    chain, and the chain's head against the newest anchor of this chain, if given."""
    epoch_at = next((i for i, r in enumerate(rows) if r["key_id"] is not None), None)
    if epoch_at is None:
        return _verify_unkeyed(rows, anchors, anchor_problems)
    legacy, keyed_part = rows[:epoch_at], rows[epoch_at:]
    epoch = keyed_part[0]
    report = AuditReport(keyed=True, rows=0, legacy_rows=len(legacy))
    breaks = report.breaks
    chain_id = ""
    first = _subject(epoch).get("epoch")
    if epoch["action"] != EPOCH or epoch["seq"] != 0 or not isinstance(first, dict):
        breaks.append(AuditBreak(EPOCH_MISSING, int(epoch["id"]),
                                 "the first keyed row is not the chain's epoch (seq 0): "
                                 "rows before it were deleted"))
    else:
        chain_id = str(first.get("chain", ""))
        pinned = first.get("legacy", {})
        now = legacy_summary(legacy)
        for what in ("rows", "last_id", "digest"):
            if pinned.get(what) != now[what]:
                breaks.append(AuditBreak(
                    LEGACY_EDITED, None,
                    f"rows before the epoch (row id {epoch['id']}) changed since it pinned "
                    f"them: {what} {pinned.get(what)!r} then, {now[what]!r} now"))
                break
        old = pinned.get("old_rule", {})
        if not old.get("intact", True):
            report.notes.append(
                f"the unkeyed chain was already broken at row id {old.get('broken_at')} when "
                f"the keyed chain began (epoch row id {epoch['id']}); recorded, not new")

    decided: dict[int, list[Any]] = {}
    states: dict[str, list[Any]] = {}
    last_seq, last_mac = -1, ""
    head: AuditHead | None = None
    for r in keyed_part:
        rid = int(r["id"])
        if r["row_hash"] is None:
            breaks.append(AuditBreak(HASHLESS_ROW, rid,
                                     "a row without a MAC after the keyed chain began "
                                     "(inserted, or its MAC removed)"))
            continue
        if r["key_id"] is None:
            breaks.append(AuditBreak(UNKEYED_ROW, rid,
                                     "a row hashed without the audit key after the keyed "
                                     "chain began"))
            continue
        report.rows += 1
        seq = int(r["seq"]) if r["seq"] is not None else -1
        if seq != last_seq + 1 or r["prev_hash"] != last_mac:
            breaks.append(AuditBreak(BROKEN_LINK, rid,
                                     f"seq {seq} follows seq {last_seq}: rows between them "
                                     "were deleted or moved"))
        material = row_material(seq, str(r["prev_hash"]), str(r["key_id"]), r["at"],
                                r["user_name"], r["action"], r["case_id"], r["detail"],
                                r["subject"])
        if not key.holds(r["key_id"]):
            breaks.append(AuditBreak(UNKNOWN_KEY, rid,
                                     f"written with audit key {r['key_id']}; this process "
                                     f"holds {', '.join(key.key_ids)}"))
        elif not key.check(str(r["key_id"]), material, str(r["row_hash"])):
            breaks.append(AuditBreak(BAD_MAC, rid,
                                     "the MAC does not match the row: edited, or re-hashed "
                                     "without the audit key"))
        else:
            subject = _subject(r)
            for entry in ([subject["decision"]] if "decision" in subject else []) + list(
                subject.get("decisions", [])
            ):
                decided[int(entry[0])] = list(entry)
            for entry in ([subject["case"]] if "case" in subject else []) + list(
                subject.get("cases", [])
            ):
                states[str(entry[0])] = list(entry)
        last_seq, last_mac = seq, str(r["row_hash"])
        head = AuditHead(chain_id, seq, last_mac, rid, str(r["key_id"]))
    report.head = head

    seen: set[int] = set()
    for d in decisions:
        entry = decision_entry(d)
        seen.add(entry[0])
        want = decided.get(entry[0])
        if want is None:
            breaks.append(AuditBreak(DECISION_UNCHAINED, None,
                                     f"decision id {entry[0]} on case {entry[1]} is not in the "
                                     "chain (inserted behind the server's back)"))
        elif want != entry:
            breaks.append(AuditBreak(DECISION_EDITED, None,
                                     f"decision id {entry[0]} on case {entry[1]} differs from "
                                     f"what the chain recorded ({_diff(want, entry, _DEC)})"))
    for missing in sorted(set(decided) - seen):
        breaks.append(AuditBreak(DECISION_DELETED, None,
                                 f"decision id {missing} on case {decided[missing][1]} is in "
                                 "the chain but no longer in the store"))
    present: set[str] = set()
    for c in cases:
        entry = case_entry(c)
        present.add(entry[0])
        want = states.get(entry[0])
        if want is None:
            if tuple(entry[1:]) != INTAKE_STATE:
                breaks.append(AuditBreak(CASE_STATE_EDITED, None,
                                         f"case {entry[0]} is {entry[1]} (decided by "
                                         f"{entry[2]}) but the chain holds no decision on it"))
        elif want != entry:
            breaks.append(AuditBreak(CASE_STATE_EDITED, None,
                                     f"case {entry[0]} differs from its last chained state "
                                     f"({_diff(want, entry, _CASE)})"))
    for gone in sorted(set(states) - present):
        breaks.append(AuditBreak(CASE_DELETED, None,
                                 f"case {gone} is in the chain but no longer in the store"))
    _check_anchor(report, chain_id, {int(r["seq"]): r for r in keyed_part
                                     if r["key_id"] is not None and r["seq"] is not None},
                  anchors, anchor_problems)
    return report


_DEC = ("id", "case_id", "at", "user_name", "action", "comment")
_CASE = ("case_id", "status", "decided_by", "decided_at", "closed_at")


def _diff(want: Sequence[Any], have: Sequence[Any], names: Sequence[str]) -> str:
    return ", ".join(f"{n}: {w!r} chained, {h!r} now"
                     for n, w, h in zip(names, want, have, strict=True) if w != h)


def _verify_unkeyed(
    rows: Sequence[Mapping[str, Any]], anchors: Sequence[Anchor] | None,
    anchor_problems: Sequence[AuditBreak],
) -> AuditReport:
    report = AuditReport(keyed=False, rows=0, legacy_rows=len(rows))
    intact, broken_at, _ = check_old_rule(rows)
    if not intact:
        report.breaks.append(AuditBreak(LEGACY_BROKEN, broken_at,
                                        "the unkeyed chain (no keyed chain yet) is broken"))
    if rows:
        report.notes.append("no keyed chain yet: only the old unkeyed rule was checked; the "
                            "first audit row written with the audit key starts the keyed chain")
    _check_anchor(report, "", {}, anchors, anchor_problems)
    return report


def _check_anchor(
    report: AuditReport, chain_id: str, by_seq: Mapping[int, Mapping[str, Any]],
    anchors: Sequence[Anchor] | None, anchor_problems: Sequence[AuditBreak],
) -> None:
    report.breaks.extend(anchor_problems)
    if anchors is None:
        report.notes.append("no anchor compared: deleting the newest rows cannot be detected "
                            "without one (gate review audit-verify --anchor FILE)")
        return
    mine = [a for a in anchors if a.chain == chain_id and chain_id]
    if not mine:
        if anchors:
            report.breaks.append(AuditBreak(
                ANCHOR_OTHER_CHAIN, None,
                f"the anchor names chain {anchors[-1].chain} (seq {anchors[-1].seq}); this "
                f"store's chain is {chain_id or 'absent (no keyed rows)'}: the keyed chain "
                "was deleted, or the anchor belongs to another store"))
        return
    anchor = mine[-1]
    report.anchor = anchor
    row = by_seq.get(anchor.seq)
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(anchor.exported_at))
    if row is None:
        end = report.head.seq if report.head else -1
        report.breaks.append(AuditBreak(
            TRUNCATED, anchor.row_id,
            f"the anchor exported {when} names seq {anchor.seq} (row id {anchor.row_id}); the "
            f"chain ends at seq {end}: the newest rows were deleted"))
    elif row["row_hash"] != anchor.mac:
        report.breaks.append(AuditBreak(
            ANCHOR_MISMATCH, int(row["id"]),
            f"seq {anchor.seq} has another MAC than the anchor exported {when}: the chain was "
            "rewritten after it"))


# --- the anchor file --------------------------------------------------------------------


def _anchor_material(fields: Mapping[str, Any]) -> bytes:
    return b"anchor\0" + json.dumps(dict(fields), sort_keys=True).encode()


def write_anchor(path: str | os.PathLike[str], head: AuditHead, key: AuditKey,
                 now: float | None = None) -> Anchor:
    """Append the head to the anchor file (one JSON line, tagged with the audit key,
    fsynced; file 0600, folder 0700 when created)."""
    draft = Anchor(head.chain, head.seq, head.mac, head.row_id, key.key_id,
                   time.time() if now is None else now, "")
    fields = draft.fields()
    anchor = Anchor(**{**fields, "tag": key.mac(_anchor_material(fields))})
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(json.dumps({**fields, "tag": anchor.tag}, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return anchor


def read_anchors(path: str | os.PathLike[str], key: AuditKey
                 ) -> tuple[list[Anchor], list[AuditBreak]]:
    """The file's anchors whose tag the key confirms, oldest first, and a break for every
    line it does not (a forged or damaged anchor is reported, never trusted)."""
    good: list[Anchor] = []
    bad: list[AuditBreak] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            anchor = Anchor(chain=str(d["chain"]), seq=int(d["seq"]), mac=str(d["mac"]),
                            row_id=int(d["row_id"]), key_id=str(d["key_id"]),
                            exported_at=float(d["exported_at"]), tag=str(d["tag"]))
        except (ValueError, KeyError, TypeError):
            bad.append(AuditBreak(ANCHOR_INVALID, None, f"{path} line {n} is not an anchor"))
            continue
        if not key.check(anchor.key_id, _anchor_material(anchor.fields()), anchor.tag):
            bad.append(AuditBreak(ANCHOR_INVALID, None,
                                  f"{path} line {n}: its tag does not verify under the audit "
                                  "key (forged or edited)"))
            continue
        good.append(anchor)
    return good, bad
