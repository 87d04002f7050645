"""A stream of random travellers through one lane: throughput, timings, and endurance.

``gate sim --passages N`` draws each traveller from the shipped scenarios by weight (the
*mix*), with a random person, document type and seed, and plays them one after another on
ONE lane and ONE board, as a lane serves a queue all day. Each passage is still checked
against its scenario's expectations; on top the stream checks what only a long run shows:
no unsafe door action (the board's own safety monitor), no stuck state, no memory growth.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gate.lane import IDLE
from gate.simlane.peers import SimLaneDevices
from gate.simlane.runner import Check, RigOptions, ScenarioResult, SimLaneRig, run_scenario
from gate.simlane.scenario import Scenario, ScenarioError, find_scenario

#: The default mix: mostly genuine travellers, the rest spread over refusals and faults.
DEFAULT_MIX: dict[str, float] = {
    "genuine": 70, "impostor": 6, "expired": 3, "minor": 2, "stolen": 2, "unreadable": 2,
    "tailgater": 4, "turns_back": 3, "no_usable_face": 2, "camera_failure": 1,
    "cable_pulled": 1, "board_reboot": 1, "emergency": 1, "door_jam": 1, "mains_loss": 1,
}
#: Words for groups of scenarios in ``--mix``: the weight is shared out equally.
GROUPS: dict[str, tuple[str, ...]] = {
    "documents": ("expired", "minor", "stolen", "unreadable"),
    "faults": ("cable_pulled", "board_reboot", "emergency", "door_jam", "mains_loss"),
    "behaviour": ("tailgater", "turns_back", "no_usable_face"),
}
#: People whose live frames pass the quality gates when they look at the camera. t1-b's
#: head is rolled 33° in the only photo we have of them, t1-e's turned about 45° (YuNet's
#: yaw 0.9-1.0 eye distances, dlib's points 0.29-0.33 against the 0.3 limit): the gates
#: rightly refuse their frames, so they appear only where a refusal is the expected ending
#: or as a portrait.
FRONTAL_PEOPLE = ("t1-a", "t1-c", "t1-d", "t1-f", "astronaut", "tom")
DOCUMENT_TYPES = ("TD3", "TD3", "TD1", "TD2")


def parse_mix(text: str | None) -> dict[str, float]:
    """``genuine=80,impostor=10,faults=10`` → weights per scenario name."""
    if not text:
        return dict(DEFAULT_MIX)
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise ScenarioError(f"--mix: {part!r} is not NAME=WEIGHT")
        try:
            weight = float(value)
        except ValueError as exc:
            raise ScenarioError(f"--mix: weight {value!r} is not a number") from exc
        if weight < 0:
            raise ScenarioError(f"--mix: weight of {name} must be >= 0")
        names = GROUPS.get(name.strip(), (name.strip(),))
        for n in names:
            mix[n] = mix.get(n, 0.0) + weight / len(names)
    if sum(mix.values()) <= 0:
        raise ScenarioError("--mix: the weights add up to nothing")
    return mix


def randomised(scenario: Scenario, rng: random.Random) -> Scenario:
    """Another traveller of the same kind: person, document type and seed drawn anew."""
    spec = scenario.traveller
    if spec.fixed:  # its ending depends on who it is (see the scenario file)
        return scenario
    person = rng.choice(FRONTAL_PEOPLE)
    portrait_of = ""
    if spec.portrait_of:  # an impostor: somebody else's document
        portrait_of = rng.choice([p for p in FRONTAL_PEOPLE if p != person])
    document = spec.document
    if spec.defect != "minor" and spec.condition == "clean":
        document = rng.choice(DOCUMENT_TYPES)
    traveller = dataclasses.replace(spec, person=person, portrait_of=portrait_of,
                                    document=document, seed=rng.randrange(1 << 30))
    return dataclasses.replace(scenario, traveller=traveller)


def rss_mb() -> float:
    """Resident memory of this process (Linux), in MB."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


