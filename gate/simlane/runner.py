"""A complete lane in simulation: simulated devices as peers, the real lane service on them.

:class:`SimLaneRig` is one lane: a :class:`sim.board.SimBoard` in a process of its own,
served on a pseudo-terminal (or, in mixed mode, any board behind ``--barrier PORT``), and
the production :class:`gate.service.LaneService` on it — the board link in its own
process, the lane camera and the document reader on their peers
(:mod:`gate.simlane.peers`), the real stages. Everything the lane does is collected into
one timeline: its state changes, the board's events as the driver delivered them, the
document reader's notices, the faults applied, the stage results.

:func:`run_scenario` plays one :class:`~gate.simlane.scenario.Scenario` on a rig and checks
its ending; :func:`run_suite` gives every scenario a fresh lane and board (sharing the
camera and reader peers and the stages, whose models load once), so one scenario's fault
cannot leak into the next.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gate.config import Devices, LaneConfig, Metrics, Timeouts
from gate.lane import (
    ADMITTING,
    CLOSING_ENTRY,
    IDLE,
    READING_DOCUMENT,
    Outcome,
    PassageRecord,
    StateChange,
)
from gate.service import LaneParts, LaneService
from gate.simlane.peers import SimLaneDevices
from gate.simlane.scenario import Scenario
from hardware.barrier.api import (
    BarrierNotice,
    BoardChange,
    Door,
    DoorMoved,
    DoorState,
    StateRefreshed,
)
from sim.faults import FaultPlan
from sim.traveller import TravellerBehaviour

#: The sim lane's timeouts: production values, except where waiting on a simulated
#: traveller for production lengths would only make the suite slow.
SIM_TIMEOUTS = Timeouts(obstructed_doorway=1.0, red_cross_hold=1.0, out_of_service_retry=0.5)

#: How long the lane must stay in its final state before a scenario counts as finished.
SETTLED_S = 0.3


@dataclass(frozen=True)
class RigOptions:
    speed: float = 1.0  # door travel and walking only; protocol timing is always real
    barrier: str | None = None  # mixed mode: a real board's port; None: own simulated board
    seed: int = 0
    lane_id: str = "sim-lane"
    #: a lane of a row (``gate sim --row FILE``): its ``[row]``/``[cases]`` (and lane id);
    #: cases then go to the row's station
    row: LaneConfig | None = None


@dataclass(frozen=True)
class TimelineEntry:
    t: float  # monotonic seconds
    kind: str  # lane | board | link | stage | fault | traveller | runner
    text: str
    passage: int | None = None


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    scenario: str
    description: str
    ok: bool
    skipped: str = ""  # why the scenario could not run on this rig (mixed mode)
    checks: list[Check] = field(default_factory=list)
    records: list[PassageRecord] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    started: float = 0.0
    duration_s: float = 0.0
    to_exit_open_ms: float | None = None  # document placed -> EXIT reported OPEN
    final_state: str = ""
    traveller: str = ""  # which simulated identity and document (sim ids, not personal data)

    @property
    def outcome(self) -> str:
        return self.records[0].outcome.value if self.records else "NONE"

    def to_json(self) -> dict[str, Any]:
        """Machine-readable record: no names, no document numbers, no images."""
        return {
            "scenario": self.scenario, "description": self.description, "ok": self.ok,
            "skipped": self.skipped or None, "outcome": self.outcome,
            "final_state": self.final_state, "traveller": self.traveller,
            "duration_s": round(self.duration_s, 3),
            "to_exit_open_ms": (None if self.to_exit_open_ms is None
                                else round(self.to_exit_open_ms, 1)),
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "passages": [r.log_summary() for r in self.records],
            "timeline": [{"t": round(e.t - self.started, 3), "kind": e.kind, "text": e.text,
                          "passage": e.passage} for e in self.timeline],
        }


def describe_notice(notice: BarrierNotice) -> tuple[str, str] | None:
    if isinstance(notice, DoorMoved):
        return "board", f"{notice.door.name} door {notice.position.name}"
    if isinstance(notice, BoardChange):
        return "board", notice.describe()
    if isinstance(notice, StateRefreshed):
        return None
    return "link", notice.describe()


class SimLaneRig:
    """One lane service on its board; ``close()`` stops the service and the board."""

    def __init__(self, devices: SimLaneDevices, options: RigOptions | None = None,
                 timeouts: Mapping[str, float] | None = None) -> None:
        self.options = options = options or RigOptions()
        self.devices = devices
        self._lock = threading.Lock()
        self.timeline: list[TimelineEntry] = []
        self.records: list[PassageRecord] = []
        self.changes: list[StateChange] = []
        self.exit_open_at: list[float] = []
        self.exit_opening_zones: list[int] = []
        #: called with each state change of the run in progress (it arms timed faults)
        self.run_hook: Callable[[StateChange], None] | None = None
        base = replace(SIM_TIMEOUTS, **dict(timeouts or {}))
        barrier = options.barrier or f"sim?speed={options.speed:g}&seed={options.seed}"
        config = devices.config_for(LaneConfig(
            lane_id=options.lane_id, devices=Devices(barrier=barrier), timeouts=base,
            metrics=Metrics(listen="")))
        if options.row is not None:
            config = replace(config, lane_id=options.row.lane_id, cases=options.row.cases,
                             sections=options.row.sections, source=options.row.source)
        self.service = LaneService(
            config, LaneParts(camera=devices.camera, reader=devices.reader,
                              stages=devices.stages,
                              health={"chip": devices.chip_health} if devices.chip_health
                              else {}), cases=options.row is not None, metrics=False)
        self.service.start()
        try:
            assert self.service.lane is not None and self.service.barrier is not None
            self.lane = self.service.lane
            self.barrier = self.service.barrier
            connection = self.service.connection
            #: the simulated board's control side (another process), or None in mixed mode
            self.board: Any = connection.board if connection is not None else None
            self.barrier.subscribe(self._on_notice)
            self.lane.subscribe(self._on_record)
            self.lane.subscribe_states(self._on_change)
            devices.reader.subscribe(self._on_reader)
        except BaseException:
            self.service.stop(drain_s=0.0)
            raise

    @property
    def board_port(self) -> str:
        """Where the driver reaches the board (the simulated board's pty, or the port)."""
        connection = self.service.connection
        peer = getattr(connection, "peer", None)
        return str(getattr(peer, "port", None) or self.options.barrier or "")

    # ------------------------------------------------------------ collecting

    def note(self, kind: str, text: str, passage: int | None = None) -> None:
        with self._lock:
            self.timeline.append(TimelineEntry(time.monotonic(), kind, text, passage))

    def _on_notice(self, notice: BarrierNotice) -> None:
        described = describe_notice(notice)
        if described is None:
            return
        if isinstance(notice, DoorMoved) and (
                (notice.door, notice.position) == (Door.EXIT, DoorState.OPEN)):
            with self._lock:
                self.exit_open_at.append(time.monotonic())
        if isinstance(notice, DoorMoved) and (
                (notice.door, notice.position) == (Door.EXIT, DoorState.OPENING)):
            status = self.barrier.state  # the board's zone count as EXIT starts to open
            with self._lock:
                self.exit_opening_zones.append(status.zone_count if status else -1)
        self.note(*described, passage=self.lane.passage_id)

    def _on_reader(self, notice: Any) -> None:
        kind = getattr(notice.kind, "value", str(notice.kind)).lower()
        frames = len(notice.placement.frames) if notice.placement is not None else 0
        self.note("reader", f"document {kind}" + (f" ({frames} frames)" if frames else ""),
                  passage=self.lane.passage_id)

    def _on_record(self, record: PassageRecord) -> None:
        with self._lock:
            self.records.append(record)

    def _on_change(self, change: StateChange) -> None:
        with self._lock:
            self.changes.append(change)
            self.timeline.append(TimelineEntry(
                change.at_monotonic, "lane", f"{change.source} -> {change.dest} "
                f"({change.trigger})", change.passage_id))
        hook = self.run_hook
        if hook is not None:
            hook(change)

    def begin_run(self) -> None:
        """Forget what the previous run collected: a long stream must not grow without bound."""
        with self._lock:
            self.timeline.clear()
            self.records.clear()
            self.changes.clear()
            self.exit_open_at.clear()
            self.exit_opening_zones.clear()

    def restore_board(self) -> None:
        """After a run that went wrong: undo every fault a scenario may have left behind."""
        self.devices.restore()
        board = self.board
        if board is None:
            return
        board.set_emergency(False)
        board.set_mains(True)
        board.set_tamper(False)
        board.set_maintenance_key(False)
        for door in Door:
            board.clear_jam(door)
        board.replug()

    def send_queue_home(self) -> None:
        """Travellers still queued at ENTRY walk away (a refused document: nobody enters)."""
        if self.board is not None:
            self.board.send_queue_away()

    def wait_idle(self, timeout: float) -> bool:
        return self.lane.wait_for_state(IDLE, timeout=timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.devices.reader.unsubscribe(self._on_reader)
        self.service.stop(drain_s=0.0)

    def __enter__(self) -> SimLaneRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ one scenario


@dataclass
class _Schedule:
    """Fault steps waiting for their lane state, then handed to the board's timetable."""

    rig: SimLaneRig
    pending: dict[str, list[Any]]
    due: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, when: str) -> None:
        with self.lock:
            steps = self.pending.pop(when, [])
        if not steps:
            return
        board = self.rig.board
        now = time.monotonic()
        board.run_plan(FaultPlan(tuple(steps)))
        for step in steps:
            args = " ".join(f"{k}={getattr(v, 'name', v)}" for k, v in step.args.items())
            with self.lock:
                self.due.append(now + step.at_s)
            self.rig.note("fault", f"{step.action} {args}".strip() +
                          f" in {step.at_s:.1f} s (at {when})")

    def on_change(self, change: StateChange) -> None:
        self.arm(change.dest)

    def done(self) -> bool:
        with self.lock:
            return not self.pending and all(time.monotonic() >= d + 0.05 for d in self.due)


def _board_counts(rig: SimLaneRig) -> tuple[int, int, int, int]:
    if rig.board is None:
        return 0, 0, 0, 0
    snap = rig.board.snapshot()
    return (snap.travellers_passed, snap.travellers_turned_back, snap.travellers_inside,
            snap.travellers_waiting)


def run_scenario(rig: SimLaneRig, scenario: Scenario, *, seed: int = 0,
                 speed_note: str = "") -> ScenarioResult:
    """Play ``scenario`` on ``rig`` (whose lane must be idle) and check how it ended."""
    result = ScenarioResult(scenario.name, scenario.description, ok=False)
    if scenario.needs_own_board() and rig.board is None:
        result.ok = True
        result.skipped = "its fault plan acts on the simulated board; not run on a real one"
        return result
    if scenario.needs_chip() and rig.devices.chip_peer is None:
        result.ok = True
        result.skipped = "it is about the passport chip: run with a chip (gate sim --chip sim)"
        return result
    if scenario.needs_officer() and rig.service.row is None:
        result.ok = True
        result.skipped = ("the traveller waits for an officer's release: run it in a row "
                          "(gate sim row, or gate sim --row FILE)")
        return result
    if not rig.wait_idle(timeout=30.0):
        result.checks.append(Check("lane idle before the run", False,
                                   f"lane in {rig.lane.state}"))
        return result
    rig.begin_run()
    board = rig.board
    violations_before = len(board.safety_violations) if board is not None else 0
    errors_before = len(board.internal_errors) if board is not None else 0
    faults_before = len(rig.lane.faults)
    passed0, back0, _, _ = _board_counts(rig)
    pending: dict[str, list[Any]] = {}
    for timed in scenario.faults:
        pending.setdefault(timed.when, []).append(timed.step)
    schedule = _Schedule(rig, pending)
    spec = scenario.traveller
    devices = rig.devices
    shown = threading.Event()

    def on_change(change: StateChange) -> None:
        if change.source == READING_DOCUMENT and (devices.chip_peer is None
                                                  or change.dest != ADMITTING):
            devices.take_document()  # the traveller picks the document up again
        elif change.source == ADMITTING:
            # with a chip the passport stays on the reader while ENTRY opens (its portrait
            # is read meanwhile) and is picked up as the traveller steps in
            devices.take_document()
        if change.dest == CLOSING_ENTRY and not shown.is_set():
            shown.set()  # inside the zone now: what the lane camera sees of them
            devices.show(spec.camera, spec.person, seed)
        schedule.on_change(change)

    rig.run_hook = on_change
    try:
        result.traveller = (f"{spec.person} {spec.document} seed {spec.seed}/{seed}"
                            + (f" portrait of {spec.portrait_of}" if spec.portrait_of else ""))
        devices.empty_lane()
        result.started = time.monotonic()
        rig.note("runner", f"scenario {scenario.name}{speed_note}: document {spec.document}"
                 f"{' (' + spec.defect + ')' if spec.defect else ''}, page {spec.condition}, "
                 f"camera {spec.camera}, traveller {spec.board}")
        if board is not None and spec.board != "none":
            board.add_traveller(TravellerBehaviour(spec.board, walk_s=spec.walk_s,
                                                   hesitate_s=spec.hesitate_s))
        schedule.arm("start")
        devices.lay_document(spec, seed)
        _wait_until_settled(rig, scenario, schedule, result.started)
    finally:
        rig.run_hook = None
        devices.take_document()
        devices.empty_lane()
    result.duration_s = time.monotonic() - result.started
    with rig._lock:
        result.records = list(rig.records)
        changes = list(rig.changes)
        result.timeline = sorted(rig.timeline, key=lambda e: e.t)
        exit_open = list(rig.exit_open_at)
    result.final_state = rig.lane.state
    _add_stage_lines(result, changes)
    if exit_open and result.records and result.records[0].outcome.value == "PASSED":
        result.to_exit_open_ms = (exit_open[0] - result.started) * 1000.0
    passed1, back1, inside, waiting = _board_counts(rig)
    _check(result, scenario, changes, schedule, rig,
           passed=passed1 - passed0, back=back1 - back0, inside=inside, waiting=waiting,
           new_violations=(board.safety_violations[violations_before:] if board else []),
           new_errors=(board.internal_errors[errors_before:] if board else []),
           new_faults=rig.lane.faults[faults_before:])
    result.ok = all(c.ok for c in result.checks)
    return result


def _wait_until_settled(rig: SimLaneRig, scenario: Scenario, schedule: _Schedule,
                        started: float) -> None:
    wanted = 1 + len(scenario.expect.later_outcomes)
    final = scenario.expect.final_state
    deadline = started + scenario.limit_s
    settled_since: float | None = None
    camera_reset = False
    while time.monotonic() < deadline:
        time.sleep(0.02)
        with rig._lock:
            count = len(rig.records)
            refused = count > 0 and rig.records[0].outcome is Outcome.DOCUMENT_REJECTED
        if count >= wanted and not camera_reset:
            # the traveller is gone: the lane camera sees an empty lane again (a camera that
            # failed under them is mended, as maintenance would; the lane recovers on its own)
            rig.devices.empty_lane()
            camera_reset = True
        _, _, inside, waiting = _board_counts(rig)
        if refused and waiting and rig.lane.state == IDLE:
            rig.send_queue_home()  # the traveller whose document was refused walks away
            rig.note("traveller", "document refused: the traveller at the reader walks away")
            continue
        quiet = (count >= wanted and schedule.done() and rig.lane.state == final
                 and inside == 0 and waiting == 0)
        if not quiet:
            settled_since = None
            continue
        settled_since = settled_since or time.monotonic()
        if time.monotonic() - settled_since >= SETTLED_S:
            return


_STAGE_OF = {"reading_document": "document", "capturing_face": "capture",
             "verifying": "verify"}


def _stage_line(stage: str, summary: Mapping[str, Any]) -> str:
    timings = summary.get("timings_ms") or {}
    ms = timings.get("capture_ms" if stage == "capture" else "total_ms")
    took = f" in {ms:.0f} ms" if ms is not None else ""
    reasons = ",".join(summary.get("reasons", [])) or "-"
    if stage == "document":
        verdict = "accepted" if summary.get("accepted") else "rejected"
        return f"document {verdict} ({summary.get('document_type') or '?'}) reasons " \
               f"{reasons}{took}"
    if stage == "capture":
        verdict = "face captured" if summary.get("ok") else "no face captured"
        return f"{verdict}: {summary.get('frames', 0)} frames kept of " \
               f"{int(timings.get('frames', 0))}, reasons {reasons}{took}"
    verdict = "MATCH" if summary.get("match") else "NO MATCH"
    return f"verification {verdict}: score {summary.get('score')} threshold " \
           f"{summary.get('threshold')} reasons {reasons}{took} [{summary.get('provider', '?')}]"


def _add_stage_lines(result: ScenarioResult, changes: Sequence[StateChange]) -> None:
    by_passage = {r.passage_id: r for r in result.records}
    extra: list[TimelineEntry] = []
    for change in changes:
        stage = _STAGE_OF.get(change.source)
        record = by_passage.get(change.passage_id) if change.passage_id is not None else None
        if stage is None or record is None or stage not in record.stages:
            continue
        if change.trigger in ("timeout", "service_lost", "board_restarted", "emergency_raised",
                              "tailgate_detected", "callback_failed"):
            continue  # the stage did not finish here; its result came later or never
        extra.append(TimelineEntry(change.at_monotonic - 1e-6, "stage",
                                   _stage_line(stage, record.stages[stage]),
                                   change.passage_id))
    for record in result.records:
        extra.append(TimelineEntry(
            _end_of(result, record), "outcome",
            f"passage {record.passage_id}: {record.outcome.value} "
            f"reasons {','.join(record.reasons) or '-'}; system {record.system_ms:.0f} ms, "
            f"physical {record.physical_ms:.0f} ms, total {record.duration_ms:.0f} ms",
            record.passage_id))
    result.timeline = sorted([*result.timeline, *extra], key=lambda e: e.t)


def _end_of(result: ScenarioResult, record: PassageRecord) -> float:
    """Monotonic time of the transition that closed ``record``'s passage."""
    ends = [e.t for e in result.timeline if e.kind == "lane" and e.passage == record.passage_id]
    return (max(ends) if ends else result.started) + 1e-6


def _check(result: ScenarioResult, scenario: Scenario, changes: Sequence[StateChange],
           schedule: _Schedule, rig: SimLaneRig, *, passed: int, back: int, inside: int,
           waiting: int, new_violations: Iterable[str], new_errors: Iterable[str],
           new_faults: Iterable[str]) -> None:
    expect = scenario.expect
    add = result.checks.append
    records = result.records
    first = records[0] if records else None
    add(Check("finished in time", result.duration_s < scenario.limit_s,
              f"{result.duration_s:.1f} s (limit {scenario.limit_s:.0f} s)"))
    add(Check(f"outcome {expect.outcome}", first is not None and
              first.outcome.value == expect.outcome,
              f"got {first.outcome.value if first else 'no passage record'}"))
    got_reasons = set(first.reasons) if first else set()
    if expect.reasons:
        missing = [r for r in expect.reasons if r not in got_reasons]
        add(Check(f"reasons include {','.join(expect.reasons)}", not missing,
                  f"got {','.join(first.reasons) if first else '-'}"))
    if expect.any_reason:
        add(Check(f"a reason among {','.join(expect.any_reason)}",
                  bool(got_reasons & set(expect.any_reason)),
                  f"got {','.join(first.reasons) if first else '-'}"))
    if expect.later_outcomes:
        later = tuple(r.outcome.value for r in records[1:1 + len(expect.later_outcomes)])
        add(Check(f"then {','.join(expect.later_outcomes)}", later == expect.later_outcomes,
                  f"got {','.join(later) or '-'}"))
    visited = {c.dest for c in changes}
    for state in expect.visits:
        add(Check(f"visits {state}", state in visited))
    for state in expect.never:
        add(Check(f"never {state}", state not in visited))
    add(Check(f"ends {expect.final_state}", result.final_state == expect.final_state,
              f"lane in {result.final_state}"))
    exit_opened = any(e.kind == "board" and e.text in ("EXIT door OPENING", "EXIT door OPEN")
                      for e in result.timeline)
    if expect.exit_openings is not None:
        with rig._lock:
            zones = list(rig.exit_opening_zones)
        add(Check(f"EXIT opened {expect.exit_openings} time(s), each with one person inside",
                  len(zones) == expect.exit_openings and all(z == 1 for z in zones),
                  f"the board reported {len(zones)}, zone counts {zones}"))
    if expect.exit_opened is not None:
        add(Check("EXIT opened" if expect.exit_opened else "EXIT stayed shut",
                  exit_opened == expect.exit_opened))
    if rig.board is not None:
        if expect.passed_exit is not None:
            add(Check(f"{expect.passed_exit} left through EXIT", passed == expect.passed_exit,
                      f"board counted {passed}"))
        if expect.turned_back is not None:
            add(Check(f"{expect.turned_back} went back through ENTRY",
                      back == expect.turned_back, f"board counted {back}"))
        add(Check("lane empty", inside == 0 and waiting == 0,
                  f"{inside} inside, {waiting} waiting"))
        violations = list(new_violations)
        add(Check("no unsafe door action", not violations, "; ".join(violations[:3])))
        errors = list(new_errors)
        add(Check("board simulator healthy", not errors, "; ".join(errors[:3])))
    add(Check("every fault applied", schedule.done(),
              f"waiting for {sorted(schedule.pending)}" if schedule.pending else ""))
    faults = list(new_faults)
    add(Check("no lane fault", not faults, "; ".join(faults[:3])))


# ------------------------------------------------------------------ the suite


@dataclass
class SuiteResult:
    results: list[ScenarioResult]
    duration_s: float
    speed: float
    provider: str

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "speed": self.speed, "duration_s": round(self.duration_s, 2),
                "face_provider": self.provider,
                "scenarios": [r.to_json() for r in self.results]}


