"""A simulated row under a stream of travellers: station page latency, command round trip,
broker memory, cases per minute.

``gate bench row --lanes 10 --minutes 10`` starts a whole row as ``gate sim row`` does
(nats-server with mTLS, the station, N lane processes with staggered travellers: lane k
starts k x ``--stagger-s`` after the first) and measures, from outside every part:

* station page latency: an officer's signed-in ``GET /api/lanes`` every second;
* command round trip: every second, one command signed with the station's key sent to a
  lane in turn over the broker with the station's certificate; it carries a nonce the
  lane never issued, so the lane checks signature, lane, age and nonce and refuses it
  (``COMMAND_NONCE_UNKNOWN``) — the full path of a release but the door;
* the broker's resident memory (``/proc``), sampled every second;
* cases stored per minute (the station's store), and the lanes' stream figures.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import json
import re
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gate.row.commands import Answer, StationSigner
from gate.row.simrow import LaneSpec, SimRow

PASSWORD = "bench officer passphrase"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lanes", type=int, default=10, help="lanes in the row (default 10)")
    p.add_argument("--minutes", type=float, default=10.0, help="measured time (default 10)")
    p.add_argument("--stagger-s", type=float, default=3.0,
                   help="lane k starts k x this after the first (default 3)")
    p.add_argument("--mix", default="", help="the lanes' mix (default: gate sim's)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--folder", help="the run's folder (default a new temp folder)")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class _Officer:
    def __init__(self, base: str, name: str, password: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = self.opener.open(base + "/login", timeout=10).read().decode()
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        token = match.group(1) if match else ""
        body = urllib.parse.urlencode({"name": name, "password": password,
                                       "csrf": token}).encode()
        self.opener.open(base + "/login", body, timeout=10).read()

    def lanes(self) -> tuple[float, list[dict[str, Any]]]:
        t0 = time.perf_counter()
        data = json.loads(self.opener.open(self.base + "/api/lanes", timeout=10).read())
        return (time.perf_counter() - t0) * 1000.0, list(data["lanes"])


class _Bus:
    """The station's certificate on the broker: raw requests, timed."""

    def __init__(self, row: SimRow) -> None:
        import nats

        from gate.row.link import AsyncLoop
        from gate.row.pki import STATION
        from gate.row.settings import tls_context

        assert row.broker is not None
        self.loop = AsyncLoop("bench-bus")
        tls = tls_context(*row.pki.tls_of(STATION))
        self.nc = self.loop.call(nats.connect(row.broker.url, tls=tls, pending_size=0,
                                              inbox_prefix="_INBOX.bench"), 10.0)

    def request(self, lane: str, data: bytes) -> tuple[float, Answer]:
        t0 = time.perf_counter()
        reply = self.loop.call(self.nc.request(f"gate.cmd.{lane}", data, timeout=2.0), 10.0)
        return (time.perf_counter() - t0) * 1000.0, Answer.from_bytes(reply.data)

    def close(self) -> None:
        self.loop.call(self.nc.close(), 10.0)
        self.loop.stop()


def run(args: argparse.Namespace) -> int:
    from gate.review.crypto import AuditKey
    from gate.review.store import CaseStore

    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="gate-bench-"))
    specs = [LaneSpec(f"lane-{i}", mix=args.mix, seed=i) for i in range(1, args.lanes + 1)]
    row = SimRow(folder, specs, officer=("bench", PASSWORD), stagger_s=args.stagger_s)
    t_start = time.monotonic()
    row.start()
    try:
        return _measure(args, row, folder, t_start, CaseStore, AuditKey)
    finally:
        row.stop()


def _measure(args: argparse.Namespace, row: SimRow, folder: Path, t_start: float,
             store_cls: Any, key_cls: Any) -> int:
    assert row.broker is not None and row.broker.proc is not None
    officer = _Officer(row.url, "bench", PASSWORD)
    bus = _Bus(row)
    signer = StationSigner.from_pem(row.signing_key.read_bytes())
    store = store_cls(row.db_url, audit_key=key_cls.from_file(folder / "audit.key"))
    page_ms: list[float] = []
    rtt_ms: list[float] = []
    refusals: dict[str, int] = {}
    broker_mb: list[float] = []
    reachable_min = args.lanes
    deadline = time.monotonic() + 300.0  # every lane up (models loaded) before measuring
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if sum(1 for x in officer.lanes()[1] if x["reachable"]) == args.lanes:
                break
        time.sleep(1.0)
    cases0 = len(store.cases(limit=100_000))
    t0 = time.monotonic()
    end = t0 + args.minutes * 60.0
    i = 0
    while time.monotonic() < end:
        tick = time.monotonic()
        try:
            ms, lanes = officer.lanes()
            page_ms.append(ms)
            reachable_min = min(reachable_min, sum(1 for x in lanes if x["reachable"]))
        except OSError:
            pass
        lane = f"lane-{i % args.lanes + 1}"
        data = signer.command(lane, "bench-case", "bench", "release", f"bench-{i}")
        try:
            ms, answer = bus.request(lane, data)
            rtt_ms.append(ms)
            refusals[answer.reason or "ACTED"] = refusals.get(answer.reason or "ACTED", 0) + 1
        except Exception as exc:
            refusals[type(exc).__name__] = refusals.get(type(exc).__name__, 0) + 1
        rss = _rss_mb(row.broker.proc.pid)
        if rss is not None:
            broker_mb.append(rss)
        i += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    minutes = (time.monotonic() - t0) / 60.0
    cases = len(store.cases(limit=100_000)) - cases0
    store.close()
    bus.close()
    figures = {
        "lanes": args.lanes, "minutes": round(minutes, 2),
        "page_samples": len(page_ms), "page_ms_p50": _pct(page_ms, 0.5),
        "page_ms_p99": _pct(page_ms, 0.99), "page_ms_max": _pct(page_ms, 1.0),
        "command_samples": len(rtt_ms), "command_rtt_ms_p50": _pct(rtt_ms, 0.5),
        "command_rtt_ms_p99": _pct(rtt_ms, 0.99), "command_answers": refusals,
        "broker_rss_mb_max": round(max(broker_mb), 1) if broker_mb else None,
        "broker_rss_mb_mean": round(statistics.fmean(broker_mb), 1) if broker_mb else None,
        "cases_stored": cases, "cases_per_minute": round(cases / minutes, 2) if minutes else 0,
        "lanes_reachable_min": reachable_min,
        "startup_s": round(t0 - t_start, 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:<22} {value}")
    return 0
