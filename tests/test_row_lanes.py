"""A row as it runs: nats-server, the officers' station (``gate station``) and three lane
services (``gate sim --row``), each its own process with its own simulated board, camera
and reader peers; the officer in real headless Chromium.

An impostor at lane 2 stays in the zone; the case reaches the station's queue, the
officer clears the traveller in the browser and lane 2's EXIT opens once, with one person
inside (the lane's own scenario checks and the board's own safety monitor say so);
commands that must not act — signed with another key, carrying another lane's nonce,
stale, replayed — are refused or answered with the first answer, and nothing moves.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_review_browser import CHROMEDRIVER, CHROMIUM, _click, _wait, browser  # noqa: F401

from gate.review.crypto import AuditKey
from gate.review.store import CaseStore, StoreUnavailable
from gate.row.commands import Answer, StationSigner
from gate.row.link import AsyncLoop
from gate.row.simrow import LaneSpec, SimRow

pytestmark = [
    pytest.mark.timeout(420),
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="Debian packages chromium and chromium-driver are not installed"),
]
OFFICER = ("sue", "correct horse battery staple")


class Spy:
    """A plain NATS client on the row's broker (no station, no lane): what the lanes
    publish, the station's commands as they pass, and raw requests of its own."""

    def __init__(self, url: str, tls: Any, inbox: str = "_INBOX") -> None:
        import nats

        self.loop = AsyncLoop("spy")
        self.states: dict[str, tuple[float, dict[str, Any]]] = {}
        self.commands: list[bytes] = []
        self.first_referral: dict[str, float] = {}
        self.errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        async def setup() -> Any:
            nc = await nats.connect(url, pending_size=0, tls=tls, inbox_prefix=inbox,
                                    error_cb=on_error, max_reconnect_attempts=2)

            async def on_state(msg: Any) -> None:
                state = json.loads(msg.data)
                lane = msg.subject.split(".")[2]
                self.states[lane] = (time.monotonic(), state)
                if state.get("case") and lane not in self.first_referral:
                    self.first_referral[lane] = time.monotonic()

            async def on_command(msg: Any) -> None:
                self.commands.append(bytes(msg.data))

            if inbox == "_INBOX":  # the station's certificate: it may watch everything
                await nc.subscribe("gate.lane.*.state", cb=on_state)
                await nc.subscribe("gate.cmd.lane-2", cb=on_command)
            return nc

        self.nc = self._call(setup())

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return self.loop.call(coro, timeout)

    def state(self, lane: str) -> dict[str, Any]:
        return self.states.get(lane, (0.0, {}))[1]

    def request(self, lane: str, data: bytes, timeout: float = 3.0) -> Answer:
        reply = self._call(self.nc.request(f"gate.cmd.{lane}", data, timeout=timeout))
        return Answer.from_bytes(reply.data)

    def close(self) -> None:
        self._call(self.nc.close())
        self.loop.stop()


@pytest.fixture
def row(tmp_path: Path) -> Iterator[SimRow]:
    lanes = [LaneSpec("lane-1", mix="genuine=1", seed=1),
             LaneSpec("lane-2", mix="referred=1", passages=1, seed=2),
             LaneSpec("lane-3", mix="referred=1", passages=1, seed=3)]
    sim_row = SimRow(tmp_path / "row", lanes, officer=OFFICER, unsupervised_after_s=10.0)
    sim_row.start()
    try:
        yield sim_row
    finally:
        sim_row.stop()


def _report(path: Path) -> dict[str, Any]:
    text = path.read_text()
    start = text.rfind("\n{\n") + 1 if "\n{\n" in text else text.find("{")
    return dict(json.loads(text[start:]))


def _queue_rows(driver: Any) -> list[tuple[str, str]]:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#queue-body tr')]"
        ".map(r => [r.dataset.case, r.cells[0].textContent])")
    return [(str(c), str(lane)) for c, lane in rows]


