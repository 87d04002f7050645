"""The officers' web app: sign-in, the live queue, the case page, decisions, lanes, audit.

Server-rendered pages; the only script refreshes the queue and lane tables by polling
small JSON endpoints. Every page and API needs a signed-in officer whose role allows it;
every state change needs the session's CSRF token; every case view, image fetch and
decision goes to the audit log. The app never holds biometric data longer than one
response: images are opened from their seal per request and served ``no-store``.

The lanes are reached only through :class:`gate.review.cases.LaneControl`, given to
:func:`create_app`; without one the app still reviews cases but cannot release a door.
"""

# No "from __future__ import annotations": FastAPI must evaluate the Annotated
# dependencies, which refer to functions local to create_app.
import concurrent.futures
import contextlib
import json
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import jinja2
import structlog
from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from gate.review import pages
from gate.review.auth import PERMISSIONS, SignIn, SignInPolicy, same_token
from gate.review.cases import LaneControl
from gate.review.chain import AuditChainBroken
from gate.review.crypto import ImageSeal, KeyMismatch, SealError
from gate.review.ratelimit import AuditThrottle
from gate.review.store import (
    ACTIONS,
    DEFAULT_RETENTION_S,
    ESCALATED,
    OPEN,
    RELEASING,
    CaseRecord,
    CaseStore,
    StoreUnavailable,
    image_context,
    mrz_context,
)

log = structlog.get_logger(__name__)

SESSION_COOKIE = "egate_session"
LOGIN_COOKIE = "egate_login_csrf"
#: Pages and assets reachable without signing in; everything else is refused.
PUBLIC_PATHS = frozenset({"/login", "/static/review.css", "/static/review.js"})

#: Sent by the page script with a background poll when the officer typed, clicked or
#: scrolled since the last one: only then does a poll count as activity.
ACTIVITY_HEADER = "X-User-Activity"
CSRF_HEADER = "X-CSRF-Token"
HSTS = "max-age=31536000"
AUDIT_PAGE_ROWS = 100
#: Offered in the audit page's event filter (any action may be typed).
AUDIT_EVENTS = (
    "LOGIN", "LOGIN_FAILED", "LOCKED_OUT", "RATE_LIMITED", "LOGOUT", "SESSION_EXPIRED",
    "SESSION_ENDED", "VIEW_CASE", "VIEW_IMAGE", "VIEW_AUDIT", "DECIDE_CONFIRM", "DECIDE_CLEAR",
    "DECIDE_ESCALATE", "RELEASE_FAILED", "CSRF_REJECTED", "DENIED", "USER_ADDED",
    "USER_REMOVED", "USER_DISABLED", "USER_ENABLED", "ROLE_SET", "PASSWORD_SET", "PURGE",
    "RELEASE_CLAIMED", "RELEASE_REVERTED", "CHAIN_EPOCH", "CHAIN_SNAPSHOT", "LANE_COMMAND",
)

_NOTICES = {
    "confirm": "Rejection confirmed; the case is closed.",
    "clear": "Traveller cleared: exit door released; the case is closed.",
    "escalate": "Case escalated to a supervisor.",
}


@dataclass(frozen=True)
class ReviewSettings:
    retention_s: float = DEFAULT_RETENTION_S
    purge_interval_s: float = 600.0  # the scheduled purge; 0 turns it off
    poll_ms: int = 500
    cookie_secure: bool = False  # set when served over TLS, or behind a TLS proxy
    #: send Strict-Transport-Security (served over TLS, or behind a TLS proxy)
    hsts: bool = False
    #: refused sign-ins and forged login forms: one audit row per address, kind and window
    audit_window_s: float = 60.0
    release_timeout_s: float = 5.0
    sign_in: SignInPolicy = field(default_factory=SignInPolicy)
    #: the audit anchor file: the chain head is appended to it at every purge round
    audit_anchor: str | None = None


@dataclass(frozen=True)
class Officer:
    name: str
    role: str
    csrf: str

    @property
    def perms(self) -> frozenset[str]:
        return PERMISSIONS.get(self.role, frozenset())


class NotSignedIn(Exception):
    pass


