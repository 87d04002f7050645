"""What the people who keep lanes running watch: ``/healthz`` and Prometheus ``/metrics``.

One ``LaneMetrics`` per lane, fed by the lane's own subscriptions (finished passages,
state changes) and asked at scrape time for what only makes sense "now" (device health,
the board link, time since the last passage). Each has its own ``CollectorRegistry``,
never prometheus_client's global one, so several lanes (or tests) live in one process
without colliding over metric names.

Nothing personal ever leaves here: no names, document numbers, scores per traveller or
images — only outcome and reason *codes*, counts and timings. Every label value that
comes from outside this module passes ``_code``, which turns anything that does not look
like a reason code into ``OTHER``, so a driver that one day puts free text into a reason
cannot leak it (or blow up the number of series) through a label.

``MetricsServer`` serves both on the address ``[metrics] listen`` names (``parse_listen``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from gate.lane import OVERLAY_STATES, STATES, Outcome, PassageRecord, StateChange
from gate.schema import ConfigWarning
from hardware.device import DeviceHealth

#: The exposition format ``generate_latest`` writes (the one every Prometheus reads).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Stage latency: a document read or a face match is tens of ms on a good PC and seconds
#: on a struggling one; the capture window itself runs up to its timeout (~10 s).
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Host time per passage: the three stages together.
SYSTEM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
#: Whole passage, walking and doors included.
DURATION_BUCKETS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)

#: Which timing in each stage's ``timings_ms`` is the stage's own total.
STAGE_TIMING_KEYS: Mapping[str, str] = {
    "document": "total_ms", "capture": "capture_ms", "verify": "total_ms",
}

_CODE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def _code(value: object) -> str:
    """``value`` as a label if it looks like a reason code, else ``OTHER`` (see module doc)."""
    text = str(value)
    return text if _CODE.fullmatch(text) else "OTHER"


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite, non-negative number; else None (unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _seconds(ms: object) -> float | None:
    """A milliseconds figure from a log summary, as seconds; None when it is not a sane one."""
    value = _finite(ms)
    return None if value is None else value / 1000.0


class LaneLike(Protocol):
    """What ``attach`` needs of a lane (``gate.lane.Lane`` has all of it)."""

    @property
    def state(self) -> str: ...

    @property
    def link_up(self) -> bool: ...

    def subscribe(self, handler: Callable[[PassageRecord], None]) -> None: ...

    def subscribe_states(self, handler: Callable[[StateChange], None]) -> None: ...


def _process_start_time() -> float:
    """When this process started (UNIX seconds), so dashboards see restarts.

    Read from /proc on Linux (the lane PCs); elsewhere the time this module was first
    imported, which for ``gate run`` is within its start-up.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # the command name (field 2) may hold spaces; fields after ")" are fixed
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 overall: starttime, in clock ticks since boot
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


