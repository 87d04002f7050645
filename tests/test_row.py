"""The row bus: signed station commands and the lane's checks (logic), then the lane and
station ends over a real ``nats-server`` with JetStream (another process): state and
reachability, a release that acts once, commands that must not act, cases that reach the
store exactly once across a broker killed and restarted mid-stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate.review.cases import CaseInput
from gate.review.crypto import ImageSeal, new_key_text, parse_key
from gate.review.queue import CaseSpool
from gate.review.store import CaseStore, StoreUnavailable
from gate.row.broker import LocalBroker
from gate.row.commands import Answer, LaneCommands, StationSigner, load_station_key
from gate.row.link import LaneLink, StationLink

pytestmark = pytest.mark.timeout(120)


class FakeLane:
    """The lane's guard, isolated: who is inside, and what the guard says."""

    def __init__(self) -> None:
        self.current: str | None = "case-1"
        self.refusal: str | None = None
        self.released: list[tuple[str, str, str]] = []

    def act(self, case_id: str, officer: str, op: str) -> str | None:
        if self.refusal is not None:
            return self.refusal
        self.released.append((case_id, officer, op))
        return None


def _commands(signer: StationSigner, lane: FakeLane, lane_id: str = "lane-2",
              **kw: Any) -> LaneCommands:
    return LaneCommands(lane_id, load_station_key(signer.public_pem()), lane.act,
                        lambda: lane.current, **kw)


# ------------------------------------------------------------------ the checks


def test_a_signed_command_acts_once_and_a_repeat_gets_the_first_answer() -> None:
    signer, lane = StationSigner.generate(), FakeLane()
    commands = _commands(signer, lane)
    nonce = commands.issue_nonce("case-1")
    cmd = signer.command("lane-2", "case-1", "anna", "release", nonce)
    first = commands.handle(cmd)
    assert first.acted and first.reason is None and first.case_id == "case-1"
    assert commands.handle(cmd) == first  # replayed: same answer, nothing done again
    assert lane.released == [("case-1", "anna", "release")]
    # a second officer's command for the same referral: the nonce is spent
    second = commands.handle(signer.command("lane-2", "case-1", "sue", "release", nonce))
    assert not second.acted and second.reason == "COMMAND_NONCE_UNKNOWN"
    assert len(lane.released) == 1


@pytest.mark.parametrize("mutate,reason", [
    (lambda s, n, now: StationSigner.generate().command("lane-2", "case-1", "x", "release", n),
     "COMMAND_SIGNATURE_INVALID"),
    (lambda s, n, now: s.command("lane-3", "case-1", "x", "release", n), "COMMAND_WRONG_LANE"),
    (lambda s, n, now: s.command("lane-2", "case-1", "x", "release", n, now=now - 10),
     "COMMAND_EXPIRED"),
    (lambda s, n, now: s.command("lane-2", "case-1", "x", "release", n, now=now + 10),
     "COMMAND_EXPIRED"),
    (lambda s, n, now: s.command("lane-2", "case-1", "x", "release", "not-issued"),
     "COMMAND_NONCE_UNKNOWN"),
    (lambda s, n, now: b'{"command": {"lane": "lane-2"}}', "COMMAND_MALFORMED"),
    (lambda s, n, now: b"\xff\x00", "COMMAND_MALFORMED"),
])
def test_commands_that_must_not_act(mutate: Any, reason: str) -> None:
    signer, lane = StationSigner.generate(), FakeLane()
    commands = _commands(signer, lane)
    nonce = commands.issue_nonce("case-1")
    answer = commands.handle(mutate(signer, nonce, time.time()))
    assert not answer.acted and answer.reason == reason
    assert lane.released == []


def test_a_tampered_command_fails_its_signature() -> None:
    signer, lane = StationSigner.generate(), FakeLane()
    commands = _commands(signer, lane)
    nonce = commands.issue_nonce("case-1")
    cmd = signer.command("lane-2", "case-1", "anna", "release", nonce)
    tampered = cmd.replace(b'"anna"', b'"mallory"')
    assert commands.handle(tampered).reason == "COMMAND_SIGNATURE_INVALID"
    assert commands.handle(cmd).acted  # the genuine one still works: the nonce was kept


