"""The simulated passport chip as a peer in a process of its own, on real PC/SC.

``gate sim chip`` (or ``python -m sim.chip_server``) makes a simulated PKI, writes its
trust folder (``--trust-out``), and presents personalised chips to ``pcscd`` through
``vsmartcard-vpcd``: the reader is ``Virtual PCD 00 NN``, and the product reaches it like
any reader, ``pyscard`` -> ``pcscd`` -> reader -> chip. The first stdout line is the
lane's device URL (``pcsc:Virtual PCD 00 00``), the second the control API's URL on
127.0.0.1:

- ``POST /insert`` ``{"mrz": "...\\n...", "person": "astronaut", "portrait_format":
  "jpeg"|"jp2", "access": "both"|"pace"|"bac", "pace": "gm"|"im"|"cam", "parameter_id": 13,
  "cipher": "aes128"|"aes192"|"aes256"|"3des", "faults": [...], "aa": "ec"|"rsa"|null,
  "ca": true, "extended": true}`` personalises a chip and lays it in the field (the one
  there is taken away first, and its removal awaited: vpcd hangs a second connection);
- ``POST /remove``; ``GET /state``.

Faults: those of :data:`sim.chippki.FAULTS` (what passive/chip authentication catches)
and ``mute`` (the chip is detected, then answers nothing: the reader loses it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: the specimen MRZ of ICAO 9303 (UTO, the state the sim PKI issues for)
SPECIMEN_MRZ = ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\n"
                "L898902C36UTO7408122F1204159ZE184226B<<<<<10")
CIPHERS = {"3des": 1, "aes128": 2, "aes192": 3, "aes256": 4}
EMULATOR_FAULTS = ("mute",)


class InsertError(ValueError):
    """A chip description the emulator cannot make."""


class ChipServer:
    """The PKI, the chip in the field, and the control API."""

    def __init__(self, *, index: int = 0, port: int = 0, trust_out: str | None = None) -> None:
        from sim import chippki, vpcd

        self.index = index
        self.pcscd = vpcd.ensure_pcscd()
        self.pki = chippki.make_pki()
        self.trust = str(self.pki.write_folder(trust_out or tempfile.mkdtemp(prefix="simpki-"),
                                               master_list=True))
        self.card: Any = None
        self.chip: Any = None
        self.inserted_spec: dict[str, Any] | None = None
        self.insertions = 0
        self._lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True,
                                       name="chip-control")

    @property
    def reader(self) -> str:
        from sim import vpcd

        return vpcd.reader_name(self.index)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.remove()
        self.http.shutdown()
        self.http.server_close()
        if self.pcscd is not None:
            self.pcscd.terminate()
            self.pcscd.wait(5)

    # ------------------------------------------------------------ chips

    def insert(self, spec: dict[str, Any]) -> dict[str, Any]:
        from sim import chipcard, chippki, people, vpcd

        mrz = str(spec.get("mrz") or SPECIMEN_MRZ)
        faults = list(spec.get("faults") or [])
        unknown = set(faults) - set(chippki.FAULTS) - set(EMULATOR_FAULTS)
        if unknown:
            raise InsertError(f"no such chip fault: {sorted(unknown)}")
        fmt = spec.get("portrait_format", "jpeg")
        if fmt not in ("jpeg", "jp2"):
            raise InsertError("portrait_format is jpeg or jp2")
        access = spec.get("access", "both")
        if access not in ("both", "pace", "bac"):
            raise InsertError("access is both, pace or bac")
        cipher = spec.get("cipher", "aes128")
        mapping = spec.get("pace", "gm")
        if cipher not in CIPHERS or mapping not in ("gm", "im", "cam"):
            raise InsertError("cipher is 3des/aes128/aes192/aes256, pace is gm, im or cam")
        arc = {"gm": 2, "im": 4, "cam": 6}[mapping]
        if arc == 6 and cipher == "3des":
            raise InsertError("PACE-CAM runs with AES only")
        parameter_id = int(spec.get("parameter_id", 12 if mapping == "cam" else 13))
        try:
            person = people.person(str(spec.get("person", "astronaut")))
        except (KeyError, ValueError) as err:
            raise InsertError(f"no such person: {err}") from None
        width = int(spec.get("portrait_width", 280))
        image = person.portrait(width, round(width * 9 / 7))
        try:
            chip = chippki.personalise(
                mrz, chippki.portrait_bytes(image, fmt), fmt, pki=self.pki,
                aa=spec.get("aa", "ec"), ca=bool(spec.get("ca", True)),
                faults=tuple(f for f in faults if f in chippki.FAULTS))
            card = chipcard.ChipCard(chip, access=access,
                                     pace_protocol=f"0.4.0.127.0.7.2.2.4.{arc}.{CIPHERS[cipher]}",
                                     parameter_id=parameter_id,
                                     extended=bool(spec.get("extended", True)))
        except (ValueError, KeyError) as err:
            raise InsertError(str(err)) from None
        with self._lock:
            self._remove_locked()
            self._await_empty()
            vcard = vpcd.VpcdCard(card.process, card.atr, reset=card.reset, index=self.index,
                                  mute="mute" in faults)
            vcard.insert()
            self.card, self.chip = vcard, card
            self.insertions += 1
            self.inserted_spec = {"access": access, "pace": mapping, "cipher": cipher,
                                  "parameter_id": parameter_id, "portrait_format": fmt,
                                  "faults": faults, "dg2_bytes": len(chip.files[0x0102])}
            return {"inserted": self.insertions, "reader": self.reader, **self.inserted_spec}

    def _await_empty(self, timeout_s: float = 5.0) -> None:
        """Until PC/SC has seen the last chip go (a new connection before that hangs)."""
        from hardware.chip.pcsc import PcscReader

        reader = PcscReader(self.reader)
        try:
            reader.wait_removed(timeout_s)
        finally:
            reader.close()

    def _remove_locked(self) -> bool:
        if self.card is None:
            return False
        self.card.remove()
        self.card = None
        return True

    def remove(self) -> bool:
        with self._lock:
            return self._remove_locked()

    def state(self) -> dict[str, Any]:
        with self._lock:
            card = self.card
            return {"reader": self.reader, "trust": self.trust,
                    "inserted": card is not None and card.inserted,
                    "insertions": self.insertions, "chip": self.inserted_spec,
                    "apdus": card.apdus if card is not None else 0,
                    "error": card.error if card is not None else None}


def _handler(server: ChipServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/state":
                self._json(HTTPStatus.OK, server.state())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {self.path}"})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length).decode() or "{}") if length else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._json(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
                return
            if not isinstance(body, dict):
                self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
                return
            try:
                if path == "/insert":
                    self._json(HTTPStatus.OK, server.insert(body))
                elif path == "/remove":
                    self._json(HTTPStatus.OK, {"removed": server.remove()})
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no such action {path}"})
            except InsertError as err:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            except (ConnectionError, OSError, RuntimeError) as err:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(err)})

        def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


# ---------------------------------------------------------------- standalone


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sim.chippki import FAULTS

    parser.add_argument("--index", type=int, choices=(0, 1), default=0,
                        help="vpcd's reader slot: 0 is 'Virtual PCD 00 00' (port 35963)")
    parser.add_argument("--port", type=int, default=0, help="control API port (0: any)")
    parser.add_argument("--trust-out", metavar="DIR",
                        help="write the simulated PKI's trust folder here (CSCAs, CRLs, "
                             "master list) for --trust / [chip] trust")
    parser.add_argument("--mrz", default="", help="the chip's MRZ, lines joined by \\n "
                        "(default: ICAO's specimen, issued by UTO)")
    parser.add_argument("--person", default="astronaut", help="whose portrait is in DG2")
    parser.add_argument("--portrait-format", choices=("jpeg", "jp2"), default="jpeg")
    parser.add_argument("--access", choices=("both", "pace", "bac"), default="both")
    parser.add_argument("--pace", choices=("gm", "im", "cam"), default="gm")
    parser.add_argument("--parameter-id", type=int, default=None,
                        help="PACE domain parameters (12 P-256, 13 brainpoolP256r1, ...)")
    parser.add_argument("--cipher", choices=tuple(CIPHERS), default="aes128")
    parser.add_argument("--fault", action="append", default=[],
                        choices=(*FAULTS, *EMULATOR_FAULTS))
    parser.add_argument("--empty", action="store_true", help="start with no chip in the field")


def run(args: argparse.Namespace) -> int:
    try:
        server = ChipServer(index=args.index, port=args.port, trust_out=args.trust_out)
    except (OSError, RuntimeError, ConnectionError) as err:
        print(f"gate sim chip: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        if not args.empty:
            spec: dict[str, Any] = {"mrz": args.mrz.replace("\\n", "\n"), "person": args.person,
                                    "portrait_format": args.portrait_format,
                                    "access": args.access, "pace": args.pace,
                                    "cipher": args.cipher, "faults": args.fault}
            if args.parameter_id is not None:
                spec["parameter_id"] = args.parameter_id
            try:
                server.insert(spec)
            except (InsertError, ConnectionError) as err:
                print(f"gate sim chip: {err}", file=sys.stderr)
                return 2
        print(f"pcsc:{server.reader}", flush=True)
        print(server.url, flush=True)
        print(json.dumps({"trust": server.trust}), flush=True)
        stop.wait()
    finally:
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.chip_server",
                                     description="Serve simulated passport chips on PC/SC.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


class ChipPeer:
    """``sim.chip_server`` started in a process of its own (for the lane and the tests):
    ``insert(**spec)``, ``remove()``, ``state()``; ``reader`` is the lane's device URL and
    ``trust`` the simulated PKI's trust folder."""

    def __init__(self, *, index: int = 0, trust_out: str | None = None,
                 ready_timeout_s: float = 60.0) -> None:
        import socket

        from sim.peerproc import PeerProcess

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            control_port = probe.getsockname()[1]
        trust = trust_out or tempfile.mkdtemp(prefix="simpki-")

        class _Process(PeerProcess):
            name = "chip"

            def command(self) -> Sequence[str]:
                return ["-m", "sim.chip_server", "--empty", "--index", str(index),
                        "--port", str(control_port), "--trust-out", trust]

            def ready(self, first_line: str) -> bool:
                return first_line.startswith("pcsc:")

            @property
            def base(self) -> str:
                return f"http://127.0.0.1:{control_port}"

        self.process = _Process(ready_timeout_s=ready_timeout_s)
        self.reader = self.process.url  # pcsc:Virtual PCD 00 NN
        self.trust = trust

    def insert(self, **spec: Any) -> dict[str, Any]:
        return self.process.call("POST", "/insert", spec)

    def remove(self) -> bool:
        return bool(self.process.call("POST", "/remove").get("removed"))

    def state(self) -> dict[str, Any]:
        return self.process.call("GET", "/state")

    def stop(self) -> int | None:
        return self.process.stop()

    @property
    def errors(self) -> list[str]:
        """The peer's last stderr lines (an emulator error's traceback)."""
        return list(self.process.errors)

    def __enter__(self) -> ChipPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