def test_an_impostor_at_lane_2_is_cleared_by_the_officer_in_the_browser(
        row: SimRow, browser: Any) -> None:  # noqa: F811 - the fixture
    from selenium.webdriver.common.by import By

    from gate.row.pki import STATION
    from gate.row.settings import tls_context

    assert row.broker is not None
    spy = Spy(row.broker.url, tls_context(*row.pki.tls_of(STATION)))
    driver = browser
    try:
        driver.get(row.url + "/login")
        driver.find_element(By.ID, "name").send_keys(OFFICER[0])
        driver.find_element(By.ID, "password").send_keys(OFFICER[1])
        driver.find_element(By.ID, "sign-in").click()
        assert _wait(lambda: driver.current_url == row.url + "/", 15)

        # lane 2 refers its impostor: the referral (case id + nonce) with its state...
        assert _wait(lambda: "lane-2" in spy.first_referral, 240), (
            f"no referral from lane 2; its state: {spy.state('lane-2')}")
        referred_at = spy.first_referral["lane-2"]
        case_id = spy.state("lane-2")["case"]["case_id"]
        nonce = spy.state("lane-2")["case"]["nonce"]
        # ...and the case in the officer's queue, without a reload
        assert _wait(lambda: (case_id, "lane-2") in _queue_rows(driver), 10)
        latency = time.monotonic() - referred_at
        print(f"lane 2 referral -> row in the officer's browser: {latency * 1000:.0f} ms")
        assert latency < 3.0  # the 1 s figure is the benchmark's; a loaded CI gets slack
        assert spy.state("lane-2")["state"] == "rejected"

        # commands that must not act, straight onto the bus
        station = StationSigner.from_pem(row.signing_key.read_bytes())
        forged = StationSigner.generate().command("lane-2", case_id, "mallory", "release",
                                                  nonce)
        assert spy.request("lane-2", forged).reason == "COMMAND_SIGNATURE_INVALID"
        assert _wait(lambda: "lane-3" in spy.first_referral, 120)
        other_nonce = spy.state("lane-3")["case"]["nonce"]
        borrowed = station.command("lane-2", case_id, "sue", "release", other_nonce)
        assert spy.request("lane-2", borrowed).reason == "COMMAND_NONCE_UNKNOWN"
        stale = station.command("lane-2", case_id, "sue", "release", nonce,
                                now=time.time() - 30)
        assert spy.request("lane-2", stale).reason == "COMMAND_EXPIRED"
        # a valid command sent with a lane's certificate: only the station may command
        lane1 = Spy(row.broker.url, tls_context(*row.pki.tls_of("lane-1")),
                    inbox="_INBOX.lane-lane-1")
        try:
            genuine = station.command("lane-2", case_id, "sue", "release", nonce)
            with pytest.raises(Exception, match=r"[Tt]imeout|[Nn]o responders"):
                lane1.request("lane-2", genuine, timeout=1.0)
            assert _wait(lambda: any("permissions violation" in e for e in lane1.errors), 3)
        finally:
            lane1.close()
        # no certificate of the row's CA: not even connected
        import ssl

        bare = ssl.create_default_context(cafile=row.pki.tls_of(STATION)[0])
        with pytest.raises(Exception):  # noqa: B017 - the TLS alert, or the reset after it
            Spy(row.broker.url, bare, inbox="_INBOX.x")
        time.sleep(0.5)
        assert spy.state("lane-2")["state"] == "rejected"  # nothing moved
        sent_before = len(spy.commands)

        # the row view: three lanes, reachable, lane 2 with its case waiting
        driver.get(row.url + "/lanes")
        assert _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR,
                                                      "#lanes-body tr")) == 3, 10)
        lane2 = driver.find_element(By.CSS_SELECTOR, 'tr[data-lane="lane-2"]')
        assert "rejected" in lane2.text and "unreachable" not in lane2.get_attribute("class")

        # the officer clears the traveller: lane 2's EXIT opens
        driver.get(f"{row.url}/cases/{case_id}")
        driver.find_element(By.ID, "comment").send_keys("Officer checked: the holder.")
        _click(driver, By.ID, "act-clear")
        assert _wait(lambda: "/?decided=" in driver.current_url, 15)
        assert "exit door released" in driver.find_element(By.ID, "notice").text
        sent = spy.commands[sent_before:]
        assert len(sent) == 1, "the station sends one command for one click"
        replay = spy.request("lane-2", sent[0])  # a replay: the first answer, no action
        assert replay.acted and replay.case_id == case_id

        # the second click: the case is decided, there is nothing to click
        driver.get(f"{row.url}/cases/{case_id}")
        assert not driver.find_elements(By.ID, "act-clear")

        # lane 2's one passage ends: released by the officer, EXIT opened exactly once
        # with one person inside, no unsafe door action (the board's own monitor)
        assert row.lane_procs["lane-2"].wait(60) == 0, (
            (row.folder / "lane-2.out").read_text()[-2000:])
        report = _report(row.folder / "lane-2.out")
        assert report["outcomes"] == {"OFFICER_RELEASED": 1}, report
        assert report["unsafe_door_actions"] == 0 and report["failures"] == []
        assert report["board_watchdog_trips"] == 0

        # the answer is in the station's audit chain, the case cleared once
        store = CaseStore(row.db_url, audit_key=AuditKey.from_file(row.folder / "audit.key"))
        try:
            record = store.case(case_id)
            assert record is not None and record.status == "CLEARED"
            commands = [json.loads(a["detail"]) for a in store.audit_log(case_id)
                        if a["action"] == "LANE_COMMAND"]
            assert [(c["acted"], c["lane"]) for c in commands] == [(True, "lane-2")]
        finally:
            store.close()
        # lane 1 kept serving its travellers throughout
        assert spy.state("lane-1").get("supervised") is True
    finally:
        spy.close()


