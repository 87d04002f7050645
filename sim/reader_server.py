"""The simulated document reader: a document camera over the reader's glass, as MJPEG.

A real peer in a process of its own, reached the way a lane reaches a real document
camera — ``http://127.0.0.1:PORT/stream.mjpg`` — so the lane's reader
(:class:`hardware.docreader.camera.CameraDocumentReader` over OpenCV) runs unchanged and
cannot tell it from hardware. What the camera sees is the empty glass (a dark, faintly
noisy surface) or a data page from :mod:`sim.documents` lying on it, in any page
condition (``clean``, ``blur`` … ``smeared``, ``covered``).

Each view is rendered and JPEG-encoded once, when it changes (quality 95, so the MRZ
reader reads the stream as it reads the page), and every client gets the same bytes at
``--fps`` (8 by default: a page lies still; more only costs decoding).

Control, JSON over HTTP on the same port::

    POST /place   {"person": "astronaut", "document": "TD3", "defect": "",
                   "condition": "clean", "portrait_of": "", "seed": 0}
                  → {"placement": 1, "document_number": "…", "mrz": […], …}
    POST /remove  the glass is empty again
    POST /unplug  streams end; /stream.mjpg answers 503 until /replug
    POST /replug
    GET  /state   plugged, what lies on the glass, clients
    GET  /snapshot.jpg  the current view, one JPEG

``document_number`` is simulated data: the scenario runner needs it to put a "stolen"
document on the lane's list. Unplugging keeps the control port open (a test must be able
to plug it back); killing the process is the harder fault — the port refuses.

Standalone (``python -m sim.reader_server`` or ``gate sim reader``): prints the stream URL
alone on its first stdout line, serves until SIGINT/SIGTERM, exits 0. ``--place-after``,
``--hold-s`` and ``--every`` lay the page on a schedule for demos and soak runs.
:class:`ReaderPeer` starts it as a subprocess for tests and the scenario runner.

This module imports nothing heavy at import time: the CLI lists it among its commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sim.cliargs import integer, number
from sim.peerproc import PeerProcess

#: The document camera's view, width × height: a TD3 page at 300 dpi with its margin.
GLASS_SIZE = (1760, 1320)
DEFAULT_FPS = 8.0
DEFAULT_QUALITY = 95
MIN_QUALITY = 92  # below this the MRZ reader starts to miss characters in the stream
BOUNDARY = "frame"
#: What /place accepts (anything else is refused: a typo must not pass silently).
PLACE_KEYS = ("person", "document", "defect", "condition", "portrait_of", "seed",
              "issuing_state")
DOCUMENT_TYPES = ("TD3", "TD2", "TD1")


class PlaceError(ValueError):
    """A /place request that names something the simulator does not have."""


def check_spec(spec: dict[str, Any]) -> tuple[str, str, str, str, str, int]:
    """(person, portrait_of, document, defect, condition, seed) of a /place request, or
    :class:`PlaceError` naming what the simulator does not have."""
    from sim import documents
    from sim.people import people

    unknown = sorted(set(spec) - set(PLACE_KEYS))
    if unknown:
        raise PlaceError(f"unknown keys {unknown}; known: {list(PLACE_KEYS)}")
    person = str(spec.get("person", "astronaut"))
    portrait_of = str(spec.get("portrait_of", "") or "")
    document = str(spec.get("document", "TD3") or "")
    defect = str(spec.get("defect", "") or "")
    condition = str(spec.get("condition", "clean") or "clean")
    try:
        seed = int(spec.get("seed", 0))
    except (TypeError, ValueError):
        raise PlaceError(f"seed must be an integer, not {spec.get('seed')!r}") from None
    known = [p.person_id for p in people()]
    for what, value in (("person", person), ("portrait_of", portrait_of or person)):
        if value not in known:
            raise PlaceError(f"{what} {value!r}: no such simulated person; known: {known}")
    if document and document not in DOCUMENT_TYPES:
        raise PlaceError(f"document {document!r}: one of {list(DOCUMENT_TYPES)}")
    if defect and defect not in documents.BAD_KINDS:
        raise PlaceError(f"defect {defect!r}: one of {list(documents.BAD_KINDS)}")
    if condition not in documents.PAGE_CONDITIONS:
        raise PlaceError(f"condition {condition!r}: one of {list(documents.PAGE_CONDITIONS)}")
    return person, portrait_of, document, defect, condition, seed


class Glass:
    """What the document camera sees, encoded once each time it changes."""

    def __init__(self, size: tuple[int, int] = GLASS_SIZE, quality: int = DEFAULT_QUALITY,
                 seed: int = 0) -> None:
        from sim.documents import empty_glass

        if not MIN_QUALITY <= quality <= 100:
            raise ValueError(f"JPEG quality must be {MIN_QUALITY}..100")
        self.size = size
        self.quality = quality
        self._glass = empty_glass(size, seed)
        self._empty = self._encode(self._glass)
        self._lock = threading.Lock()
        self._jpeg = self._empty
        self._document: dict[str, Any] | None = None
        self._placements = 0

    @property
    def jpeg(self) -> bytes:
        with self._lock:
            return self._jpeg

    @property
    def document(self) -> dict[str, Any] | None:
        with self._lock:
            return None if self._document is None else dict(self._document)

    @property
    def placements(self) -> int:
        with self._lock:
            return self._placements

    def place(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Render the page ``spec`` describes and lay it on the glass; what was there
        before is taken away. Returns the document's simulated data."""
        import dataclasses
        from datetime import date

        import numpy as np

        from sim import documents

        person, portrait_of, document, defect, condition, seed = check_spec(spec)
        rng = np.random.default_rng([seed, 9303])
        identity = documents.random_identity(rng, document or None, today=date.today(),
                                             defect=defect)
        identity = dataclasses.replace(identity, person_id=portrait_of or person)
        state = spec.get("issuing_state")
        if state:  # e.g. UTO, the state the simulated chip PKI issues for
            if not (isinstance(state, str) and state.isalpha() and state.isupper()
                    and 1 <= len(state) <= 3):
                raise PlaceError(f"issuing_state {state!r}: one to three capital letters")
            identity = dataclasses.replace(identity, issuing_state=state)
        page = documents.photograph(documents.render_page(identity, rng), condition, rng)
        view = documents.on_glass(page, self._glass, rng)
        jpeg = self._encode(view.image)
        info = {
            "person": person,
            "portrait_of": portrait_of or person,
            "document": identity.mrz_type,
            "defect": defect,
            "condition": condition,
            "seed": seed,
            "document_number": identity.document_number,
            "issuing_state": identity.issuing_state,
            "mrz": list(page.mrz),
        }
        with self._lock:
            self._placements += 1
            info = {"placement": self._placements, **info}
            self._jpeg = jpeg
            self._document = info
        return dict(info)

    def remove(self) -> bool:
        """The glass is empty again; False when nothing lay there."""
        with self._lock:
            was = self._document is not None
            self._jpeg, self._document = self._empty, None
        return was

    def _encode(self, image: Any) -> bytes:
        import cv2

        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return bytes(buf)


