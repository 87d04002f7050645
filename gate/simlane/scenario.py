"""Scenarios of the simulated lane, as data files (``gate/scenarios/*.toml``).

A scenario says who walks up to the lane (an identity from :mod:`sim.people`, the document
they hold and what is wrong with it, what the lane camera sees of them, how they move
through the doors), what happens to the lane meanwhile (a fault plan in the words of
:mod:`sim.faults`, each step timed from a lane state rather than from power-on, because
"the cable is pulled while the face is captured" is what a maintainer means), and how the
passage must end. Files are checked strictly: a misspelt key is an error, never a silently
different scenario. Example::

    name = "genuine"
    description = "A traveller with a valid passport whose face matches it passes."

    [traveller]
    person = "astronaut"      # sim.people id
    document = "TD3"          # TD3 | TD2 | TD1
    camera = "approach"       # sim.camera scene

    [[fault]]                 # optional; any sim.faults action
    when = "capturing_face"   # lane state that starts this step's clock ("start": document)
    at_s = 0.2
    action = "unplug"

    [expect]
    outcome = "PASSED"
    visits = ["releasing"]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from gate.config import Timeouts
from gate.lane import STATES, Outcome
from sim.faults import FaultPlanError, FaultStep
from sim.traveller import KINDS

DEFECTS = ("", "bad_check", "expired", "minor", "unknown_state", "stolen")
MRZ_TYPES = ("TD3", "TD2", "TD1")
#: Fault steps start their clock at the document being placed ("start") or at a lane state.
WHEN = ("start", *STATES)


class ScenarioError(ValueError):
    """A scenario file that cannot be run as written; the message says where."""


def _conditions() -> tuple[str, ...]:
    """Every capture degradation of sim.documents, plus pages no reader can use."""
    from sim.documents import PAGE_CONDITIONS

    return tuple(PAGE_CONDITIONS)


def _scenes() -> tuple[str, ...]:
    from sim.camera import SCENES

    return tuple(SCENES)


def _people() -> tuple[str, ...]:
    from sim.people import people

    return tuple(p.person_id for p in people())


@dataclass(frozen=True)
class TravellerSpec:
    """The person at the lane, their document, and how the devices perceive them."""

    person: str = "astronaut"
    document: str = "TD3"
    defect: str = ""
    condition: str = "clean"
    portrait_of: str = ""  # whose photo is printed on the document; "" = the traveller's
    camera: str = "approach"
    board: str = "normal"  # sim.traveller kind, or "none": nobody walks in
    walk_s: float = 0.6
    hesitate_s: float = 0.0
    seed: int = 0
    fixed: bool = False  # a stream plays this traveller as written, never a random other
    # the passport chip (a lane with a chip reader: gate sim --chip sim): "" the scenario
    # is not about it; "present" a chip in the document; "absent" a document without one
    chip: str = ""
    chip_holder: str = ""  # whose portrait DG2 holds; "" = the document's person
    chip_faults: tuple[str, ...] = ()  # sim.chippki.FAULTS, or "mute"
    chip_access: str = "both"  # both | pace | bac
    chip_portrait: str = "jpeg"  # jpeg | jp2

    @property
    def document_person(self) -> str:
        return self.portrait_of or self.person


@dataclass(frozen=True)
class TimedFault:
    when: str
    step: FaultStep


@dataclass(frozen=True)
class Expectation:
    """How the scenario must end. Empty/None fields are not checked."""

    outcome: str  # of the first passage record
    reasons: tuple[str, ...] = ()  # every one must be among the first record's reasons
    any_reason: tuple[str, ...] = ()  # at least one must be
    later_outcomes: tuple[str, ...] = ()  # outcomes of further records, in order
    visits: tuple[str, ...] = ()  # lane states that must be entered
    never: tuple[str, ...] = ()  # lane states that must not be entered
    final_state: str = "idle"
    exit_opened: bool | None = None  # did the EXIT door open during the scenario
    passed_exit: int | None = None  # people the board saw leave through EXIT
    turned_back: int | None = None  # people the board saw leave back through ENTRY
    exit_openings: int | None = None  # times the board reported EXIT starting to open


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    traveller: TravellerSpec
    faults: tuple[TimedFault, ...] = ()
    expect: Expectation = field(default_factory=lambda: Expectation(outcome="PASSED"))
    timeouts: Mapping[str, float] = field(default_factory=dict)  # lane timeout overrides
    limit_s: float = 60.0  # real seconds after which the run counts as stuck
    source: str = ""

    def needs_chip(self) -> bool:
        """The scenario is about the passport chip: it needs a lane with a chip reader."""
        return bool(self.traveller.chip)

    def needs_officer(self) -> bool:
        """The traveller waits inside for an officer's release: only a lane of a row
        (``gate sim row``, ``gate sim --row``) has a station to send one."""
        return self.traveller.board == "wait"

    def needs_own_board(self) -> bool:
        """Fault steps act on the simulated board; a real board cannot be made to fail."""
        return bool(self.faults)


def _table(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where} must be a table")
    return raw


def _strict(cls: type, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ScenarioError(f"{where}: {key} must be a list of strings")
            value = tuple(value)
        out[key] = value
    return out


def _one_of(value: object, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ScenarioError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")


def _traveller(raw: Mapping[str, Any], where: str) -> TravellerSpec:
    values = _strict(TravellerSpec, raw, where)
    try:
        spec = TravellerSpec(**values)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from exc
    for name in ("person", "document", "defect", "condition", "portrait_of", "camera", "board"):
        if not isinstance(getattr(spec, name), str):
            raise ScenarioError(f"{where}: {name} must be a string")
    people = _people()
    _one_of(spec.person, people, f"{where}.person")
    if spec.portrait_of:
        _one_of(spec.portrait_of, people, f"{where}.portrait_of")
    _one_of(spec.document, MRZ_TYPES, f"{where}.document")
    _one_of(spec.defect, DEFECTS, f"{where}.defect")
    _one_of(spec.condition, _conditions(), f"{where}.condition")
    _one_of(spec.camera, _scenes(), f"{where}.camera")
    _one_of(spec.board, ("none", *KINDS), f"{where}.board")
    for name in ("walk_s", "hesitate_s"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ScenarioError(f"{where}: {name} must be a number >= 0")
    if spec.walk_s <= 0:
        raise ScenarioError(f"{where}: walk_s must be > 0")
    if not isinstance(spec.seed, int) or isinstance(spec.seed, bool):
        raise ScenarioError(f"{where}: seed must be an integer")
    if not isinstance(spec.fixed, bool):
        raise ScenarioError(f"{where}: fixed must be true or false")
    _one_of(spec.chip, ("", "present", "absent"), f"{where}.chip")
    if spec.chip_holder:
        _one_of(spec.chip_holder, people, f"{where}.chip_holder")
    _one_of(spec.chip_access, ("both", "pace", "bac"), f"{where}.chip_access")
    _one_of(spec.chip_portrait, ("jpeg", "jp2"), f"{where}.chip_portrait")
    from sim.chippki import FAULTS

    for fault in spec.chip_faults:
        _one_of(fault, (*FAULTS, "mute"), f"{where}.chip_faults")
    return spec


def _faults(raw: object, where: str) -> tuple[TimedFault, ...]:
    if not isinstance(raw, list):
        raise ScenarioError(f"{where}: 'fault' must be a list of [[fault]] tables")
    out = []
    for i, entry in enumerate(raw):
        here = f"{where}.fault[{i}]"
        data = dict(_table(entry, here))
        when = data.pop("when", "start")
        _one_of(when, WHEN, f"{here}.when")
        try:
            step = FaultStep.from_dict(data)
        except FaultPlanError as exc:
            raise ScenarioError(f"{here}: {exc}") from exc
        out.append(TimedFault(str(when), step))
    return tuple(out)


def _expectation(raw: Mapping[str, Any], where: str) -> Expectation:
    values = _strict(Expectation, raw, where)
    if "outcome" not in values:
        raise ScenarioError(f"{where}: outcome is required")
    outcomes = tuple(o.value for o in Outcome)
    _one_of(values["outcome"], outcomes, f"{where}.outcome")
    for o in values.get("later_outcomes", ()):
        _one_of(o, outcomes, f"{where}.later_outcomes")
    for key in ("visits", "never"):
        for s in values.get(key, ()):
            _one_of(s, STATES, f"{where}.{key}")
    _one_of(values.get("final_state", "idle"), STATES, f"{where}.final_state")
    for key in ("passed_exit", "turned_back"):
        if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool)):
            raise ScenarioError(f"{where}: {key} must be an integer")
    if "exit_opened" in values and not isinstance(values["exit_opened"], bool):
        raise ScenarioError(f"{where}: exit_opened must be true or false")
    return Expectation(**values)


def _timeouts(raw: Mapping[str, Any], where: str) -> dict[str, float]:
    known = {f.name for f in fields(Timeouts)}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key not in known:
            raise ScenarioError(f"{where}: unknown timeout {key!r}; known: {sorted(known)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ScenarioError(f"{where}: {key} must be a number of seconds > 0")
        out[key] = float(value)
    return out


def parse_scenario(data: Mapping[str, Any], origin: str) -> Scenario:
    top = {"name", "description", "traveller", "fault", "expect", "timeouts", "limit_s"}
    unknown = set(data) - top
    if unknown:
        raise ScenarioError(f"{origin}: unknown key(s) {sorted(unknown)}; known: {sorted(top)}")
    name = data.get("name", Path(origin).stem)
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{origin}: name must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{origin}: description must be a string")
    if "expect" not in data:
        raise ScenarioError(f"{origin}: an [expect] table is required")
    limit = data.get("limit_s", 60.0)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise ScenarioError(f"{origin}: limit_s must be a number > 0")
    return Scenario(
        name=name, description=description,
        traveller=_traveller(_table(data.get("traveller", {}), f"{origin} [traveller]"),
                             f"{origin} [traveller]"),
        faults=_faults(data.get("fault", []), origin),
        expect=_expectation(_table(data["expect"], f"{origin} [expect]"), f"{origin} [expect]"),
        timeouts=_timeouts(_table(data.get("timeouts", {}), f"{origin} [timeouts]"),
                           f"{origin} [timeouts]"),
        limit_s=float(limit), source=origin,
    )


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    return parse_scenario(data, str(path))


def shipped_folder() -> Path:
    """The scenarios that install with the package."""
    return Path(str(resources.files("gate") / "scenarios"))


#: The suite's order: the plain passage first, faults last (as a commissioning run goes).
SUITE_ORDER = (
    "genuine", "impostor", "expired", "minor", "stolen", "unreadable", "tailgater",
    "turns_back", "no_usable_face", "camera_failure", "cable_pulled", "board_reboot",
    "emergency", "door_jam", "mains_loss",
)


def shipped_names() -> list[str]:
    found = {p.stem for p in shipped_folder().glob("*.toml")}
    ordered = [n for n in SUITE_ORDER if n in found]
    return ordered + sorted(found - set(ordered))


def find_scenario(name: str) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    candidate = Path(name)
    if candidate.suffix == ".toml" or candidate.is_file():
        return load_scenario(candidate)
    path = shipped_folder() / f"{name}.toml"
    if not path.is_file():
        raise ScenarioError(f"no scenario {name!r}; shipped: {', '.join(shipped_names())}")
    return load_scenario(path)


def shipped_scenarios() -> list[Scenario]:
    return [find_scenario(n) for n in shipped_names()]
