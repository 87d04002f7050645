"""``gate review``: the officers' review server and its housekeeping.

``gate review`` serves the web app; ``adduser``/``passwd`` manage officers (the first
officer is created here, there is no sign-up page); ``purge`` applies the retention
policy now (the server also purges on a schedule); ``keygen`` writes a new image key.
The store URL comes from ``--db`` or ``GATE_REVIEW_DB``; the key from ``--key-file``,
``GATE_REVIEW_KEY_FILE`` or ``GATE_REVIEW_KEY``; the audit chain's key from
``--audit-key-file``, ``GATE_REVIEW_AUDIT_KEY_FILE`` or ``GATE_REVIEW_AUDIT_KEY`` (default
``/etc/egate/audit.key`` for root, ``~/.config/egate/audit.key`` otherwise; created 0600
by the first command that writes audit rows). ``audit-verify`` checks the chain and
compares its head with the anchor file (default ``audit.anchor`` beside the audit key),
which the server appends to at every purge round and ``audit-anchor`` appends to now.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
import sys
from pathlib import Path
from typing import Any

DB_ENV = "GATE_REVIEW_DB"
DEFAULT_PORT = 8470
#: Biometric images are kept for days at most (docs/review.md, "Retention"): 90 days.
MAX_RETENTION_HOURS = 24 * 90
#: The schedule may not let images outlive their retention by more than an hour.
MAX_PURGE_INTERVAL_S = 3600.0


def _bounded(name: str, low: float, high: float, unit: str) -> Any:
    """An argparse type: a finite number > low and <= high (nan, inf, 0 refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
        if not low < value <= high:  # False for nan; inf is above any high
            raise argparse.ArgumentTypeError(
                f"{name} must be > {low:g} and <= {high:g} {unit}, got {text}")
        return value
    return parse


_retention_hours = _bounded("--retention-hours", 0, MAX_RETENTION_HOURS, "hours")
_purge_interval_s = _bounded("--purge-interval-s", 0, MAX_PURGE_INTERVAL_S, "seconds")


def default_db_url() -> str:
    env = os.environ.get(DB_ENV)
    if env:
        return env
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'egate' / 'review.sqlite3'}"


