"""Eligibility: may this document's holder use this lane at all?

Lanes differ (a Schengen lane admits EU/EEA/CH citizens only, an airport's outbound lane may
admit more), so the rules are configuration: a :class:`DocumentPolicy` built from the lane's
TOML ``[document]`` section via :meth:`DocumentPolicy.from_dict`. ``today`` is injectable so
tests (and a lane whose clock is wrong) do not silently change the outcome.

Every key of ``[document]`` is declared below with its type and range
(:func:`gate.schema.setting`): a string where a list belongs, a negative age, an unknown
document type or nationality is a configuration error naming the key, never a silently
weaker check.

Reason codes: ``DOCUMENT_TYPE_NOT_ALLOWED``, ``EXPIRED``, ``EXPIRES_SOON``, ``EXPIRY_UNKNOWN``,
``EXPIRY_IMPLAUSIBLE`` (later than any passport runs: 10 years and ``expiry_margin_days``
from today), ``UNDER_MINIMUM_AGE``, ``AGE_UNKNOWN``, ``DATE_OF_BIRTH_UNKNOWN``,
``NATIONALITY_NOT_ALLOWED``,
``SPECIMEN_DOCUMENT`` (issued by or for ``UTO``, the ICAO specimen state, on a lane that
does not ``allow_specimen``), ``DOCUMENT_LISTED`` (lost/stolen list), ``MRZ_INVALID``
(nothing can be judged on an invalid read).

A date of birth the document gives as unknown (fillers, Doc 9303 Part 3: the MRZ is valid,
``date_of_birth`` is None) is never admitted by the lane: ``AGE_UNKNOWN`` where a minimum
age applies, ``DATE_OF_BIRTH_UNKNOWN`` where none does. Border systems look travellers up
by name *and* date of birth, and an automated lane is for the routine case; a holder
without a known date of birth is not one, so an officer sees them even on a lane that
checks no age (see docs/document.md, "Unknown dates and national variants").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gate import schema
from gate.schema import ConfigError, setting
from hardware.docreader.countries import PRESETS, is_known
from hardware.docreader.mrz import MrzResult

#: The fictitious state of the ICAO 9303 specimens (and of the simulator's pages).
SPECIMEN_STATE = "UTO"
#: No passport (ICAO 9303 recommends at most 10 years) or identity card runs longer.
MAX_VALIDITY_YEARS = 10
#: First letters of ICAO 9303 document codes: passports, identity cards, other official
#: travel documents (A, C) and visas.
_DOCUMENT_LETTERS = frozenset("ACIPV")
_DOCUMENT_NUMBER = re.compile(r"[A-Z0-9]{1,30}")


def _document_type(text: str) -> str:
    code = text.strip().upper()
    if not (1 <= len(code) <= 2 and code.isascii() and code.isalpha()
            and code[0] in _DOCUMENT_LETTERS):
        raise ValueError(f"{text!r} is not an ICAO document type code (1-2 letters starting "
                         "with P, I, A, C or V: \"P\" any passport, \"PO\" exactly PO)")
    return code


def _nationality(text: str) -> str:
    code = text.strip().upper().replace("<", "")
    if code not in PRESETS and not is_known(code):
        raise ValueError(f"{text!r} is neither an ICAO nationality code nor a preset "
                         f"({', '.join(sorted(PRESETS))})")
    return code


def _document_number(text: str) -> str:
    number = text.strip().upper()
    if not _DOCUMENT_NUMBER.fullmatch(number):
        raise ValueError(f"{text!r} is not a document number (1-30 letters and digits)")
    return number


def _mrz_type(text: str) -> str:
    return text.strip().upper()


def _codes(values: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for v in values:
        v = str(v).strip().upper().replace("<", "")
        out |= PRESETS.get(v, frozenset({v}))
    return frozenset(out)


def years_later(day: date, years: int) -> date:
    """The same day ``years`` later (29 February: 28 February in a common year)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


