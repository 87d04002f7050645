"""/metrics and /healthz: the metrics object fed real records and state changes, scraped
over real HTTP and read back with prometheus_client's own parser."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import prometheus_client
import pytest
from conftest import make_fake_lane
from doubles import good_capture
from prometheus_client.parser import text_string_to_metric_families

from gate.lane import Lane, Outcome, PassageRecord, StateChange
from gate.metrics import LaneMetrics, MetricsServer, parse_listen
from gate.stages import CaptureOutcome, DocumentOutcome, MatchDecision
from hardware.device import DeviceHealth

LANE = "lane-7"

# ------------------------------------------------------------------ helpers


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@dataclass
class LaneStub:
    """What ``attach`` uses of a lane; the test moves ``state`` and ``link_up`` itself."""

    state: str = "idle"
    link_up: bool = True
    record_handlers: list[Any] = field(default_factory=list)
    state_handlers: list[Any] = field(default_factory=list)

    def subscribe(self, handler: Any) -> None:
        self.record_handlers.append(handler)

    def subscribe_states(self, handler: Any) -> None:
        self.state_handlers.append(handler)

    def change(self, dest: str, trigger: str = "t") -> None:
        """Move to ``dest`` and tell the subscribers, as the lane does after a transition."""
        source, self.state = self.state, dest
        change = StateChange(LANE, None, trigger, source, dest, time.time(), time.monotonic())
        for handler in self.state_handlers:
            handler(change)

    def finish(self, record: PassageRecord) -> None:
        for handler in self.record_handlers:
            handler(record)


def record(outcome: Outcome = Outcome.PASSED, *, passage_id: int = 1,
           reasons: tuple[str, ...] = (), document_ms: object = 120.0,
           capture_ms: object = 1500.0, verify_ms: object = 40.0,
           system_ms: float = 1700.0, duration_ms: float = 9000.0) -> PassageRecord:
    """A plausible finished passage with the stage summaries the lane writes."""
    stages: dict[str, Mapping[str, Any]] = {
        "document": {"accepted": True, "reasons": [], "has_portrait": True,
                     "document_type": "P",
                     "timings_ms": {"read_ms": 80.0, "total_ms": document_ms}},
        "capture": {"ok": True, "reasons": [], "frames": 1, "quality": [],
                    "timings_ms": {"capture_ms": capture_ms, "frames": 12.0}},
        "verify": {"match": outcome is Outcome.PASSED, "score": 0.71, "threshold": 0.5,
                   "reasons": [], "timings_ms": {"embed_ms": 30.0, "total_ms": verify_ms}},
    }
    return PassageRecord(
        lane_id=LANE, passage_id=passage_id, outcome=outcome, reasons=reasons,
        started_at=1_700_000_000.0, ended_at=1_700_000_009.0, duration_ms=duration_ms,
        state_ms={"reading_document": 120.0, "capturing_face": 1540.0, "verifying": 40.0},
        system_ms=system_ms, physical_ms=duration_ms - system_ms, stages=stages,
        max_zone_count=1, officer_called=outcome is not Outcome.PASSED,
    )


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset({"lane": LANE, **labels}.items())))


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> LaneMetrics:
    return LaneMetrics(LANE, clock=clock)


@pytest.fixture
def server(metrics: LaneMetrics) -> Iterator[MetricsServer]:
    srv = MetricsServer(metrics, "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.close()


def scrape(server: MetricsServer) -> Samples:
    status, headers, body = get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(body.decode())


def healthz(server: MetricsServer) -> tuple[int, dict[str, Any]]:
    status, headers, body = get(f"http://127.0.0.1:{server.port}/healthz")
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


# ------------------------------------------------------------------ passages


def test_passages_are_counted_per_outcome(metrics: LaneMetrics,
                                          server: MetricsServer) -> None:
    lane = LaneStub()
    metrics.attach(lane)
    lane.finish(record(Outcome.PASSED, passage_id=1))
    lane.finish(record(Outcome.PASSED, passage_id=2))
    lane.finish(record(Outcome.FACE_MISMATCH, passage_id=3,
                       reasons=("SCORE_BELOW_THRESHOLD",)))
    s = scrape(server)
    assert value(s, "egate_passages_total", outcome="PASSED") == 2
    assert value(s, "egate_passages_total", outcome="FACE_MISMATCH") == 1
    # every outcome is there from the start, at zero
    assert value(s, "egate_passages_total", outcome="TAILGATING") == 0
    assert value(s, "egate_passage_reasons_total", reason="SCORE_BELOW_THRESHOLD") == 1


def test_stage_latencies_come_from_each_stages_own_timing_key(
        metrics: LaneMetrics, server: MetricsServer) -> None:
    metrics.record_passage(record(document_ms=120.0, capture_ms=1500.0, verify_ms=40.0))
    metrics.record_passage(record(document_ms=80.0, capture_ms=2500.0, verify_ms=60.0))
    s = scrape(server)
    for stage, total in (("document", 0.2), ("capture", 4.0), ("verify", 0.1)):
        assert value(s, "egate_stage_seconds_count", stage=stage) == 2
        assert value(s, "egate_stage_seconds_sum", stage=stage) == pytest.approx(total)
    # 80 and 120 ms: one at or below 0.1 s, both at or below 0.25 s
    assert value(s, "egate_stage_seconds_bucket", stage="document", le="0.1") == 1
    assert value(s, "egate_stage_seconds_bucket", stage="document", le="0.25") == 2
    assert value(s, "egate_stage_seconds_bucket", stage="capture", le="2.5") == 2
    assert value(s, "egate_stage_seconds_bucket", stage="capture", le="1.0") == 0
    assert value(s, "egate_passage_system_seconds_count") == 2
    assert value(s, "egate_passage_system_seconds_sum") == pytest.approx(3.4)
    assert value(s, "egate_passage_duration_seconds_sum") == pytest.approx(18.0)


@pytest.mark.parametrize("bad", [None, "fast", -5.0, math.nan, math.inf, True])
def test_a_missing_or_insane_timing_is_not_observed(metrics: LaneMetrics, bad: object) -> None:
    metrics.record_passage(record(document_ms=bad, capture_ms=900.0))
    s = parse(metrics.render().decode())
    assert value(s, "egate_stage_seconds_count", stage="document") == 0
    assert value(s, "egate_stage_seconds_count", stage="capture") == 1
    assert value(s, "egate_passages_total", outcome="PASSED") == 1


def test_a_rejected_document_has_no_capture_or_verify_timing(metrics: LaneMetrics) -> None:
    rec = record(Outcome.DOCUMENT_REJECTED, reasons=("EXPIRED",))
    only_document = PassageRecord(**{**rec.__dict__, "stages": {"document": rec.stages[
        "document"]}})
    metrics.record_passage(only_document)
    s = parse(metrics.render().decode())
    assert value(s, "egate_stage_seconds_count", stage="document") == 1
    assert value(s, "egate_stage_seconds_count", stage="capture") == 0
    assert value(s, "egate_stage_seconds_count", stage="verify") == 0


def test_free_text_never_becomes_a_label(metrics: LaneMetrics) -> None:
    """A reason that is not a code (here a name and number) is counted as OTHER."""
    metrics.record_passage(record(Outcome.TIMEOUT, reasons=("Erika Mustermann C01X00T47",
                                                           "TIMEOUT_IN_ADMITTING")))
    text = metrics.render().decode()
    assert "Mustermann" not in text
    s = parse(text)
    assert value(s, "egate_passage_reasons_total", reason="OTHER") == 1
    assert value(s, "egate_passage_reasons_total", reason="TIMEOUT_IN_ADMITTING") == 1


# ------------------------------------------------------------------ state and health


def test_state_gauge_follows_the_lane(metrics: LaneMetrics, server: MetricsServer) -> None:
    lane = LaneStub(state="recovering")
    metrics.attach(lane)
    s = scrape(server)
    assert value(s, "egate_lane_state", state="recovering") == 1
    lane.change("idle")
    lane.change("reading_document")
    lane.change("idle")
    lane.change("out_of_service", "service_lost")
    s = scrape(server)
    states = {dict(labels)["state"]: v for (name, labels), v in s.items()
              if name == "egate_lane_state"}
    assert states["out_of_service"] == 1
    assert sum(states.values()) == 1, states  # exactly one state at a time
    assert len(states) == 15
    assert value(s, "egate_lane_transitions_total", dest="idle") == 2
    assert value(s, "egate_lane_transitions_total", dest="out_of_service") == 1


def test_healthz_is_503_when_a_device_goes_bad(metrics: LaneMetrics,
                                               server: MetricsServer) -> None:
    camera = DeviceHealth.good()
    metrics.add_device("camera", lambda: camera)
    metrics.add_device("documents", DeviceHealth.good)
    lane = LaneStub(state="idle")
    metrics.attach(lane)
    status, body = healthz(server)
    assert status == 200
    assert body == {"lane": LANE, "state": "idle", "in_service": True,
                    "devices": {"camera": {"ok": True, "reason": ""},
                                "documents": {"ok": True, "reason": ""}},
                    "link_up": True, "seconds_since_last_passage": None,
                    "config_warnings": []}
    assert value(scrape(server), "egate_device_up", device="camera") == 1

    camera = DeviceHealth.bad("CAMERA_UNAVAILABLE", "/dev/video0 gone")
    status, body = healthz(server)
    assert status == 503
    assert body["in_service"] is False
    assert body["devices"]["camera"] == {"ok": False, "reason": "CAMERA_UNAVAILABLE"}
    assert "/dev/video0" not in json.dumps(body)  # detail stays in the lane's log
    s = scrape(server)
    assert value(s, "egate_device_up", device="camera") == 0
    assert value(s, "egate_device_up", device="documents") == 1
    assert value(s, "egate_device_info", device="camera", reason="CAMERA_UNAVAILABLE") == 1

    camera = DeviceHealth.good()
    assert healthz(server)[0] == 200


@pytest.mark.parametrize("state", ["out_of_service", "fault", "emergency", "maintenance"])
def test_healthz_is_503_in_an_overlay_state(metrics: LaneMetrics, server: MetricsServer,
                                            state: str) -> None:
    lane = LaneStub(state="idle")
    metrics.attach(lane)
    assert healthz(server)[0] == 200
    lane.change(state)
    status, body = healthz(server)
    assert status == 503
    assert body["state"] == state and body["in_service"] is False


def test_healthz_is_503_before_any_lane_is_known(server: MetricsServer) -> None:
    status, body = healthz(server)
    assert status == 503
    assert body["state"] is None and body["link_up"] is None


def test_a_probe_that_raises_is_unhealthy_not_a_failed_scrape(
        metrics: LaneMetrics, server: MetricsServer) -> None:
    def broken() -> DeviceHealth:
        raise RuntimeError("driver bug")

    metrics.add_device("documents", broken)
    metrics.attach(LaneStub())
    assert value(scrape(server), "egate_device_up", device="documents") == 0
    status, body = healthz(server)
    assert status == 503
    assert body["devices"]["documents"] == {"ok": False, "reason": "PROBE_FAILED"}


# ------------------------------------------------------------------ the board link


def test_request_gap_gauge_follows_link_stats(metrics: LaneMetrics,
                                              server: MetricsServer) -> None:
    stats: dict[str, float] = {}
    metrics.set_link_stats(lambda: stats)
    assert value(scrape(server), "egate_link_max_request_gap_seconds") is None  # unknown
    stats["max_request_gap_s"] = 0.137
    assert value(scrape(server), "egate_link_max_request_gap_seconds") == pytest.approx(0.137)
    stats["max_request_gap_s"] = 0.41
    assert value(scrape(server), "egate_link_max_request_gap_seconds") == pytest.approx(0.41)

    def failing() -> Mapping[str, float]:
        raise OSError("port gone")

    metrics.set_link_stats(failing)
    s = scrape(server)
    assert value(s, "egate_link_max_request_gap_seconds") is None
    assert value(s, "egate_passages_total", outcome="PASSED") == 0  # the scrape still works


def test_link_up_and_link_downs_seen_by_the_metrics(metrics: LaneMetrics,
                                                    server: MetricsServer) -> None:
    lane = LaneStub(link_up=True)
    metrics.attach(lane)
    s = scrape(server)
    assert value(s, "egate_link_up") == 1
    assert value(s, "egate_link_down_events_total") == 0
    lane.link_up = False
    lane.change("out_of_service", "service_lost")  # the edge is seen at the transition
    assert value(scrape(server), "egate_link_up") == 0
    lane.link_up = True
    lane.change("recovering")
    lane.link_up = False  # a second outage, seen only by a scrape
    s = scrape(server)
    assert value(s, "egate_link_up") == 0
    assert value(s, "egate_link_down_events_total") == 2
    assert healthz(server)[1]["link_up"] is False


def test_link_downs_prefer_the_drivers_own_count(metrics: LaneMetrics,
                                                 server: MetricsServer) -> None:
    metrics.attach(LaneStub(link_up=True))
    metrics.set_link_stats(lambda: {"max_request_gap_s": 0.1, "link_downs": 5})
    assert value(scrape(server), "egate_link_down_events_total") == 5


# ------------------------------------------------------------------ time since the last passage


def test_seconds_since_last_passage_grows_at_scrape_time(
        metrics: LaneMetrics, server: MetricsServer, clock: Clock) -> None:
    assert value(scrape(server), "egate_seconds_since_last_passage") is None  # never yet
    metrics.record_passage(record())
    clock.now += 12.5
    assert value(scrape(server), "egate_seconds_since_last_passage") == pytest.approx(12.5)
    clock.now += 30.0
    assert value(scrape(server), "egate_seconds_since_last_passage") == pytest.approx(42.5)
    assert metrics.health()["seconds_since_last_passage"] == pytest.approx(42.5)
    metrics.record_passage(record(passage_id=2))
    clock.now += 1.0
    assert value(scrape(server), "egate_seconds_since_last_passage") == pytest.approx(1.0)


def test_seconds_since_last_passage_with_the_real_clock() -> None:
    metrics = LaneMetrics(LANE)
    metrics.record_passage(record())
    first = metrics.seconds_since_last_passage()
    time.sleep(0.05)
    second = metrics.seconds_since_last_passage()
    assert first is not None and second is not None
    assert second >= first + 0.04


# ------------------------------------------------------------------ the server


def test_anything_else_is_404(server: MetricsServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/", "/metrics/extra", "/health", "/favicon.ico"):
        assert get(base + path)[0] == 404, path
    assert get(base + "/metrics?name[]=egate_link_up")[0] == 200  # a query is no new path


def test_process_start_time_is_before_now(server: MetricsServer) -> None:
    started = value(scrape(server), "egate_process_start_time_seconds")
    assert started is not None
    assert time.time() - 7 * 86400 < started <= time.time()


def test_lanes_have_their_own_registries() -> None:
    a, b = LaneMetrics("a"), LaneMetrics("a")  # even the same id does not collide
    a.record_passage(record())
    assert b"egate_passages_total" in b.render()
    assert 'outcome="PASSED"} 1.0' in a.render().decode()
    assert 'outcome="PASSED"} 0.0' in b.render().decode()
    assert b"egate_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_close_never_hangs_and_frees_the_port(metrics: LaneMetrics) -> None:
    idle = MetricsServer(metrics, "127.0.0.1", 0)
    t0 = time.monotonic()
    idle.close()  # never started: must not wait on a serve loop that never ran
    idle.close()
    srv = MetricsServer(metrics, "127.0.0.1", 0)
    srv.start()
    port = srv.port
    assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    srv.close()
    srv.close()
    assert time.monotonic() - t0 < 3.0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    again = MetricsServer(metrics, "127.0.0.1", port)  # the port is free again
    again.close()


def test_a_busy_port_fails_in_the_constructor(metrics: LaneMetrics,
                                              server: MetricsServer) -> None:
    with pytest.raises(OSError):
        MetricsServer(metrics, "127.0.0.1", server.port)


def test_ipv6_loopback(metrics: LaneMetrics) -> None:
    try:
        srv = MetricsServer(metrics, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with srv:
        assert get(f"http://[::1]:{srv.port}/metrics")[0] == 200


# ------------------------------------------------------------------ the address


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    (":9464", ("0.0.0.0", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    ("lane-pc.local:80", ("lane-pc.local", 80)),
    (" 127.0.0.1:0 ", ("127.0.0.1", 0)),
    ("[::]:65535", ("::", 65535)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("127.0.0.1", "missing port"),
    ("127.0.0.1:", "missing port"),
    ("", "missing port"),
    ("[::1]", "missing port"),
    ("[::1]9464", "missing port"),
    ("127.0.0.1:65536", "out of range"),
    ("127.0.0.1:99999999", "out of range"),
    ("127.0.0.1:-1", "not a number"),
    ("127.0.0.1:http", "not a number"),
    ("::1:9464", "brackets"),
    ("[::1:9464", "unclosed"),
    ("[nothost]:9464", "not an IPv6"),
    ("http://127.0.0.1:9464", "no scheme"),
    ("bad host:9464", "bad host"),
    (9464, "expected a string"),
])
def test_parse_listen_rejects(text: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        parse_listen(text)
    message = str(info.value)
    assert "\n" not in message and repr(str(text).strip())[1:-1] in message


# ------------------------------------------------------------------ a real lane


def test_a_real_lane_passage_shows_in_the_metrics() -> None:
    fake = make_fake_lane()
    metrics = LaneMetrics(fake.lane.lane_id)
    lane: Lane = fake.lane
    metrics.attach(lane)
    metrics.add_device("camera", DeviceHealth.good)
    fake.documents.push(DocumentOutcome(
        accepted=True, portrait=np.zeros((8, 8, 3), np.uint8),
        mrz={"document_type": "P", "surname": "SPECIMEN", "document_number": "C01X00T47"},
        timings_ms={"read_ms": 90.0, "total_ms": 130.0}))
    cap = good_capture()
    fake.capture.push(CaptureOutcome(ok=True, frames=cap.frames, quality=cap.quality,
                                     timings_ms={"capture_ms": 1800.0, "frames": 9.0}))
    fake.verifier.push(MatchDecision(match=True, score=0.8, threshold=0.5,
                                     record={"timings_ms": {"total_ms": 45.0}}))
    fake.to_capturing()
    assert fake.stage() == "verifying"
    assert fake.stage() == "releasing"
    assert fake.leave_by_exit() == "idle"
    assert [r.outcome for r in fake.records] == [Outcome.PASSED]

    with MetricsServer(metrics, "127.0.0.1", 0) as srv:
        status, _, body = get(f"http://127.0.0.1:{srv.port}/metrics")
        health_status, _, health_body = get(f"http://127.0.0.1:{srv.port}/healthz")
    assert status == 200
    text = body.decode()
    assert "SPECIMEN" not in text and "C01X00T47" not in text
    s = {(name, frozenset(kv for kv in labels if kv[0] != "lane")): v
         for (name, labels), v in parse(text).items()}

    def at(name: str, **labels: str) -> float | None:
        return s.get((name, frozenset(labels.items())))

    assert at("egate_passages_total", outcome="PASSED") == 1
    assert at("egate_stage_seconds_sum", stage="document") == pytest.approx(0.13)
    assert at("egate_stage_seconds_sum", stage="capture") == pytest.approx(1.8)
    assert at("egate_stage_seconds_sum", stage="verify") == pytest.approx(0.045)
    assert at("egate_passage_system_seconds_count") == 1
    assert at("egate_lane_state", state="idle") == 1
    assert at("egate_lane_state", state="recovering") == 0
    assert at("egate_lane_transitions_total", dest="closing_exit") == 1
    assert at("egate_link_up") == 1
    assert health_status == 200
    assert json.loads(health_body)["state"] == "idle"
    assert "SPECIMEN" not in health_body.decode()
