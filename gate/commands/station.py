"""``gate station``: the officers' station of a row of lanes.

The review web app (``gate review``: the queue, the cases, the audit log) grown into the
row's monitoring station: it joins the row's NATS broker, writes every lane's cases from
the case stream into the store (each exactly once, acknowledged to the stream only after
the store committed it), shows the live row at ``/lanes`` (``/api/lanes``: every lane
with ``lane``, ``state``, ``reachable``, doors, zone count, alarms, time in state, the case
waiting) and sends an officer's release to the lane as a command signed with the
station's Ed25519 key (``--signing-key``, from ``gate pki``), whose answer goes into the
audit chain. It beats a heartbeat every second: lanes that stop hearing it stop admitting
travellers after their ``[row] unsupervised_after_s``.

    gate station --broker nats://127.0.0.1:4222 --signing-key station.key --db postgresql://…
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gate.commands.review import _common, serve, serve_options

DEFAULT_PORT = 8480


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "station", help="the officers' station of a row of lanes (NATS)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, top=True)
    serve_options(p, DEFAULT_PORT)
    p.add_argument("--broker", required=True, metavar="URL",
                   help="the row's NATS server: nats://HOST:PORT (tls://… with --bus-*)")
    p.add_argument("--signing-key", required=True, metavar="PEM",
                   help="the station's Ed25519 private key: signs every command")
    p.add_argument("--bus-ca", metavar="PEM", help="mTLS to the broker: the row's CA")
    p.add_argument("--bus-cert", metavar="PEM", help="mTLS: the station's certificate")
    p.add_argument("--bus-key", metavar="PEM", help="mTLS: the station's certificate key")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gate.row.commands import StationSigner

    try:
        signer = StationSigner.from_pem(Path(args.signing_key).read_bytes())
    except (OSError, ValueError) as exc:
        print(f"gate station: --signing-key {args.signing_key}: "
              f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    bus = (args.bus_ca, args.bus_cert, args.bus_key)
    if any(bus) and not all(bus):
        print("gate station: --bus-ca, --bus-cert and --bus-key go together", file=sys.stderr)
        return 2
    tls: Any = None
    if all(bus):
        import ssl

        from gate.row.settings import tls_context

        try:
            tls = tls_context(*bus)
        except (OSError, ssl.SSLError) as exc:
            print(f"gate station: bus TLS files: {exc}", file=sys.stderr)
            return 2

    def lane_control(store: Any) -> Any:
        from gate.row.link import StationLink
        from gate.row.station import RowControl

        link = StationLink(args.broker, store.add_case, tls=tls).start()
        if not link.connected:
            print(f"gate station: the broker {args.broker} is not there yet; joining it "
                  "when it comes (lanes show unreachable meanwhile)", file=sys.stderr)
        return RowControl(link, signer, store)

    return serve(args, lane_control, name="gate station", banner="officers' station")
