"""Sign-in, roles, CSRF, lock-out and decisions of the officers' app (in-process client)."""

from __future__ import annotations

import argparse
import io
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from test_review_support import (
    PASSWORD,
    RecordingLanes,
    add_officer,
    csrf_of,
    new_seal,
    new_store,
    put_case,
    sign_in,
)

from gate.review.app import PUBLIC_PATHS, ReviewSettings, create_app
from gate.review.auth import (
    SignIn,
    SignInPolicy,
    WeakPassword,
    hash_password,
    verify_password,
)
from gate.review.store import CaseStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    seal = new_seal()
    store = new_store(tmp_path)
    for name, role in (("anna", "officer"), ("sue", "supervisor"), ("max", "maintenance")):
        add_officer(store, name, role)
    lanes = RecordingLanes()
    settings = ReviewSettings(purge_interval_s=0, sign_in=SignInPolicy(max_attempts=3))
    app = create_app(store, seal, lanes, settings)
    case_id = put_case(store, seal)
    with TestClient(app) as client:
        yield {"app": app, "store": store, "seal": seal, "lanes": lanes, "case": case_id,
               "client": client}


def test_password_hashing() -> None:
    h1, h2 = hash_password(PASSWORD), hash_password(PASSWORD)
    assert h1 != h2 and h1.startswith("scrypt$16384$8$1$")  # salted, parameters recorded
    assert PASSWORD not in h1
    assert verify_password(PASSWORD, h1) and not verify_password(PASSWORD + "!", h1)
    assert not verify_password(PASSWORD, "garbage") and not verify_password(PASSWORD, "")
    with pytest.raises(WeakPassword):
        hash_password("short")


