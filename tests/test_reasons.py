"""The reason registry (gate/reasons.py) against the code, the scenarios and the docs.

The source of gate/ and hardware/ is *read*, not run: a reason code is found where the
product emits one — ``reasons.append("X")``, ``problems.append("X")``, ``reasons=("X",)``,
``self._mark(Outcome.Y, event, "X")``, ``Cause(OVERLAY, "X")``, ``DeviceHealth.bad("X")``,
``PortraitCut(..., "X")``, a local ``reason = "X"``, a module constant ``X = "X"``, the named
reason sets (``RETRY_REASONS``, ``UNTRUSTED``, ``UNREADABLE``) — while log event names
(lower case) and log-only ``reason=`` keywords of log calls are not. Codes built at run time
(``f"TIMEOUT_IN_{state}"``, ``f"CHECK_{name}"``, a trigger's name upper-cased, a board flag's
name) are expanded from the code itself. Nothing here loads a model or starts a process.
"""

from __future__ import annotations

import functools
import inspect
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

import gate.lane as lane
from gate.lane import guards
from gate.reasons import FAMILIES, REASONS, RELEASE_REFUSALS, STAGES, describe, known, lookup
from hardware.docreader import mrz as icao

ROOT = Path(__file__).resolve().parents[1]
SCANNED = (ROOT / "gate", ROOT / "hardware")
#: The officers' review app has codes of its own (case states, HTTP errors, audit actions):
#: they are not lane reasons. The registry itself is no emitter.
NOT_SCANNED = (ROOT / "gate" / "review", ROOT / "gate" / "reasons.py")
SCENARIOS = ROOT / "gate" / "scenarios"
DOCS = (ROOT / "docs" / "document.md", ROOT / "docs" / "face.md", ROOT / "docs" / "lane.md")

CODE = r"[A-Z][A-Z0-9_]{2,}(?::[A-Za-z][A-Za-z0-9_]*)?"
_LITERAL = re.compile(rf'(?<![\w"])"({CODE})"')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
#: A line that emits reason codes: every upper-case literal on it is one.
_EMITS = re.compile("|".join((
    r"\b(?:reasons|problems|failures)\s*\.\s*(?:append|insert|extend)\(",
    r"\b(?:reasons|problems)\s*\[\s*\"",  # Counter: reasons["MRZ_NOT_FOUND"] += 1
    r"\b(?:reasons|problems)\s*=\s*[\[(]",  # reasons=("X",), problems=["X"]
    r"\"reasons\"\s*:\s*\[",  # the JSON answer of a command
    r"\breturn\s+\[\s*\"",  # policy.judge: return ["MRZ_INVALID"]
    r"\.\s*_?mark\(",  # self._mark(Outcome.X, event, "Y"), passage.mark(Outcome.X, "Y")
    r"\bCause\(",  # why the lane stops serving travellers (gate.lane.guards)
    r"\bDeviceHealth\.bad\(",
    r"\bPortraitCut\(",
    r"^\s*reason\s*(?::[^=]*)?\s=\s",  # a local: reason = "A" if ... else "B"
    r"\b_fire\(.*\breason=",  # the reason a trigger closes the passage with
)))
#: In gate/document/ a frame check answers with its code: return None, "IMAGE_EMPTY".
_RETURNS_CODE = re.compile(rf'^\s*return\s+(?:None,\s*)?"({CODE})"')
_SELF_NAMED = re.compile(r'^([A-Z][A-Z0-9_]{2,})\s*(?::\s*str\s*)?=\s*"\1"', re.M)
_CONSTANT = re.compile(rf'^([A-Z][A-Z0-9_]*)\s*(?::\s*str\s*)?=\s*"({CODE})"', re.M)
_REASON_SET = re.compile(
    r"^(?:\w*REASONS|UNTRUSTED|UNREADABLE)\s*(?::[^=]*)?=\s*(?:frozenset\()?\{(.*?)\}",
    re.M | re.S)
