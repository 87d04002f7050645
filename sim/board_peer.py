"""The simulated barrier board as a peer: a ``SimBoard`` in a process of its own.

Why a process: a board is a device of its own, with its own clock. In the lane's process
the simulator's serving thread would share the GIL with the lane's stages, and a long C
call there would delay the *board's* replies and watchdog too, hiding exactly the
starvation the lane must survive (or inventing some). Here the board keeps time as
hardware does, whatever the host does.

``start_board_peer(**simboard_kwargs)`` starts ``python -m sim.board_peer`` (a fresh
interpreter: no fork of a process full of threads and models, and no re-import of the
caller's ``__main__`` as multiprocessing's spawn would do), which serves the board on its
pty and a ``multiprocessing.managers`` server on a private Unix socket. The returned
:class:`BoardPeer` has

- ``port``: the pty path the driver opens, as for any board;
- ``board``: a :class:`BoardProxy`, the scenario runner's hands on the simulated world
  (``add_traveller``, ``set_emergency``, ``jam``, ``reboot``, ``unplug``, ``run_plan``,
  ``snapshot``...), safe from any thread; ``safety_violations`` and ``internal_errors``
  read as lists, like the attributes of an in-process ``SimBoard``;
- ``stop()``: ends the board process (it also ends by itself when its parent dies: its
  stdin, a pipe from the parent, reads EOF).

Arguments and results cross the process boundary pickled: ``TravellerBehaviour``,
``FaultPlan``, ``BoardFaults``, ``Door`` and ``BoardSnapshot`` are plain data.

``open_board(address=..., **options)`` is the ``egate.boards`` entry point behind the
lane's ``barrier = "sim?speed=10&seed=3"``: the URL's options arrive as strings.

This module imports nothing of ``gate`` (``sim`` never does).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager, BaseProxy
from typing import Any

import sim
from hardware.barrier.protocol import BoardStatus, Door
from sim.board import BoardSnapshot, SimBoard
from sim.faults import BoardFaults, FaultPlan
from sim.traveller import TravellerBehaviour

#: How long ``start_board_peer`` waits for the board process to serve.
START_TIMEOUT_S = 20.0
#: How long ``stop()`` lets the board process end by itself before ending it.
STOP_GRACE_S = 3.0


class BoardProxy(BaseProxy):
    """The control side of a ``SimBoard`` served by a board peer (see the module doc)."""

    _exposed_ = (
        "add_traveller", "send_queue_away", "set_emergency", "set_mains", "set_tamper",
        "set_maintenance_key", "jam", "clear_jam", "reboot", "unplug", "replug",
        "set_faults", "run_plan", "snapshot", "status", "safety_violations_list",
        "internal_errors_list", "executed_list", "port",
    )

    def _ask(self, method: str, *args: Any) -> Any:
        """One call on the served board (typeshed says ``_callmethod`` returns None)."""
        call: Callable[..., Any] = self._callmethod
        return call(method, args)

    def add_traveller(self, behaviour: TravellerBehaviour) -> None:
        self._ask("add_traveller", behaviour)

    def send_queue_away(self) -> int:
        return int(self._ask("send_queue_away"))

    def set_emergency(self, active: bool) -> None:
        self._ask("set_emergency", active)

    def set_mains(self, present: bool) -> None:
        self._ask("set_mains", present)

    def set_tamper(self, open_: bool) -> None:
        self._ask("set_tamper", open_)

    def set_maintenance_key(self, on: bool) -> None:
        self._ask("set_maintenance_key", on)

    def jam(self, door: Door) -> None:
        self._ask("jam", Door(door))

    def clear_jam(self, door: Door) -> None:
        self._ask("clear_jam", Door(door))

    def reboot(self) -> None:
        self._ask("reboot")

    def unplug(self) -> None:
        self._ask("unplug")

    def replug(self) -> None:
        self._ask("replug")

    def set_faults(self, faults: BoardFaults) -> None:
        self._ask("set_faults", faults)

    def run_plan(self, plan: FaultPlan) -> None:
        self._ask("run_plan", plan)

    def snapshot(self) -> BoardSnapshot:
        snap = self._ask("snapshot")
        assert isinstance(snap, BoardSnapshot)
        return snap

    def status(self) -> BoardStatus:
        status = self._ask("status")
        assert isinstance(status, BoardStatus)
        return status

    def safety_violations_list(self) -> list[str]:
        return list(self._ask("safety_violations_list"))

    def internal_errors_list(self) -> list[str]:
        return list(self._ask("internal_errors_list"))

    def executed_list(self) -> list[tuple[int, int, bytes]]:
        return list(self._ask("executed_list"))

    @property
    def safety_violations(self) -> list[str]:
        """A copy, fetched now (an in-process board's attribute, read across processes)."""
        return self.safety_violations_list()

    @property
    def internal_errors(self) -> list[str]:
        return self.internal_errors_list()

    @property
    def executed(self) -> list[tuple[int, int, bytes]]:
        return self.executed_list()

    @property
    def path(self) -> str:
        """The pty path the board serves on (``SimBoard.path``)."""
        return str(self._ask("port"))


class _ServedBoard(SimBoard):
    """The board as served: ``port()`` reads ``path``, which a proxy cannot."""

    def port(self) -> str:
        return self.path


class _ClientManager(BaseManager):
    pass


_ClientManager.register("board", proxytype=BoardProxy, create_method=True)
_ClientManager.register("stop_peer")


class BoardPeer:
    """A ``SimBoard`` running in its own process; see :func:`start_board_peer`."""

    def __init__(self, proc: subprocess.Popen[bytes], port: str, address: str,
                 authkey: bytes, tmpdir: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self._tmpdir = tmpdir
        self._manager = _ClientManager(address=address, authkey=authkey)
        self._manager.connect()
        self.board: BoardProxy = self._manager.board()  # type: ignore[attr-defined]
        self._stopped = False
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """End the board (its pty disappears) and its process; bounded, idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self._manager.stop_peer()  # type: ignore[attr-defined]
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()  # EOF: the peer's other way to learn it must go
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=2.0)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> BoardPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_board_peer(*, python: str | None = None, start_timeout_s: float = START_TIMEOUT_S,
                     **simboard_kwargs: Any) -> BoardPeer:
    """Start a ``SimBoard(**simboard_kwargs)`` in a process of its own, serving on its pty.

    Raises ``ValueError`` for arguments the board refuses (as ``SimBoard`` would) and
    ``RuntimeError`` when the process does not come up.
    """
    tmpdir = tempfile.mkdtemp(prefix="egate-board-peer-")
    address = os.path.join(tmpdir, "control.sock")
    authkey = secrets.token_bytes(32)
    root = os.path.dirname(os.path.dirname(os.path.abspath(sim.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen([python or sys.executable, "-m", "sim.board_peer"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            close_fds=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        orders = {"address": address, "authkey": authkey, "kwargs": simboard_kwargs,
                  "parent_pid": os.getpid()}
        proc.stdin.write(pickle.dumps(orders))
        proc.stdin.flush()
        line = _read_line(proc, start_timeout_s)
        answer = json.loads(line)
        if "error" in answer:
            kind = ValueError if answer.get("kind") == "ValueError" else RuntimeError
            raise kind(f"simulated board: {answer['error']}")
        return BoardPeer(proc, answer["port"], address, authkey, tmpdir)
    except BaseException:
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(timeout=2.0)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"simulated board process did not start in {timeout_s:g} s")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"simulated board process exited ({proc.wait()})")
        data += chunk
    return data.split(b"\n", 1)[0].decode()


#: URL option → how to read it (``sim?speed=10&seed=3&drop_reply=0.1``).
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "speed": float, "seed": int, "watchdog_ms": int, "address": int, "stale_ack": str,
    "firmware": str, "serial": str, "link_dir": str, "link_path": str,
}
_FAULT_RATES = ("drop_reply", "drop_request", "corrupt_reply", "noise")


def board_options(options: dict[str, str]) -> dict[str, Any]:
    """``SimBoard`` keyword arguments from a URL's string options (ValueError if unknown)."""
    out: dict[str, Any] = {}
    rates: dict[str, float] = {}
    for key, value in options.items():
        if key in _URL_OPTIONS:
            out[key] = _URL_OPTIONS[key](value)
        elif key in _FAULT_RATES:
            rates[key] = float(value)
        elif key == "faults":
            out["plan"] = FaultPlan.load(value)
        else:
            known = sorted([*_URL_OPTIONS, *_FAULT_RATES, "faults"])
            raise ValueError(f"unknown sim option {key!r}; known: {', '.join(known)}")
    if rates:
        out["faults"] = BoardFaults(**rates)
    return out


def open_board(address: int = 1, **options: str) -> BoardPeer:
    """The ``egate.boards`` backend ``sim``: a board peer from a URL's options."""
    kwargs = {"address": address, **board_options(dict(options))}
    return start_board_peer(**kwargs)


# ------------------------------------------------------------------ the board process


def _serve() -> int:
    """``python -m sim.board_peer``: orders on stdin, the port (or an error) on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends us, in order
    orders = pickle.load(sys.stdin.buffer)
    out = sys.stdout
    try:
        board = _ServedBoard(**orders["kwargs"])
        port = board.start()
    except (ValueError, TypeError, OSError) as exc:
        kind = "ValueError" if isinstance(exc, ValueError | TypeError) else type(exc).__name__
        out.write(json.dumps({"error": str(exc), "kind": kind}) + "\n")
        out.flush()
        return 2
    stop = threading.Event()

    class _ServerManager(BaseManager):
        pass

    _ServerManager.register("board", callable=lambda: board, proxytype=BoardProxy)
    _ServerManager.register("stop_peer", callable=lambda: stop.set())
    server = _ServerManager(address=orders["address"], authkey=orders["authkey"]).get_server()
    # serve_forever ends with sys.exit(): on a daemon thread that only ends the thread, and
    # the process goes when the board is stopped below.
    threading.Thread(target=server.serve_forever, name="board-peer-serve", daemon=True).start()

    def watch_stdin() -> None:
        # The raw descriptor, not sys.stdin: a buffered reader blocked in a daemon thread
        # makes the interpreter's shutdown abort.
        with contextlib.suppress(OSError):
            while os.read(stdin_fd, 4096):
                pass
        stop.set()  # EOF: the parent closed the pipe or died

    stdin_fd = sys.stdin.fileno()

    threading.Thread(target=watch_stdin, name="board-peer-stdin", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    out.write(json.dumps({"port": port, "pid": os.getpid()}) + "\n")
    out.flush()
    parent = orders["parent_pid"]
    try:
        while not stop.wait(0.5):
            if os.getppid() != parent:
                break
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    # Serve the copy imported under its own name: what the proxies pickle names
    # ``sim.board_peer``, not ``__main__``.
    from sim import board_peer

    raise SystemExit(board_peer._serve())
