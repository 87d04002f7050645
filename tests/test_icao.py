"""ICAO 9303 parsing and validation: Doc 9303 specimens, edge cases, and fuzzing."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.docreader import mrz as icao
from hardware.docreader.countries import EU_EEA_CH, ICAO_CODES

TODAY = date(2010, 1, 1)

TD3 = ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
       "L898902C36UTO7408122F1204159ZE184226B<<<<<10")
TD1 = ("I<UTOD231458907<<<<<<<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<6",
       "ERIKSSON<<ANNA<MARIA<<<<<<<<<<")
TD1_LONG = ("I<UTOD23145890<7349<<<<<<<<<<<", "3407127M9507122UTO<<<<<<<<<<<2",
            "STEVENSON<<PETER<JOHN<<<<<<<<<")
TD2 = ("I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "D231458907UTO7408122F1204159<<<<<<<6")
MRVA = ("V<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
        "L8988901C4XXX4009078F96121096ZE184226B<<<<<<")
MRVB = ("V<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "L8988901C4XXX4009078F9612109<<<<<<<<")


@pytest.mark.parametrize(
    ("lines", "mrz_type", "number"),
    [(TD3, "TD3", "L898902C3"), (TD1, "TD1", "D23145890"), (TD1_LONG, "TD1", "D23145890734"),
     (TD2, "TD2", "D23145890"), (MRVA, "MRVA", "L8988901C"), (MRVB, "MRVB", "L8988901C")],
)
def test_specimens_are_valid(lines: tuple[str, ...], mrz_type: str, number: str) -> None:
    r = icao.parse(lines, TODAY)
    assert r.valid, r.problems
    assert r.mrz_type == mrz_type
    assert r.document_number == number
    assert r.checks and all(r.checks.values())


def test_td3_fields() -> None:
    r = icao.parse("\n".join(TD3), TODAY)
    assert (r.surname, r.given_names) == ("ERIKSSON", "ANNA MARIA")
    assert r.date_of_birth == "1974-08-12" and r.date_of_expiry == "2012-04-15"
    assert r.sex == "F" and r.nationality == "UTO" and r.issuing_state == "UTO"
    assert r.optional_data == "ZE184226B" and not r.name_truncated
    assert set(r.checks) == {"document_number", "date_of_birth", "date_of_expiry",
                             "optional_data", "composite"}


def test_every_check_digit_is_checked() -> None:
    base = list(TD3[1])
    for pos, name in [(9, "document_number"), (19, "date_of_birth"), (27, "date_of_expiry"),
                      (42, "optional_data"), (43, "composite")]:
        bad = base.copy()
        bad[pos] = str((int(bad[pos]) + 1) % 10)
        r = icao.parse([TD3[0], "".join(bad)], TODAY)
        assert not r.valid
        assert r.checks[name] is False
        assert f"CHECK_{name.upper()}" in r.problems


def test_changed_field_breaks_composite_only_where_covered() -> None:
    # Nationality is not under any check digit: a change there is caught only by code lists.
    line = TD3[1][:10] + "D<<" + TD3[1][13:]
    r = icao.parse([TD3[0], line], TODAY)
    assert r.valid and r.nationality == "D"
    r = icao.parse([TD3[0], TD3[1][:10] + "ZZZ" + TD3[1][13:]], TODAY)
    assert "NATIONALITY_UNKNOWN" in r.problems and all(r.checks.values())


def test_century_inference() -> None:
    assert icao.parse(TD1_LONG, TODAY).date_of_birth == "1934-07-12"
    lines = icao.compose("TD3", document_code="P<", issuing_state="UTO", document_number="X1",
                         surname="A", given_names="B", nationality="UTO",
                         date_of_birth=date(2005, 3, 1), sex="M", date_of_expiry=date(2030, 1, 1))
    r = icao.parse(lines, date(2026, 1, 1))
    assert r.date_of_birth == "2005-03-01" and r.date_of_expiry == "2030-01-01"
    # Born "in the future" by the two-digit year means the previous century.
    assert icao.parse(lines, date(2004, 1, 1)).date_of_birth == "1905-03-01"


def test_bad_dates_and_sex() -> None:
    line = TD3[1][:13] + "741332" + icao.check_digit("741332") + "Q" + TD3[1][21:]
    r = icao.parse([TD3[0], line], TODAY)
    assert "DATE_OF_BIRTH_INVALID" in r.problems and "SEX_INVALID" in r.problems


def test_sex_values() -> None:
    for sex in "MFX<":
        lines = icao.compose("TD3", document_code="P<", issuing_state="D",
                             document_number="C01X00T47",
                             surname="MUSTERMANN", given_names="ERIKA", nationality="D",
                             date_of_birth=date(1964, 8, 12), sex=sex,
                             date_of_expiry=date(2030, 1, 1))
        r = icao.parse(lines, TODAY)
        assert r.valid and r.sex == sex and r.issuing_state == "D"


def test_name_truncation_marked() -> None:
    lines = icao.compose("TD1", document_code="ID", issuing_state="UTO",
                         document_number="AB1234567",
                         surname="WOJCIECHOWSKA MONTMORENCY", given_names="ALEXANDRA VIKTORIA",
                         nationality="UTO", date_of_birth=date(1980, 1, 1), sex="F",
                         date_of_expiry=date(2030, 1, 1))
    r = icao.parse(lines, TODAY)
    assert r.valid and r.name_truncated
    assert len(lines[2]) == 30 and not lines[2].endswith("<")
    assert r.surname == "WOJCIECHOWSKA MONTMORENCY"


@pytest.mark.parametrize("mrz_type", ["TD1", "TD2"])
def test_long_document_number_round_trip(mrz_type: str) -> None:
    lines = icao.compose(mrz_type, document_code="I<", issuing_state="UTO",
                         document_number="D23145890734", surname="STEVENSON", given_names="PETER",
                         nationality="UTO", date_of_birth=date(1934, 7, 12), sex="M",
                         date_of_expiry=date(2035, 7, 12), optional_data="AB")
    r = icao.parse(lines, TODAY)
    assert r.valid, r.problems
    assert r.document_number == "D23145890734" and r.optional_data == "AB"


def test_country_codes() -> None:
    assert {"D", "UTO", "XXA", "XXB", "XXC", "XXX", "UNO", "GBD", "EUE"} <= ICAO_CODES
    assert "DEU" in ICAO_CODES and "ZZZ" not in ICAO_CODES
    assert "D" in EU_EEA_CH and "CHE" in EU_EEA_CH and "GBR" not in EU_EEA_CH


@pytest.mark.parametrize("text", ["", "\n\n", "P<UTO", "x" * 88, "P<UTO\nABC", "€" * 44])
def test_garbage_is_an_outcome(text: str) -> None:
    r = icao.parse(text, TODAY)
    assert not r.valid and r.problems


MRZ_CHARS = st.sampled_from(list(icao.ALPHABET))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=50), max_size=4))
def test_fuzz_arbitrary_text_never_raises(lines: list[str]) -> None:
    r = icao.parse(lines, TODAY)
    assert isinstance(r.to_dict(), dict)
    assert r.valid == (not r.problems and r.mrz_type is not None)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([TD3, TD1, TD1_LONG, TD2, MRVA, MRVB]),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 43), MRZ_CHARS), max_size=4),
)
def test_fuzz_mutated_mrz_never_raises_and_single_digit_changes_are_caught(
    lines: tuple[str, ...], edits: list[tuple[int, int, str]]
) -> None:
    out = [list(x) for x in lines]
    for row, col, ch in edits:
        if row < len(out) and col < len(out[row]):
            out[row][col] = ch
    mutated = ["".join(x) for x in out]
    r = icao.parse(mutated, TODAY)
    assert isinstance(r.to_dict(), dict)
    layout = icao.layout_for(lines)
    assert layout is not None
    covered = layout.covered()
    changed = [(row, col) for row, col in ((r_, c_) for r_ in range(len(lines))
                                           for c_ in range(len(lines[r_])))
               if mutated[row][col] != lines[row][col]]
    # One changed digit inside a covered span is always caught by its check digit.
    if len(changed) == 1 and changed[0] in covered:
        row, col = changed[0]
        if lines[row][col].isdigit() and mutated[row][col].isdigit():
            assert not r.valid


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["TD1", "TD2", "TD3", "MRVA", "MRVB"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ ", min_size=1, max_size=40).filter(str.strip),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ ", max_size=40),
    st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=9),
    st.dates(date(1920, 1, 1), date(2009, 12, 31)),
    st.dates(date(2010, 1, 2), date(2050, 12, 31)),
    st.sampled_from(["M", "F", "X", "<"]),
    st.sampled_from(sorted(ICAO_CODES)),
)
def test_fuzz_compose_parse_round_trip(
    mrz_type: str, surname: str, given_names: str, number: str, dob: date, exp: date, sex: str,
    state: str,
) -> None:
    code = {"TD3": "P<", "MRVA": "V<", "MRVB": "V<"}.get(mrz_type, "I<")
    lines = icao.compose(mrz_type, document_code=code, issuing_state=state, document_number=number,
                         surname=surname, given_names=given_names, nationality=state,
                         date_of_birth=dob, sex=sex, date_of_expiry=exp)
    r = icao.parse(lines, TODAY)
    if icao.mrz_text(surname).strip("<"):
        assert r.valid, (lines, r.problems)
        assert r.date_of_birth == dob.isoformat() and r.date_of_expiry == exp.isoformat()
        assert r.document_number == number and r.nationality == state