class ReaderServer:
    """The HTTP side: the MJPEG stream of :class:`Glass`, and the control endpoints."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, fps: float = DEFAULT_FPS,
                 quality: int = DEFAULT_QUALITY, glass_seed: int = 0) -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.glass = Glass(GLASS_SIZE, quality, glass_seed)
        self.interval = 1.0 / fps
        self.fps = fps
        self._cond = threading.Condition()
        self._plugged = True
        self._stopping = False
        self._streams: set[socket.socket] = set()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}/stream.mjpg"

    @property
    def plugged(self) -> bool:
        with self._cond:
            return self._plugged and not self._stopping

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="reader-http",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._drop_streams()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5.0)
        self._httpd.server_close()

    def unplug(self) -> None:
        with self._cond:
            self._plugged = False
            self._cond.notify_all()
        self._drop_streams()

    def replug(self) -> None:
        with self._cond:
            self._plugged = True

    def state(self) -> dict[str, Any]:
        with self._cond:
            clients = len(self._streams)
        return {"url": self.url, "plugged": self.plugged, "fps": self.fps,
                "clients": clients, "placements": self.glass.placements,
                "document": self.glass.document}

    # ------------------------------------------------------------ for the handler

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        """Serve MJPEG to one client until it leaves, or the reader is unplugged/stopped."""
        if not self.plugged:
            handler.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "reader unplugged")
            return
        handler.send_response(HTTPStatus.OK)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        handler.send_header("Cache-Control", "no-cache, no-store")
        handler.send_header("Pragma", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        sock = handler.connection
        with self._cond:
            self._streams.add(sock)
        try:
            while self.plugged:
                jpeg = self.glass.jpeg
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n").encode("ascii")
                handler.wfile.write(head + jpeg + b"\r\n")
                handler.wfile.flush()
                with self._cond:
                    self._cond.wait_for(lambda: not self._plugged or self._stopping,
                                        timeout=self.interval)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client left, or we dropped it
        finally:
            with self._cond:
                self._streams.discard(sock)
            handler.close_connection = True

    def _drop_streams(self) -> None:
        """Cut every open stream now (a client that stopped reading would otherwise keep
        its handler stuck in a write)."""
        with self._cond:
            streams = list(self._streams)
        for sock in streams:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _make_handler(server: ReaderServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # stdout is for the URL; a per-request line on stderr is noise

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/stream.mjpg":
                server.stream(self)
            elif path == "/state":
                self._json(HTTPStatus.OK, server.state())
            elif path == "/snapshot.jpg":
                if not server.plugged:
                    self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "reader unplugged")
                    return
                jpeg = server.glass.jpeg
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(jpeg)))
                self.end_headers()
                self.wfile.write(jpeg)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {path}"})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            try:
                body = json.loads(raw.decode() or "{}")
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._json(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
                return
            if not isinstance(body, dict):
                self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
                return
            if path == "/place":
                try:
                    self._json(HTTPStatus.OK, server.glass.place(body))
                except PlaceError as exc:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            elif path == "/remove":
                self._json(HTTPStatus.OK, {"removed": server.glass.remove()})
            elif path == "/unplug":
                server.unplug()
                self._json(HTTPStatus.OK, {"plugged": False})
            elif path == "/replug":
                server.replug()
                self._json(HTTPStatus.OK, {"plugged": True})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such action {path}"})

        def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


# --- standalone ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gate sim reader`` / ``python -m sim.reader_server``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=integer(0, 65535), default=0,
                        help="port (0: any free port)")
    parser.add_argument("--fps", type=number(0, 60, above=True), default=DEFAULT_FPS,
                        help="frames a second")
    parser.add_argument("--quality", type=integer(MIN_QUALITY, 100), default=DEFAULT_QUALITY,
                        help=f"JPEG quality ({MIN_QUALITY}..100)")
    parser.add_argument("--person", default="astronaut", help="whose document (sim.people)")
    parser.add_argument("--portrait-of", default="",
                        help="whose photo is printed on it (default: the person's)")
    parser.add_argument("--document", default="TD3", choices=DOCUMENT_TYPES)
    parser.add_argument("--defect", default="", help="a bad document: bad_check, expired, "
                        "minor, unknown_state, stolen")
    parser.add_argument("--condition", default="clean",
                        help="clean, blur, rotation, perspective, jpeg, noise, light, "
                             "dpi150, smeared, covered")
    parser.add_argument("--seed", type=int, default=0, help="which page (same seed, same page)")
    parser.add_argument("--place-after", type=number(0, 3600), default=None, metavar="S",
                        help="lay the page on the glass S seconds after start")
    parser.add_argument("--hold-s", type=number(0, 3600, above=True), default=None,
                        metavar="S",
                        help="take it away S seconds after laying it")
    parser.add_argument("--every", type=number(0, 3600, above=True), default=None,
                        metavar="S",
                        help="lay it again every S seconds (taken away in between: after "
                             "--hold-s, or half the period)")


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    return {"person": args.person, "portrait_of": args.portrait_of, "document": args.document,
            "defect": args.defect, "condition": args.condition, "seed": args.seed}


def _schedule(server: ReaderServer, args: argparse.Namespace, stop: threading.Event) -> None:
    """Lay the page (and take it away) on the standalone schedule."""
    spec = _spec(args)
    if args.place_after is None and args.every is None:
        return
    hold = args.hold_s
    if args.every is not None and hold is None:
        hold = args.every / 2
    if stop.wait(max(0.0, args.place_after or 0.0)):
        return
    while True:
        laid_at = time.monotonic()
        info = server.glass.place(spec)
        print(json.dumps({"event": "placed", **info}), flush=True)
        if hold is not None:
            if stop.wait(hold):
                return
            server.glass.remove()
            print(json.dumps({"event": "removed", "placement": info["placement"]}), flush=True)
        if args.every is None:
            return
        if stop.wait(max(0.0, laid_at + args.every - time.monotonic())):
            return


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the stream URL is the first line on stdout."""
    for name in ("fps", "every", "hold_s", "place_after"):
        value = getattr(args, name)
        if value is not None and value <= 0 and name != "place_after":
            print(f"--{name.replace('_', '-')} must be > 0", file=sys.stderr)
            return 2
    try:
        check_spec(_spec(args))
    except PlaceError as exc:
        print(f"reader: {exc}", file=sys.stderr)
        return 2
    try:
        server = ReaderServer(args.host, args.port, fps=args.fps, quality=args.quality,
                              glass_seed=args.seed)
    except (OSError, ValueError) as exc:
        print(f"reader: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(server.url, flush=True)
    scheduler = threading.Thread(target=_schedule, args=(server, args, stop), daemon=True,
                                 name="reader-schedule")
    scheduler.start()
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.reader_server",
        description="Serve the simulated document camera (the reader's glass) as MJPEG.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


# --- the peer as a subprocess ---------------------------------------------------------------


class ReaderPeer(PeerProcess):
    """The simulated reader in a process of its own, for tests and the scenario runner.

    ``kill()`` is the pulled cable (the port refuses); ``start()`` after it brings the
    same reader back at the same URL. ``unplug()``/``replug()`` are the gentler fault
    (streams cut, 503). A context manager: ``stop()`` on leaving.
    """

    name = "reader"

    def __init__(self, *args: str, port: int = 0, fps: float = DEFAULT_FPS,
                 ready_timeout_s: float = 30.0) -> None:
        self.extra_args = list(args)
        self.fps = fps
        super().__init__(port=port, ready_timeout_s=ready_timeout_s)

    def command(self) -> list[str]:
        return ["-m", "sim.reader_server", "--port", str(self.port), "--fps", str(self.fps),
                *self.extra_args]

    def place(self, **spec: Any) -> dict[str, Any]:
        """Lay a page on the glass (see :data:`PLACE_KEYS`); its simulated data back."""
        return self.call("POST", "/place", spec)

    def remove(self) -> bool:
        return bool(self.call("POST", "/remove").get("removed"))

    def unplug(self) -> None:
        self.call("POST", "/unplug")

    def replug(self) -> None:
        self.call("POST", "/replug")

    def state(self) -> dict[str, Any]:
        return self.call("GET", "/state")


__all__ = ["GLASS_SIZE", "PLACE_KEYS", "Glass", "PlaceError", "ReaderPeer", "ReaderServer",
           "add_arguments", "check_spec", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
