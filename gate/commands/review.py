"""``gate review``: the officers' review server and its housekeeping.

``gate review`` serves the web app; ``adduser``/``passwd`` manage officers (the first
officer is created here, there is no sign-up page); ``purge`` applies the retention
policy now (the server also purges on a schedule); ``keygen`` writes a new image key.
The store URL comes from ``--db`` or ``GATE_REVIEW_DB``; the key from ``--key-file``,
``GATE_REVIEW_KEY_FILE`` or ``GATE_REVIEW_KEY``.
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


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "review", help="officers' review server and its housekeeping",
        description="Serve the officers' review web app (default), or manage it.",
    )
    _common(p, top=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--lane-control", metavar="MODULE:NAME",
                   help="a LaneControl, or a factory returning one, to release exit doors "
                   "and show lane states")
    p.add_argument("--retention-hours", type=_retention_hours, default=24.0,
                   help="purge images this long after a case is closed (default 24, "
                   f"at most {MAX_RETENTION_HOURS})")
    p.add_argument("--purge-interval-s", type=_purge_interval_s, default=600.0,
                   help=f"purge this often (default 600, at most {MAX_PURGE_INTERVAL_S:g})")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="private key of --tls-cert")
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

    u = actions.add_parser("users", help="list officer accounts")
    _common(u, top=False)
    u.set_defaults(func=run_users)

    g = actions.add_parser("purge", help="purge images of cases closed longer ago than the "
                           "retention")
    _common(g, top=False)
    g.add_argument("--retention-hours", type=_retention_hours, default=24.0)
    g.set_defaults(func=run_purge)

    v = actions.add_parser("audit-verify", help="check the audit log's hash chain")
    _common(v, top=False)
    v.set_defaults(func=run_audit_verify)

    k = actions.add_parser("keygen", help="write a new random image key to FILE (mode 0600)")
    k.add_argument("file")
    k.set_defaults(func=run_keygen)


def _store(args: argparse.Namespace) -> Any:
    from gate.review.store import CaseStore

    url = getattr(args, "db", None) or default_db_url()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return CaseStore(url)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("passwords differ")
    return first


def run_adduser(args: argparse.Namespace) -> int:
    from gate.review.auth import WeakPassword, hash_password

    try:
        hashed = hash_password(_password(args))
    except (WeakPassword, ValueError) as exc:
        print(f"gate review adduser: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    if not store.add_user(args.name, args.role, hashed):
        print(f"gate review adduser: {args.name} exists (use passwd)", file=sys.stderr)
        return 1
    print(f"added {args.name} as {args.role}")
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    from gate.review.auth import WeakPassword, hash_password

    try:
        hashed = hash_password(_password(args))
    except (WeakPassword, ValueError) as exc:
        print(f"gate review passwd: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    if not store.set_password(args.name, hashed):
        print(f"gate review passwd: no officer {args.name}", file=sys.stderr)
        return 1
    store.audit("system", "PASSWORD_SET", detail=args.name)
    print(f"password set for {args.name}; account unlocked")
    return 0


def run_users(args: argparse.Namespace) -> int:
    import time

    now = time.time()
    for user in _store(args).users():
        locked = user.locked_until is not None and user.locked_until > now
        state = "disabled" if user.disabled else ("locked" if locked else "active")
        print(f"{user.name}\t{user.role}\t{state}")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    n = _store(args).purge(args.retention_hours * 3600.0)
    print(f"purged images of {n} closed cases")
    return 0


def run_audit_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    intact, checked, broken = store.verify_audit()
    if intact:
        head = store.audit_head()
        print(f"audit chain intact: {checked} rows; head {head[1] if head else '-'}")
        return 0
    print(f"audit chain BROKEN at row id {broken} (after {checked} good rows)", file=sys.stderr)
    return 1


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
    import uvicorn

    from gate.review.app import ReviewSettings, create_app
    from gate.review.crypto import ImageSeal, KeyMissing

    try:
        seal = ImageSeal.from_environment(args.key_file)
    except (KeyMissing, OSError) as exc:
        print(f"gate review: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    if not store.users():
        print("gate review: no officers yet; create one with "
              "`gate review adduser NAME --role supervisor`", file=sys.stderr)
    lanes = load_lane_control(args.lane_control) if args.lane_control else None
    tls = bool(args.tls_cert and args.tls_key)
    if not tls and args.host not in ("127.0.0.1", "localhost", "::1"):
        print("gate review: WARNING: serving plain HTTP beyond this host; passwords and "
              "biometric images would cross the network unencrypted (use --tls-cert/--tls-key "
              "or a TLS proxy)", file=sys.stderr)
    settings = ReviewSettings(
        retention_s=args.retention_hours * 3600.0,
        purge_interval_s=args.purge_interval_s,
        cookie_secure=tls,
    )
    app = create_app(store, seal, lanes, settings)
    scheme = "https" if tls else "http"
    print(f"review server on {scheme}://{args.host}:{args.port}/ (key {seal.key_id_hex})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                ssl_certfile=args.tls_cert if tls else None,
                ssl_keyfile=args.tls_key if tls else None)
    return 0