def _common(p: argparse.ArgumentParser, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    p.add_argument("--db", default=default, help=f"store URL (sqlite:///PATH or "
                   f"postgresql://...); default ${DB_ENV} or ~/.local/share/egate/review.sqlite3")
    p.add_argument("--key-file", default=default,
                   help="image key file (default $GATE_REVIEW_KEY_FILE or $GATE_REVIEW_KEY)")
    p.add_argument("--audit-key-file", default=default,
                   help="the audit chain's HMAC key (default $GATE_REVIEW_AUDIT_KEY_FILE, "
                   "$GATE_REVIEW_AUDIT_KEY, /etc/egate/audit.key as root, else "
                   "~/.config/egate/audit.key; created 0600 when a command first writes)")
    p.add_argument("--anchor", default=default,
                   help="the audit anchor file: the chain head exported outside the store "
                   "(default audit.anchor beside the audit key file)")


def serve_options(p: argparse.ArgumentParser, port: int = DEFAULT_PORT) -> None:
    """The web server's options (``gate review`` and ``gate station``)."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=port, help=f"default {port}")
    p.add_argument("--retention-hours", type=_retention_hours, default=24.0,
                   help="purge images this long after a case is closed (default 24, "
                   f"at most {MAX_RETENTION_HOURS})")
    p.add_argument("--purge-interval-s", type=_purge_interval_s, default=600.0,
                   help=f"purge this often (default 600, at most {MAX_PURGE_INTERVAL_S:g})")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="private key of --tls-cert (both or neither)")
    p.add_argument("--behind-tls-proxy", action="store_true",
                   help="a TLS proxy in front serves HTTPS: mark the cookies Secure and send "
                   "Strict-Transport-Security")
    p.add_argument("--forwarded-allow-ips", metavar="IPS",
                   help="proxies whose X-Forwarded-For names the client (uvicorn's option; "
                   "default 127.0.0.1): the per-address sign-in limit counts that address")
    p.add_argument("--max-sessions", type=int, default=3,
                   help="sessions per account at once; the oldest ends first (default 3, "
                   "0 no limit)")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "review", help="officers' review server and its housekeeping",
        description="Serve the officers' review web app (default), or manage it.",
    )
    _common(p, top=True)
    serve_options(p)
    p.add_argument("--lane-control", metavar="MODULE:NAME",
                   help="a LaneControl, or a factory returning one, to release exit doors "
                   "and show lane states")
    p.set_defaults(func=run_serve)
    actions = p.add_subparsers(dest="review_action", metavar="ACTION")

    a = actions.add_parser("adduser", help="create an officer account")
    _common(a, top=False)
    a.add_argument("name")
    a.add_argument("--role", choices=("officer", "supervisor", "maintenance"), required=True)
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    a.set_defaults(func=run_adduser)

    pw = actions.add_parser("passwd", help="set an officer's password and unlock the account")
    _common(pw, top=False)
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    pw.set_defaults(func=run_passwd)

    for name, what in (("disable", "disable an account: its sessions end, sign-in refused"),
                       ("enable", "enable a disabled account"),
                       ("remove", "remove an account and end its sessions (its decisions "
                        "and audit rows stay)")):
        d = actions.add_parser(name, help=what)
        _common(d, top=False)
        d.add_argument("name")
        d.set_defaults(func=run_account, account_action=name)

    r = actions.add_parser("role", help="change an account's role; its sessions end")
    _common(r, top=False)
    r.add_argument("name")
    r.add_argument("--role", choices=("officer", "supervisor", "maintenance"), required=True)
    r.set_defaults(func=run_account, account_action="role")

    u = actions.add_parser("users", help="list officer accounts")
    _common(u, top=False)
    u.set_defaults(func=run_users)

    g = actions.add_parser("purge", help="purge images of cases closed longer ago than the "
                           "retention")
    _common(g, top=False)
    g.add_argument("--retention-hours", type=_retention_hours, default=24.0)
    g.set_defaults(func=run_purge)

    v = actions.add_parser("audit-verify", help="check the audit chain, the decisions and "
                           "case states it covers, and its head against the anchor")
    _common(v, top=False)
    v.add_argument("--no-anchor", action="store_true",
                   help="do not compare with an anchor (deleted newest rows go unseen)")
    v.set_defaults(func=run_audit_verify)

    an = actions.add_parser("audit-anchor", help="check the chain, then append its head to "
                            "the anchor file (the server does so at every purge round)")
    _common(an, top=False)
    an.set_defaults(func=run_audit_anchor)

    k = actions.add_parser("keygen", help="write a new random image key to FILE (mode 0600)")
    k.add_argument("file")
    k.set_defaults(func=run_keygen)


def _audit_key(args: argparse.Namespace, create: bool) -> Any:
    """The audit key as the options and environment name it; a command that writes audit
    rows creates a missing key file (0600), ``audit-verify`` never does."""
    from gate.review.crypto import (
        AUDIT_KEY_ENV,
        AUDIT_KEY_FILE_ENV,
        AuditKey,
        create_key_file,
        default_audit_key_file,
    )

    explicit = getattr(args, "audit_key_file", None)
    if not explicit and os.environ.get(AUDIT_KEY_ENV) and not os.environ.get(AUDIT_KEY_FILE_ENV):
        return AuditKey.from_environment()
    path = Path(explicit) if explicit else default_audit_key_file()
    if create and create_key_file(path):
        print(f"gate review: created the audit key {path} (mode 0600); every gate review "
              "command on this store needs it; keep it off the store's host and backups",
              file=sys.stderr)
    return AuditKey.from_file(path)


def _anchor_path(args: argparse.Namespace, key: Any) -> Path | None:
    explicit = getattr(args, "anchor", None)
    if explicit:
        return Path(explicit)
    return None if key.path is None else key.path.with_name(key.path.stem + ".anchor")


def _store(args: argparse.Namespace, write: bool = True) -> Any:
    """The store with its audit key; exits 2 (one line) when the key is missing, malformed
    or (for a command that writes) not the key the chain was written with."""
    from gate.review.crypto import KeyMissing
    from gate.review.store import CaseStore

    url = getattr(args, "db", None) or default_db_url()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        store = CaseStore(url, audit_key=_audit_key(args, create=write))
        if write:
            store.check_audit_key()
    except (KeyMissing, OSError) as exc:
        print(f"gate review: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    return store


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("passwords differ")
    return first


def run_adduser(args: argparse.Namespace) -> int:
    from gate.review.auth import WeakPassword, hash_password
    from gate.review.store import check_user_name

    try:
        name = check_user_name(args.name)
        hashed = hash_password(_password(args))
    except (WeakPassword, ValueError) as exc:
        print(f"gate review adduser: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    if not store.add_user(name, args.role, hashed):
        print(f"gate review adduser: {name} exists (use passwd)", file=sys.stderr)
        return 1
    print(f"added {name} as {args.role}")
    return 0


def _account(store: Any, name: str, command: str) -> Any:
    user = store.find_user(name)
    if user is None:
        print(f"gate review {command}: no officer {name!r}", file=sys.stderr)
    return user


def run_passwd(args: argparse.Namespace) -> int:
    from gate.review.auth import WeakPassword, hash_password

    try:
        hashed = hash_password(_password(args))
    except (WeakPassword, ValueError) as exc:
        print(f"gate review passwd: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    user = _account(store, args.name, "passwd")
    if user is None or not store.set_password(user.name, hashed):
        return 1
    store.audit("system", "PASSWORD_SET", detail=f"{user.name}; its sessions ended")
    print(f"password set for {user.name}; account unlocked, its sessions ended")
    return 0


def run_account(args: argparse.Namespace) -> int:
    """disable / enable / remove / role: every one but enable ends the account's sessions."""
    action = args.account_action
    store = _store(args)
    user = _account(store, args.name, action)
    if user is None:
        return 1
    if action == "disable":
        done, event, said = store.set_disabled(user.name, True), "USER_DISABLED", "disabled"
    elif action == "enable":
        done, event, said = store.set_disabled(user.name, False), "USER_ENABLED", "enabled"
    elif action == "remove":
        done, event, said = store.remove_user(user.name), "USER_REMOVED", "removed"
    else:
        done = store.set_role(user.name, args.role)
        event, said = "ROLE_SET", f"now {args.role} (was {user.role})"
    if not done:
        print(f"gate review {action}: no officer {user.name!r}", file=sys.stderr)
        return 1
    ended = "" if action == "enable" else "; its sessions ended"
    store.audit("system", event, detail=f"{user.name} {said}{ended}")
    print(f"{user.name} {said}{ended}")
    return 0


def run_users(args: argparse.Namespace) -> int:
    import time

    now = time.time()
    from gate.review.auth import valid_user_name

    store = _store(args, write=False)
    for user in store.users():
        locked = user.locked_until is not None and user.locked_until > now
        state = "disabled" if user.disabled else ("locked" if locked else "active")
        if not valid_user_name(user.name.lower()):
            state += " (name not allowed: cannot sign in; add a new account, remove this)"
        print(f"{user.name}\t{user.role}\t{state}\t{store.user_sessions(user.name)} sessions")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    n = _store(args).purge(args.retention_hours * 3600.0)
    print(f"purged images of {n} closed cases")
    return 0


def _verify(args: argparse.Namespace, store: Any, anchor: Path | None) -> int:
    if anchor is not None and not anchor.exists():
        if getattr(args, "anchor", None):
            print(f"gate review: anchor file {anchor} does not exist", file=sys.stderr)
            return 2
        anchor = None  # the default place, never exported to yet
    report = store.verify_audit(anchor)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.intact:
        shown = report.breaks[:20]
        for b in shown:
            print(f"audit chain BROKEN: {b}", file=sys.stderr)
        if len(report.breaks) > len(shown):
            print(f"... and {len(report.breaks) - len(shown)} more breaks", file=sys.stderr)
        print(f"audit chain BROKEN: {len(report.breaks)} breaks ("
              f"{', '.join(sorted(report.kinds()))})", file=sys.stderr)
        return 1
    head = report.head
    line = (f"audit chain intact: {report.rows} keyed rows, {report.legacy_rows} earlier rows "
            f"pinned by the epoch; head seq {head.seq} {head.mac}" if head else
            f"audit chain intact: no keyed rows yet, {report.legacy_rows} unkeyed rows")
    if report.anchor is not None:
        line += f"; anchor seq {report.anchor.seq} matches ({anchor})"
    print(line)
    return 0


def run_audit_verify(args: argparse.Namespace) -> int:
    store = _store(args, write=False)
    anchor = None if args.no_anchor else _anchor_path(args, store.audit_key)
    return _verify(args, store, anchor)


def run_audit_anchor(args: argparse.Namespace) -> int:
    from gate.review.chain import AuditChainBroken

    store = _store(args, write=False)
    anchor = _anchor_path(args, store.audit_key)
    if anchor is None:
        print("gate review audit-anchor: the audit key comes from the environment; name the "
              "anchor file with --anchor", file=sys.stderr)
        return 2
    rc = _verify(args, store, anchor if anchor.exists() else None)
    if rc != 0:
        print("gate review audit-anchor: not anchoring a broken chain", file=sys.stderr)
        return rc
    try:
        written = store.export_audit_anchor(anchor)
    except AuditChainBroken as exc:
        print(f"gate review audit-anchor: {exc}", file=sys.stderr)
        return 1
    if written is None:
        print("no keyed audit rows yet: nothing to anchor")
        return 0
    print(f"anchored seq {written.seq} {written.mac} in {anchor}")
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    from gate.review.crypto import new_key_text

    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"gate review keygen: {args.file} exists; not overwritten", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key_text() + "\n")
    print(f"wrote a new key to {args.file}; keep it off the database host's backups")
    return 0