_FSTRING_PREFIX = re.compile(r'\bf"([A-Z][A-Z0-9_]*[_:])\{')
_FSTRING_SUFFIX = re.compile(r'\bf"\{[^}"]*\}(_[A-Z][A-Z0-9_]*:?)')


def _code_part(line: str) -> str:
    """``line`` without its comment (a ``#`` inside a string literal is no comment)."""
    masked = _STRING.sub(lambda m: "_" * len(m.group(0)), line)
    cut = masked.find("#")
    return line if cut < 0 else line[:cut]


def source_files(roots: Iterable[Path] = SCANNED,
                 excluded: Iterable[Path] = NOT_SCANNED) -> list[Path]:
    skip = tuple(excluded)
    return sorted(p for root in roots for p in root.rglob("*.py")
                  if not any(p == s or s in p.parents for s in skip))


def scan(files: Iterable[Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(code -> where, fixed part of an f-string-built code -> where) over ``files``."""
    texts = {p: p.read_text(encoding="utf-8") for p in files}
    constants = {name: value for text in texts.values()
                 for name, value in _CONSTANT.findall(text)}
    codes: dict[str, set[str]] = {}
    built: dict[str, set[str]] = {}

    def found(into: dict[str, set[str]], code: str, where: str) -> None:
        into.setdefault(code, set()).add(where)

    for path, text in texts.items():
        name = path.relative_to(ROOT).as_posix() if ROOT in path.parents else path.name
        document_stage = "gate/document/" in name
        for code in _SELF_NAMED.findall(text):
            found(codes, code, name)
        for body in _REASON_SET.findall(text):
            for code in _LITERAL.findall(body):
                found(codes, code, name)
        for number, full_line in enumerate(text.splitlines(), 1):
            where = f"{name}:{number}"
            line = _code_part(full_line)
            if document_stage and (m := _RETURNS_CODE.match(line)):
                found(codes, m.group(1), where)
            if not _EMITS.search(line):
                continue
            for code in _LITERAL.findall(line):
                found(codes, code, where)
            for ident in re.findall(r"(?<![.\w])([A-Z][A-Z0-9_]{2,})\b", _STRING.sub("", line)):
                if ident in constants:  # reasons.append(CAMERA_FAILED)
                    found(codes, constants[ident], where)
            for fixed in (*_FSTRING_PREFIX.findall(line), *_FSTRING_SUFFIX.findall(line)):
                found(built, fixed, where)
    return codes, built


def _lane_source() -> str:
    """The lane's source, all of its modules (controller, guards, machine, records, doors)."""
    return "\n".join(path.read_text(encoding="utf-8")
                     for path in sorted((ROOT / "gate" / "lane").glob("*.py")))


def _function(source: str, name: str) -> str:
    m = re.search(rf"\n(\s*)def {name}\(.*?(?=\n\1def |\n\S|\Z)", source, re.S)
    assert m is not None, f"gate/lane/ has no {name}()"
    return m.group(0)


def expansions() -> dict[str, set[str]]:
    """What each fixed part of an f-string-built code stands for, from the code itself."""
    date_problems = set(re.findall(r'"([A-Z]+)"', inspect.getsource(icao._parse_date)))
    service = (ROOT / "gate" / "service.py").read_text(encoding="utf-8")
    devices = re.findall(r'"(\w+)":\s*lambda:\s*\w+\.health', service)
    assert devices, "gate/service.py: the lane's device probes were not found"
    return {
        "CHECK_": {f"CHECK_{spec.name.upper()}" for layout in icao.LAYOUTS.values()
                   for spec in layout.checks},
        "DATE_OF_BIRTH_": {f"DATE_OF_BIRTH_{p}" for p in date_problems},
        "DATE_OF_EXPIRY_": {f"DATE_OF_EXPIRY_{p}" for p in date_problems},
        # families, one per stage: DOCUMENT_STAGE_ERROR:<Exception>, ...
        "_STAGE_ERROR:": {f"{s.error_prefix}_STAGE_ERROR:" for s in lane.STAGES.values()},
        # the lane's cause for a device unhealthy without a reason: f"{name.upper()}_FAILED"
        "_FAILED": {f"{name.upper()}_FAILED" for name in devices},
    }


def lane_built_codes() -> dict[str, str]:
    """Codes gate/lane.py makes from names rather than literals: code -> how."""
    source = _lane_source()
    out: dict[str, str] = {}
    # a passage that ends anywhere but idle or emergency gets the trigger's reason, else
    # the trigger's own name, upper-cased
    assert re.search(r'get\("reason"\) or trigger\)\.upper\(\)', source), \
        "Lane._close_passage no longer names the trigger: update this test"
    with_reason = set(re.findall(r'_fire\("(\w+)",[^)\n]*\breason=', source))
    for t in lane.TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        dest = t["dest"]
        if (dest is None or dest in lane.PASSAGE_STATES or dest in (lane.IDLE, lane.EMERGENCY)
                or t["trigger"] in with_reason
                or not any(s in lane.PASSAGE_STATES for s in sources)):
            continue
        out[t["trigger"].upper()] = f"trigger {t['trigger']} ends a passage in {dest}"
    # board conditions that stop the lane: Cause(OUT_OF_SERVICE, condition.value)
    assert re.search(r"for condition in OUT_OF_SERVICE_CONDITIONS:\s*\n\s*if board\.has\("
                     r"condition\):\s*\n\s*return Cause\(OUT_OF_SERVICE, condition\.value\)",
                     source), "guards.blocking_cause: the board conditions were not found"
    for condition in guards.OUT_OF_SERVICE_CONDITIONS:
        out[condition.value] = "board condition in gate.lane.guards.blocking_cause"
    return out


def emitted() -> tuple[dict[str, set[str]], list[str]]:
    """Every code the product emits (code -> where) and the problems found on the way."""
    codes, built = scan(source_files())
    problems: list[str] = []
    expand = expansions()
    for fixed, where in sorted(built.items()):
        if fixed in expand:
            for code in expand[fixed]:
                codes.setdefault(code, set()).update(where)
        elif fixed in REASONS and REASONS[fixed].family:
            codes.setdefault(fixed, set()).update(where)
        else:
            problems.append(f"{fixed}… built at {sorted(where)}: register the family "
                            "(family=True) or teach tests/test_reasons.py its expansion")
    for code, how in lane_built_codes().items():
        codes.setdefault(code, set()).add(how)
    return codes, problems


# ------------------------------------------------------------------ the registry itself


def test_registry_is_well_formed() -> None:
    for code, reason in REASONS.items():
        assert reason.code == code
        assert reason.stage in STAGES
        assert reason.meaning and "\n" not in reason.meaning and len(reason.meaning) <= 100
        if reason.family:
            assert code.endswith(("_", ":")), f"family {code} must end with _ or :"
        else:
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", code), code
    assert set(FAMILIES) == {c for c, r in REASONS.items() if r.family}


def test_known_and_describe() -> None:
    assert known("EXPIRED") and known("PASSED") and known("CAMERA_UNAVAILABLE")
    assert known("TIMEOUT_IN_REJECTED") and known("RELEASE_REFUSED:TAILGATING")
    assert known("DOCUMENT_STAGE_ERROR:ValueError") and known("FAULT:RUNTIMEERROR")
    assert not known("TIMEOUT_IN_")  # a bare prefix is no code
    assert not known("NO_SUCH_REASON") and not known("expired")
    assert lookup("LEFT_BACKWARDS_FROM_RELEASING") is REASONS["LEFT_BACKWARDS_FROM_"]
    assert describe("EXPIRED") == REASONS["EXPIRED"].meaning
    assert describe("TIMEOUT_IN_CLOSING_EXIT").endswith(": closing_exit")
    assert describe("RELEASE_REFUSED:ZONE_NOT_ONE").endswith(RELEASE_REFUSALS["ZONE_NOT_ONE"])
    assert describe("VERIFY_STAGE_ERROR:KeyError").endswith(": KeyError")
    assert describe("NO_SUCH_REASON") == "unregistered reason code"


# ------------------------------------------------------------------ (1) the scenarios


def scenario_problems(folder: Path) -> list[str]:
    problems: list[str] = []
    files = sorted(folder.glob("*.toml"))
    assert files, f"no scenarios in {folder}"
    for path in files:
        expect = tomllib.loads(path.read_text(encoding="utf-8")).get("expect", {})
        outcomes = [expect["outcome"], *expect.get("later_outcomes", [])] \
            if "outcome" in expect else list(expect.get("later_outcomes", []))
        for outcome in outcomes:
            reason = REASONS.get(outcome)
            if reason is None or reason.stage != "outcome":
                problems.append(f"{path.name}: outcome {outcome} is no registered outcome")
        for key in ("reasons", "any_reason"):
            problems += [f"{path.name}: {key} {code} is not registered"
                         for code in expect.get(key, []) if not known(code)]
    return problems


def test_scenario_codes_are_registered() -> None:
    assert scenario_problems(SCENARIOS) == []


def test_scenario_check_catches_an_unknown_code(tmp_path: Path) -> None:
    for path in SCENARIOS.glob("*.toml"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    genuine = tmp_path / "genuine.toml"
    genuine.write_text(genuine.read_text(encoding="utf-8") + 'any_reason = ["NOT_A_REASON"]\n',
                       encoding="utf-8")
    (tmp_path / "new.toml").write_text('[expect]\noutcome = "SCORE_BELOW_THRESHOLD"\n'
                                       'reasons = ["TIMEOUT_IN_"]\n', encoding="utf-8")
    assert scenario_problems(tmp_path) == [
        "genuine.toml: any_reason NOT_A_REASON is not registered",
        "new.toml: outcome SCORE_BELOW_THRESHOLD is no registered outcome",
        "new.toml: reasons TIMEOUT_IN_ is not registered",
    ]


# ------------------------------------------------------------------ (2), (3) the code


def test_every_emitted_code_is_registered() -> None:
    codes, problems = emitted()
    missing = {code: sorted(where) for code, where in codes.items() if code not in REASONS}
    assert problems == []
    assert missing == {}, "reason codes emitted but not in gate/reasons.py"
    for fixed in expansions()["_STAGE_ERROR:"]:
        assert REASONS[fixed].family, f"{fixed} must be a family"


def test_no_stale_registry_entries() -> None:
    codes, _ = emitted()
    outcomes = {o.value for o in lane.Outcome}
    stale = sorted(set(REASONS) - set(codes) - outcomes)
    assert stale == [], "registered but emitted nowhere in gate/ or hardware/"


def test_release_refusals_match_the_safety_guard() -> None:
    source = _lane_source()
    returned = set(re.findall(rf'return "({CODE})"', _function(source, "release_refusal")))
    fallback = set(re.findall(rf'else "({CODE})"', _function(source, "mark_release_refused")))
    assert returned and fallback
    assert set(RELEASE_REFUSALS) == returned | fallback


def test_scanner_finds_what_it_should_and_nothing_else(tmp_path: Path) -> None:
    module = tmp_path / "emitter.py"
    module.write_text('\n'.join((
        'NEW_GUIDANCE = "NEW_GUIDANCE"',
        'OTHER_NAME = "RENAMED_CODE"',
        'IDLE = "idle"',
        'IN_A_COMMENT = "COMMENTED_CODE"',
        'class Colour(enum.StrEnum):',
        '    RED = "RED"',  # an enum member is no reason
        'def f(reasons, problems, log, x):',
        '    reason: str = ""  # a reason code, e.g. IN_A_COMMENT or "QUOTED_IN_A_COMMENT"',
        '    log.info("lane.event_name", reason="LOG_ONLY")',  # a log keyword is no reason
        '    if state == "NOT_EMITTED":',
        '        reasons.append("APPENDED_CODE")',
        '    problems.append(f"BUILT_{x}")',
        '    reasons.append(OTHER_NAME)',
        '    reason = "CHOSEN_CODE" if x else "OTHER_CODE"',
        '    self._mark(Outcome.TIMEOUT, event, "MARKED_CODE")',
        '    return Cause(OUT_OF_SERVICE, "CAUSE_CODE")',
        '    return DeviceHealth.bad("HEALTH_CODE", "some detail")',
        '    return DocumentOutcome(accepted=False, reasons=("OUTCOME_CODE",))',
        '    counts["NOT_A_REASON_EITHER"] += 1',
    )) + "\n", encoding="utf-8")
    codes, built = scan([module])
    assert sorted(codes) == ["APPENDED_CODE", "CAUSE_CODE", "CHOSEN_CODE", "HEALTH_CODE",
                             "MARKED_CODE", "NEW_GUIDANCE", "OTHER_CODE", "OUTCOME_CODE",
                             "RENAMED_CODE"]
    assert sorted(built) == ["BUILT_"]


# ------------------------------------------------------------------ (4) the outcomes


def test_every_outcome_is_registered_as_one() -> None:
    outcomes = {o.value for o in lane.Outcome}
    registered = {c for c, r in REASONS.items() if r.stage == "outcome"}
    assert registered == outcomes


# ------------------------------------------------------------------ (5) the docs

#: Backticked upper-case words in those docs that are no reason codes and no constant of
#: ours (those are found by :func:`product_constants`).
DOC_NOT_REASONS = frozenset({
    "DEFAULT", "EXHAUSTIVE", "HEURISTIC",  # onnxruntime's cuDNN search modes
    "ON_UPS",  # a board flag; its cause is MAINS_LOST
    "O_NONBLOCK", "OPENCV_IO_MAX_IMAGE_PIXELS", "IHDR",  # hardware.images: flag, env, chunk
})
_BINDING = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=\n]+)?=(.*)$", re.MULTILINE)


@functools.cache
def product_constants() -> frozenset[str]:
    """Upper-case names the product's modules bind at module level (``STATE_TABLE = ...``,
    ``OFIQ_TERMS: dict[...] = ...``): a doc naming one names a constant, not a code."""
    names: set[str] = set()
    for package in ("gate", "hardware", "models", "sim"):
        for module in (ROOT / package).rglob("*.py"):
            for name, value in _BINDING.findall(module.read_text(encoding="utf-8")):
                if value.strip() != f'"{name}"':  # CODE = "CODE" binds a code: checked
                    names.add(name)
    return frozenset(names)


_DOC_CODE = re.compile(r"`([A-Z][A-Z0-9_]*(?::[A-Za-z0-9_]*)?)(…|\.\.\.)?`")


def doc_problems(path: Path) -> list[str]:
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for code, ellipsis in _DOC_CODE.findall(line):
            if code in DOC_NOT_REASONS or len(code) < 4:
                continue
            if not ellipsis and not known(code) and code in product_constants():
                continue
            if ellipsis or code.endswith(("_", ":")):
                ok = code in REASONS and REASONS[code].family
            else:
                ok = known(code)
            if not ok:
                problems.append(f"{path.name}:{number}: {code}{ellipsis} is not registered")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_codes_in_the_docs_are_registered(doc: Path) -> None:
    assert doc_problems(doc) == []


def test_doc_check_catches_an_unknown_code(tmp_path: Path) -> None:
    doc = tmp_path / "document.md"
    doc.write_text((ROOT / "docs" / "document.md").read_text(encoding="utf-8")
                   + "\n| `MRZ_SMUDGED` | made up |\n| `NO_SUCH_STAGE_ERROR:…` | too |\n",
                   encoding="utf-8")
    assert [p.split(": ", 1)[1] for p in doc_problems(doc)] == [
        "MRZ_SMUDGED is not registered", "NO_SUCH_STAGE_ERROR:… is not registered"]