class LaneMetrics:
    """The metrics and health of one lane.

    Event metrics (passages, stage latencies, transitions) are updated from the lane's
    thread through ``attach``; handlers are quick (a few counter increments) because the
    lane calls them on its owner thread. Everything that describes "now" is computed at
    scrape time by a custom collector, so a scrape never shows a stale device or link.
    ``clock`` (monotonic seconds) is injectable for tests of the time since the last
    passage.
    """

    def __init__(self, lane_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.lane_id = lane_id
        self.registry = CollectorRegistry()
        self._clock = clock
        self._lock = threading.Lock()
        self._lane: LaneLike | None = None
        self._state: str | None = None
        self._last_passage_at: float | None = None
        self._devices: dict[str, Callable[[], DeviceHealth]] = {}
        self._link_stats: Callable[[], Mapping[str, float]] | None = None
        self._link_was_up: bool | None = None
        self._link_downs_seen = 0

        lane = ("lane",)
        r = self.registry
        self._passages = Counter("egate_passages", "Finished passages, by outcome.",
                                 (*lane, "outcome"), registry=r)
        self._reasons = Counter("egate_passage_reasons",
                                "Reason codes of finished passages (one passage may have "
                                "several).", (*lane, "reason"), registry=r)
        self._stage = Histogram("egate_stage_seconds",
                                "Time each stage took, from its own timings.",
                                (*lane, "stage"), buckets=STAGE_BUCKETS, registry=r)
        self._system = Histogram("egate_passage_system_seconds",
                                 "Host time per passage (document, capture, verify states).",
                                 lane, buckets=SYSTEM_BUCKETS, registry=r)
        self._duration = Histogram("egate_passage_duration_seconds",
                                   "Whole passage, doors and walking included.",
                                   lane, buckets=DURATION_BUCKETS, registry=r)
        self._state_gauge = Gauge("egate_lane_state", "1 for the lane's current state.",
                                  (*lane, "state"), registry=r)
        self._transitions = Counter("egate_lane_transitions",
                                    "State changes of the lane, by the state entered.",
                                    (*lane, "dest"), registry=r)
        Gauge("egate_process_start_time_seconds", "When the lane service started (UNIX s).",
              lane, registry=r).labels(lane_id).set(_process_start_time())
        self._config_warning = Gauge(
            "egate_config_warning", "1 for each setting the lane runs with that weakens a "
            "check (config.threshold_below_calibrated: a face threshold less strict than "
            "the calibrated one).", (*lane, "warning"), registry=r)
        self._warnings: tuple[ConfigWarning, ...] = ()
        # Zeros from the start: a rate() over a series that appears late misses its first
        # increments, and an absent outcome is not the same as none.
        for outcome in Outcome:
            self._passages.labels(lane_id, str(outcome))
        for stage in STAGE_TIMING_KEYS:
            self._stage.labels(lane_id, stage)
        self._system.labels(lane_id)
        self._duration.labels(lane_id)
        for state in STATES:
            self._state_gauge.labels(lane_id, state).set(0)
        r.register(_NowCollector(self))

    # ------------------------------------------------------------ feeding

    def attach(self, lane: LaneLike) -> None:
        """Follow ``lane``: its records and state changes, and its link at scrape time."""
        lane.subscribe(self.record_passage)
        lane.subscribe_states(self.record_state_change)
        with self._lock:
            self._lane = lane
            first = self._state is None
        if first:  # no change arrived since subscribing: take the state it is in now
            self._set_state(lane.state)

    def add_device(self, name: str, health: Callable[[], DeviceHealth]) -> None:
        """A device whose health is shown (``egate_device_up``) and counts for /healthz."""
        with self._lock:
            self._devices[name] = health

    def set_config_warnings(self, warnings: Iterable[ConfigWarning]) -> None:
        """Settings the lane runs with that weaken a check: on /metrics and /healthz."""
        warnings = tuple(warnings)
        with self._lock:
            self._warnings = warnings
        for warning in warnings:
            self._config_warning.labels(self.lane_id, _code(warning.code)).set(1)

    def set_link_stats(self, fn: Callable[[], Mapping[str, float]]) -> None:
        """Where the board link's counters come from (the driver's ``link_stats()``)."""
        with self._lock:
            self._link_stats = fn

    def record_passage(self, record: PassageRecord) -> None:
        """One finished passage (the lane's ``subscribe`` handler)."""
        lane = self.lane_id
        self._passages.labels(lane, _code(record.outcome)).inc()
        for reason in record.reasons:
            self._reasons.labels(lane, _code(reason)).inc()
        for stage, key in STAGE_TIMING_KEYS.items():
            summary = record.stages.get(stage) or {}
            timings = summary.get("timings_ms") or {}
            seconds = _seconds(timings.get(key)) if isinstance(timings, Mapping) else None
            if seconds is not None:
                self._stage.labels(lane, stage).observe(seconds)
        system = _seconds(record.system_ms)
        if system is not None:
            self._system.labels(lane).observe(system)
        duration = _seconds(record.duration_ms)
        if duration is not None:
            self._duration.labels(lane).observe(duration)
        with self._lock:
            self._last_passage_at = self._clock()

    def record_state_change(self, change: StateChange) -> None:
        """One transition (the lane's ``subscribe_states`` handler)."""
        self._transitions.labels(self.lane_id, _code(change.dest)).inc()
        self._set_state(change.dest)
        self._link_up()  # a link loss shows as a transition: note its edge now

    def _set_state(self, state: str) -> None:
        with self._lock:
            previous, self._state = self._state, state
        if previous is not None and previous != state:
            self._state_gauge.labels(self.lane_id, _code(previous)).set(0)
        self._state_gauge.labels(self.lane_id, _code(state)).set(1)

    # ------------------------------------------------------------ reading

    def _link_up(self) -> bool | None:
        """The lane's link now (None without a lane), counting every up→down edge seen."""
        with self._lock:
            lane = self._lane
        if lane is None:
            return None
        try:
            up = bool(lane.link_up)
        except Exception:
            return None
        with self._lock:
            if self._link_was_up and not up:
                self._link_downs_seen += 1
            self._link_was_up = up
        return up

    def link_stats(self) -> Mapping[str, float]:
        """The driver's link counters, or {} when unknown (none set, or it failed)."""
        with self._lock:
            fn = self._link_stats
        if fn is None:
            return {}
        try:
            stats = fn()
        except Exception:
            return {}
        return stats if isinstance(stats, Mapping) else {}

    def link_down_events(self, stats: Mapping[str, float] | None = None) -> int:
        """How often the link went down: the driver's own count when it keeps one (it sees
        every outage), else the edges this object saw at state changes and scrapes."""
        stats = self.link_stats() if stats is None else stats
        downs = stats.get("link_downs")
        if isinstance(downs, int | float) and not isinstance(downs, bool) and downs >= 0:
            return int(downs)
        with self._lock:
            return self._link_downs_seen

    def device_health(self) -> dict[str, DeviceHealth]:
        """Each device's health now; a probe that raises counts as unhealthy, never as a
        failed scrape (the scrape is exactly when the staff need to see it)."""
        with self._lock:
            devices = dict(self._devices)
        out: dict[str, DeviceHealth] = {}
        for name, probe in devices.items():
            try:
                health = probe()
            except Exception as exc:
                health = DeviceHealth.bad("PROBE_FAILED", type(exc).__name__)
            out[name] = health
        return out

    def seconds_since_last_passage(self) -> float | None:
        """None until the first passage: "never" is not a number of seconds."""
        with self._lock:
            last = self._last_passage_at
        return None if last is None else max(0.0, self._clock() - last)

    @property
    def state(self) -> str | None:
        with self._lock:
            return self._state

    def render(self) -> bytes:
        """The text exposition of every metric of this lane."""
        return generate_latest(self.registry)

    def health(self) -> dict[str, Any]:
        """The /healthz document: may this lane take travellers now, and if not, why.

        Not in service in an overlay state (out of service, fault, emergency,
        maintenance), with any device unhealthy, or before the lane's state is known.
        """
        state = self.state
        devices = self.device_health()
        with self._lock:
            warnings = self._warnings
        in_service = (state is not None and state not in OVERLAY_STATES
                      and all(h.ok for h in devices.values()))
        return {
            "lane": self.lane_id,
            "state": state,
            "in_service": in_service,
            "devices": {name: {"ok": h.ok, "reason": _code(h.reason) if h.reason else ""}
                        for name, h in devices.items()},
            "link_up": self._link_up(),
            "seconds_since_last_passage": self.seconds_since_last_passage(),
            "config_warnings": [{"code": _code(w.code), "message": w.message}
                                for w in warnings],
        }


class _NowFamilies:
    """The scrape-time families, empty: ``collect`` fills them, ``describe`` names them."""

    def __init__(self) -> None:
        lane, device = ["lane"], ["lane", "device"]
        self.link_up = GaugeMetricFamily("egate_link_up", "1 while the board link is up.",
                                         labels=lane)
        self.link_downs = CounterMetricFamily("egate_link_down_events",
                                              "Times the board link went down.", labels=lane)
        self.gap = GaugeMetricFamily("egate_link_max_request_gap_seconds",
                                     "Longest silence between two board requests while the "
                                     "link was up (the board's watchdog trips past its "
                                     "limit).", labels=lane)
        self.device_up = GaugeMetricFamily("egate_device_up", "1 while the device is healthy.",
                                           labels=device)
        self.device_info = InfoMetricFamily("egate_device", "Why a device is unhealthy (a "
                                            "reason code; empty when healthy).", labels=device)
        self.since = GaugeMetricFamily("egate_seconds_since_last_passage",
                                       "Seconds since the last passage ended (absent before "
                                       "the first one).", labels=lane)

    def all(self) -> list[Metric]:
        return [self.link_up, self.link_downs, self.gap, self.device_up, self.device_info,
                self.since]


class _NowCollector:
    """The scrape-time metrics: link, devices, time since the last passage.

    A series whose value is unknown (no lane attached, no gap reported, no passage yet) is
    left out rather than shown as 0, which would read as "fine".
    """

    def __init__(self, metrics: LaneMetrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Metric]:
        """Names only, so the registry refuses a clash with the event metrics."""
        return _NowFamilies().all()

    def collect(self) -> Iterable[Metric]:
        m, lane = self._m, self._m.lane_id
        f = _NowFamilies()
        up = m._link_up()
        if up is not None:
            f.link_up.add_metric([lane], 1.0 if up else 0.0)
        stats = m.link_stats()
        f.link_downs.add_metric([lane], float(m.link_down_events(stats)))
        gap = _finite(stats.get("max_request_gap_s"))
        if gap is not None:
            f.gap.add_metric([lane], gap)
        for name, h in m.device_health().items():
            f.device_up.add_metric([lane, _code(name)], 1.0 if h.ok else 0.0)
            f.device_info.add_metric([lane, _code(name)],
                                     {"reason": _code(h.reason) if h.reason else ""})
        since = m.seconds_since_last_passage()
        if since is not None:
            f.since.add_metric([lane], since)
        return f.all()


# ------------------------------------------------------------------ the HTTP side


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never holds up close()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: LaneMetrics) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a client may take to send its request
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        metrics = self.server.metrics
        try:
            if path == "/metrics":
                self._send(200, CONTENT_TYPE, metrics.render())
            elif path == "/healthz":
                health = metrics.health()
                body = json.dumps(health, sort_keys=True).encode() + b"\n"
                self._send(200 if health["in_service"] else 503, "application/json", body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except Exception as exc:  # a bug here must answer, not hang the scraper
            self._send(500, "text/plain; charset=utf-8",
                       f"internal error: {type(exc).__name__}\n".encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every 15 s would drown the lane's own log on stderr."""


class MetricsServer:
    """``GET /metrics`` and ``GET /healthz`` for one lane, on a daemon thread.

    The socket is bound in the constructor, so a busy port fails there (``OSError``) and
    ``port`` is known (port 0: an ephemeral one) before ``start``. ``close`` never hangs:
    handler threads are daemons and the serving thread is joined with a bound.
    """

    def __init__(self, metrics: LaneMetrics, host: str, port: int) -> None:
        self._server = _Server((host, port), metrics)
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def start(self) -> None:
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"metrics-{self.port}", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:  # shutdown() without serve_forever would wait forever
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_listen(text: str) -> tuple[str, int]:
    """``[metrics] listen`` as (host, port): ``"127.0.0.1:9464"``, ``":9464"`` (every
    IPv4 interface: host ``"0.0.0.0"``), ``"[::1]:9464"``, ``"lane-pc:9464"``.

    Port 0 is allowed (an ephemeral port, logged by the service). Raises ValueError with
    a one-line message for anything else.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string HOST:PORT, got {text!r}")
    value = text.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}; expected [IPv6]:PORT")
        host, rest = value[1:end], value[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
        if not rest.startswith(":"):
            raise ValueError(f"missing port in {text!r}; expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        if "://" in value or "/" in value:
            raise ValueError(f"{text!r} is not HOST:PORT (no scheme or path)")
        if ":" not in value:
            raise ValueError(f"missing port in {text!r}; expected HOST:PORT")
        host, port_text = value.rsplit(":", 1)
        if ":" in host:
            raise ValueError(f"IPv6 address in {text!r} needs brackets: [ADDR]:PORT")
        if host and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?", host):
            raise ValueError(f"bad host {host!r} in {text!r}")
        host = host or "0.0.0.0"
    if not port_text:
        raise ValueError(f"missing port in {text!r}")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"port {port_text!r} in {text!r} is not a number")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} in {text!r} is out of range 0..65535")
    return host, port
