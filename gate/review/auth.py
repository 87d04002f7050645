"""Officers' sign-in: password hashes, sessions, CSRF tokens, lock-out, roles.

Passwords are hashed with scrypt (memory-hard, in the standard library, no extra
dependency on a lane PC). Session tokens are random and stored only as their SHA-256, so a
copied database holds no usable session. Every session has its own CSRF token that every
state-changing request must echo, as the form field ``csrf`` or the ``X-CSRF-Token``
header (the sign-in form has its own double-submit token, as a form field only); the
session cookie is SameSite=Strict as a second line.

An account is locked for a while after too many consecutive failures. The count and the
lock are one atomic UPDATE in the store (so parallel attempts, in this process or
another, cannot unlock or outrun it), attempts on one account run one at a time in this
process, and every client address has its own budget of failures. An unknown name costs
the same scrypt work as a known one, and every refused sign-in gets the same answer, so
neither timing nor the response tells which officers exist or which are locked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gate.review.ratelimit import AddressLimiter, KeyedLocks
from gate.review.store import CaseStore, SessionRecord, check_user_name

ROLES = ("officer", "supervisor", "maintenance")

#: What each role may do. Maintenance staff keep lanes running; they never see a case.
PERMISSIONS: dict[str, frozenset[str]] = {
    "officer": frozenset({"queue", "case", "decide"}),
    # "oversee": open every case, closed ones too (until purged); officers open only the
    # cases they may act on (OPEN).
    "supervisor": frozenset({"queue", "case", "decide", "decide_escalated", "oversee", "lanes",
                             "audit"}),
    "maintenance": frozenset({"lanes"}),
}

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
MIN_PASSWORD_LEN = 10


class WeakPassword(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LEN:
        raise WeakPassword(f"password shorter than {MIN_PASSWORD_LEN} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P),
         base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


# Verified against when the name is unknown, so both paths cost one scrypt.
_DUMMY_HASH = hash_password("not-a-real-password-" + secrets.token_hex(8))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def valid_user_name(name: str) -> bool:
    try:
        return check_user_name(name) == name
    except ValueError:
        return False


@dataclass(frozen=True)
class SignInPolicy:
    max_attempts: int = 5
    lockout_s: float = 15 * 60.0
    idle_s: float = 15 * 60.0  # an unattended console signs itself out
    absolute_s: float = 12 * 3600.0  # one shift
    max_sessions: int = 3  # per account: the newest are kept, the oldest ended (0: no cap)
    #: failed sign-ins per client address in any window (0: no limit)
    address_max_failures: int = 20
    address_window_s: float = 15 * 60.0
    #: how long an attempt waits behind others on the same account before it is refused
    account_wait_s: float = 30.0


@dataclass(frozen=True)
class SignInResult:
    ok: bool
    reason: str  # OK, BAD_CREDENTIALS, LOCKED, DISABLED, RATE_LIMITED, BUSY
    token: str | None = None
    role: str | None = None
    retry_after_s: float = 0.0


#: Where the audit rows of refused sign-ins go: (user, action, detail, address, now).
#: The app aggregates them per address (``gate.review.ratelimit.AuditThrottle``).
RefusalAudit = Callable[[str, str, str, str, float], None]


class SignIn:
    def __init__(
        self, store: CaseStore, policy: SignInPolicy | None = None,
        refusal_audit: RefusalAudit | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or SignInPolicy()
        self._accounts = KeyedLocks()
        self._addresses = AddressLimiter(self.policy.address_max_failures,
                                         self.policy.address_window_s)
        self._refused = refusal_audit or self._audit_directly

    def _audit_directly(self, user: str, action: str, detail: str, address: str,
                        now: float) -> None:
        self.store.audit(user, action, detail=f"{detail} (from {address})" if address else detail)

    def sign_in(self, name: str, password: str, now: float, address: str = "") -> SignInResult:
        key = name.strip().lower()[:64]  # longer is no valid name anyway
        if not self._addresses.admit(address, now):
            self._refused("(unknown)", "RATE_LIMITED", "too many failed sign-ins from this "
                          "address", address, now)
            return SignInResult(False, "RATE_LIMITED",
                                retry_after_s=self._addresses.retry_after_s(address, now))
        result = SignInResult(False, "BUSY")
        try:
            # One attempt at a time per account (unknown names too, so that timing does
            # not tell them apart): a burst of parallel guesses is a queue, not a race.
            with self._accounts.hold(key, self.policy.account_wait_s) as got:
                if not got:
                    self._refused("(unknown)", "LOGIN_FAILED", "too many sign-ins at once for "
                                  "one name", address, now)
                    return result
                result = self._attempt(key, password, now, address)
                return result
        finally:
            self._addresses.done(address, not result.ok, now)

    def _attempt(self, key: str, password: str, now: float, address: str) -> SignInResult:
        user = self.store.find_user(key) if valid_user_name(key) else None
        if user is None:
            verify_password(password, _DUMMY_HASH)
            # Not the typed name: a password typed into the name field must not be kept.
            self._refused("(unknown)", "LOGIN_FAILED", "unknown name", address, now)
            return SignInResult(False, "BAD_CREDENTIALS")
        good = verify_password(password, user.password_hash)
        if user.disabled:
            self._refused(user.name, "LOGIN_FAILED", "account disabled", address, now)
            return SignInResult(False, "DISABLED")
        if good:
            token = secrets.token_urlsafe(32)
            ended = self.store.login_succeeded(
                user.name, user.password_hash, now, token_hash(token), secrets.token_urlsafe(32),
                self.policy.max_sessions,
            )
            if ended is None:  # locked (or disabled, or a new password) meanwhile
                self._refused(user.name, "LOGIN_FAILED", "account locked", address, now)
                return SignInResult(False, "LOCKED")
            self.store.audit(user.name, "LOGIN", detail=f"{user.role} from {address or '-'}")
            if ended:
                self.store.audit(user.name, "SESSION_ENDED", detail=f"{ended} oldest ended: "
                                 f"session limit {self.policy.max_sessions}")
            return SignInResult(True, "OK", token=token, role=user.role)
        outcome = self.store.login_failed(
            user.name, self.policy.max_attempts, self.policy.lockout_s, now
        )
        if outcome == "LOCKED_OUT":  # once per lock: never aggregated away
            self.store.audit(user.name, "LOCKED_OUT", detail=f"wrong password, "
                             f"{self.policy.max_attempts} failures (from {address or '-'})")
            return SignInResult(False, "LOCKED")
        if outcome == "LOCKED":
            self._refused(user.name, "LOGIN_FAILED", "account locked", address, now)
            return SignInResult(False, "LOCKED")
        self._refused(user.name, "LOGIN_FAILED", "wrong password", address, now)
        return SignInResult(False, "BAD_CREDENTIALS")

    def session(self, token: str | None, now: float, touch: bool = True) -> SessionRecord | None:
        """The signed-in session of ``token``, or None (expired ones are ended). ``touch``:
        this request is the officer's own action, so the idle time starts again; a
        background poll passes False and never keeps an unattended station signed in."""
        if not token:
            return None
        th = token_hash(token)
        rec = self.store.session(th)
        if rec is None:
            return None
        too_old = now - rec.created_at > self.policy.absolute_s
        if too_old or now - rec.last_seen > self.policy.idle_s:
            self.store.end_session(th)
            self.store.audit(rec.user_name, "SESSION_EXPIRED")
            return None
        if touch:
            self.store.touch_session(th, now)
        return rec

    def sign_out(self, token: str) -> None:
        self.store.end_session(token_hash(token))

    def end_stale_sessions(self, now: float) -> int:
        return self.store.end_sessions_before(
            now - self.policy.absolute_s, now - self.policy.idle_s
        )