class NotAllowed(Exception):
    pass


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _utc(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


class PurgeSchedule:
    """Runs the retention purge (and ends stale sessions) on its own thread."""

    def __init__(self, store: CaseStore, sign_in: SignIn, settings: ReviewSettings) -> None:
        self._store, self._sign_in, self._settings = store, sign_in, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="review-purge", daemon=True)

    def start(self) -> None:
        if self._settings.purge_interval_s > 0:
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                n = self._store.purge(self._settings.retention_s)
                self._sign_in.end_stale_sessions(time.time())
                if n:
                    log.info("cases_purged", count=n)
                self._anchor()
            except Exception as exc:  # the schedule keeps going; the next round retries
                log.error("purge_failed", reason="PURGE_FAILED", error=type(exc).__name__)
            if self._stop.wait(self._settings.purge_interval_s):
                return

    def _anchor(self) -> None:
        """Anchor the audit chain outside the database: the head in the log, and appended
        to the anchor file (refused, and logged, when the chain no longer holds the last
        anchored row: newest rows deleted or rewritten)."""
        head = self._store.audit_chain_head()
        if head is None:
            return
        log.info("audit_head", audit_id=head.row_id, audit_seq=head.seq, audit_hash=head.mac,
                 audit_chain=head.chain)
        if self._settings.audit_anchor:
            try:
                self._store.export_audit_anchor(self._settings.audit_anchor)
            except AuditChainBroken as exc:
                log.error("audit_anchor_refused", reason=f"AUDIT_{exc.kind}", detail=str(exc))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def _parse_utc(text: str) -> float | None:
    """``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS]`` (or with a space), read as UTC; "" -> None."""
    text = text.strip()
    if not text:
        return None
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise PageError(400, "Bad time", "Times are UTC, written YYYY-MM-DD or YYYY-MM-DDTHH:MM.")


