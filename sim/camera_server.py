"""The simulated lane camera as a real peer: MJPEG over HTTP from its own process.

The lane opens it exactly as it opens an IP camera (``http://127.0.0.1:PORT/stream.mjpg``,
through OpenCV and FFmpeg), so the camera driver, its watchdog and its health are
exercised on the product path, and a camera fault is a fault *of the peer*: a scene whose
camera dies stops sending frames while the connection stays open (a hung camera), and
``POST /unplug`` drops every stream and refuses new ones (a pulled cable) until
``POST /replug``. Killing the process is a camera that lost power.

Endpoints (all on 127.0.0.1):

* ``GET /stream.mjpg`` — ``multipart/x-mixed-replace`` JPEG frames at ``--fps``;
* ``POST /scene`` ``{"scene": "approach", "person": "astronaut", "seed": 0,
  "others": ["t1-e"]}`` — what the camera sees from now on (the scene clock restarts);
  ``others`` replaces, in order, the people the scene puts behind the traveller;
* ``GET /state`` — scene, person, clients, frames rendered and served;
* ``POST /unplug``, ``POST /replug``.

Scene time is wall time × ``--speed``. Each frame is rendered and encoded once per tick,
whatever the number of clients, and not at all while nobody watches. The first stdout
line is the stream URL (a test or ``gate sim`` reads it); SIGINT/SIGTERM end it with 0.

:class:`CameraPeer` starts this as a subprocess and drives it over HTTP.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2

from sim.camera import SCENES, render
from sim.cliargs import integer, number
from sim.peerproc import PeerProcess
from sim.people import people, person

BOUNDARY = "frame"
STREAM_PATH = "/stream.mjpg"


class SceneError(ValueError):
    """A scene request names an unknown scene or person."""


class CameraFeed:
    """The camera itself: the scene on its clock, rendered once per tick for all clients.

    Streams wait on :meth:`wait_frame`; a dead scene simply produces no new frame, so
    every open stream hangs, as a real camera's would.
    """

    def __init__(self, fps: float = 15.0, speed: float = 1.0, quality: int = 90,
                 scene: str = "no_face", person_id: str = "astronaut", seed: int = 0) -> None:
        if fps <= 0 or speed <= 0:
            raise ValueError("fps and speed must be > 0")
        self.fps = fps
        self.speed = speed
        self.quality = quality
        self._cond = threading.Condition()
        self._jpeg = b""
        self._seq = 0
        self._epoch = 0  # bumped by unplug: streams of an older epoch close
        self.unplugged = False
        self.clients = 0
        self.frames_rendered = 0
        self.frames_served = 0
        self._stop = threading.Event()
        self._scene_name = ""
        self._person = person(person_id)
        self._others: tuple[str, ...] | None = None
        self._seed = 0
        self._started = time.monotonic()
        self._index = 0
        self._alive = True
        self.show(scene, person_id, seed)
        self._thread = threading.Thread(target=self._run, name="sim-camera-feed", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def show(self, scene: str, person_id: str = "astronaut", seed: int = 0,
             others: Sequence[str] | None = None) -> dict[str, Any]:
        if scene not in SCENES:
            raise SceneError(f"unknown scene {scene!r}; known: {', '.join(sorted(SCENES))}")
        known = {p.person_id for p in people()}
        for pid in [person_id, *(others or ())]:
            if pid not in known:
                raise SceneError(f"unknown person {pid!r}; known: {', '.join(sorted(known))}")
        with self._cond:
            self._scene_name = scene
            self._person = person(person_id)
            self._others = tuple(others) if others is not None else None
            self._seed = int(seed)
            self._started = time.monotonic()
            self._index = 0
            self._alive = True
        return self.state()

    def unplug(self) -> dict[str, Any]:
        with self._cond:
            self.unplugged = True
            self._epoch += 1
            self._cond.notify_all()
        return self.state()

    def replug(self) -> dict[str, Any]:
        with self._cond:
            self.unplugged = False
        return self.state()

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {
                "scene": self._scene_name, "person": self._person.person_id,
                "seed": self._seed, "others": list(self._others or ()),
                "scene_time_s": round((time.monotonic() - self._started) * self.speed, 3),
                "alive": self._alive, "unplugged": self.unplugged, "clients": self.clients,
                "frames_rendered": self.frames_rendered, "frames_served": self.frames_served,
                "fps": self.fps, "speed": self.speed,
            }

    # ------------------------------------------------------------------ streams

    def attach(self) -> tuple[int, int] | None:
        """A new stream: (epoch, the frame to start after), or None while unplugged.

        A stream starts with the *next* frame: a camera that has died must not hand a
        reconnecting client the last frame it made before it died.
        """
        with self._cond:
            if self.unplugged:
                return None
            self.clients += 1
            self._cond.notify_all()
            return self._epoch, self._seq

    def detach(self) -> None:
        with self._cond:
            self.clients -= 1

    def wait_frame(self, after: int, epoch: int, timeout: float = 0.5
                   ) -> tuple[int, bytes | None, bool]:
        """(seq, jpeg or None, still connected): the next frame after ``after``."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._epoch != epoch
                                or self._stop.is_set(), timeout=timeout)
            connected = self._epoch == epoch and not self._stop.is_set()
            if connected and self._seq > after:
                return self._seq, self._jpeg, True
            return after, None, connected

    def served(self) -> None:
        with self._cond:
            self.frames_served += 1

    # ------------------------------------------------------------------ the tick

    def _run(self) -> None:
        interval = 1.0 / self.fps
        due = time.monotonic()
        while not self._stop.is_set():
            due += interval
            self._tick()
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:  # rendering is slower than fps: deliver what we can, do not catch up
                due = time.monotonic()

    def _tick(self) -> None:
        with self._cond:
            if not self.clients:
                return
            t = (time.monotonic() - self._started) * self.speed
            scene = SCENES[self._scene_name]
            main_person, others, seed = self._person, self._others, self._seed
            self._index += 1
            index = self._index
        main, behind, alive = scene(t)
        if not alive:
            with self._cond:
                self._alive = False
            return
        drawn = [(person(others[i] if others is not None and i < len(others) else pid), view)
                 for i, (pid, view) in enumerate(behind)]
        frame = render((main_person, main) if main is not None else None, drawn,
                       seed=seed * 100_003 + index)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        with self._cond:
            self._jpeg = buf.tobytes()
            self._seq += 1
            self.frames_rendered += 1
            self._alive = True
            self._cond.notify_all()