@dataclass
class StreamReport:
    passages: int
    speed: float
    duration_s: float
    outcomes: Counter[str]
    failed: list[ScenarioResult]
    stuck: int
    unsafe: list[str]
    lane_faults: list[str]
    system_ms: list[float] = field(default_factory=list)  # PASSED passages
    physical_ms: list[float] = field(default_factory=list)
    to_exit_open_ms: list[float] = field(default_factory=list)
    physical_to_exit_ms: list[float] = field(default_factory=list)  # to_exit_open - system
    rss_start_mb: float = float("nan")  # after warm-up
    rss_end_mb: float = float("nan")
    rss_samples: list[tuple[int, float]] = field(default_factory=list)  # (passage, MB)
    provider: str = ""
    mix: Mapping[str, float] = field(default_factory=dict)
    #: measured by the board in its own process: the longest silence between two valid
    #: requests while plugged in (the contract allows 250 ms), and its watchdog trips
    board_max_gap_ms: float | None = None
    board_watchdog_trips: int | None = None

    @property
    def per_hour(self) -> float:
        return self.passages / self.duration_s * 3600.0 if self.duration_s > 0 else 0.0

    @property
    def passed_per_hour(self) -> float:
        passed = self.outcomes.get("PASSED", 0)
        return passed / self.duration_s * 3600.0 if self.duration_s > 0 else 0.0

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stuck and not self.unsafe and not self.lane_faults

    def figures(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)

        return {
            "ok": self.ok, "passages": self.passages, "speed": self.speed,
            "duration_s": round(self.duration_s, 1),
            "travellers_per_hour": round(self.per_hour, 1),
            "passed_per_hour": round(self.passed_per_hour, 1),
            "outcomes": dict(self.outcomes),
            "unexpected": len(self.failed), "stuck": self.stuck,
            "unsafe_door_actions": len(self.unsafe), "lane_faults": len(self.lane_faults),
            "system_ms_p50": r(_pct(self.system_ms, 50)),
            "system_ms_p95": r(_pct(self.system_ms, 95)),
            "physical_ms_p50": r(_pct(self.physical_ms, 50)),
            "physical_ms_p95": r(_pct(self.physical_ms, 95)),
            "to_exit_open_ms_p50": r(_pct(self.to_exit_open_ms, 50)),
            "to_exit_open_ms_p95": r(_pct(self.to_exit_open_ms, 95)),
            "physical_to_exit_ms_p50": r(_pct(self.physical_to_exit_ms, 50)),
            "physical_to_exit_ms_p95": r(_pct(self.physical_to_exit_ms, 95)),
            "rss_after_warmup_mb": r(self.rss_start_mb), "rss_end_mb": r(self.rss_end_mb),
            "rss_growth_mb": r(self.rss_growth_mb),
            "rss_samples_mb": [[n, round(mb, 1)] for n, mb in self.rss_samples],
            "board_max_request_gap_ms": r(self.board_max_gap_ms),
            "board_watchdog_trips": self.board_watchdog_trips,
            "face_provider": self.provider,
            "mix": {k: round(v, 3) for k, v in self.mix.items()},
            "failures": [{"scenario": f.scenario, "outcome": f.outcome,
                          "traveller": f.traveller,
                          "stages": f.records[0].stages if f.records else {},
                          "failed": [c.name + (f": {c.detail}" if c.detail else "")
                                     for c in f.checks if not c.ok]}
                         for f in self.failed[:20]],
        }


def run_stream(devices: SimLaneDevices, passages: int, options: RigOptions,
               mix: Mapping[str, float] | None = None,
               on_result: Callable[[int, ScenarioResult], None] | None = None) -> StreamReport:
    """``passages`` random travellers through one lane; see the module docstring."""
    weights = dict(mix or DEFAULT_MIX)
    catalogue = {name: find_scenario(name) for name, w in weights.items() if w > 0}
    names = list(catalogue)
    rng = random.Random(options.seed)
    outcomes: Counter[str] = Counter()
    failed: list[ScenarioResult] = []
    report = StreamReport(passages, options.speed, 0.0, outcomes, failed, 0, [], [],
                          provider=devices.provider, mix=weights)
    # Memory is compared from the end of the warm-up: models' arenas, caches and the lane's
    # own window of recent passage records (100, with their evidence) fill up first.
    warmup = max(1, min(150, passages // 5))
    every = max(1, passages // 10)
    # One lane serves the whole stream: it gets the shortest of the scenarios' waits.
    timeouts: dict[str, float] = {}
    for scenario in catalogue.values():
        for key, value in scenario.timeouts.items():
            timeouts[key] = min(value, timeouts.get(key, value))
    with SimLaneRig(devices, options, timeouts) as rig:
        if not rig.wait_idle(timeout=20.0):
            raise RuntimeError(f"the lane did not become idle (state {rig.lane.state})")
        t0 = time.monotonic()
        for i in range(passages):
            if i == warmup:
                report.rss_start_mb = rss_mb()
            if i % every == 0:
                report.rss_samples.append((i, rss_mb()))
            scenario = catalogue[rng.choices(names, [weights[n] for n in names])[0]]
            if scenario.needs_own_board() and rig.board is None:
                continue
            if scenario.needs_chip() and rig.devices.chip_peer is None:
                continue
            if scenario.needs_officer() and rig.service.row is None:
                continue
            scenario = randomised(scenario, rng)
            try:
                result = run_scenario(rig, scenario, seed=i)
            except Exception as exc:
                result = ScenarioResult(scenario.name, scenario.description, ok=False)
                result.checks.append(Check("scenario ran", False, f"{type(exc).__name__}: {exc}"))
            outcomes[result.outcome] += 1
            for record in result.records[:1]:
                if record.outcome.value == "PASSED":
                    report.system_ms.append(record.system_ms)
                    report.physical_ms.append(record.physical_ms)
                    if result.to_exit_open_ms is not None:
                        report.to_exit_open_ms.append(result.to_exit_open_ms)
                        report.physical_to_exit_ms.append(
                            result.to_exit_open_ms - record.system_ms)
            if not result.ok:
                failed.append(result)
                rig.restore_board()  # one bad passage must not spoil the rest of the stream
                if any(c.name == "finished in time" and not c.ok for c in result.checks):
                    report.stuck += 1
                    rig.lane.reset()  # what the officer would do; the stream goes on
                    if not rig.wait_idle(timeout=60.0):
                        report.lane_faults.append(f"stuck in {rig.lane.state} after a reset")
                        report.passages = i + 1
                        break
            if on_result is not None:
                on_result(i, result)
        report.duration_s = time.monotonic() - t0
        report.rss_end_mb = rss_mb()
        report.rss_samples.append((passages, report.rss_end_mb))
        if rig.board is not None:
            report.unsafe = list(rig.board.safety_violations)
            snapshot = rig.board.snapshot()
            report.board_max_gap_ms = snapshot.max_request_gap_s * 1000.0
            report.board_watchdog_trips = snapshot.watchdog_trips
        report.lane_faults.extend(rig.lane.faults)
        if rig.lane.state != IDLE:
            rig.wait_idle(timeout=10.0)
    if report.rss_start_mb != report.rss_start_mb:  # NaN: fewer passages than the warm-up
        report.rss_start_mb = report.rss_end_mb
    return report