@dataclass(frozen=True)
class DocumentPolicy:
    """One lane's eligibility rules. Empty ``nationalities`` means any nationality
    (except the specimen state ``UTO``, which only ``allow_specimen`` admits)."""

    # ICAO document codes: one letter admits every code starting with it ("P": P, PO, PD…),
    # two letters that code only ("PO")
    document_types: frozenset[str] = setting(frozenset({"P", "I"}), item=_document_type)
    mrz_types: frozenset[str] = setting(frozenset({"TD1", "TD2", "TD3"}), item=_mrz_type,
                                        choices=("TD1", "TD2", "TD3", "MRVA", "MRVB"))
    # EXPIRES_SOON below this many days; 0: valid through the day of expiry
    min_days_valid: int = setting(0, low=0, high=3650, unit="days")
    # 0: no minimum age (an unknown date of birth is then DATE_OF_BIRTH_UNKNOWN, not
    # AGE_UNKNOWN: still refused)
    minimum_age: int = setting(18, low=0, high=120, unit="years")
    # ICAO codes or presets (EU, EEA, EU_EEA_CH); empty: any
    nationalities: frozenset[str] = setting(frozenset(), item=_nationality)
    # lost/stolen: document numbers (and listed_numbers_file, one a line)
    listed_numbers: frozenset[str] = setting(frozenset(), item=_document_number)
    # UTO pages (ICAO specimens, the simulator's) are SPECIMEN_DOCUMENT unless this is set
    allow_specimen: bool = setting(False)
    # an expiry later than today + 10 years + this many days is EXPIRY_IMPLAUSIBLE
    expiry_margin_days: int = setting(366, low=0, high=3660, unit="days")
    # None: the lane's clock. A fixed date is for tests and the simulator: gate run refuses it
    today: date | None = setting(None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DocumentPolicy:
        """From a TOML ``[document]`` section; unknown keys, wrong types and values out of
        range are a :class:`gate.schema.ConfigError` naming the key, not ignored."""
        data = dict(data)
        listed_file = data.pop("listed_numbers_file", None)
        kw = schema.values(cls, data, "document")
        if "nationalities" in kw:
            kw["nationalities"] = _codes(kw["nationalities"])
        if listed_file is not None:
            listed = set(kw.get("listed_numbers", ()))
            listed |= _read_listed(listed_file)
            kw["listed_numbers"] = frozenset(listed)
        return cls(**kw)

    def _type_allowed(self, mrz: MrzResult) -> bool:
        code = mrz.document_code.replace("<", "")
        return code[:1] in self.document_types or code[:2] in self.document_types

    def judge(self, mrz: MrzResult, today: date | None = None) -> list[str]:
        """Reason codes against admitting this document here; empty means eligible."""
        today = today or self.today or date.today()
        if not mrz.valid:
            return ["MRZ_INVALID"]
        reasons: list[str] = []
        if mrz.mrz_type not in self.mrz_types or not self._type_allowed(mrz):
            reasons.append("DOCUMENT_TYPE_NOT_ALLOWED")
        if mrz.date_of_expiry is None:
            reasons.append("EXPIRY_UNKNOWN")
        else:
            expiry = date.fromisoformat(mrz.date_of_expiry)
            if expiry < today:
                reasons.append("EXPIRED")
            elif expiry < today + timedelta(days=self.min_days_valid):
                reasons.append("EXPIRES_SOON")
            elif expiry > self.latest_plausible_expiry(today):
                reasons.append("EXPIRY_IMPLAUSIBLE")
        if mrz.date_of_birth is None:  # fillers: Doc 9303 lets an issuer say "unknown"
            reasons.append("AGE_UNKNOWN" if self.minimum_age > 0 else "DATE_OF_BIRTH_UNKNOWN")
        elif (self.minimum_age > 0
              and age_on(date.fromisoformat(mrz.date_of_birth), today) < self.minimum_age):
            reasons.append("UNDER_MINIMUM_AGE")
        if self.nationalities and mrz.nationality not in self.nationalities:
            reasons.append("NATIONALITY_NOT_ALLOWED")
        if not self.allow_specimen and SPECIMEN_STATE in (mrz.issuing_state, mrz.nationality):
            reasons.append("SPECIMEN_DOCUMENT")
        if mrz.document_number.upper() in self.listed_numbers:
            reasons.append("DOCUMENT_LISTED")
        return reasons

    def latest_plausible_expiry(self, today: date) -> date:
        """The last expiry date a genuine document read on ``today`` can carry."""
        return years_later(today, MAX_VALIDITY_YEARS) + timedelta(days=self.expiry_margin_days)


def _read_listed(path: object) -> set[str]:
    """The numbers of a ``listed_numbers_file``: one a line, ``#`` comments, blank lines."""
    where = "[document] listed_numbers_file"
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where} must be a file name (str), got {path!r}")
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} {path}: cannot read: "
                          f"{getattr(exc, 'strerror', None) or exc}") from exc
    numbers: set[str] = set()
    for n, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                numbers.add(_document_number(line))
            except ValueError as exc:
                raise ConfigError(f"{where} {path} line {n}: {exc}") from exc
    return numbers


def age_on(born: date, today: date) -> int:
    """Completed years; someone born on 29 February turns a year older on 1 March."""
    years = today.year - born.year
    if (today.month, today.day) < (born.month, born.day):
        years -= 1
    return years