def load_lane_control(spec: str) -> Any:
    from gate.review.cases import LaneControl

    module_name, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module_name), attr or "lane_control")
    # A class passes the protocol's attribute check too: instantiate it.
    if isinstance(obj, type) or (not isinstance(obj, LaneControl) and callable(obj)):
        obj = obj()
    if not isinstance(obj, LaneControl):
        raise TypeError(f"{spec} is not a LaneControl")
    return obj


def run_serve(args: argparse.Namespace) -> int:
    lanes = load_lane_control(args.lane_control) if args.lane_control else None
    return serve(args, lambda store: lanes)


def serve(args: argparse.Namespace, lane_control: Any, name: str = "gate review",
          banner: str = "review server") -> int:
    """Serve the app; ``lane_control(store)`` gives its LaneControl (or None)."""
    import uvicorn

    from gate.review.app import ReviewSettings, create_app
    from gate.review.auth import SignInPolicy
    from gate.review.crypto import ImageSeal, KeyMissing

    if bool(args.tls_cert) != bool(args.tls_key):
        print(f"{name}: --tls-cert and --tls-key go together (give both, or neither "
              "with --behind-tls-proxy)", file=sys.stderr)
        return 2
    try:
        seal = ImageSeal.from_environment(args.key_file)
    except (KeyMissing, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    anchor = _anchor_path(args, store.audit_key)
    if not store.users():
        print("gate review: no officers yet; create one with "
              "`gate review adduser NAME --role supervisor`", file=sys.stderr)
    lanes = lane_control(store)
    tls = bool(args.tls_cert and args.tls_key)
    if not tls and not args.behind_tls_proxy and args.host not in (
            "127.0.0.1", "localhost", "::1"):
        print("gate review: WARNING: serving plain HTTP beyond this host; passwords and "
              "biometric images would cross the network unencrypted (use --tls-cert/--tls-key "
              "or a TLS proxy)", file=sys.stderr)
    settings = ReviewSettings(
        retention_s=args.retention_hours * 3600.0,
        purge_interval_s=args.purge_interval_s,
        cookie_secure=tls or args.behind_tls_proxy,
        hsts=tls or args.behind_tls_proxy,
        sign_in=SignInPolicy(max_sessions=max(0, args.max_sessions)),
        audit_anchor=str(anchor) if anchor is not None else None,
    )
    app = create_app(store, seal, lanes, settings)
    scheme = "https" if tls else "http"
    print(f"{banner} on {scheme}://{args.host}:{args.port}/ (key {seal.key_id_hex}, "
          f"audit key {store.audit_key.key_id}, anchor {anchor or '-'})")
    extra: dict[str, Any] = {}
    if args.forwarded_allow_ips:
        extra["forwarded_allow_ips"] = args.forwarded_allow_ips
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                ssl_certfile=args.tls_cert if tls else None,
                ssl_keyfile=args.tls_key if tls else None, **extra)
    close = getattr(lanes, "close", None)
    if callable(close):
        close()
    return 0
