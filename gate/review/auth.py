"""Officers' sign-in: password hashes, sessions, CSRF tokens, lock-out, roles.

Passwords are hashed with scrypt (memory-hard, in the standard library, no extra
dependency on a lane PC). Session tokens are random and stored only as their SHA-256, so a
copied database holds no usable session. Every session has its own CSRF token that every
state-changing request must echo (a form field or the ``X-CSRF-Token`` header); the
session cookie is SameSite=Strict as a second line. An account is locked for a while after
too many consecutive failures, and an unknown name costs the same scrypt work as a known
one, so timing does not tell which officers exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from gate.review.store import CaseStore, SessionRecord

ROLES = ("officer", "supervisor", "maintenance")

#: What each role may do. Maintenance staff keep lanes running; they never see a case.
PERMISSIONS: dict[str, frozenset[str]] = {
    "officer": frozenset({"queue", "case", "decide"}),
    "supervisor": frozenset({"queue", "case", "decide", "decide_escalated", "lanes", "audit"}),
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


@dataclass(frozen=True)
class SignInPolicy:
    max_attempts: int = 5
    lockout_s: float = 15 * 60.0
    idle_s: float = 15 * 60.0  # an unattended console signs itself out
    absolute_s: float = 12 * 3600.0  # one shift


@dataclass(frozen=True)
class SignInResult:
    ok: bool
    reason: str  # OK, BAD_CREDENTIALS, LOCKED, DISABLED
    token: str | None = None
    role: str | None = None


class SignIn:
    def __init__(self, store: CaseStore, policy: SignInPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or SignInPolicy()

    def sign_in(self, name: str, password: str, now: float) -> SignInResult:
        user = self.store.user(name)
        if user is None:
            verify_password(password, _DUMMY_HASH)
            # Not the typed name: a password typed into the name field must not be kept.
            self.store.audit("(unknown)", "LOGIN_FAILED", detail="unknown name")
            return SignInResult(False, "BAD_CREDENTIALS")
        good = verify_password(password, user.password_hash)
        if user.disabled:
            self.store.audit(user.name, "LOGIN_FAILED", detail="account disabled")
            return SignInResult(False, "DISABLED")
        if user.locked_until is not None and user.locked_until > now:
            self.store.audit(user.name, "LOGIN_FAILED", detail="account locked")
            return SignInResult(False, "LOCKED")
        if not good:
            locked = self.store.login_failed(
                user.name, self.policy.max_attempts, self.policy.lockout_s, now
            )
            self.store.audit(user.name, "LOCKED_OUT" if locked else "LOGIN_FAILED",
                             detail="wrong password")
            return SignInResult(False, "LOCKED" if locked else "BAD_CREDENTIALS")
        self.store.login_succeeded(user.name)
        token = secrets.token_urlsafe(32)
        self.store.create_session(token_hash(token), user.name, secrets.token_urlsafe(32), now)
        self.store.audit(user.name, "LOGIN", detail=user.role)
        return SignInResult(True, "OK", token=token, role=user.role)

    def session(self, token: str | None, now: float) -> SessionRecord | None:
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
        self.store.touch_session(th, now)
        return rec

    def sign_out(self, token: str) -> None:
        self.store.end_session(token_hash(token))

    def end_stale_sessions(self, now: float) -> int:
        return self.store.end_sessions_before(
            now - self.policy.absolute_s, now - self.policy.idle_s
        )