def run_suite(devices: SimLaneDevices, scenarios: Sequence[Scenario], options: RigOptions,
              on_result: Callable[[ScenarioResult], None] | None = None) -> SuiteResult:
    """Each scenario on a fresh lane and board; the device peers and the stages (and their
    models) are shared."""
    t0 = time.monotonic()
    results: list[ScenarioResult] = []
    note = f" at speed {options.speed:g}" if options.speed != 1 else ""
    for i, scenario in enumerate(scenarios):
        try:
            rig = SimLaneRig(devices, replace(options, seed=options.seed + i), scenario.timeouts)
        except Exception as exc:  # a port that is not there: a named failure, not a trace
            result = ScenarioResult(scenario.name, scenario.description, ok=False)
            result.checks.append(Check("lane started", False, f"{type(exc).__name__}: {exc}"))
        else:
            try:
                if not rig.wait_idle(timeout=20.0):
                    result = ScenarioResult(scenario.name, scenario.description, ok=False)
                    link = "" if rig.barrier.link_up else (
                        f"; link down: {getattr(rig.barrier, 'link_detail', '')}")
                    result.checks.append(Check("lane idle at start", False,
                                               f"lane in {rig.lane.state}{link}"))
                else:
                    result = run_scenario(rig, scenario, seed=options.seed + i,
                                          speed_note=note)
            except Exception as exc:  # a bug in the runner fails its scenario, not the suite
                result = ScenarioResult(scenario.name, scenario.description, ok=False)
                result.checks.append(Check("scenario ran", False,
                                           f"{type(exc).__name__}: {exc}"))
            finally:
                with contextlib.suppress(Exception):
                    rig.close()
        results.append(result)
        if on_result is not None:
            on_result(result)
    return SuiteResult(results, time.monotonic() - t0, options.speed, devices.provider)
