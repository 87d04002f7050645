"""``gate run`` as a lane PC runs it, on three simulated devices in processes of their own.

The board is a ``gate sim board`` process on a pty, the lane camera and the document
camera are ``gate sim camera`` / ``gate sim reader`` processes serving MJPEG over HTTP:
the lane service reaches each through the same interface as a real device, and nothing
simulated shares its interpreter. The test plays the travellers through the peers'
control endpoints (who stands in front of the camera, which page lies on the glass),
reads the lane's own JSON log, its ``/healthz`` and ``/metrics``, and the officers'
review server on the configured store.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import GATE, LaneProcess, Peer

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def idle(entry: dict[str, Any]) -> bool:
    return entry.get("event") == "lane.transition" and entry.get("dest") == "idle"


def passage(entry: dict[str, Any]) -> bool:
    return entry.get("event") == "lane.passage"


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def lane_env(tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "state"
    return {**os.environ, "EGATE_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}


def write_config(path: Path, board: str, camera: str, documents: str, store: str,
                 metrics_port: int) -> Path:
    path.write_text(
        f'[lane]\nid = "t-1"\n\n[devices]\nbarrier = "{board}"\ncamera = "{camera}"\n'
        f'documents = "{documents}"\n\n[cases]\nstore = "{store}"\n\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n\n[face]\ngpu = "off"\n'
        # the simulated reader prints some pages for UTO, the specimen state
        '\n[document]\nallow_specimen = true\n')
    return path


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[dict[str, Peer]]:
    started: dict[str, Peer] = {}
    try:
        link = tmp_path / "board"
        started["board"] = Peer(["board", "--speed", "4", "--link", str(link),
                                 "--traveller", "normal", "--traveller", "normal",
                                 "--traveller", "tailgate"])
        started["camera"] = Peer(["camera", "--port", str(free_port()), "--scene", "no_face"])
        started["reader"] = Peer(["reader", "--port", str(free_port())])
        yield started
    finally:
        for peer in started.values():
            peer.stop()


def _pass_one(lane: LaneProcess, peers: dict[str, Peer], person: str, scene: str
              ) -> dict[str, Any]:
    """One traveller: the camera shows ``person`` in ``scene``, astronaut's passport is
    laid on the glass and taken back once read; returns the lane's passage record."""
    mark = lane.mark()
    peers["camera"].post("/scene", {"scene": scene, "person": person, "seed": 1})
    peers["reader"].post("/place", {"person": "astronaut", "document": "TD3"})
    lane.wait_for(lambda e: e.get("event") == "lane.transition"
                  and e.get("source") == "reading_document", timeout=30, after=mark)
    peers["reader"].post("/remove")
    record = lane.wait_for(passage, timeout=60, after=mark)
    lane.wait_for(idle, timeout=30, after=mark)
    return record


def test_gate_run_on_three_peer_devices(tmp_path: Path, peers: dict[str, Peer],
                                        lane_env: dict[str, str]) -> None:
    store = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    metrics_port = free_port()
    config = write_config(tmp_path / "lane.toml", peers["board"].address,
                          peers["camera"].address, peers["reader"].address, store,
                          metrics_port)
    lane = LaneProcess(config, lane_env)
    try:
        lane.wait_for(lambda e: e.get("event") == "service.started", timeout=120)
        lane.wait_for(idle, timeout=30)
        defaults = lane.events("service.defaults")[0]
        assert str(tmp_path / "state") in defaults["[cases].key_file"]  # the default, logged

        genuine = _pass_one(lane, peers, "astronaut", "approach")
        assert genuine["outcome"] == "PASSED", genuine
        impostor = _pass_one(lane, peers, "tom", "approach")
        assert impostor["outcome"] == "FACE_MISMATCH", impostor
        tailgating = _pass_one(lane, peers, "astronaut", "tailgater")
        assert tailgating["outcome"] == "TAILGATING", tailgating

        status, body = http_get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert status == 200 and json.loads(body)["in_service"] is True
        _, metrics = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        for outcome in ("PASSED", "FACE_MISMATCH", "TAILGATING"):
            assert f'egate_passages_total{{lane="t-1",outcome="{outcome}"}} 1.0' in metrics
        lane.wait_for(lambda e: e.get("event") == "case_spooled", timeout=10)
    finally:
        code = lane.stop()
    assert code == 0
    assert lane.events("service.stopped"), "no clean shutdown"
    assert not [e for e in lane.lines if e.get("level") == "error"], [
        e for e in lane.lines if e.get("level") == "error"][:3]
    board = peers["board"]
    board.stop()
    report = board.last_json()
    assert report["watchdog_trips"] == 0, report
    assert report["max_request_gap_ms"] <= 250, report  # measured by the board, not us
    cases = review_queue(store, tmp_path, lane_env)
    kinds = sorted(c["kind"] for c in cases)
    assert kinds == ["REJECTION", "TAILGATING"], cases
    assert all(c["lane_id"] == "t-1" for c in cases)