def test_lockout_after_failed_attempts(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add_officer(store, "anna")
    gate = SignIn(store, SignInPolicy(max_attempts=3, lockout_s=600))
    now = 1_000_000.0
    assert [gate.sign_in("anna", "wrong password", now).reason for _ in range(3)] == [
        "BAD_CREDENTIALS", "BAD_CREDENTIALS", "LOCKED"]
    assert gate.sign_in("anna", PASSWORD, now + 10).reason == "LOCKED"  # right password, still
    assert gate.sign_in("anna", PASSWORD, now + 601).ok  # the lock expires
    assert gate.sign_in("my-secret-pw", PASSWORD, now).reason == "BAD_CREDENTIALS"
    assert all("my-secret-pw" not in str(a) for a in store.audit_log())  # typed names not kept
    actions = [a["action"] for a in store.audit_log()]
    assert "LOCKED_OUT" in actions and actions.count("LOGIN_FAILED") >= 4


def test_lockout_over_http(world: dict[str, Any]) -> None:
    client = world["client"]
    for _ in range(3):
        r = sign_in(client, "anna", "not the password")
        assert r.status_code == 401 and "Sign-in refused" in r.text
    assert sign_in(client, "anna").status_code == 401  # locked now, even with the password
    assert client.get("/api/queue").status_code == 401
    assert sign_in(client, "sue").status_code == 303  # others are not affected


def test_unauthenticated_requests_to_every_route_are_refused(world: dict[str, Any]) -> None:
    app, client, case_id = world["app"], world["client"], world["case"]
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 12
    checked = 0
    for cookies in ({}, {"egate_session": "forged-token-" + "x" * 30}):
        client.cookies.clear()
        for k, v in cookies.items():
            client.cookies.set(k, v)
        for route in routes:
            if route.path in PUBLIC_PATHS:
                continue
            path = route.path.replace("{case_id}", case_id).replace("{slot}", "portrait")
            for method in sorted(route.methods or ()):
                r = client.request(method, path, data={"action": "clear", "comment": "x",
                                                       "csrf": "x"}, follow_redirects=False)
                assert r.status_code in (303, 401), (method, path, r.status_code)
                if r.status_code == 303:
                    assert r.headers["location"] == "/login"
                assert "L898902C3" not in r.text and "ERIKSSON" not in r.text
                assert not r.content.startswith(b"\xff\xd8")
                checked += 1
    protected = [r for r in routes if r.path not in PUBLIC_PATHS]
    assert checked == 2 * sum(len(r.methods or ()) for r in protected) >= 18
    assert world["lanes"].calls == []
    assert world["store"].case(case_id).status == "OPEN"
    # The public paths serve nothing personal: the sign-in form and the static assets.
    for path in PUBLIC_PATHS:
        assert client.get(path).status_code == 200


def test_officer_decides_and_everything_is_audited(world: dict[str, Any]) -> None:
    client, store, lanes, case_id = world["client"], world["store"], world["lanes"], world["case"]
    assert sign_in(client, "anna").status_code == 303
    queue = client.get("/")
    assert queue.status_code == 200 and case_id in queue.text
    assert "L898902C3" not in queue.text and "••••••2C3" in queue.text  # masked in the queue
    assert client.get("/api/queue?lane=lane-1").json()["cases"][0]["case_id"] == case_id
    other_lane = client.get("/api/queue?lane=lane-9").json()
    assert other_lane["cases"] == [] and other_lane["per_lane"] == {"lane-1": 1}
    page = client.get(f"/cases/{case_id}")
    assert "L898902C3" in page.text and "ERIKSSON" in page.text  # full in the case view
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    img = client.get(f"/cases/{case_id}/images/portrait")
    assert img.status_code == 200 and img.content.startswith(b"\xff\xd8")
    token = csrf_of(page.text)
    # A comment is required.
    r = client.post(f"/cases/{case_id}/decision", data={"action": "clear", "comment": " ",
                                                        "csrf": token})
    assert r.status_code == 400 and lanes.calls == []
    r = client.post(f"/cases/{case_id}/decision", data={
        "action": "clear", "comment": "Same person, new haircut.", "csrf": token},
        follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?decided=clear"
    assert lanes.calls == [(case_id, "anna")]
    assert client.get("/api/queue").json()["cases"] == []
    rec = store.case(case_id)
    assert rec.status == "CLEARED" and rec.decided_by == "anna"
    # Deciding twice is refused and does not release the door again.
    r = client.post(f"/cases/{case_id}/decision", data={
        "action": "clear", "comment": "again", "csrf": token})
    assert r.status_code == 409 and len(lanes.calls) == 1
    trail = [(a["user_name"], a["action"]) for a in store.audit_log(case_id)]
    assert ("anna", "VIEW_CASE") in trail and ("anna", "VIEW_IMAGE") in trail
    assert ("anna", "DECIDE_CLEAR") in trail


def test_csrf_is_required_for_every_state_change(world: dict[str, Any]) -> None:
    client, store, lanes, case_id = world["client"], world["store"], world["lanes"], world["case"]
    assert sign_in(client, "anna").status_code == 303
    login_form_token = csrf_of(TestClient(world["app"]).get("/login").text)
    for token in ("", "guessed", login_form_token):
        r = client.post(f"/cases/{case_id}/decision",
                        data={"action": "clear", "comment": "forged", "csrf": token})
        assert r.status_code == 403
    assert store.case(case_id).status == "OPEN" and lanes.calls == []
    # Another officer's token does not work in this session.
    other = TestClient(world["app"])
    assert sign_in(other, "sue").status_code == 303
    sue_token = csrf_of(other.get(f"/cases/{case_id}").text)
    r = client.post(f"/cases/{case_id}/decision",
                    data={"action": "confirm", "comment": "x", "csrf": sue_token})
    assert r.status_code == 403 and store.case(case_id).status == "OPEN"
    assert client.post("/logout", data={"csrf": "nope"}).status_code == 403
    assert client.get("/api/queue").status_code == 200  # still signed in
    # Login CSRF: a form posted without the login cookie's token is refused.
    fresh = TestClient(world["app"])
    r = fresh.post("/login", data={"name": "anna", "password": PASSWORD, "csrf": "x"})
    assert r.status_code == 403
    assert sum(a["action"] == "CSRF_REJECTED" for a in store.audit_log()) >= 6
    r = client.post("/logout", data={"csrf": csrf_of(client.get("/").text)},
                    follow_redirects=False)
    assert r.status_code == 303 and client.get("/api/queue").status_code == 401


def test_roles(world: dict[str, Any]) -> None:
    app, store, case_id = world["app"], world["store"], world["case"]
    maint = TestClient(app)
    r = sign_in(maint, "max")
    assert r.status_code == 303 and r.headers["location"] == "/lanes"
    for path in ("/", "/api/queue", f"/cases/{case_id}", f"/cases/{case_id}/images/portrait",
                 "/audit"):
        r = maint.get(path)
        assert r.status_code == 403 and "L898902C3" not in r.text, path
    lanes = maint.get("/api/lanes").json()["lanes"]
    assert {(row["lane_id"], row["state"], row["open_cases"]) for row in lanes} == {
        ("lane-1", "IDLE", 1), ("lane-2", "OUT_OF_SERVICE", 0)}
    by_lane = {row["lane"]: row for row in lanes}
    assert by_lane["lane-2"]["zone_count"] == 1 and by_lane["lane-1"]["reachable"] is True
    page = maint.get("/lanes").text
    assert "<tr data-lane=\"lane-1\" class=\"\">" in page and "<td>1</td>" in page

    officer = TestClient(app)
    sign_in(officer, "anna")
    assert officer.get("/lanes").status_code == 403 and officer.get("/audit").status_code == 403
    token = csrf_of(officer.get(f"/cases/{case_id}").text)
    r = officer.post(f"/cases/{case_id}/decision",
                     data={"action": "escalate", "comment": "Twin?", "csrf": token},
                     follow_redirects=False)
    assert r.status_code == 303
    assert officer.get("/api/queue").json()["cases"] == []  # left the officer's queue
    r = officer.post(f"/cases/{case_id}/decision",
                     data={"action": "confirm", "comment": "x", "csrf": token})
    assert r.status_code == 409  # an escalated case is the supervisor's

    sup = TestClient(app)
    sign_in(sup, "sue")
    rows = sup.get("/api/queue").json()["cases"]
    assert [(r["case_id"], r["status"]) for r in rows] == [(case_id, "ESCALATED")]
    token = csrf_of(sup.get(f"/cases/{case_id}").text)
    r = sup.post(f"/cases/{case_id}/decision",
                 data={"action": "confirm", "comment": "Different person.", "csrf": token},
                 follow_redirects=False)
    assert r.status_code == 303 and store.case(case_id).status == "CONFIRMED"
    audit = sup.get("/audit").text
    assert "DECIDE_ESCALATE" in audit and "DECIDE_CONFIRM" in audit and "DENIED" in audit


def test_release_refused_by_the_lane_keeps_the_case_open(world: dict[str, Any]) -> None:
    client, store, lanes, case_id = world["client"], world["store"], world["lanes"], world["case"]
    lanes.answer = False
    sign_in(client, "anna")
    token = csrf_of(client.get(f"/cases/{case_id}").text)
    r = client.post(f"/cases/{case_id}/decision",
                    data={"action": "clear", "comment": "ok", "csrf": token})
    assert r.status_code == 409 and "refused to release" in r.text
    assert store.case(case_id).status == "OPEN"
    assert any(a["action"] == "RELEASE_FAILED" for a in store.audit_log(case_id))


def test_without_lane_control_clear_is_refused(tmp_path: Path) -> None:
    seal, store = new_seal(), new_store(tmp_path)
    add_officer(store, "anna")
    case_id = put_case(store, seal)
    with TestClient(create_app(store, seal, None, ReviewSettings(purge_interval_s=0))) as c:
        sign_in(c, "anna")
        token = csrf_of(c.get(f"/cases/{case_id}").text)
        r = c.post(f"/cases/{case_id}/decision",
                   data={"action": "clear", "comment": "ok", "csrf": token})
        assert r.status_code == 409 and "No lane connection" in r.text
        rec = store.case(case_id)
        assert rec is not None and rec.status == "OPEN"


def test_server_with_the_wrong_key_says_so(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add_officer(store, "anna")
    right = new_seal()
    case_id = put_case(store, right)
    wrong = new_seal()
    with TestClient(create_app(store, wrong, None, ReviewSettings(purge_interval_s=0))) as c:
        sign_in(c, "anna")
        page = c.get(f"/cases/{case_id}")
        assert page.status_code == 200
        assert f"sealed with key {right.key_id_hex}" in page.text
        img = c.get(f"/cases/{case_id}/images/portrait")
        assert img.status_code == 409 and "sealed with key" in img.text


def test_idle_session_expires(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add_officer(store, "anna")
    gate = SignIn(store, SignInPolicy(idle_s=60))
    res = gate.sign_in("anna", PASSWORD, 1000.0)
    assert res.token and gate.session(res.token, 1030.0) is not None
    assert gate.session(res.token, 1089.0) is not None  # touched at 1030
    assert gate.session(res.token, 1200.0) is None
    assert gate.session(res.token, 1201.0) is None  # ended, not revived


def test_cli_adduser_and_keygen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gate.commands import review as cmd

    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    db = f"sqlite:///{tmp_path / 'sub' / 'review.sqlite3'}"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    args = parser.parse_args(["review", "--db", db, "adduser", "anna", "--role", "supervisor",
                              "--password-stdin"])
    assert args.func(args) == 0
    user = CaseStore(db).user("anna")
    assert user is not None and user.role == "supervisor"
    assert verify_password(PASSWORD, user.password_hash)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    args = parser.parse_args(["review", "adduser", "bob", "--role", "officer",
                              "--password-stdin", "--db", db])
    assert args.func(args) == 2 and CaseStore(db).user("bob") is None
    lanes = cmd.load_lane_control("test_review_support:RecordingLanes")
    assert isinstance(lanes, RecordingLanes) and "lane-2" in lanes.lane_states()
    with pytest.raises(TypeError):
        cmd.load_lane_control("test_review_support:PASSWORD")
    key = tmp_path / "review.key"
    args = parser.parse_args(["review", "keygen", str(key)])
    assert args.func(args) == 0 and args.func(args) == 1  # never overwrites a key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert re.fullmatch(r"[A-Za-z0-9+/=]{44}\n", key.read_text())


def test_two_officers_clearing_at_once_release_the_door_once(tmp_path: Path) -> None:
    import threading
    import time

    seal, store = new_seal(), new_store(tmp_path)
    add_officer(store, "anna")
    add_officer(store, "bert")
    case_id = put_case(store, seal)

    class SlowLanes(RecordingLanes):
        def release_exit(self, case_id: str, officer: str) -> bool:
            time.sleep(0.3)  # a door takes time to open
            return super().release_exit(case_id, officer)

    lanes = SlowLanes()
    app = create_app(store, seal, lanes, ReviewSettings(purge_interval_s=0))
    clients = [TestClient(app), TestClient(app)]
    tokens = []
    for client, name in zip(clients, ("anna", "bert"), strict=True):
        sign_in(client, name)
        tokens.append(csrf_of(client.get(f"/cases/{case_id}").text))
    codes: list[int] = []

    def clear(i: int) -> None:
        r = clients[i].post(f"/cases/{case_id}/decision", follow_redirects=False,
                            data={"action": "clear", "comment": "ok", "csrf": tokens[i]})
        codes.append(r.status_code)

    threads = [threading.Thread(target=clear, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(codes) == [303, 409]
    assert len(lanes.calls) == 1
    rec = store.case(case_id)
    assert rec is not None and rec.status == "CLEARED"
    assert len(store.decisions(case_id)) == 1


def test_scheduled_purge_runs_in_the_server(tmp_path: Path) -> None:
    import time

    seal, store = new_seal(), new_store(tmp_path)
    case_id = put_case(store, seal)
    store.decide(case_id, "anna", "confirm", "x", ("OPEN",), now=time.time() - 120)
    settings = ReviewSettings(purge_interval_s=0.1, retention_s=60)
    with TestClient(create_app(store, seal, None, settings)):
        deadline = time.monotonic() + 5
        while store.image_slots(case_id) and time.monotonic() < deadline:
            time.sleep(0.05)
    rec = store.case(case_id)
    assert rec is not None and rec.images_purged_at is not None
    assert store.image_slots(case_id) == []


def test_a_chip_case_shows_both_portraits_and_the_chip_verdict(world: dict[str, Any]) -> None:
    import dataclasses

    from test_review_support import sample_case

    from gate.review.store import seal_case
    from sim.people import person

    client, store, seal = world["client"], world["store"], world["seal"]
    base = sample_case(holder="tom", live="t1-b")
    chip = {"access": "PACE", "reference": "chip", "authentic": True, "reasons": [],
            "dg1_matches_mrz": True, "passive_authentication": {"valid": True},
            "chip_authentication": {"method": "CA", "valid": True},
            "cross_check": {"page_portrait": True, "page_score": 0.71, "page_match": True}}
    case = dataclasses.replace(base, mrz={**base.mrz, "chip": chip},
                               chip_portrait=person("astronaut").portrait())
    sealed = seal_case(case, seal)
    assert store.add_case(sealed)
    assert store.image_slots(sealed.case_id)[:2] == ["portrait", "chip-portrait"]
    assert sign_in(client, "anna").status_code == 303
    page = client.get(f"/cases/{sealed.case_id}").text
    assert 'id="chip-portrait"' in page and 'id="portrait"' in page
    assert page.count('class="live-frame"') == 2  # the chip portrait is no live frame
    assert re.search(r'id="chip-authentic">yes<', page)
    assert re.search(r'id="chip-reference">chip portrait<', page)
    assert "0.71" in page and "{&#39;access" not in page  # a table, not the raw dict
    img = client.get(f"/cases/{sealed.case_id}/images/chip-portrait")
    assert img.status_code == 200 and img.content.startswith(b"\xff\xd8")
    # a case without a chip says nothing of one
    plain = client.get(f"/cases/{world['case']}").text
    assert 'id="chip"' not in plain and "chip-portrait" not in plain


def test_an_unreachable_lane_has_no_release_button_and_a_refusal_says_why(
        world: dict[str, Any]) -> None:
    client, store, lanes, case_id = world["client"], world["store"], world["lanes"], world["case"]
    assert store.case(case_id).lane_id == "lane-1"
    sign_in(client, "anna")
    page = client.get(f"/cases/{case_id}").text
    assert 'id="act-clear">' in page and 'id="lane-unreachable"' not in page
    lanes.states["lane-1"]["reachable"] = False  # the lane's heartbeat stopped
    page = client.get(f"/cases/{case_id}").text
    assert 'id="act-clear" disabled' in page and 'id="lane-unreachable"' in page
    lanes.states["lane-1"]["reachable"] = True
    # a row's LaneControl says why the lane refused; the officer reads it
    lanes.answer = False
    lanes.refusal = lambda case: "RELEASE_REFUSED:ZONE_NOT_ONE"
    token = csrf_of(client.get(f"/cases/{case_id}").text)
    r = client.post(f"/cases/{case_id}/decision",
                    data={"action": "clear", "comment": "ok", "csrf": token})
    assert r.status_code == 409
    assert "refused to release the exit door: RELEASE_REFUSED:ZONE_NOT_ONE." in r.text
    assert store.case(case_id).status == "OPEN"
