"""MRZ conformance (issue 13): unknown dates, document codes per layout, the BEL/PRT variant.

Every MRZ here is built by hand from ICAO Doc 9303 — field by field, check digits from the
7-3-1 rule of Part 3 computed by :func:`cd` below, not by the product's ``check_digit`` or
``compose`` — so a test fails when the product and the standard part ways.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date

import numpy as np
import pytest

from gate.document.check import MrzDocumentCheck
from gate.document.ocr import decode
from gate.document.policy import DocumentPolicy
from gate.document.reader import MrzReading
from gate.stages import DocumentOutcome
from hardware.docreader import mrz as icao
from sim.documents import Identity, capture, random_identity, render_page

TODAY = date(2026, 6, 1)
NAME = "ERIKSSON<<ANNA<MARIA"


def cd(data: str) -> str:
    """Doc 9303 Part 3, 4.9: digits their value, A-Z 10-35, '<' 0; weights 7, 3, 1; mod 10."""
    values = {**{str(d): d for d in range(10)}, "<": 0,
              **{chr(65 + i): 10 + i for i in range(26)}}
    return str(sum(values[c] * (7, 3, 1)[i % 3] for i, c in enumerate(data)) % 10)


def test_own_check_digits_agree_with_the_doc_9303_specimen() -> None:
    # Part 4's passport specimen: L898902C3 6, 740812 2, 120415 9, ZE184226B<<<<< 1, composite 0
    assert (cd("L898902C3"), cd("740812"), cd("120415"), cd("ZE184226B<<<<<")) == \
        ("6", "2", "9", "1")
    assert cd("L898902C36" + "7408122" + "1204159" + "ZE184226B<<<<<1") == "0"
    assert cd("<<<<<<") == "0"  # fillers count 0: an unknown date's digit is 0


def td3(*, code: str = "P<", state: str = "UTO", number: str = "L898902C3",
        dob: str = "740812", dob_cd: str | None = None, exp: str = "310415",
        exp_cd: str | None = None, opt: str = "ZE184226B<<<<<") -> tuple[str, str]:
    """Part 4, 4.2.2: a TD3 MRZ."""
    l1 = (code + state + NAME).ljust(44, "<")
    opt_cd = "<" if set(opt) == {"<"} else cd(opt)
    l2 = (number + cd(number) + "UTO" + dob + (cd(dob) if dob_cd is None else dob_cd) + "F"
          + exp + (cd(exp) if exp_cd is None else exp_cd) + opt + opt_cd)
    return l1, l2 + cd(l2[0:10] + l2[13:20] + l2[21:43])


def td2(*, code: str = "I<", state: str = "UTO", number: str = "D23145890",
        dob: str = "740812", dob_cd: str | None = None, exp: str = "310415",
        exp_cd: str | None = None) -> tuple[str, str]:
    """Part 6, 4.2.2: a TD2 MRZ (optional data empty)."""
    l1 = (code + state + NAME).ljust(36, "<")
    l2 = (number + cd(number) + "UTO" + dob + (cd(dob) if dob_cd is None else dob_cd) + "F"
          + exp + (cd(exp) if exp_cd is None else exp_cd) + "<" * 7)
    return l1, l2 + cd(l2[0:10] + l2[13:20] + l2[21:35])


def td1(*, code: str = "I<", state: str = "UTO", number: str = "D23145890",
        number_cd: str | None = None, dob: str = "740812", dob_cd: str | None = None,
        exp: str = "310415", exp_cd: str | None = None) -> tuple[str, str, str]:
    """Part 5, 4.2.2: a TD1 MRZ; a number over 9 characters continues after a filler at
    position 15, its check digit after it (Part 5, note j), as Doc 9303 computes it unless
    ``number_cd`` is given."""
    digit = cd(number) if number_cd is None else number_cd
    if len(number) > 9:
        l1 = (code + state + number[:9] + "<" + number[9:] + digit).ljust(30, "<")
    else:
        l1 = (code + state + number + digit).ljust(30, "<")
    l2 = (dob + (cd(dob) if dob_cd is None else dob_cd) + "F"
          + exp + (cd(exp) if exp_cd is None else exp_cd) + state.ljust(3, "<") + "<" * 11)
    l2 += cd(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29])
    return l1, l2, NAME.ljust(30, "<")


BUILDERS = {"TD3": td3, "TD2": td2, "TD1": td1}


# --- 1. an unknown date of birth (Doc 9303 Part 3: fillers) ---------------------------------


@pytest.mark.parametrize("mrz_type", ["TD3", "TD2", "TD1"])
@pytest.mark.parametrize("digit", ["0", "<"])
def test_unknown_date_of_birth_is_a_valid_mrz(mrz_type: str, digit: str) -> None:
    lines = BUILDERS[mrz_type](dob="<<<<<<", dob_cd=digit)
    r = icao.parse(lines, TODAY)
    assert r.valid, r.problems
    assert r.date_of_birth is None and r.checks["date_of_birth"] and r.checks["composite"]
    assert r.date_of_expiry == "2031-04-15"


@pytest.mark.parametrize("dob", ["74<<<<", "7408<<"])
def test_partly_unknown_date_of_birth_is_valid_with_its_7_3_1_digit(dob: str) -> None:
    r = icao.parse(td3(dob=dob), TODAY)
    assert r.valid, r.problems
    assert r.date_of_birth is None
    # a filler for the check digit stands only for a field of fillers
    r = icao.parse(td3(dob=dob, dob_cd="<"), TODAY)
    assert "CHECK_DATE_OF_BIRTH" in r.problems and not r.valid


@pytest.mark.parametrize("dob", ["<<0812", "7408<2", "7413<<", "7400<<", "<<<<<2", "74<8<<"])
def test_fillers_out_of_place_are_no_date(dob: str) -> None:
    r = icao.parse(td3(dob=dob), TODAY)
    assert "DATE_OF_BIRTH_INVALID" in r.problems and not r.valid
    assert r.checks["date_of_birth"]  # the digit holds: it is the date that is wrong


def test_unknown_date_of_birth_with_a_wrong_check_digit() -> None:
    r = icao.parse(td3(dob="<<<<<<", dob_cd="5"), TODAY)  # the composite counts the '5'
    assert r.problems == ["CHECK_DATE_OF_BIRTH"] and not r.valid


@pytest.mark.parametrize("mrz_type", ["TD3", "TD2", "TD1"])
@pytest.mark.parametrize("digit", ["0", "<"])
def test_unknown_expiry_stays_invalid(mrz_type: str, digit: str) -> None:
    # Parts 4 to 6 make the expiry mandatory: Doc 9303 gives it no unknown form.
    r = icao.parse(BUILDERS[mrz_type](exp="<<<<<<", exp_cd=digit), TODAY)
    assert not r.valid and "DATE_OF_EXPIRY_UNKNOWN" in r.problems
    assert r.checks["date_of_expiry"] == (digit == "0")  # '<' is no digit for an expiry
    assert DocumentPolicy(today=TODAY).judge(r) == ["MRZ_INVALID"]


def test_policy_says_why_an_unknown_date_of_birth_is_refused() -> None:
    r = icao.parse(td1(dob="<<<<<<"), TODAY)
    assert DocumentPolicy(today=TODAY, allow_specimen=True).judge(r) == ["AGE_UNKNOWN"]
    assert DocumentPolicy(today=TODAY, allow_specimen=True, minimum_age=0).judge(r) == \
        ["DATE_OF_BIRTH_UNKNOWN"]
    # the other rules still speak
    r = icao.parse(td1(dob="74<<<<", exp="250101"), TODAY)
    assert DocumentPolicy(today=TODAY).judge(r) == ["EXPIRED", "AGE_UNKNOWN",
                                                    "SPECIMEN_DOCUMENT"]
    # a known date of birth on a lane without a minimum age: nothing to say
    assert DocumentPolicy(today=TODAY, allow_specimen=True, minimum_age=0).judge(
        icao.parse(td1(), TODAY)) == []


def _grid(lines: tuple[str, ...], p: float = 0.97) -> np.ndarray:
    """Classifier output for ``lines``: ``p`` on the printed character, the rest spread."""
    rest = (1 - p) / (len(icao.ALPHABET) - 1)
    grid = np.full((len(lines), len(lines[0]), len(icao.ALPHABET)), rest, np.float32)
    for r, line in enumerate(lines):
        for c, ch in enumerate(line):
            grid[r, c, icao.ALPHABET.index(ch)] = p
    return grid


@pytest.mark.parametrize("mrz_type", ["TD3", "TD2", "TD1"])
@pytest.mark.parametrize("dob", ["<<<<<<", "74<<<<"])
def test_reader_keeps_fillers_in_a_date_of_birth(mrz_type: str, dob: str) -> None:
    lines = BUILDERS[mrz_type](dob=dob)
    d = decode(_grid(lines))
    assert d.lines == lines and d.checks_ok and d.corrections == 0
    # a confusable digit misread next to the fillers is repaired, the fillers left alone
    layout = icao.LAYOUTS[mrz_type]
    row, start = next((f.span.line, f.span.start) for f in layout.fields
                      if f.name == "date_of_birth")
    if dob[0] == "7":
        grid = _grid(lines)
        grid[row, start] = 0.001
        grid[row, start, icao.ALPHABET.index("1")] = 0.6  # the '7' read as a '1'
        grid[row, start, icao.ALPHABET.index("7")] = 0.3
        d = decode(grid)
        assert d.lines == lines and d.repaired == {(row, start)}


# --- 2. the document code a layout allows (Parts 4 to 7) -----------------------------------


@pytest.mark.parametrize("code", ["P<", "PO", "PD", "V<", "X<"])
@pytest.mark.parametrize("mrz_type", ["TD1", "TD2"])
def test_td1_and_td2_take_no_passport_code(mrz_type: str, code: str) -> None:
    r = icao.parse(BUILDERS[mrz_type](code=code), TODAY)
    if code == "V<" and mrz_type == "TD2":
        assert r.mrz_type == "MRVB"  # a 36-character zone with V is a visa: another layout
        return
    assert "DOCUMENT_TYPE_INVALID" in r.problems and not r.valid


@pytest.mark.parametrize("code", ["I<", "ID", "IR", "A<", "AC", "C<"])
@pytest.mark.parametrize("mrz_type", ["TD1", "TD2"])
def test_td1_and_td2_take_a_c_and_i(mrz_type: str, code: str) -> None:
    r = icao.parse(BUILDERS[mrz_type](code=code), TODAY)
    assert r.valid, r.problems


@pytest.mark.parametrize(("code", "ok"), [("P<", True), ("PO", True), ("I<", False),
                                          ("A<", False), ("C<", False)])
def test_td3_takes_only_p(code: str, ok: bool) -> None:
    r = icao.parse(td3(code=code), TODAY)
    assert r.valid == ok and ("DOCUMENT_TYPE_INVALID" in r.problems) == (not ok)


# --- 3. older Belgian and Portuguese cards: the filler at 15 in the number's check digit ----

LONG = "592123456712"  # 12 characters: 9 at positions 6-14, 3 after the filler at 15


def _variant_digit(number: str) -> str:
    return cd(number[:9] + "<" + number[9:])


def test_the_variant_digit_differs_from_doc_9303s() -> None:
    assert _variant_digit(LONG) != cd(LONG)  # else the tests below prove nothing


@pytest.mark.parametrize("state", ["BEL", "PRT"])
def test_variant_long_number_is_valid_and_flagged(state: str) -> None:
    lines = td1(code="ID", state=state, number=LONG, number_cd=_variant_digit(LONG))
    r = icao.parse(lines, TODAY)
    assert r.valid, r.problems
    assert r.document_number == LONG and r.checks["document_number"]
    assert r.warnings == [icao.DOCUMENT_NUMBER_CHECK_VARIANT]
    assert r.to_dict()["warnings"] == ["DOCUMENT_NUMBER_CHECK_VARIANT"]
    # a warning is no eligibility reason
    assert DocumentPolicy(today=TODAY).judge(r) == []


@pytest.mark.parametrize("state", ["BEL", "PRT"])
def test_doc_9303_long_number_of_those_states_has_no_warning(state: str) -> None:
    r = icao.parse(td1(code="ID", state=state, number=LONG), TODAY)
    assert r.valid and r.warnings == []


@pytest.mark.parametrize("state", ["D", "FRA", "NLD", "ESP", "UTO"])
def test_variant_is_refused_from_other_states(state: str) -> None:
    r = icao.parse(td1(code="ID", state=state, number=LONG, number_cd=_variant_digit(LONG)),
                   TODAY)
    assert "CHECK_DOCUMENT_NUMBER" in r.problems and not r.valid and r.warnings == []


def test_variant_needs_its_own_digit_and_the_composite() -> None:
    wrong = next(d for d in "0123456789" if d not in (_variant_digit(LONG), cd(LONG)))
    r = icao.parse(td1(code="ID", state="BEL", number=LONG, number_cd=wrong), TODAY)
    assert "CHECK_DOCUMENT_NUMBER" in r.problems and r.warnings == []
    # one character of the number misread: the composite, over the characters as printed,
    # catches what the number's own digit no longer sees
    l1, l2, l3 = td1(code="ID", state="BEL", number=LONG, number_cd=_variant_digit(LONG))
    misread = l1[:16] + "3" + l1[17:]  # the first character after the filler
    r = icao.parse((misread, l2, l3), TODAY)
    assert not r.valid and "CHECK_COMPOSITE" in r.problems


def test_variant_is_only_a_td1_rule() -> None:
    # TD2 long numbers (Part 6) of the same states are read by Doc 9303's rule alone
    number = LONG
    l1 = ("I<BEL" + NAME).ljust(36, "<")
    l2 = (number[:9] + "<" + "UTO" + "740812" + cd("740812") + "F" + "310415" + cd("310415")
          + (number[9:] + _variant_digit(number)).ljust(7, "<"))
    l2 += cd(l2[0:10] + l2[13:20] + l2[21:35])
    r = icao.parse((l1, l2), TODAY)
    assert "CHECK_DOCUMENT_NUMBER" in r.problems and r.warnings == []


# --- the reading pipeline on printed pages (sim.documents, real OCR-B, the shipped model) ---


@dataclass(frozen=True)
class _Printed(Identity):
    """An identity whose page carries the MRZ lines given, built here by hand."""

    lines: tuple[str, ...] = ()

    def mrz(self) -> tuple[str, ...]:
        return self.lines


@functools.lru_cache(maxsize=1)
def _stage() -> MrzDocumentCheck:
    return MrzDocumentCheck(DocumentPolicy(today=TODAY, allow_specimen=True), log_outcomes=False)


def _read(lines: tuple[str, ...], seed: int, condition: str) -> tuple[DocumentOutcome, MrzReading]:
    rng = np.random.default_rng(seed)
    base = random_identity(rng, {3: "TD1", 2: "TD3" if len(lines[0]) == 44 else "TD2"}
                           [len(lines)], today=TODAY)
    ident = _Printed(**{k: getattr(base, k) for k in Identity.__dataclass_fields__},
                     lines=lines)
    page = capture(render_page(ident, rng), condition, rng)
    assert page.mrz == lines
    outcome, reading, _, _ = _stage().examine([page.image], TODAY)
    return outcome, reading


@pytest.mark.timeout(120)
@pytest.mark.parametrize("condition", ["clean", "blur", "dpi150"])
@pytest.mark.parametrize("mrz_type", ["TD3", "TD2", "TD1"])
def test_page_with_unknown_date_of_birth_reads_valid_and_is_refused_for_age(
        mrz_type: str, condition: str) -> None:
    lines = BUILDERS[mrz_type](dob="<<<<<<")
    outcome, reading = _read(lines, 31, condition)
    assert reading.result is not None and reading.result.lines == lines
    assert reading.valid and reading.result.date_of_birth is None
    assert "MRZ_INVALID" not in outcome.reasons
    assert "AGE_UNKNOWN" in outcome.reasons and not outcome.accepted


@pytest.mark.timeout(120)
@pytest.mark.parametrize("condition", ["clean", "blur", "dpi150", "perspective"])
@pytest.mark.parametrize("state", ["BEL", "PRT"])
def test_page_of_a_variant_card_reads_valid_flagged_and_passes(state: str,
                                                               condition: str) -> None:
    lines = td1(code="ID", state=state, number=LONG, number_cd=_variant_digit(LONG))
    outcome, reading = _read(lines, 41, condition)
    assert reading.result is not None and reading.result.lines == lines
    assert reading.valid, reading.reasons
    assert outcome.mrz["warnings"] == ["DOCUMENT_NUMBER_CHECK_VARIANT"]
    assert outcome.accepted, outcome.reasons