def _handler(feed: CameraFeed) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the stream ends when the connection does

        def log_message(self, format: str, *args: Any) -> None:
            return  # stdout is the URL line; stderr stays quiet

        def _json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/state":
                self._json(200, feed.state())
            elif path == STREAM_PATH:
                self._stream()
            else:
                self._json(404, {"error": f"no such path {path}"})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                if path == "/scene":
                    others = body.get("others")
                    if others is not None and not (isinstance(others, list) and all(
                            isinstance(o, str) for o in others)):
                        raise ValueError("others must be a list of person ids")
                    self._json(200, feed.show(str(body.get("scene", "approach")),
                                              str(body.get("person", "astronaut")),
                                              int(body.get("seed", 0)), others))
                elif path == "/unplug":
                    self._json(200, feed.unplug())
                elif path == "/replug":
                    self._json(200, feed.replug())
                else:
                    self._json(404, {"error": f"no such path {path}"})
            except (ValueError, TypeError) as exc:
                self._json(400, {"error": str(exc)})

        def _stream(self) -> None:
            attached = feed.attach()
            if attached is None:  # the cable is out: nothing answers for the camera
                self._json(503, {"error": "camera unplugged"})
                return
            epoch, seq = attached
            try:
                self.send_response(200)
                self.send_header("Content-Type",
                                 f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                while True:
                    seq, jpeg, connected = feed.wait_frame(seq, epoch)
                    if not connected:
                        break
                    if jpeg is None:
                        continue  # a hung camera: the connection stays, nothing comes
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                    self.wfile.flush()
                    feed.served()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the client went away
            finally:
                feed.detach()
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


class CameraServer:
    """The HTTP server around a :class:`CameraFeed` (in this process)."""

    def __init__(self, feed: CameraFeed, port: int = 0, host: str = "127.0.0.1") -> None:
        self.feed = feed
        self.httpd = ThreadingHTTPServer((host, port), _handler(feed))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        name="sim-camera-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{STREAM_PATH}"

    def start(self) -> None:
        self.feed.start()
        self._thread.start()

    def stop(self) -> None:
        self.feed.stop()  # streams see the stop and end
        self.httpd.shutdown()
        self.httpd.server_close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=integer(0, 65535), default=0,
                        help="TCP port (0: any free one)")
    parser.add_argument("--fps", type=number(0, 120, above=True), default=15.0,
                        help="frames per second (15)")
    parser.add_argument("--speed", type=number(0, 100, above=True), default=1.0,
                        help="scene time runs this much faster than wall time (1)")
    parser.add_argument("--quality", type=integer(1, 100), default=90,
                        help="JPEG quality (90)")
    parser.add_argument("--scene", default="no_face", choices=sorted(SCENES),
                        help="what the camera shows at start (no_face: an empty lane)")
    parser.add_argument("--person", default="astronaut", help="the traveller (sim.people id)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the first stdout line is the stream URL."""
    # Load every photo now: a first load costs ~1.5 s (the package lookup), which would
    # freeze the live stream the moment a new traveller is shown.
    loaded = [someone.photo.shape for someone in people()]
    del loaded
    try:
        feed = CameraFeed(fps=args.fps, speed=args.speed, quality=args.quality,
                          scene=args.scene, person_id=args.person, seed=args.seed)
        server = CameraServer(feed, port=args.port)
    except (ValueError, KeyError, OSError) as exc:
        print(f"sim camera: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(server.url, flush=True)
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps({"frames_rendered": feed.frames_rendered,
                      "frames_served": feed.frames_served}), flush=True)
    return 0


# --------------------------------------------------------------- the peer, from outside


class CameraPeer(PeerProcess):
    """``python -m sim.camera_server`` as a subprocess, driven over its HTTP control.

    ``kill()`` is a camera that lost power; ``restart()`` brings it back on the same port,
    so a lane camera pointed at the old URL can find it again on its own.
    """

    name = "sim camera"
    stop_timeout_s = 10.0

    def __init__(self, scene: str = "no_face", person_id: str = "astronaut", seed: int = 0,
                 *, speed: float = 1.0, fps: float = 15.0, port: int = 0, quality: int = 90,
                 ready_timeout_s: float = 30.0) -> None:
        self.scene, self.person_id, self.seed = scene, person_id, seed
        self.speed, self.fps, self.quality = speed, fps, quality
        super().__init__(port=port, ready_timeout_s=ready_timeout_s)

    def command(self) -> list[str]:
        return ["-m", "sim.camera_server", "--port", str(self.port),
                "--fps", str(self.fps), "--speed", str(self.speed),
                "--quality", str(self.quality), "--scene", self.scene,
                "--person", self.person_id, "--seed", str(self.seed)]

    def show(self, scene: str, person: str = "astronaut", seed: int = 0,
             others: Sequence[str] | None = None) -> dict[str, Any]:
        """What the camera sees from now on; the scene's clock starts now."""
        body: dict[str, Any] = {"scene": scene, "person": person, "seed": seed}
        if others is not None:
            body["others"] = list(others)
        self.scene, self.person_id, self.seed = scene, person, seed  # kept over a restart
        return self.call("POST", "/scene", body, timeout_s=10)

    def state(self) -> dict[str, Any]:
        return self.call("GET", "/state", timeout_s=10)

    def unplug(self) -> dict[str, Any]:
        return self.call("POST", "/unplug", {}, timeout_s=10)

    def replug(self) -> dict[str, Any]:
        return self.call("POST", "/replug", {}, timeout_s=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.camera_server",
        description="Serve the simulated lane camera as MJPEG over HTTP on 127.0.0.1.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
