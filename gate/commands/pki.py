"""``gate pki``: the keys and certificates of a row of lanes.

    gate pki init DIR --lanes lane-1,lane-2 [--host broker.example] [--port 4222]
    gate pki lane DIR lane-3

``init`` makes the row's CA, the broker's certificate (for ``--host``, repeatable), the
station's client certificate and Ed25519 signing key, one client certificate per lane,
and ``broker/nats-server.conf`` (mTLS, certificate = user, per-subject permissions).
``lane`` adds a lane and rewrites the broker's configuration. Nothing is overwritten.
The layout (copy each folder to its machine; ca.key stays offline)::

    DIR/ca.pem ca.key
    DIR/broker/   broker.pem broker.key ca.pem nats-server.conf broker.json
    DIR/station/  station.pem station.key ca.pem signing.key station.pub
    DIR/lanes/L/  lane.pem lane.key ca.pem station.pub
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pki", help="keys and certificates of a row of lanes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="pki_action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="a new row: CA, broker, station, lanes")
    init.add_argument("folder")
    init.add_argument("--lanes", default="", help="comma-separated lane ids")
    init.add_argument("--host", action="append", default=[],
                      help="the broker's host name or address (repeatable; default "
                           "127.0.0.1 and localhost)")
    init.add_argument("--port", type=int, default=4222, help="the broker's port (4222)")
    init.add_argument("--listen", default="0.0.0.0", help="the broker's listen address")
    init.add_argument("--store-dir", help="the broker's JetStream folder "
                                          "(default DIR/broker/jetstream)")
    init.set_defaults(func=run_init)
    lane = actions.add_parser("lane", help="add a lane to a row")
    lane.add_argument("folder")
    lane.add_argument("lane")
    lane.set_defaults(func=run_lane)


def run_init(args: argparse.Namespace) -> int:
    from gate.row.commands import check_lane_id
    from gate.row.pki import add_lane, init_row

    lanes = [name.strip() for name in args.lanes.split(",") if name.strip()]
    folder = Path(args.folder)
    try:
        for name in lanes:  # every id checked before anything is written
            check_lane_id(name)
        init_row(folder, [], tuple(args.host) or ("127.0.0.1", "localhost"),
                 port=args.port, listen=args.listen,
                 store_dir=Path(args.store_dir) if args.store_dir else None)
        for name in lanes:
            add_lane(folder, name)
    except (OSError, ValueError) as exc:
        print(f"gate pki init: {exc}", file=sys.stderr)
        return 2
    print(f"row PKI in {folder}: CA, broker, station, {len(lanes)} lane(s); "
          f"broker configuration {folder / 'broker' / 'nats-server.conf'}")
    return 0


def run_lane(args: argparse.Namespace) -> int:
    from gate.row.pki import add_lane

    try:
        out = add_lane(Path(args.folder), args.lane)
    except (OSError, ValueError) as exc:
        print(f"gate pki lane: {exc}", file=sys.stderr)
        return 2
    print(f"lane {args.lane}: {out} (broker configuration rewritten)")
    return 0