def test_another_lanes_nonce_and_a_traveller_who_is_gone() -> None:
    signer, lane = StationSigner.generate(), FakeLane()
    commands = _commands(signer, lane)
    other = _commands(signer, FakeLane(), "lane-3").issue_nonce("case-1")
    assert commands.handle(signer.command("lane-2", "case-1", "a", "release", other)).reason \
        == "COMMAND_NONCE_UNKNOWN"
    nonce = commands.issue_nonce("case-1")
    lane.current = "case-2"  # the referred traveller left; another is inside
    answer = commands.handle(signer.command("lane-2", "case-1", "a", "release", nonce))
    assert answer.reason == "COMMAND_NOT_CURRENT" and lane.released == []


def test_the_lanes_own_guard_has_the_last_word() -> None:
    signer, lane = StationSigner.generate(), FakeLane()
    lane.refusal = "ZONE_NOT_ONE"
    commands = _commands(signer, lane)
    nonce = commands.issue_nonce("case-1")
    answer = commands.handle(signer.command("lane-2", "case-1", "a", "release", nonce))
    assert answer == Answer(False, "ZONE_NOT_ONE", "lane-2", "case-1", answer.command_id)


def test_two_officers_at_once_release_one_case_once() -> None:
    signer, lane = StationSigner.generate(), FakeLane()
    commands = _commands(signer, lane)
    nonce = commands.issue_nonce("case-1")
    cmds = [signer.command("lane-2", "case-1", f"o{i}", "release", nonce) for i in range(8)]
    answers: list[Answer] = []
    threads = [threading.Thread(target=lambda c=c: answers.append(commands.handle(c)))
               for c in cmds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(a.acted for a in answers) == 1 and len(lane.released) == 1


# ------------------------------------------------------------------ over a real broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(tmp_path / "nats") as b:
        yield b


def _wait(predicate: Any, timeout: float, label: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {label}")


def test_state_commands_and_reachability_over_nats(broker: LocalBroker) -> None:
    signer = StationSigner.generate()
    lanes = {i: FakeLane() for i in (1, 2, 3)}
    links = {i: LaneLink(broker.url, f"lane-{i}", _commands(signer, lanes[i], f"lane-{i}"))
             .start() for i in lanes}
    station = StationLink(broker.url, on_case=lambda c: None, heartbeat_s=0.2,
                          reachable_within_s=1.0).start()
    try:
        t0 = time.monotonic()
        for i, link in links.items():
            assert link.publish_state({"state": "VERIFYING" if i == 2 else "IDLE"})
        _wait(lambda: len(station.lanes()) == 3, 2.0, "three lanes at the station")
        arrived = time.monotonic() - t0
        assert arrived < 1.0
        row = {r["lane"]: r for r in station.lanes()}
        assert row["lane-2"]["state"] == "VERIFYING" and all(r["reachable"] for r in row.values())
        _wait(lambda: links[2].station_silent_s() < 1.0, 2.0, "the station's heartbeat")
        # the officer releases lane 2's traveller: lane 2 acts, once
        nonce = links[2].commands.issue_nonce("case-1")
        cmd = signer.command("lane-2", "case-1", "anna", "release", nonce)
        t1 = time.perf_counter()
        answer = station.command("lane-2", cmd)
        round_trip_ms = (time.perf_counter() - t1) * 1000
        assert answer.acted, answer
        assert station.command("lane-2", cmd) == answer  # a second click: first answer
        assert lanes[2].released == [("case-1", "anna", "release")]
        assert lanes[1].released == lanes[3].released == []
        print(f"state at the station in {arrived * 1000:.0f} ms; release round trip "
              f"{round_trip_ms:.1f} ms")
        # lane 3 goes silent: greyed out, and a command to it fails at once
        links[3].close()
        _wait(lambda: not {r["lane"]: r for r in station.lanes()}["lane-3"]["reachable"],
              3.0, "lane 3 unreachable")
        t2 = time.perf_counter()
        gone = station.command("lane-3", signer.command("lane-3", "case-1", "a", "release",
                                                        "n"))
        assert gone.reason == "LANE_UNREACHABLE" and time.perf_counter() - t2 < 0.1
    finally:
        station.close()
        for i, link in links.items():
            if i != 3:
                link.close()


def test_no_command_acts_late_when_the_broker_was_down(broker: LocalBroker) -> None:
    signer, lane = StationSigner.generate(), FakeLane()
    link = LaneLink(broker.url, "lane-2", _commands(signer, lane)).start()
    station = StationLink(broker.url, on_case=lambda c: None, heartbeat_s=0.2).start()
    try:
        link.publish_state({"state": "REFERRED"})
        _wait(lambda: station.reachable("lane-2"), 2.0, "lane 2 at the station")
        nonce = link.commands.issue_nonce("case-1")
        broker.kill()
        _wait(lambda: not station.connected, 3.0, "the station sees the broker gone")
        t0 = time.perf_counter()
        answer = station.command("lane-2", signer.command("lane-2", "case-1", "a", "release",
                                                          nonce))
        assert answer.reason == "LANE_UNREACHABLE" and time.perf_counter() - t0 < 0.1
        broker.start()
        _wait(lambda: station.connected and link.connected, 10.0, "both reconnected")
        time.sleep(1.0)  # a buffered command would arrive now
        assert lane.released == []
    finally:
        station.close()
        link.close()


def _case(i: int, rng: np.random.Generator) -> CaseInput:
    img = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    return CaseInput("lane-2", time.time(), "REJECTION", ("FACE_MISMATCH",),
                     {"document_number": f"Q{i:07d}"}, img, [img])


def test_cases_reach_the_store_exactly_once_across_a_broker_restart(
        broker: LocalBroker, tmp_path: Path) -> None:
    seal = ImageSeal([parse_key(new_key_text())])
    store = CaseStore(f"sqlite:///{tmp_path / 'station.sqlite3'}")
    down = threading.Event()

    def on_case(case: Any) -> None:
        if down.is_set():
            raise StoreUnavailable("the store is down for this test")
        store.add_case(case)

    signer = StationSigner.generate()
    link = LaneLink(broker.url, "lane-2", _commands(signer, FakeLane())).start()
    station = StationLink(broker.url, on_case=on_case).start()
    spool = CaseSpool(tmp_path / "spool", seal, link.case_sink, retry_min_s=0.05,
                      retry_max_s=0.3)
    rng = np.random.default_rng(3)
    submitted: list[str] = []
    try:
        for i in range(10):
            cid = spool.submit(_case(i, rng))
            assert cid is not None
            submitted.append(cid)
        broker.kill()  # mid-stream
        for i in range(10, 20):
            cid = spool.submit(_case(i, rng))
            assert cid is not None
            submitted.append(cid)
        assert spool.pending() > 0  # kept on the lane while the stream is gone
        down.set()  # and the store down for a while after the broker comes back
        broker.start()
        time.sleep(1.5)
        down.clear()
        _wait(lambda: spool.pending() == 0, 20.0, "the spool emptied")
        _wait(lambda: len(store.cases(limit=100)) == 20, 20.0, "twenty cases stored")
        stored = [c.case_id for c in store.cases(limit=100)]
        assert sorted(stored) == sorted(submitted)  # each once, none lost
        # the spool re-sending a case the stream already has adds nothing
        sealed = next(iter(store.cases(limit=1)))
        assert sealed.case_id in submitted
    finally:
        spool.close()
        station.close()
        link.close()
        store.close()


# ------------------------------------------------------------------ pki and [row]


def test_gate_pki_makes_a_row_and_never_overwrites(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from cryptography import x509

    def gate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gate.cli", *args], capture_output=True,
                              text=True, timeout=60)

    folder = tmp_path / "row"
    done = gate("pki", "init", str(folder), "--lanes", "lane-1,lane-2", "--port", "4333")
    assert done.returncode == 0, done.stderr
    for path in ("ca.pem", "ca.key", "broker/broker.pem", "station/signing.key",
                 "station/station.pem", "lanes/lane-1/lane.pem", "lanes/lane-2/station.pub"):
        assert (folder / path).is_file(), path
    assert (folder / "ca.key").stat().st_mode & 0o077 == 0  # private keys 0600
    assert (folder / "lanes/lane-1/lane.key").stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate((folder / "lanes/lane-1/lane.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "O=egate-row,CN=lane-1"
    conf = json.loads((folder / "broker/nats-server.conf").read_text())
    users = {u["user"]: u["permissions"] for u in conf["authorization"]["users"]}
    assert users["O=egate-row,CN=lane-1"]["publish"]["allow"] == [
        "gate.lane.lane-1.state", "gate.cases.lane-1"]
    assert conf["port"] == 4333 and conf["tls"]["verify_and_map"] is True
    assert gate("pki", "init", str(folder)).returncode == 2  # a CA there: refused
    assert gate("pki", "lane", str(folder), "lane-1").returncode == 2  # exists
    bad = gate("pki", "lane", str(folder), "lane.3")
    assert bad.returncode == 2 and "lane id" in bad.stderr
    assert gate("pki", "lane", str(folder), "lane-3").returncode == 0
    conf = json.loads((folder / "broker/nats-server.conf").read_text())
    assert len(conf["authorization"]["users"]) == 4  # the station and three lanes
    # the station key the lanes pin is the signing key's public half
    signer = StationSigner.from_pem((folder / "station/signing.key").read_bytes())
    assert signer.public_pem() == (folder / "lanes/lane-3/station.pub").read_bytes()


@pytest.mark.parametrize("row,message", [
    ('broker = "nats://127.0.0.1:1"', "station_key is not"),
    ('broker = "nats://127.0.0.1:1"\nstation_key = "/nonexistent.pub"', "station_key"),
    ('broker = "nats://127.0.0.1:1"\nstation_key = "K"\ntls_ca = "ca.pem"', "go together"),
    ("unsupervised_after_s = -1", "unsupervised_after_s"),
    ("brokr = 'x'", "brokr"),
])
def test_a_bad_row_section_is_a_one_line_error(tmp_path: Path, row: str, message: str) -> None:
    from gate.config import ConfigError, parse_config
    from gate.row.member import RowMember
    from gate.service import row_settings

    key = tmp_path / "station.pub"
    key.write_bytes(StationSigner.generate().public_pem())
    text = row.replace('"K"', f'"{key}"')
    import tomllib

    config = parse_config(tomllib.loads(f'[lane]\nid = "lane-1"\n[row]\n{text}\n'), "lane.toml")
    with pytest.raises(ConfigError, match=message):
        RowMember(config.lane_id, row_settings(config))


def test_a_lane_id_that_cannot_name_a_subject_is_refused_in_a_row(tmp_path: Path) -> None:
    import tomllib

    from gate.config import ConfigError, parse_config
    from gate.service import row_settings

    key = tmp_path / "station.pub"
    key.write_bytes(StationSigner.generate().public_pem())
    config = parse_config(tomllib.loads(
        f'[lane]\nid = "lane.1"\n[row]\nbroker = "nats://x:1"\nstation_key = "{key}"\n'))
    with pytest.raises(ConfigError, match="lane id"):
        row_settings(config)


def test_gate_run_check_reports_the_row(broker: LocalBroker, tmp_path: Path) -> None:
    import tomllib

    from gate.config import parse_config
    from gate.service import check_lane

    signer = StationSigner.generate()
    key = tmp_path / "station.pub"
    key.write_bytes(signer.public_pem())

    def row_check(url: str) -> Any:
        config = parse_config(tomllib.loads(
            f'[lane]\nid = "lane-1"\n[devices]\nbarrier = "sim"\n'
            f'[row]\nbroker = "{url}"\nstation_key = "{key}"\n'), "lane.toml")
        report = check_lane(config, timeout_s=2.0)
        return next(r for r in report.results if r.name == "row")

    quiet = row_check(broker.url)  # joined, but no station beats yet: a warning
    assert quiet.ok and quiet.warning and "no station heartbeat" in quiet.detail
    station = StationLink(broker.url, on_case=lambda case: None).start()
    try:
        heard = row_check(broker.url)
        assert heard.ok and not heard.warning and "heartbeat heard" in heard.detail
    finally:
        station.close()
    gone = row_check(f"nats://127.0.0.1:{broker.port + 1}")
    assert not gone.ok and "BUS_UNAVAILABLE" in gone.detail


def test_gate_sim_row_refuses_bad_options_before_starting_anything(tmp_path: Path) -> None:
    import subprocess
    import sys

    def sim_row(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gate.cli", "sim", "row",
                               "--folder", str(tmp_path / "row"), *args],
                              capture_output=True, text=True, timeout=60)

    bad = sim_row("--officer", "no-password")
    assert bad.returncode == 2 and "NAME:PASSWORD" in bad.stderr
    bad = sim_row("--mix", "genuine")
    assert bad.returncode == 2 and "NAME=WEIGHT" in bad.stderr
    assert sim_row("--lanes", "0").returncode == 2  # 1..40
    assert not (tmp_path / "row").exists()  # nothing was started or written
