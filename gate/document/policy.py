"""Eligibility: may this document's holder use this lane at all?

Lanes differ (a Schengen lane admits EU/EEA/CH citizens only, an airport's outbound lane may
admit more), so the rules are configuration: a :class:`DocumentPolicy` built from the lane's
TOML ``[document]`` section via :meth:`DocumentPolicy.from_dict`. ``today`` is injectable so
tests (and a lane whose clock is wrong) do not silently change the outcome.

Reason codes: ``DOCUMENT_TYPE_NOT_ALLOWED``, ``EXPIRED``, ``EXPIRES_SOON``, ``EXPIRY_UNKNOWN``,
``UNDER_MINIMUM_AGE``, ``AGE_UNKNOWN``, ``NATIONALITY_NOT_ALLOWED``, ``DOCUMENT_LISTED``
(lost/stolen list), ``MRZ_INVALID`` (nothing can be judged on an invalid read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date, timedelta
from typing import Any

from hardware.docreader.countries import PRESETS
from hardware.docreader.mrz import MrzResult


def _codes(values: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for v in values:
        v = str(v).strip().upper().replace("<", "")
        out |= PRESETS.get(v, frozenset({v}))
    return frozenset(out)


@dataclass(frozen=True)
class DocumentPolicy:
    """One lane's eligibility rules. Empty ``nationalities`` means any nationality."""

    document_types: frozenset[str] = frozenset({"P", "I"})  # first letter of the document code
    mrz_types: frozenset[str] = frozenset({"TD1", "TD2", "TD3"})
    min_days_valid: int = 0  # 0: valid through the day of expiry
    minimum_age: int = 18
    nationalities: frozenset[str] = frozenset()
    listed_numbers: frozenset[str] = frozenset()  # lost/stolen: document numbers
    today: date | None = None  # None: the lane's clock

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DocumentPolicy:
        """From a TOML ``[document]`` section; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"listed_numbers_file"}
        if unknown:
            raise ValueError(f"unknown [document] keys: {sorted(unknown)}")
        kw: dict[str, Any] = {}
        if "document_types" in data:
            kw["document_types"] = frozenset(str(x).upper()[:1] for x in data["document_types"])
        if "mrz_types" in data:
            kw["mrz_types"] = frozenset(str(x).upper() for x in data["mrz_types"])
        if "min_days_valid" in data:
            kw["min_days_valid"] = int(data["min_days_valid"])
        if "minimum_age" in data:
            kw["minimum_age"] = int(data["minimum_age"])
        if "nationalities" in data:
            kw["nationalities"] = _codes(data["nationalities"])
        listed = {str(x).upper() for x in data.get("listed_numbers", ())}
        if "listed_numbers_file" in data:
            with open(data["listed_numbers_file"], encoding="utf-8") as fh:
                listed |= {ln.strip().upper() for ln in fh if ln.strip() and ln[0] != "#"}
        kw["listed_numbers"] = frozenset(listed)
        if data.get("today"):
            t = data["today"]
            kw["today"] = t if isinstance(t, date) else date.fromisoformat(str(t))
        return cls(**kw)

    def judge(self, mrz: MrzResult, today: date | None = None) -> list[str]:
        """Reason codes against admitting this document here; empty means eligible."""
        today = today or self.today or date.today()
        if not mrz.valid:
            return ["MRZ_INVALID"]
        reasons: list[str] = []
        if mrz.mrz_type not in self.mrz_types or mrz.document_code[:1] not in self.document_types:
            reasons.append("DOCUMENT_TYPE_NOT_ALLOWED")
        if mrz.date_of_expiry is None:
            reasons.append("EXPIRY_UNKNOWN")
        else:
            expiry = date.fromisoformat(mrz.date_of_expiry)
            if expiry < today:
                reasons.append("EXPIRED")
            elif expiry < today + timedelta(days=self.min_days_valid):
                reasons.append("EXPIRES_SOON")
        if self.minimum_age > 0:
            if mrz.date_of_birth is None:
                reasons.append("AGE_UNKNOWN")
            elif age_on(date.fromisoformat(mrz.date_of_birth), today) < self.minimum_age:
                reasons.append("UNDER_MINIMUM_AGE")
        if self.nationalities and mrz.nationality not in self.nationalities:
            reasons.append("NATIONALITY_NOT_ALLOWED")
        if mrz.document_number.upper() in self.listed_numbers:
            reasons.append("DOCUMENT_LISTED")
        return reasons


def age_on(born: date, today: date) -> int:
    """Completed years; someone born on 29 February turns a year older on 1 March."""
    years = today.year - born.year
    if (today.month, today.day) < (born.month, born.day):
        years -= 1
    return years