def review_queue(store: str, tmp_path: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """What an officer sees: a real ``gate review`` server on the lane's store."""
    import re

    import httpx2 as httpx

    key = tmp_path / "state" / "review.key"
    common = ["--db", store, "--key-file", str(key)]
    subprocess.run([*GATE, "review", *common, "adduser", "anna", "--role", "officer",
                    "--password-stdin"], input="correct horse battery\n", text=True,
                   check=True, env=env, capture_output=True)
    port = free_port()
    server = subprocess.Popen([*GATE, "review", *common, "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/login", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        with httpx.Client(base_url=base) as client:
            page = client.get("/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', page)
            assert token is not None
            client.post("/login", data={"name": "anna", "password": "correct horse battery",
                                        "csrf": token.group(1)})
            reply = client.get("/api/queue")
            assert reply.status_code == 200, reply.text
            queue: list[dict[str, Any]] = reply.json()["cases"]
            return queue
    finally:
        server.terminate()
        server.wait(10)


def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path,
                                                  lane_env: dict[str, str]) -> None:
    bad = tmp_path / "lane.toml"
    for text, expected in (
        ('[lane]\nid = "x"\n[devices]\nbarrier = "/dev/null"\n', "[devices] camera is not set"),
        ('[lane]\nid = "x"\n[timeouts]\nadmitting = nan\n', "finite"),
        ('[lane]\nid = "x"\n[barrier]\npoll_interval_s = 0.5\n', "poll_interval_s"),
        ("[lane\n", "not valid TOML"),
        ('[lane]\nid = "x"\n[devices]\nbarrier = "sim?colour=red"\ncamera = "0"\n'
         'documents = "1"\n', "unknown sim option"),
    ):
        bad.write_text(text)
        result = subprocess.run([*GATE, "run", "--config", str(bad)], capture_output=True,
                                text=True, env=lane_env, timeout=60)
        assert result.returncode == 2, (text, result.stderr)
        lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("{")]
        assert len(lines) == 1 and expected in lines[0], (text, result.stderr)
        assert "Traceback" not in result.stderr


def test_check_reports_each_device(tmp_path: Path, lane_env: dict[str, str]) -> None:
    camera = Peer(["camera", "--scene", "no_face"])
    try:
        missing_board = tmp_path / "no-such-board"
        config = write_config(tmp_path / "lane.toml", str(missing_board), camera.address,
                              f"http://127.0.0.1:{free_port()}/stream.mjpg",
                              f"sqlite:///{tmp_path / 'r.sqlite3'}", 0)
        result = subprocess.run([*GATE, "run", "--config", str(config), "--check", "--json"],
                                capture_output=True, text=True, env=lane_env, timeout=120)
    finally:
        camera.stop()
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["camera"]["ok"] is True
    assert checks["barrier"]["ok"] is False
    assert checks["documents"]["ok"] is False and "READER_UNAVAILABLE" in checks[
        "documents"]["detail"]
    assert checks["case store"]["ok"] is True


def test_unplugging_each_device_and_back(tmp_path: Path, peers: dict[str, Peer],
                                         lane_env: dict[str, str]) -> None:
    """Each peer killed and restarted where it was: a named out-of-service reason on the
    health endpoint and in the log, the lane back in service without a restart."""
    metrics_port = free_port()
    config = write_config(tmp_path / "lane.toml", peers["board"].address,
                          peers["camera"].address, peers["reader"].address,
                          f"sqlite:///{tmp_path / 'review.sqlite3'}", metrics_port)
    lane = LaneProcess(config, lane_env)
    health = f"http://127.0.0.1:{metrics_port}/healthz"
    try:
        lane.wait_for(lambda e: e.get("event") == "service.started", timeout=120)
        lane.wait_for(idle, timeout=30)
        for name, reason in (("camera", "CAMERA_UNAVAILABLE"),
                             ("reader", "READER_UNAVAILABLE"), ("board", "LINK_DOWN")):
            mark = lane.mark()
            peers[name].kill()
            lane.wait_for(lambda e, r=reason: e.get("event") == "lane.cause"  # type: ignore[misc]
                          and e.get("reason") == r, timeout=30, after=mark)
            status, body = http_get(health)
            assert status == 503, body
            assert json.loads(body)["in_service"] is False
            peers[name].start()
            lane.wait_for(idle, timeout=60, after=mark)
            status, body = http_get(health)
            assert status == 200, (name, body)
        # and it still serves a traveller
        record = _pass_one(lane, peers, "astronaut", "approach")
        assert record["outcome"] == "PASSED", record
        # the cable is pulled while a refused traveller is still inside: the officer's case
        # was opened at the rejection and is not lost; the lane waits out of service
        mark = lane.mark()
        peers["camera"].post("/scene", {"scene": "approach", "person": "tom", "seed": 2})
        peers["reader"].post("/place", {"person": "astronaut", "document": "TD3"})
        lane.wait_for(lambda e: e.get("event") == "lane.transition"
                      and e.get("source") == "reading_document", timeout=30, after=mark)
        peers["reader"].post("/remove")
        lane.wait_for(lambda e: e.get("event") == "lane.transition"
                      and e.get("dest") == "rejected", timeout=60, after=mark)
        peers["board"].kill()
        lane.wait_for(lambda e: e.get("event") == "case_spooled", timeout=30, after=mark)
        lane.wait_for(lambda e: e.get("event") == "lane.cause"
                      and e.get("reason") == "LINK_DOWN", timeout=30, after=mark)
        peers["board"].start()
        lane.wait_for(idle, timeout=60, after=mark)
    finally:
        assert lane.stop() == 0
    board = peers["board"]
    board.stop()
    assert board.last_json()["safety_violations"] == 0, board.last_json()
