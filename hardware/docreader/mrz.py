"""ICAO Doc 9303 machine readable zones: layouts, check digits, parsing, validation, composing.

The layouts are data (:data:`LAYOUTS`) because three parties need the same geometry: the
parser below, the reader's field-aware decoder (which must know where only digits may
stand and which characters a check digit covers) and the page renderer in ``sim``.

It lives with the reader interface, not with the lane, because the MRZ is the document's
own data format — every reader SDK hands it over — and so that the simulator can print
pages without importing the lane.

:func:`parse` never raises: whatever string it is given, it returns an :class:`MrzResult`
whose ``problems`` name what is wrong, so a garbled read is an outcome, not a crash.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hardware.docreader.countries import is_known

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<"
DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WEIGHTS = (7, 3, 1)
_VALID_LINE = re.compile(r"^[A-Z0-9<]*$")


def char_value(c: str) -> int:
    if "0" <= c <= "9":
        return ord(c) - 48
    if "A" <= c <= "Z":
        return ord(c) - 55
    if c == "<":
        return 0
    raise ValueError(f"not an MRZ character: {c!r}")


def check_digit(data: str) -> str:
    """The 7-3-1 check digit of ``data`` (``<`` counts 0). Raises on non-MRZ characters."""
    return str(sum(char_value(c) * _WEIGHTS[i % 3] for i, c in enumerate(data)) % 10)


# --- layouts -----------------------------------------------------------------------------

#: Character classes a position may hold; the reader decodes each position within its class.
KIND_CHARS = {
    "alpha": LETTERS + "<",  # document code, state codes
    "num": DIGITS,  # dates, check digits
    "numf": DIGITS + "<",  # check digit that may be a filler (empty optional data)
    # date of birth: digits, or fillers where it is unknown (Doc 9303 Part 3); an expiry
    # has no unknown form, so its field stays "num"
    "date": DIGITS + "<",
    "alnum": LETTERS + DIGITS + "<",  # document number, optional data
    "name": LETTERS + "<",
    "sex": "MFX<",
}


@dataclass(frozen=True)
class Span:
    line: int
    start: int
    end: int

    def take(self, lines: Sequence[str]) -> str:
        return lines[self.line][self.start : self.end]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    span: Span
    kind: str


@dataclass(frozen=True)
class CheckSpec:
    """A check digit at ``at`` over the concatenation of ``covers``."""

    name: str
    at: tuple[int, int]
    covers: tuple[Span, ...]
    filler_allowed: bool = False  # '<' is valid when every covered character is '<'


@dataclass(frozen=True)
class Layout:
    mrz_type: str
    lines: int
    length: int
    fields: tuple[FieldSpec, ...]
    checks: tuple[CheckSpec, ...]

    def kinds(self) -> list[list[str]]:
        """Per position, which character class may stand there."""
        grid = [["alnum"] * self.length for _ in range(self.lines)]
        for f in self.fields:
            for i in range(f.span.start, f.span.end):
                grid[f.span.line][i] = f.kind
        for c in self.checks:
            grid[c.at[0]][c.at[1]] = "numf" if c.filler_allowed else "num"
        return grid

    def covered(self) -> set[tuple[int, int]]:
        """Positions some check digit protects (where correction may act)."""
        out: set[tuple[int, int]] = set()
        for c in self.checks:
            out.add(c.at)
            for s in c.covers:
                out.update((s.line, i) for i in range(s.start, s.end))
        return out


def _f(name: str, line: int, start: int, end: int, kind: str) -> FieldSpec:
    return FieldSpec(name, Span(line, start, end), kind)


def _two_line(mrz_type: str, length: int, composite: bool, optional_check: bool) -> Layout:
    opt_end = {"TD3": 42, "MRVA": 44, "TD2": 35, "MRVB": 36}[mrz_type]
    fields = [
        _f("document_code", 0, 0, 2, "alpha"),
        _f("issuing_state", 0, 2, 5, "alpha"),
        _f("name", 0, 5, length, "name"),
        _f("document_number", 1, 0, 9, "alnum"),
        _f("nationality", 1, 10, 13, "alpha"),
        _f("date_of_birth", 1, 13, 19, "date"),
        _f("sex", 1, 20, 21, "sex"),
        _f("date_of_expiry", 1, 21, 27, "num"),
        _f("optional_data", 1, 28, opt_end, "alnum"),
    ]
    long_numbers = mrz_type in ("TD2", "MRVB")  # '<' at the check: number continues later
    checks = [
        CheckSpec("document_number", (1, 9), (Span(1, 0, 9),), long_numbers),
        CheckSpec("date_of_birth", (1, 19), (Span(1, 13, 19),), True),
        CheckSpec("date_of_expiry", (1, 27), (Span(1, 21, 27),)),
    ]
    if optional_check:
        checks.append(CheckSpec("optional_data", (1, 42), (Span(1, 28, 42),), True))
    if composite:
        checks.append(
            CheckSpec(
                "composite",
                (1, length - 1),
                (Span(1, 0, 10), Span(1, 13, 20), Span(1, 21, length - 1)),
            )
        )
    return Layout(mrz_type, 2, length, tuple(fields), tuple(checks))


TD1 = Layout(
    "TD1",
    3,
    30,
    (
        _f("document_code", 0, 0, 2, "alpha"),
        _f("issuing_state", 0, 2, 5, "alpha"),
        _f("document_number", 0, 5, 14, "alnum"),
        _f("optional_data", 0, 15, 30, "alnum"),
        _f("date_of_birth", 1, 0, 6, "date"),
        _f("sex", 1, 7, 8, "sex"),
        _f("date_of_expiry", 1, 8, 14, "num"),
        _f("nationality", 1, 15, 18, "alpha"),
        _f("optional_data_2", 1, 18, 29, "alnum"),
        _f("name", 2, 0, 30, "name"),
    ),
    (
        CheckSpec("document_number", (0, 14), (Span(0, 5, 14),), True),
        CheckSpec("date_of_birth", (1, 6), (Span(1, 0, 6),), True),
        CheckSpec("date_of_expiry", (1, 14), (Span(1, 8, 14),)),
        CheckSpec(
            "composite",
            (1, 29),
            (Span(0, 5, 30), Span(1, 0, 7), Span(1, 8, 15), Span(1, 18, 29)),
        ),
    ),
)
TD2 = _two_line("TD2", 36, composite=True, optional_check=False)
TD3 = _two_line("TD3", 44, composite=True, optional_check=True)
MRVA = _two_line("MRVA", 44, composite=False, optional_check=False)
MRVB = _two_line("MRVB", 36, composite=False, optional_check=False)

LAYOUTS: dict[str, Layout] = {x.mrz_type: x for x in (TD1, TD2, TD3, MRVA, MRVB)}
#: The first character of the document code each layout allows: Doc 9303 Part 4 (TD3: P,
#: passports), Parts 5 and 6 (TD1, TD2: A, C or I, official travel documents other than
#: passports; a P there is refused) and Part 7 (visas: V).
FIRST_LETTERS: dict[str, frozenset[str]] = {
    "TD3": frozenset("P"), "TD1": frozenset("ACI"), "TD2": frozenset("ACI"),
    "MRVA": frozenset("V"), "MRVB": frozenset("V"),
}
#: (lines, length) -> layouts of that shape, the visa first only when the code says 'V'.
SHAPES: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 30): ("TD1",),
    (2, 36): ("TD2", "MRVB"),
    (2, 44): ("TD3", "MRVA"),
}


def layout_for(lines: Sequence[str]) -> Layout | None:
    """Which layout a set of lines has: by shape, then ``V`` in the code for visas."""
    shape = (len(lines), len(lines[0]) if lines else 0)
    names = SHAPES.get(shape)
    if names is None or any(len(x) != shape[1] for x in lines):
        return None
    if len(names) == 1:
        return LAYOUTS[names[0]]
    visa = lines[0][:1] == "V"
    return LAYOUTS[names[1] if visa else names[0]]


# --- result ------------------------------------------------------------------------------


@dataclass
class MrzResult:
    """A parsed and validated MRZ. ``problems`` holds reason codes; empty means valid."""

    lines: tuple[str, ...]
    mrz_type: str | None = None
    document_code: str = ""
    document_type: str = ""
    issuing_state: str = ""
    document_number: str = ""
    surname: str = ""
    given_names: str = ""
    name_truncated: bool = False
    nationality: str = ""
    date_of_birth: str | None = None
    date_of_expiry: str | None = None
    sex: str = ""
    optional_data: str = ""
    optional_data_2: str = ""
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Codes for the officer that do not make the MRZ invalid (a known national variant)
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.mrz_type is not None and not self.problems

    @property
    def checks_pass(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "mrz_type": self.mrz_type,
            "document_code": self.document_code,
            "document_type": self.document_type,
            "issuing_state": self.issuing_state,
            "document_number": self.document_number,
            "surname": self.surname,
            "given_names": self.given_names,
            "name_truncated": self.name_truncated,
            "nationality": self.nationality,
            "date_of_birth": self.date_of_birth,
            "date_of_expiry": self.date_of_expiry,
            "sex": self.sex,
            "optional_data": self.optional_data,
            "optional_data_2": self.optional_data_2,
            "checks": dict(self.checks),
            "valid": self.valid,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "lines": list(self.lines),
        }


def _strip(s: str) -> str:
    return s.replace("<", " ").strip().replace(" ", "<") if s else ""


def _clean(s: str) -> str:
    """Fillers to spaces, collapsed: for values that are words (optional data)."""
    return " ".join(s.replace("<", " ").split())


def split_name(field_text: str) -> tuple[str, str, bool]:
    """Surname, given names (space separated) and whether the field looks truncated.

    Doc 9303: primary and secondary identifiers are separated by ``<<``; a name that did not
    fit fills the field to its last character, so a full field means "maybe truncated".
    """
    truncated = bool(field_text) and field_text[-1] != "<"
    primary, sep, secondary = field_text.partition("<<")
    surname = " ".join(x for x in primary.split("<") if x)
    given = " ".join(x for x in secondary.split("<") if x) if sep else ""
    return surname, given, truncated


#: A date of birth unknown in whole or in part (Doc 9303 Part 3): the unknown positions are
#: fillers — ``<<<<<<``, ``YY<<<<`` (month and day unknown), ``YYMM<<`` (day unknown).
_UNKNOWN_BIRTH = re.compile(r"<{6}|\d\d<{4}|\d\d(?:0[1-9]|1[0-2])<<")


def _parse_date(text: str, kind: str, today: date) -> tuple[str | None, str | None]:
    """ISO date or None, plus a problem code. Century inferred around ``today``.

    A date of birth written with fillers where it is unknown (:data:`_UNKNOWN_BIRTH`) is no
    problem: None without a code, for the eligibility policy to judge. An expiry has no
    unknown form in Doc 9303 (Parts 4 to 7 make it mandatory): fillers there are
    ``UNKNOWN``, a problem like any other.
    """
    if not re.fullmatch(r"\d{6}", text):
        if kind == "birth" and _UNKNOWN_BIRTH.fullmatch(text):
            return None, None
        return None, "UNKNOWN" if set(text) <= {"<"} else "INVALID"
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:6])
    if kind == "birth":
        year = 2000 + yy if 2000 + yy <= today.year else 1900 + yy
    else:
        year = 2000 + yy if 2000 + yy <= today.year + 50 else 1900 + yy
    try:
        d = date(year, mm, dd)
    except ValueError:
        return None, "INVALID"
    if kind == "birth" and d > today:
        try:
            d = date(year - 100, mm, dd)
        except ValueError:
            return None, "INVALID"
    return d.isoformat(), None


def _check_value(lines: Sequence[str], spec: CheckSpec) -> bool:
    digit = lines[spec.at[0]][spec.at[1]]
    data = "".join(s.take(lines) for s in spec.covers)
    if digit == "<":
        return spec.filler_allowed and set(data) <= {"<"}
    return digit == check_digit(data)


def _long_document_number(lines: Sequence[str], layout: Layout) -> tuple[str, str, str, bool]:
    """(number, rest of optional data, check digit char, is_long) for TD1/TD2/MRV-B.

    Doc 9303 Parts 5/6: when the number exceeds 9 characters, its check digit position
    holds ``<`` and the number continues in the optional data, its last character before
    the first filler being the check digit.
    """
    numf = next(f for f in layout.fields if f.name == "document_number")
    optf = next(f for f in layout.fields if f.name == "optional_data")
    chk = next(c for c in layout.checks if c.name == "document_number")
    head = numf.span.take(lines)
    opt = optf.span.take(lines)
    digit = lines[chk.at[0]][chk.at[1]]
    if layout.mrz_type in ("TD1", "TD2", "MRVB") and digit == "<" and opt[:1] not in ("", "<"):
        ext, _, rest = opt.partition("<")
        if len(ext) >= 2:
            return head + ext[:-1], rest, ext[-1], True
    return head, opt, digit, False


#: Issuing states whose older TD1 identity cards compute a long document number's check
#: digit over the number *and* the filler at position 15 (against Doc 9303 Part 5): older
#: Belgian cards and some Portuguese ones. Only theirs are read under that rule.
LONG_NUMBER_VARIANT_STATES = frozenset({"BEL", "PRT"})
#: The warning such a card's MRZ carries: valid, with the officer told why it was read so.
DOCUMENT_NUMBER_CHECK_VARIANT = "DOCUMENT_NUMBER_CHECK_VARIANT"


def _variant_number_check(layout: Layout, state: str, number: str, digit: str) -> bool:
    """Whether a TD1 long number's check digit holds under the BEL/PRT rule (the filler at
    position 15 counted in), for an issuing state in :data:`LONG_NUMBER_VARIANT_STATES`."""
    return (layout.mrz_type == "TD1" and state in LONG_NUMBER_VARIANT_STATES
            and digit in DIGITS and digit == check_digit(number[:9] + "<" + number[9:]))


def parse(mrz: str | Sequence[str], today: date | None = None) -> MrzResult:
    """Parse and validate an MRZ given as lines (or one string with newlines). Never raises."""
    try:
        return _parse(mrz, today or date.today())
    except Exception:  # a bug here must not bring the lane down: name it instead
        lines = tuple(mrz.splitlines() if isinstance(mrz, str) else (str(x) for x in mrz))
        return MrzResult(lines=lines, problems=["MRZ_PARSE_ERROR"])


def _parse(mrz: str | Sequence[str], today: date) -> MrzResult:
    if isinstance(mrz, str):
        raw = [x.strip() for x in mrz.strip().splitlines()]
    else:
        raw = [str(x).strip() for x in mrz]
    lines = tuple(x.upper().replace(" ", "") for x in raw if x.strip())
    res = MrzResult(lines=lines)
    if not lines or not all(_VALID_LINE.fullmatch(x) for x in lines):
        res.problems.append("MRZ_BAD_CHARACTERS" if lines else "MRZ_EMPTY")
        return res
    layout = layout_for(lines)
    if layout is None:
        res.problems.append("MRZ_FORMAT_UNKNOWN")
        return res
    res.mrz_type = layout.mrz_type
    get = {f.name: f.span.take(lines) for f in layout.fields}
    problems = res.problems

    res.document_code = get["document_code"]
    res.document_type = _strip(res.document_code)
    if res.document_code[:1] not in FIRST_LETTERS[layout.mrz_type]:
        problems.append("DOCUMENT_TYPE_INVALID")

    res.issuing_state = _strip(get["issuing_state"])
    if not is_known(res.issuing_state):
        problems.append("ISSUING_STATE_UNKNOWN")
    res.nationality = _strip(get["nationality"])
    if not is_known(res.nationality):
        problems.append("NATIONALITY_UNKNOWN")

    res.surname, res.given_names, res.name_truncated = split_name(get["name"])
    if not res.surname or not re.fullmatch(r"[A-Z<]+", get["name"]):
        problems.append("NAME_INVALID")

    res.sex = get["sex"]
    if res.sex not in ("M", "F", "X", "<"):
        problems.append("SEX_INVALID")

    res.date_of_birth, p = _parse_date(get["date_of_birth"], "birth", today)
    if p:  # fillers are no problem in a date of birth: only a date that is not one
        problems.append("DATE_OF_BIRTH_INVALID")
    res.date_of_expiry, p = _parse_date(get["date_of_expiry"], "expiry", today)
    if p:
        problems.append(f"DATE_OF_EXPIRY_{p}")

    number, opt_rest, num_digit, is_long = _long_document_number(lines, layout)
    res.document_number = _strip(number)
    if not res.document_number or "<" in res.document_number:
        problems.append("DOCUMENT_NUMBER_INVALID")
    res.optional_data = _clean(opt_rest)
    res.optional_data_2 = _clean(get.get("optional_data_2", ""))

    for spec in layout.checks:
        if spec.name == "document_number" and is_long:
            ok = num_digit in DIGITS and num_digit == check_digit(number)
            if not ok and _variant_number_check(layout, res.issuing_state, number, num_digit):
                ok = True  # the composite, over the characters as printed, still holds it
                res.warnings.append(DOCUMENT_NUMBER_CHECK_VARIANT)
        else:
            ok = _check_value(lines, spec)
        res.checks[spec.name] = ok
        if not ok:
            problems.append(f"CHECK_{spec.name.upper()}")
    return res


# --- composing (for the simulator and tests) ---------------------------------------------

_TRANSLIT = {"Ä": "AE", "Ö": "OE", "Ü": "UE", "ß": "SS", "Å": "AA", "Ø": "OE", "Æ": "AE"}


def mrz_text(s: str) -> str:
    """Free text to MRZ characters: upper case, spaces and hyphens to fillers."""
    out = []
    for c in s.upper():
        c = _TRANSLIT.get(c, c)
        out.append("<" if c in " -," else c if all(x in ALPHABET for x in c) else "")
    return "".join(out)


def _fit(s: str, n: int) -> str:
    return (s + "<" * n)[:n]


def name_field(surname: str, given_names: str, length: int) -> str:
    """The name field, truncated as Doc 9303 does (cut, never ending on a filler)."""
    text = mrz_text(surname) + "<<" + mrz_text(given_names)
    if len(text) > length:
        text = text[:length]
        while text.endswith("<"):
            text = text[:-1]
        text = text[:length]
    return _fit(text, length)


def compose(
    mrz_type: str,
    *,
    document_code: str,
    issuing_state: str,
    document_number: str,
    surname: str,
    given_names: str,
    nationality: str,
    date_of_birth: date | str,
    sex: str,
    date_of_expiry: date | str,
    optional_data: str = "",
    optional_data_2: str = "",
) -> tuple[str, ...]:
    """MRZ lines for the given data, with every check digit correct."""
    layout = LAYOUTS[mrz_type]
    n = layout.length

    def ymd(d: date | str) -> str:
        return d.strftime("%y%m%d") if isinstance(d, date) else _fit(d, 6)

    code = _fit(document_code, 2)
    state = _fit(issuing_state, 3)
    nat = _fit(nationality, 3)
    dob, exp = ymd(date_of_birth), ymd(date_of_expiry)
    opt = mrz_text(optional_data)
    number = mrz_text(document_number)
    if mrz_type == "TD1":
        if len(number) > 9:
            head, ext = number[:9], number[9:] + check_digit(number) + "<" + opt
            l1 = code + state + head + "<" + _fit(ext, 15)
        else:
            num = _fit(number, 9)
            l1 = code + state + num + check_digit(num) + _fit(opt, 15)
        l2 = dob + check_digit(dob) + sex + exp + check_digit(exp) + nat
        l2 += _fit(mrz_text(optional_data_2), 11)
        l2 += check_digit(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29])
        l3 = name_field(surname, given_names, 30)
        return (l1, l2, l3)
    l1 = code + state + name_field(surname, given_names, n - 5)
    opt_len = {"TD3": 14, "MRVA": 16, "TD2": 7, "MRVB": 8}[mrz_type]
    if len(number) > 9 and mrz_type in ("TD2", "MRVB"):
        num_part = number[:9] + "<"
        opt = number[9:] + check_digit(number) + "<" + opt
    else:
        num9 = _fit(number, 9)
        num_part = num9 + check_digit(num9)
    l2 = num_part + nat + dob + check_digit(dob) + sex + exp + check_digit(exp)
    optf = _fit(opt, opt_len)
    l2 += optf
    if mrz_type == "TD3":
        l2 += "<" if set(optf) == {"<"} else check_digit(optf)
    if mrz_type in ("TD3", "TD2"):
        l2 += check_digit(l2[0:10] + l2[13:20] + l2[21:])
    return (l1, l2)
