"""The findings of the officers' app security review (issue 11), one test each at least.

The lock-out and the per-address limit are tested against the real server over real HTTP
from parallel threads; the rest with the in-process client. Time is never measured: the
tests that need the clock move the app's clock (``gate.review.app.time``) instead.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_review_postgres import cluster  # noqa: F401  (the throw-away PostgreSQL)
from test_review_support import (
    PASSWORD,
    SPECIMEN_MRZ,
    add_officer,
    csrf_of,
    new_seal,
    new_store,
    put_case,
    sign_in,
)

from gate.review.app import ReviewSettings, create_app
from gate.review.auth import SignIn, SignInPolicy, hash_password
from gate.review.store import CaseStore

pytestmark = pytest.mark.timeout(180)


# --- a real server, real HTTP --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[int]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "review server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


class _Browser:
    """One officer's station: one keep-alive connection, its own cookies."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookies: dict[str, str] = {}
        self._token = ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[
            int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        reply = self.conn.getresponse()
        text = reply.read().decode()
        for line in reply.msg.get_all("set-cookie") or []:
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if value in ('""', "") or "Max-Age=0" in line:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply.status, text

    def sign_in(self, name: str, password: str) -> int:
        if not self._token or "egate_login_csrf" not in self.cookies:
            self.fetch_form()
        status, text = self.request("POST", "/login", {"name": name, "password": password,
                                                       "csrf": self._token})
        if 'name="csrf"' in text:  # a refused sign-in comes with a fresh form, as in a browser
            self._token = csrf_of(text)
        return status

    def fetch_form(self) -> None:
        self._token = csrf_of(self.request("GET", "/login")[1])

    def close(self) -> None:
        self.conn.close()


def _parallel_sign_ins(port: int, attempts: list[tuple[str, str]], threads: int) -> list[int]:
    """Every attempt over real HTTP, ``threads`` stations at once; the status of each."""
    codes: list[int] = []
    lock = threading.Lock()
    work = list(attempts)
    start = threading.Barrier(threads)

    def station() -> None:
        browser = _Browser(port)
        browser.fetch_form()
        start.wait()
        try:
            while True:
                with lock:
                    if not work:
                        return
                    name, password = work.pop()
                code = browser.sign_in(name, password)
                with lock:
                    codes.append(code)
        finally:
            browser.close()

    pool = [threading.Thread(target=station) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(150)
    assert len(codes) == len(attempts)
    return codes


def _world(tmp_path: Path, **policy: Any) -> tuple[CaseStore, Any]:
    store = new_store(tmp_path)
    for name, role in (("anna", "officer"), ("sue", "supervisor")):
        add_officer(store, name, role)
    settings = ReviewSettings(purge_interval_s=0, sign_in=SignInPolicy(**policy))
    return store, create_app(store, new_seal(), None, settings)


# --- finding 1: parallel logins must not beat the lock-out -----------------------------


def test_parallel_wrong_passwords_over_http_cannot_beat_the_lockout(tmp_path: Path) -> None:
    # The per-address limit is set out of the way: this is about the account's lock.
    store, app = _world(tmp_path, max_attempts=5, lockout_s=900,
                        address_max_failures=100_000)
    with _serving(app) as port:
        codes = _parallel_sign_ins(port, [("anna", f"wrong password {i}") for i in range(100)],
                                   threads=20)
        assert codes.count(401) == 100
        right = _Browser(port)
        assert right.sign_in("anna", PASSWORD) == 401  # locked: the right password is refused
        right.close()
        other = _Browser(port)
        assert other.sign_in("sue", PASSWORD) == 303  # the lock is anna's only
        other.close()
    user = store.user("anna")
    assert user is not None and user.locked_until is not None
    assert user.locked_until > time.time() + 800
    rows = store.audit_log(limit=10_000)
    # One attempt at a time: exactly one failure locked the account, none unlocked it.
    assert sum(r["action"] == "LOCKED_OUT" and r["user_name"] == "anna" for r in rows) == 1
    assert not any(r["action"] == "LOGIN" and r["user_name"] == "anna" for r in rows)


def test_a_failure_never_clears_a_lock(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add_officer(store, "anna")
    now = 1_000_000.0
    gate = SignIn(store, SignInPolicy(max_attempts=2, lockout_s=600))
    assert [gate.sign_in("anna", "wrong password", now).reason for _ in range(2)] == [
        "BAD_CREDENTIALS", "LOCKED"]
    locked_until = store.user("anna").locked_until  # type: ignore[union-attr]
    # A late failure that read the account before it was locked (a parallel attempt).
    store.login_failed("anna", 2, 600, now + 1)
    store.login_failed("anna", 2, 600, now + 2)
    user = store.user("anna")
    assert user is not None and user.locked_until == locked_until
    assert gate.sign_in("anna", PASSWORD, now + 3).reason == "LOCKED"
    assert gate.sign_in("anna", PASSWORD, now + 601).ok


def test_per_address_rate_limit_over_http(tmp_path: Path) -> None:
    store, app = _world(tmp_path, max_attempts=5, address_max_failures=10,
                        address_window_s=900)
    with _serving(app) as port:
        # Spread over many names (no account lock helps here), 10 stations at once.
        attempts = [(f"guess{i}", "wrong password") for i in range(30)]
        codes = _parallel_sign_ins(port, attempts, threads=10)
        assert sorted(codes) == [401] * 10 + [429] * 20
        late = _Browser(port)
        assert late.sign_in("sue", PASSWORD) == 429  # this address is spent for the window
        late.close()
    sue = store.user("sue")
    assert sue is not None and sue.failed_attempts == 0 and sue.locked_until is None
    rows = store.audit_log(limit=10_000)
    limited = [r for r in rows if r["action"] == "RATE_LIMITED"]
    assert limited and all("127.0.0.1" in r["detail"] for r in limited)


# --- finding 5: background polls are not activity ------------------------------------


class _Clock:
    """Stands in for the app's ``time`` module: wall clock under the test's control."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()

    def perf_counter(self) -> float:
        return time.perf_counter()

    def sleep(self, s: float) -> None:
        time.sleep(s)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr("gate.review.app.time", c)
    return c


def test_background_poll_does_not_keep_a_session_alive(tmp_path: Path, clock: _Clock) -> None:
    store, app = _world(tmp_path, idle_s=600)
    with TestClient(app) as station:
        assert sign_in(station, "anna").status_code == 303
        assert station.get("/").status_code == 200  # the officer's last real action
        for _ in range(19):  # 0.5 s polls would be many more; 30 s steps say the same
            clock.now += 30
            assert station.get("/api/queue").status_code == 200
        clock.now += 31  # 601 s after the last real action, polls only since then
        assert station.get("/api/queue").status_code == 401
        assert station.get("/", follow_redirects=False).status_code == 303  # signed out
    assert any(a["action"] == "SESSION_EXPIRED" and a["user_name"] == "anna"
               for a in store.audit_log())


def test_poll_after_user_input_counts_as_activity(tmp_path: Path, clock: _Clock) -> None:
    _, app = _world(tmp_path, idle_s=600)
    with TestClient(app) as station:
        assert sign_in(station, "anna").status_code == 303
        for _ in range(40):  # 20 minutes of polls, the officer typing or clicking meanwhile
            clock.now += 30
            r = station.get("/api/queue", headers={"X-User-Activity": "1"})
            assert r.status_code == 200
        assert station.get("/").status_code == 200


# --- finding 6: revoking accounts, session cap ---------------------------------------


def _cli() -> argparse.ArgumentParser:
    from gate.commands import review as cmd

    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    return parser


def _gate_review(db: str, *argv: str, stdin: str = "") -> int:
    import sys

    args = _cli().parse_args(["review", "--db", db, *argv])
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return int(args.func(args))
    finally:
        sys.stdin = old


def test_passwd_disable_remove_and_role_end_sessions(tmp_path: Path) -> None:
    store, app = _world(tmp_path)
    db = store.url
    with TestClient(app) as a1, TestClient(app) as a2:
        assert sign_in(a1, "anna").status_code == 303
        assert a1.get("/api/queue").status_code == 200
        # A new password ends every session of the account.
        new_pw = "a brand new passphrase"
        assert _gate_review(db, "passwd", "anna", "--password-stdin", stdin=new_pw + "\n") == 0
        assert a1.get("/api/queue").status_code == 401
        assert sign_in(a1, "anna", new_pw).status_code == 303
        # Disabling ends sessions and refuses sign-in; enabling lets the officer back.
        assert _gate_review(db, "disable", "anna") == 0
        assert a1.get("/api/queue").status_code == 401
        assert sign_in(a2, "anna", new_pw).status_code == 401
        assert _gate_review(db, "enable", "anna") == 0
        assert sign_in(a2, "anna", new_pw).status_code == 303
        # A role change ends sessions; the next sign-in has the new role.
        assert a2.get("/audit").status_code == 403
        assert _gate_review(db, "role", "anna", "--role", "supervisor") == 0
        assert a2.get("/api/queue").status_code == 401
        assert sign_in(a2, "anna", new_pw).status_code == 303
        assert a2.get("/audit").status_code == 200
        # Removal ends sessions and the account.
        assert _gate_review(db, "remove", "anna") == 0
        assert a2.get("/api/queue").status_code == 401
        assert sign_in(a2, "anna", new_pw).status_code == 401
        assert store.user("anna") is None
        assert _gate_review(db, "disable", "nobody") == 1
        assert _gate_review(db, "remove", "anna") == 1
    actions = [(a["action"], a["detail"]) for a in store.audit_log(limit=1000)]
    for action in ("PASSWORD_SET", "USER_DISABLED", "USER_ENABLED", "ROLE_SET", "USER_REMOVED"):
        assert any(act == action and "anna" in detail for act, detail in actions), action


def test_concurrent_sessions_per_account_are_capped(tmp_path: Path, clock: _Clock) -> None:
    store, app = _world(tmp_path, max_sessions=2)
    clients = [TestClient(app) for _ in range(3)]
    with clients[0], clients[1], clients[2]:
        for c in clients:
            clock.now += 1
            assert sign_in(c, "anna").status_code == 303
        # The newest two are kept; the oldest was ended.
        assert [c.get("/api/queue").status_code for c in clients] == [401, 200, 200]
        assert sign_in(clients[0], "sue").status_code == 303  # per account, not global
        assert [c.get("/api/queue").status_code for c in clients] == [200, 200, 200]
    assert any(a["action"] == "SESSION_ENDED" and "limit" in a["detail"]
               for a in store.audit_log())


# --- finding 7: unauthenticated audit flooding; paging and filtering the audit -------


def test_unauthenticated_audit_events_are_aggregated(tmp_path: Path, clock: _Clock) -> None:
    store, app = _world(tmp_path, address_max_failures=100_000)
    before = len(store.audit_log(limit=100_000))
    with TestClient(app) as attacker:
        for _ in range(600):
            r = attacker.post("/login", data={"name": "anna", "password": "x", "csrf": "forged"})
            assert r.status_code == 403
        for i in range(40):
            assert sign_in(attacker, f"nobody{i}", "wrong password").status_code == 401
        rows = store.audit_log(limit=100_000)
        assert len(rows) - before == 2  # the first of each kind, at once
        clock.now += 3600  # the window is over: the next event writes the aggregate
        attacker.post("/login", data={"name": "anna", "password": "x", "csrf": "forged"})
    rows = store.audit_log(limit=100_000)
    csrf = [r for r in rows if r["action"] == "CSRF_REJECTED"]
    failed = [r for r in rows if r["action"] == "LOGIN_FAILED"]
    assert len(csrf) == 3 and len(failed) == 2  # first, aggregate, first of the next window
    assert any("599 more" in r["detail"] and "testclient" in r["detail"] for r in csrf)
    assert any("39 more" in r["detail"] for r in failed)


def test_audit_page_filters_and_pages(tmp_path: Path, clock: _Clock) -> None:
    store, app = _world(tmp_path)
    seal = new_seal()
    case_id = put_case(store, seal)
    for i in range(230):
        store.audit("anna", "VIEW_CASE", case_id, f"view {i}")
    for i in range(20):
        store.audit("bert", "VIEW_IMAGE", case_id, f"image {i}")
    with TestClient(app) as sup:
        assert sign_in(sup, "sue").status_code == 303
        first = sup.get("/audit")
        assert first.status_code == 200
        # Newest first, 100 a page, with a link to the older rows.
        assert len(_rows(first.text)) == 100
        nxt = _link(first.text, "audit-next")
        assert nxt is not None and _link(first.text, "audit-prev") is None
        second = sup.get(nxt)
        assert len(_rows(second.text)) == 100
        prev = _link(second.text, "audit-prev")
        assert prev is not None
        assert _rows(sup.get(prev).text) == _rows(first.text)
        # Filter by officer and event, then page within the filter.
        anna = sup.get("/audit?officer=ANNA&event=VIEW_CASE")
        shown = _rows(anna.text)
        assert len(shown) == 100 and all("anna" in r and "VIEW_CASE" in r for r in shown)
        assert "view 229" in anna.text and "bert" not in anna.text
        older = sup.get(_link(anna.text, "audit-next") or "")
        rest = sup.get(_link(older.text, "audit-next") or "")
        assert "view 0<" in rest.text and len(_rows(rest.text)) == 30
        assert _link(rest.text, "audit-next") is None
        assert len(_rows(sup.get("/audit?event=VIEW_IMAGE").text)) == 20
        # By time: nothing before the rows were written, everything up to now.
        past = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 7200))
        assert _rows(sup.get(f"/audit?until={past}").text) == []
        assert len(_rows(sup.get(f"/audit?since={past}&event=VIEW_IMAGE").text)) == 20
        assert sup.get("/audit?since=yesterday").status_code == 400
    views = [a for a in store.audit_log(limit=1000) if a["action"] == "VIEW_AUDIT"]
    assert any("event=VIEW_CASE" in a["detail"] for a in views)


def _link(html: str, element_id: str) -> str | None:
    import html as h
    import re

    m = re.search(rf'<a id="{element_id}"\s+href="([^"]+)"', html)
    return h.unescape(m.group(1)) if m else None


def _rows(html: str) -> list[str]:
    import re

    return re.findall(r'<tr class="chain-\w+" data-audit-id="\d+">(.*?)</tr>', html, re.S)


# --- finding 9: user names -----------------------------------------------------------


def test_user_names_are_allow_listed_and_system_names_reserved(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    db = store.url
    pw = PASSWORD + "\n"
    assert _gate_review(db, "adduser", "anna", "--role", "officer", "--password-stdin",
                        stdin=pw) == 0
    for bad in ("", "system", "SYSTEM", "(unknown)", "unknown", "a\nb", " anna", "anna ",
                "x", "an na", "anna;drop", "ännä", "a" * 40, "1anna"):
        code = _gate_review(db, "adduser", bad, "--role", "officer", "--password-stdin",
                            stdin=pw)
        assert code == 2, repr(bad)
    assert _gate_review(db, "adduser", "Anna", "--role", "officer", "--password-stdin",
                        stdin=pw) == 1  # the same name in another case exists
    assert _gate_review(db, "adduser", "Bert.K-2", "--role", "officer", "--password-stdin",
                        stdin=pw) == 0
    assert [u.name for u in store.users()] == ["anna", "bert.k-2"]
    with pytest.raises(ValueError):
        store.add_user("system", "officer", hash_password(PASSWORD))
    # Names compare case-insensitively at sign-in.
    gate = SignIn(store)
    assert gate.sign_in("ANNA", PASSWORD, time.time()).ok
    # An account with a reserved name left in an old store cannot sign in.
    with store._tx() as tx:
        tx.run("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
               ("system", "supervisor", hash_password(PASSWORD), time.time()))
    assert gate.sign_in("system", PASSWORD, time.time()).reason == "BAD_CREDENTIALS"


# --- finding 10: TLS options ---------------------------------------------------------


@pytest.fixture
def served_by_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    import uvicorn

    from gate.review.crypto import new_key_text

    seen: dict[str, Any] = {}

    def run(app: Any, **kw: Any) -> None:
        seen["app"], seen["kw"] = app, kw

    monkeypatch.setattr(uvicorn, "run", run)
    key = tmp_path / "review.key"
    key.write_text(new_key_text() + "\n")
    key.chmod(0o600)
    store = new_store(tmp_path)
    add_officer(store, "anna")
    seen["argv"] = ["--key-file", str(key), "--purge-interval-s", "3600"]
    seen["db"] = store.url
    return seen


def test_tls_cert_without_key_is_an_error(served_by_cli: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    db, argv = served_by_cli["db"], served_by_cli["argv"]
    for flags in (["--tls-cert", "cert.pem"], ["--tls-key", "key.pem"]):
        assert _gate_review(db, *argv, *flags) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--tls-cert" in err and "--tls-key" in err
    assert "app" not in served_by_cli  # nothing was served


def test_hsts_and_secure_cookie_behind_a_tls_proxy(served_by_cli: dict[str, Any]) -> None:
    db, argv = served_by_cli["db"], served_by_cli["argv"]
    assert _gate_review(db, *argv) == 0
    with TestClient(served_by_cli.pop("app")) as plain:
        r = sign_in(plain, "anna")
        assert r.status_code == 303 and "strict-transport-security" not in r.headers
        assert "secure" not in r.headers["set-cookie"].lower()
    assert _gate_review(db, *argv, "--behind-tls-proxy") == 0
    with TestClient(served_by_cli["app"], base_url="https://testserver") as behind:
        r = sign_in(behind, "anna")
        assert r.status_code == 303
        assert "max-age=" in r.headers["strict-transport-security"]
        assert "; secure" in r.headers["set-cookie"].lower()
        assert "max-age=" in behind.get("/login").headers["strict-transport-security"]


# --- finding 11: officers see only the cases they may act on -------------------------


def test_officer_sees_only_cases_they_may_act_on(tmp_path: Path) -> None:
    store, app = _world(tmp_path)
    seal = new_seal()
    app = create_app(store, seal, None, ReviewSettings(purge_interval_s=0))
    open_id, escalated, closed = (put_case(store, seal) for _ in range(3))
    store.decide(escalated, "bert", "escalate", "twin?", ("OPEN",))
    store.decide(closed, "bert", "confirm", "impostor", ("OPEN",))
    with TestClient(app) as officer, TestClient(app) as sup:
        assert sign_in(officer, "anna").status_code == 303
        assert officer.get(f"/cases/{open_id}").status_code == 200
        for case_id in (escalated, closed):
            page = officer.get(f"/cases/{case_id}")
            assert page.status_code == 403, case_id
            assert SPECIMEN_MRZ["surname"] not in page.text
            assert SPECIMEN_MRZ["document_number"] not in page.text
            img = officer.get(f"/cases/{case_id}/images/portrait")
            assert img.status_code == 403 and not img.content.startswith(b"\xff\xd8")
        # The supervisor oversees every case, closed ones too, until the purge.
        assert sign_in(sup, "sue").status_code == 303
        for case_id in (open_id, escalated, closed):
            assert SPECIMEN_MRZ["surname"] in sup.get(f"/cases/{case_id}").text
            assert sup.get(f"/cases/{case_id}/images/portrait").content.startswith(b"\xff\xd8")
        # A decision that loses a race shows the officer no data of the case.
        token = csrf_of(officer.get(f"/cases/{open_id}").text)
        store.decide(open_id, "bert", "confirm", "first", ("OPEN",))
        r = officer.post(f"/cases/{open_id}/decision",
                         data={"action": "confirm", "comment": "late", "csrf": token})
        assert r.status_code == 409 and SPECIMEN_MRZ["surname"] not in r.text
    denied = [a for a in store.audit_log(limit=1000) if a["action"] == "DENIED"]
    assert {a["case_id"] for a in denied} >= {escalated, closed}


# --- finding 12: the X-CSRF-Token header --------------------------------------------


def test_csrf_token_header_is_accepted_as_documented(tmp_path: Path) -> None:
    store, app = _world(tmp_path)
    seal = new_seal()
    app = create_app(store, seal, None, ReviewSettings(purge_interval_s=0))
    case_id = put_case(store, seal)
    with TestClient(app) as c, TestClient(app) as other:
        assert sign_in(c, "anna").status_code == 303
        assert sign_in(other, "sue").status_code == 303
        mine = csrf_of(c.get(f"/cases/{case_id}").text)
        theirs = csrf_of(other.get(f"/cases/{case_id}").text)
        form = {"action": "escalate", "comment": "by header"}
        for bad in ("", "guessed", theirs):
            r = c.post(f"/cases/{case_id}/decision", data=form, headers={"X-CSRF-Token": bad})
            assert r.status_code == 403
        r = c.post(f"/cases/{case_id}/decision", json={**form, "csrf": mine})
        assert r.status_code in (400, 403)  # a JSON body is not a form
        assert store.case(case_id).status == "OPEN"  # type: ignore[union-attr]
        r = c.post(f"/cases/{case_id}/decision", data=form, headers={"X-CSRF-Token": mine},
                   follow_redirects=False)
        assert r.status_code == 303 and store.case(case_id).status == "ESCALATED"  # type: ignore[union-attr]
        r = c.post("/logout", headers={"X-CSRF-Token": mine}, follow_redirects=False)
        assert r.status_code == 303 and c.get("/api/queue").status_code == 401


# --- the same on PostgreSQL: many connections failing at once --------------------------


def test_lockout_and_sessions_on_postgresql(cluster: Any) -> None:  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    from test_review_support import audit_key

    key = audit_key()
    stores = [CaseStore(cluster.url, audit_key=key) for _ in range(8)]
    store = stores[0]
    assert store.add_user("Sec-Anna", "officer", hash_password(PASSWORD))
    user = store.find_user("SEC-ANNA")
    assert user is not None and user.name == "sec-anna"
    now = time.time()
    # 8 connections (as 8 review servers would), 80 failures at once: one locks, none unlocks.
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: stores[i % 8].login_failed("sec-anna", 5, 600, now),
                                 range(80)))
    assert outcomes.count("LOCKED_OUT") == 1 and outcomes.count("COUNTED") == 4
    locked = store.user("sec-anna")
    assert locked is not None and locked.locked_until == pytest.approx(now + 600)
    assert store.login_succeeded("sec-anna", user.password_hash, now + 1, "t0", "c0") is None
    for i in range(4):  # after the lock: sessions, the newest two kept
        assert store.login_succeeded("sec-anna", user.password_hash, now + 601 + i, f"t{i + 1}",
                                     "c", max_sessions=2) == (1 if i >= 2 else 0)
    assert store.session("t4") is not None and store.session("t1") is None
    assert store.user_sessions("sec-anna") == 2
    assert store.set_disabled("sec-anna", True) and store.user_sessions("sec-anna") == 0
    rows, older, newer = store.audit_page(user="SEC-ANNA", limit=10)
    assert rows == [] and not older and not newer
    store.audit("sec-anna", "VIEW_CASE", None, "x")
    rows, older, newer = store.audit_page(user="sec-anna", action="VIEW_CASE")
    assert [r["detail"] for r in rows] == ["x"] and not older and not newer
    assert store.remove_user("sec-anna") and store.find_user("sec-anna") is None
    for s in stores:
        s.close()