def _log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def _cases_of(store: CaseStore) -> dict[str, int]:
    """Cases per lane; {} while the store is down (the store reconnects on the next)."""
    counts: dict[str, int] = {}
    try:
        cases = store.cases()
    except StoreUnavailable:
        return {}
    for case in cases:
        counts[case.lane_id] = counts.get(case.lane_id, 0) + 1
    return counts


def test_the_centre_fails_and_comes_back_and_nothing_is_lost(tmp_path: Path) -> None:
    """Broker killed and restarted, the station killed and restarted, PostgreSQL down for
    a while, under two lanes' streams: no unsafe door action, the lanes stop admitting
    when unsupervised and resume, every case reaches the store exactly once."""
    from pgcluster import _BIN, Cluster, _psycopg

    if not _BIN or not _psycopg():
        pytest.skip("PostgreSQL server binaries or psycopg absent")
    base = Path(f"/tmp/egate-row-pg-{os.getpid()}")
    base.mkdir()
    cluster = Cluster(base)
    cluster.init()
    cluster.start()
    passages = 10
    lanes = [LaneSpec(f"lane-{i}", mix="impostor=1,genuine=1", passages=passages, speed=3.0,
                      seed=10 + i) for i in (1, 2)]
    row = SimRow(tmp_path / "row", lanes, officer=OFFICER, unsupervised_after_s=2.0,
                 store=cluster.url)
    audit_key = AuditKey.from_file
    try:
        row.start()
        store = CaseStore(cluster.url, audit_key=audit_key(row.folder / "audit.key"))
        assert row.broker is not None

        def stored() -> int:
            return sum(_cases_of(store).values())

        assert _wait(lambda: stored() >= 1, 240), "no case reached the store"
        # 1. the broker dies mid-stream, and comes back 4 s later on its store
        row.broker.kill()
        time.sleep(4.0)
        row.broker.start()
        assert _wait(lambda: stored() >= 2, 120)
        # 2. the station dies (SIGKILL) and is restarted 4 s later
        row.kill_station()
        time.sleep(4.0)
        row.restart_station()
        # 3. the store is down for 5 s while cases keep coming
        cluster.stop()
        time.sleep(5.0)
        cluster.start()
        for lane_id, proc in row.lane_procs.items():
            assert proc.wait(300) == 0, (row.folder / f"{lane_id}.out").read_text()[-3000:]
        reports = {lane: _report(row.folder / f"{lane}.out") for lane in row.lane_procs}
        expected: dict[str, int] = {}
        for lane, report in reports.items():
            assert report["unsafe_door_actions"] == 0 and report["lane_faults"] == 0, report
            assert report["board_watchdog_trips"] == 0, report
            assert sum(report["outcomes"].values()) == passages, report
            # an impostor is refused inside the lane: every refusal is a case
            expected[lane] = sum(n for o, n in report["outcomes"].items()
                                 if o in ("FACE_MISMATCH", "FACE_NOT_CAPTURED", "TIMEOUT"))
        assert _wait(lambda: _cases_of(store) == expected, 60), (_cases_of(store), expected)
        for lane in row.lane_procs:  # every spool emptied: the stream acknowledged each
            assert not list((row.folder / "spool" / lane).glob("*.case")), lane
        # unsupervised while the broker and the station were gone: admission stopped,
        # then resumed on its own (every passage of the stream ran)
        for lane in row.lane_procs:
            reasons = [e.get("reason") for e in _log_events(row.folder / f"{lane}.log")
                       if e.get("event") == "lane.out_of_service"]
            assert "UNSUPERVISED" in reasons, (lane, reasons)
        store.close()
    finally:
        row.stop()
        with contextlib.suppress(Exception):
            cluster.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