def client_address(request: Request) -> str:
    """The client's address (behind a proxy, the one uvicorn took from X-Forwarded-For
    when the proxy is in --forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


class AuditFlusher:
    """Writes the aggregated audit rows of windows that are over, on its own thread, and
    all that are left at shutdown. One per lifespan of the app."""

    def __init__(self, throttle: AuditThrottle, interval_s: float) -> None:
        self._throttle = throttle
        self._interval = max(0.05, interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="review-audit", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._throttle.flush(time.time())
            except Exception as exc:  # the next round retries
                log.error("audit_flush_failed", error=type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        try:
            self._throttle.flush()
        except Exception as exc:
            log.error("audit_flush_failed", error=type(exc).__name__)


def create_app(
    store: CaseStore,
    seal: ImageSeal,
    lanes: LaneControl | None = None,
    settings: ReviewSettings | None = None,
) -> FastAPI:
    settings = settings or ReviewSettings()
    throttle = AuditThrottle(
        lambda user, action, detail: store.audit(user, action, detail=detail),
        settings.audit_window_s,
    )
    sign_in = SignIn(store, settings.sign_in, refusal_audit=throttle.record)
    schedule = PurgeSchedule(store, sign_in, settings)
    releaser = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="release")
    env = jinja2.Environment(
        loader=jinja2.DictLoader(pages.TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["utc"] = _utc
    env.filters["num"] = _num

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        schedule.start()
        flusher = AuditFlusher(throttle, min(5.0, settings.audit_window_s / 2))
        yield
        flusher.stop()
        schedule.stop()
        releaser.shutdown(wait=False)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def render(
        name: str, officer: Officer | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        base = {
            "me": officer.name if officer else None,
            "role": officer.role if officer else None,
            "perms": officer.perms if officer else frozenset(),
            "csrf": officer.csrf if officer else "",
            "notice": None,
            "notice_kind": None,
        }
        base.update(ctx)
        return HTMLResponse(env.get_template(name).render(**base), status_code=status)

    @app.middleware("http")
    async def protect(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if settings.hsts:
            response.headers["Strict-Transport-Security"] = HSTS
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, _: NotSignedIn) -> Response:
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({"error": "NOT_SIGNED_IN"}, status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(NotAllowed)
    async def _not_allowed(request: Request, _: NotAllowed) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "NOT_ALLOWED"}, status_code=403)
        return render("error.html", None, 403, title="Not allowed",
                      message="Your role does not allow this page.")

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return render("error.html", None, exc.status, title=exc.title, message=exc.message)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, _: StoreUnavailable) -> Response:
        return render("error.html", None, 503, title="Case store unavailable",
                      message="The case store cannot be reached; try again shortly.")

    def officer_with(perm: str, background: bool = False) -> Callable[[Request], Officer]:
        """``background``: a poll the page script makes on its own; it counts as activity
        only when the script says the officer typed, clicked or scrolled since the last."""

        def dependency(request: Request) -> Officer:
            touch = not background or request.headers.get(ACTIVITY_HEADER) == "1"
            rec = sign_in.session(request.cookies.get(SESSION_COOKIE), time.time(), touch)
            if rec is None:
                raise NotSignedIn()
            officer = Officer(rec.user_name, rec.role, rec.csrf_token)
            if perm not in officer.perms:
                store.audit(officer.name, "DENIED", detail=f"{request.method} {request.url.path}")
                raise NotAllowed()
            return officer

        return dependency

    def check_csrf(officer: Officer, token: str, request: Request) -> None:
        """The session's token, as the form field or the X-CSRF-Token header."""
        if not token:
            token = request.headers.get(CSRF_HEADER, "")
        if not same_token(officer.csrf, token):
            store.audit(officer.name, "CSRF_REJECTED")
            raise PageError(403, "Request refused", "The form was stale or forged (CSRF check).")

    # -- sign-in ---------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        if sign_in.session(request.cookies.get(SESSION_COOKIE), time.time()) is not None:
            return RedirectResponse("/", status_code=303)
        return _login_form(None, 200)

    def _login_form(notice: str | None, status: int) -> Response:
        token = secrets.token_urlsafe(24)
        resp = render(
            "login.html", None, status, login_csrf=token, notice=notice, notice_kind="error",
            max_attempts=settings.sign_in.max_attempts,
            lockout_min=int(settings.sign_in.lockout_s // 60),
        )
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                        secure=settings.cookie_secure, path="/login")
        return resp

    @app.post("/login")
    def login(
        request: Request,
        name: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        now, address = time.time(), client_address(request)
        if not same_token(request.cookies.get(LOGIN_COOKIE), csrf):
            throttle.record("(unknown)", "CSRF_REJECTED", "login form", address, now)
            return _login_form("The sign-in form expired; please try again.", 403)
        result = sign_in.sign_in(name, password, now, address)
        if result.reason in ("RATE_LIMITED", "BUSY"):
            wait_min = max(1, round(result.retry_after_s / 60))
            resp = _login_form(
                "Too many failed sign-ins from this station: try again in "
                f"{wait_min} minute{'s' if wait_min > 1 else ''}.", 429)
            resp.headers["Retry-After"] = str(max(1, round(result.retry_after_s)))
            return resp
        if not result.ok or result.token is None:
            return _login_form(
                "Sign-in refused: wrong name or password, or the account is locked.", 401
            )
        target = "/lanes" if result.role == "maintenance" else "/"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(SESSION_COOKIE, result.token, httponly=True, samesite="strict",
                        secure=settings.cookie_secure, path="/")
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    def signed_in(request: Request) -> Officer:
        rec = sign_in.session(request.cookies.get(SESSION_COOKIE), time.time())
        if rec is None:
            raise NotSignedIn()
        return Officer(rec.user_name, rec.role, rec.csrf_token)

    @app.post("/logout")
    def sign_out(
        request: Request,
        officer: Annotated[Officer, Depends(signed_in)],
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        check_csrf(officer, csrf, request)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            sign_in.sign_out(token)
        store.audit(officer.name, "LOGOUT")
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # -- queue -------------------------------------------------------------------------

    def visible_statuses(officer: Officer) -> tuple[str, ...]:
        # RELEASING is visible to supervisors: one left behind by a server that died while
        # the lane was releasing must not vanish from every queue.
        if "decide_escalated" in officer.perms:
            return (OPEN, ESCALATED, RELEASING)
        return (OPEN,)

    def queue_data(officer: Officer, lane: str = "") -> dict[str, Any]:
        """Open cases (of one lane, or all), and the count per lane over all lanes."""
        cases = store.cases(visible_statuses(officer))
        rows = sorted((c.queue_row() for c in cases), key=lambda r: (r["lane_id"], r["opened_at"]))
        per_lane = dict(Counter(r["lane_id"] for r in rows))
        if lane:
            rows = [r for r in rows if r["lane_id"] == lane]
        return {"cases": rows, "per_lane": per_lane, "lane": lane}

    @app.get("/", response_class=HTMLResponse)
    def queue_page(
        officer: Annotated[Officer, Depends(officer_with("queue"))],
        decided: str = "",
        lane: str = "",
    ) -> Response:
        data = queue_data(officer, lane)
        return render(
            "queue.html", officer, cases=data["cases"], per_lane=sorted(data["per_lane"].items()),
            lane=lane, poll_ms=settings.poll_ms, notice=_NOTICES.get(decided),
        )

    @app.get("/api/queue")
    def queue_api(
        officer: Annotated[Officer, Depends(officer_with("queue", background=True))],
        lane: str = "",
    ) -> JSONResponse:
        return JSONResponse(queue_data(officer, lane))

    # -- one case ------------------------------------------------------------------------

    def load_case(case_id: str) -> CaseRecord:
        case = store.case(case_id)
        if case is None:
            raise PageError(404, "No such case", "This case does not exist.")
        return case

    def open_mrz(case: CaseRecord) -> tuple[dict[str, Any], str | None]:
        if case.mrz_sealed is None:
            return ({"(kept after purge)": json.dumps(case.mrz_kept)} if case.mrz_kept else {},
                    None)
        try:
            return json.loads(seal.open(case.mrz_sealed, mrz_context(case.case_id))), None
        except KeyMismatch as exc:
            return {}, f"This server's key cannot open this case's sealed data ({exc})."
        except SealError as exc:
            return {}, f"The sealed data of this case is damaged ({exc})."

    def timeline_rows(case: CaseRecord) -> list[dict[str, str]]:
        rows = []
        for entry in case.timeline:
            t = entry.get("t")
            dt = f"{float(t) - case.opened_at:+.2f}" if isinstance(t, int | float) else ""
            text = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "t")
            rows.append({"dt": dt, "text": text})
        return rows

    def may_view(officer: Officer, case: CaseRecord) -> bool:
        """A supervisor oversees every case (closed ones too, until purged); an officer
        opens only the cases an officer may act on: OPEN ones."""
        return "oversee" in officer.perms or case.status in visible_statuses(officer)

    def viewable_case(case_id: str, officer: Officer) -> CaseRecord:
        case = load_case(case_id)
        if not may_view(officer, case):
            store.audit(officer.name, "DENIED", case_id, f"case is {case.status}")
            raise PageError(403, "Not your case now",
                            f"This case is {case.status}: only a supervisor may open it.")
        return case

    def after_conflict(case_id: str, officer: Officer, message: str) -> HTMLResponse:
        """The case page again with why the decision did not happen, unless the case has
        moved where this officer may not see it: then the reason only."""
        case = load_case(case_id)
        if not may_view(officer, case):
            raise PageError(409, "Not decided", f"{message} The case is {case.status} now.")
        return case_page(case, officer, 409, message)

    def case_page(
        case: CaseRecord, officer: Officer, status: int = 200, notice: str | None = None
    ) -> HTMLResponse:
        mrz, problem = open_mrz(case)
        chip = mrz.get("chip") if isinstance(mrz, dict) else None
        if chip is not None:
            mrz = {k: v for k, v in mrz.items() if k != "chip"}
        quality_keys = sorted({k for q in case.quality for k in q})
        can_decide = "decide" in officer.perms and case.status in visible_statuses(officer)
        lane_unreachable = False
        if lanes is not None:
            try:
                lane_state = lanes.lane_states().get(case.lane_id)
            except Exception:
                lane_state = None
            lane_unreachable = lane_state is None or not lane_state.get("reachable", True)
        return render(
            "case.html", officer, status, case=case, slots=store.image_slots(case.case_id),
            mrz=mrz, chip=chip if isinstance(chip, dict) else None, seal_problem=problem,
            quality_keys=quality_keys,
            timeline=timeline_rows(case), decisions=store.decisions(case.case_id),
            can_decide=can_decide, lane_unreachable=lane_unreachable, notice=notice,
            notice_kind="error" if notice else None,
        )

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    def case_view(
        case_id: str, officer: Annotated[Officer, Depends(officer_with("case"))]
    ) -> Response:
        case = viewable_case(case_id, officer)
        store.audit(officer.name, "VIEW_CASE", case_id)
        return case_page(case, officer)

    @app.get("/cases/{case_id}/images/{slot}")
    def case_image(
        case_id: str, slot: str, officer: Annotated[Officer, Depends(officer_with("case"))]
    ) -> Response:
        viewable_case(case_id, officer)
        blob = store.image(case_id, slot)
        if blob is None:
            return Response("no such image", status_code=404, media_type="text/plain")
        try:
            jpeg = seal.open(blob, image_context(case_id, slot))
        except SealError as exc:
            return Response(f"image cannot be opened: {exc}", status_code=409,
                            media_type="text/plain")
        store.audit(officer.name, "VIEW_IMAGE", case_id, slot)
        return Response(jpeg, media_type="image/jpeg")

    def release(case: CaseRecord, officer: Officer) -> str | None:
        """Ask the lane to open the exit; returns why it did not, or None."""
        if lanes is None:
            return "No lane connection: the exit door cannot be released from this server."
        future = releaser.submit(lanes.release_exit, case.case_id, officer.name)
        try:
            ok = future.result(timeout=settings.release_timeout_s)
        except concurrent.futures.TimeoutError:
            return (f"Lane {case.lane_id} did not answer within {settings.release_timeout_s:.0f}"
                    " s; check the lane before trying again.")
        except Exception as exc:
            return f"Lane {case.lane_id} failed to release: {type(exc).__name__}."
        if ok:
            return None
        refusal = getattr(lanes, "refusal", None)
        why = refusal(case.case_id) if callable(refusal) else None
        return f"Lane {case.lane_id} refused to release the exit door" + (
            f": {why}." if why else ".")

    @app.post("/cases/{case_id}/decision")
    def decide(
        request: Request,
        case_id: str,
        officer: Annotated[Officer, Depends(officer_with("decide"))],
        action: Annotated[str, Form()] = "",
        comment: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        check_csrf(officer, csrf, request)
        case = load_case(case_id)
        if action not in ACTIONS:
            raise PageError(400, "Unknown decision", "Choose confirm, clear or escalate.")
        comment = comment.strip()[:2000]
        if not comment:
            return case_page(case, officer, 400, "A comment is required for every decision.")
        allowed = visible_statuses(officer)
        if action == "escalate":
            allowed = (OPEN,)
        if case.status not in allowed:
            return after_conflict(case_id, officer,
                                  f"This case is {case.status}; not decided again.")
        if action == "clear":
            previous = store.claim_for_release(case_id, allowed, officer.name)
            if previous is None:
                return after_conflict(case_id, officer,
                                      "Another officer decided this case first.")
            problem = release(case, officer)
            if problem is not None:
                store.release_refused(case_id, previous, officer.name)
                store.audit(officer.name, "RELEASE_FAILED", case_id, problem)
                return after_conflict(case_id, officer, problem)
            allowed = (RELEASING,)
        if not store.decide(case_id, officer.name, action, comment, allowed):
            return after_conflict(case_id, officer, "Another officer decided this case first.")
        log.info("case_decided", case_id=case_id, lane_id=case.lane_id, action=action,
                 officer=officer.name)
        return RedirectResponse(f"/?decided={action}", status_code=303)

    # -- lanes and audit ---------------------------------------------------------------

    def lanes_data() -> dict[str, Any]:
        states: Mapping[str, Mapping[str, Any]] = {}
        error = None
        if lanes is not None:
            try:
                states = lanes.lane_states()
            except Exception as exc:
                error = type(exc).__name__
        open_counts = Counter(c.lane_id for c in store.cases((OPEN, ESCALATED)))
        rows = []
        now = time.time()
        for lane_id in sorted(set(states) | set(open_counts)):
            known = lane_id in states
            st = dict(states.get(lane_id, {}))
            since = st.pop("since", None)
            row = {
                "lane": lane_id,
                "lane_id": lane_id,
                "state": str(st.pop("state", "unknown")),
                # a lane in this process is always reachable; one known only by its cases not
                "reachable": bool(st.pop("reachable", True)) if known else False,
                "entry": st.pop("entry", None),
                "exit": st.pop("exit", None),
                "zone_count": st.pop("zone_count", None),
                "alarms": list(st.pop("alarms", None) or []),
                "in_state_s": round(now - float(since), 1) if isinstance(since, int | float)
                else None,
                "case_waiting": st.pop("case_waiting", None),
                "open_cases": open_counts.get(lane_id, 0),
            }
            row["details"] = ", ".join(f"{k}={v}" for k, v in sorted(st.items())
                                       if not isinstance(v, dict | list))
            rows.append(row)
        return {"lanes": rows, "connected": lanes is not None, "error": error}

    @app.get("/lanes", response_class=HTMLResponse)
    def lanes_page(officer: Annotated[Officer, Depends(officer_with("lanes"))]) -> Response:
        data = lanes_data()
        notice = f"Lane states unavailable: {data['error']}" if data["error"] else None
        return render("lanes.html", officer, lanes=data["lanes"], connected=data["connected"],
                      poll_ms=settings.poll_ms, notice=notice, notice_kind="error")

    @app.get("/api/lanes")
    def lanes_api(
        officer: Annotated[Officer, Depends(officer_with("lanes", background=True))]
    ) -> JSONResponse:
        return JSONResponse(lanes_data())

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(
        officer: Annotated[Officer, Depends(officer_with("audit"))],
        officer_name: Annotated[str, Query(alias="officer", max_length=64)] = "",
        event: Annotated[str, Query(max_length=40)] = "",
        since: Annotated[str, Query(max_length=32)] = "",
        until: Annotated[str, Query(max_length=32)] = "",
        before: int | None = None,
        after: int | None = None,
    ) -> Response:
        """Newest first, AUDIT_PAGE_ROWS a page, filtered by officer, event and time
        (UTC); "older" and "newer" links page through the filtered rows."""
        who, what = officer_name.strip().lower(), event.strip().upper()
        t_since, t_until = _parse_utc(since), _parse_utc(until)
        filters = {k: v for k, v in (("officer", who), ("event", what), ("since", since.strip()),
                                     ("until", until.strip())) if v}
        shown = " ".join(f"{k}={v}" for k, v in filters.items())
        paging = f"before={before}" if before is not None else (
            f"after={after}" if after is not None else "")
        store.audit(officer.name, "VIEW_AUDIT", detail=" ".join(x for x in (shown, paging) if x))
        rows, older, newer = store.audit_page(
            user=who or None, action=what or None, since=t_since, until=t_until,
            before_id=before, after_id=after, limit=AUDIT_PAGE_ROWS,
        )

        def link(**edge: int) -> str:
            return "/audit?" + urllib.parse.urlencode({**filters, **edge})

        older_url = link(before=int(rows[-1]["id"])) if older and rows else (
            link(before=after + 1) if older and after is not None else None)
        newer_url = link(after=int(rows[0]["id"])) if newer and rows else (
            link(after=before - 1) if newer and before is not None else None)
        return render("audit.html", officer, rows=rows, filters=filters, events=AUDIT_EVENTS,
                      older_url=older_url, newer_url=newer_url, page_rows=AUDIT_PAGE_ROWS)

    # -- assets ------------------------------------------------------------------------

    @app.get("/static/review.css")
    def css() -> Response:
        return Response(pages.CSS, media_type="text/css")

    @app.get("/static/review.js")
    def js() -> Response:
        return Response(pages.JS, media_type="text/javascript")

    app.state.store = store
    app.state.schedule = schedule
    return app
