"""Eligibility policy: each rule, configuration from the lane's [document] section."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import pytest

from gate.document.policy import DocumentPolicy, age_on
from hardware.docreader import mrz as icao

TODAY = date(2026, 6, 1)


def _mrz(**kw: object) -> icao.MrzResult:
    data: dict[str, object] = dict(
        document_code="P<", issuing_state="D", document_number="C01X00T47", surname="MUSTERMANN",
        given_names="ERIKA", nationality="D", date_of_birth=date(1964, 8, 12), sex="F",
        date_of_expiry=date(2030, 1, 1),
    )
    mrz_type = str(kw.pop("mrz_type", "TD3"))
    data.update(kw)
    return icao.parse(icao.compose(mrz_type, **data), TODAY)  # type: ignore[arg-type]


def test_eligible_by_default() -> None:
    assert DocumentPolicy(today=TODAY).judge(_mrz()) == []


def test_expired_and_expiring() -> None:
    p = DocumentPolicy(today=TODAY, min_days_valid=90)
    assert p.judge(_mrz(date_of_expiry=date(2026, 5, 31))) == ["EXPIRED"]
    assert p.judge(_mrz(date_of_expiry=date(2026, 6, 1))) == ["EXPIRES_SOON"]
    assert DocumentPolicy(today=TODAY).judge(_mrz(date_of_expiry=date(2026, 6, 1))) == []
    # the injected date wins over the policy's
    assert p.judge(_mrz(), today=date(2031, 1, 1)) == ["EXPIRED"]


def test_minimum_age() -> None:
    p = DocumentPolicy(today=TODAY, minimum_age=18)
    assert p.judge(_mrz(date_of_birth=date(2008, 6, 2))) == ["UNDER_MINIMUM_AGE"]
    assert p.judge(_mrz(date_of_birth=date(2008, 6, 1))) == []
    assert age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17
    assert age_on(date(2008, 2, 29), date(2026, 3, 1)) == 18


def test_nationality_allow_list_and_presets() -> None:
    p = DocumentPolicy.from_dict({"nationalities": ["EU_EEA_CH"], "today": "2026-06-01"})
    assert p.judge(_mrz()) == []
    assert p.judge(_mrz(nationality="CHE")) == []
    assert p.judge(_mrz(nationality="USA")) == ["NATIONALITY_NOT_ALLOWED"]


def test_document_types_and_listed_numbers() -> None:
    p = DocumentPolicy.from_dict({"document_types": ["P"], "listed_numbers": ["c01x00t47"],
                                  "today": "2026-06-01"})
    assert p.judge(_mrz()) == ["DOCUMENT_LISTED"]
    assert "DOCUMENT_TYPE_NOT_ALLOWED" in p.judge(_mrz(mrz_type="TD1", document_code="ID"))


def test_invalid_mrz_is_not_judged() -> None:
    bad = icao.parse(["P<D<<X", "Y"], TODAY)
    assert DocumentPolicy(today=TODAY).judge(bad) == ["MRZ_INVALID"]


def test_from_toml_section(tmp_path: Path) -> None:
    listed = tmp_path / "listed.txt"
    listed.write_text("# lost and stolen\nAB1234567\n")
    text = f"""
[document]
document_types = ["P", "I"]
mrz_types = ["TD3", "TD1"]
min_days_valid = 30
minimum_age = 16
nationalities = ["EU", "CHE"]
listed_numbers_file = "{listed}"
"""
    p = DocumentPolicy.from_dict(tomllib.loads(text)["document"])
    assert p.minimum_age == 16 and p.min_days_valid == 30
    assert "D" in p.nationalities and "CHE" in p.nationalities and "NOR" not in p.nationalities
    assert "AB1234567" in p.listed_numbers
    with pytest.raises(ValueError, match="unknown"):
        DocumentPolicy.from_dict({"nationality": ["EU"]})
