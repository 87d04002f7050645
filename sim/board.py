"""A simulated lane barrier board that serves protocol v1 on a real pseudo-terminal.

The host driver opens ``SimBoard.path`` like any serial device and cannot tell it from a
board in a cabinet: bytes go through the kernel's pty, the board applies the same frame
rules (CRC, resync, 20 ms gap, address) and answers within 20 ms from its own thread.

One thread owns everything: it waits on the pty master with ``select`` (5 ms tick), steps
the physical world (doors, beams, zone, travellers) in simulated time, runs the watchdog
and the fault plan in real time, and answers requests. Methods called from other threads
(``set_emergency``, ``jam``, ``unplug``...) take the same lock.

Choices where docs/barrier-protocol.md leaves room (the host must not depend on them):

- The watchdog arms at the first valid request after power-on or reboot: a board nobody
  has talked to yet keeps its doors closed anyway, and a host that connects late does not
  find WATCHDOG latched. While WATCHDOG is latched the board keeps closing any open door
  whose doorway is clear (closing stays obstruction-safe).
- Latched flags: WATCHDOG, EVENT_OVERFLOW, DOOR_FAULT and TAMPER (a cabinet opened once
  stays reported until RESET_FAULTS with the cover shut). EMERGENCY, ON_UPS and
  MAINTENANCE_KEY mirror their inputs and RESET_FAULTS does not touch them.
- RESET_FAULTS answers NAK FAULT_ACTIVE while a jammed doorway is still obstructed or the
  cabinet is still open; everything else is cleared regardless. A JAMMED door whose fault
  is cleared is reported OPEN (it stopped open-ish; the host closes it next).
- The third blocked close in a row goes straight from CLOSING to JAMMED (no BLOCKED first).
  A completed close resets the count.
- DOOR for a JAMMED door, like every DOOR during EMERGENCY or WATCHDOG: NAK FAULT_ACTIVE.
  Opening the other door is refused by the interlock (a JAMMED door is not CLOSED).
- After EMERGENCY_OFF the doors stay open until the host closes them; that state is not a
  safety violation, a door starting to open while the other is not CLOSED is.
- Power-on queues no event (STATUS shows last event 0); ``reboot()`` queues RESTARTED as
  id 1 (and EMERGENCY_ON right after it if the fire input is still open).
- POLL drops every queued event whose id is not newer than ``ack_event_id`` (newer in the
  wrapping sense of ``protocol.event_id_newer``), to the letter of the contract. So a host
  that still acknowledges an id from before a reboot (say 14) also acknowledges the new
  RESTARTED (id 1) unseen, and must notice the restart from STATUS ``last_event_id`` going
  backwards. ``SimBoard(stale_ack="keep")`` models the other reading a real board may
  take: an ack only counts when its id is in the queue, so RESTARTED is delivered even to a
  stale ack, and the host sees event id 1 again.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import struct
import sys
import tempfile
import termios
import threading
import time
import traceback
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hardware.barrier.protocol import (
    EVENT_QUEUE_LEN,
    PROTOCOL_VERSION,
    WATCHDOG_MS_DEFAULT,
    WATCHDOG_MS_MAX,
    WATCHDOG_MS_MIN,
    Beam,
    BoardEvent,
    BoardInfo,
    BoardStatus,
    Door,
    DoorState,
    EventCode,
    Flag,
    Frame,
    FrameDecoder,
    MsgType,
    NakReason,
    Side,
    Signal,
    event_id_newer,
)
from sim.faults import BoardFaults, FaultPlan, FaultStep
from sim.traveller import Crowd, TravellerBehaviour

__all__ = [
    "BoardFaults",
    "BoardSnapshot",
    "FaultPlan",
    "FaultStep",
    "SimBoard",
    "TravellerBehaviour",
]

OPEN_TRAVEL_S = 0.8
CLOSE_TRAVEL_S = 1.0
BLOCKED_CLOSES_TO_JAM = 3
TICK_S = 0.005
LATCHED = Flag.WATCHDOG | Flag.EVENT_OVERFLOW | Flag.DOOR_FAULT | Flag.TAMPER
EXECUTED_KEEP = 100_000
SIGNAL_VALUES = frozenset(int(s) for s in Signal)


@dataclass(frozen=True)
class BoardSnapshot:
    entry: DoorState
    exit: DoorState
    zone_count: int
    beams: Beam
    flags: Flag
    lamps: dict[Side, Signal]
    watchdog_trips: int
    requests_seen: int
    requests_executed: int
    last_event_id: int = 0
    queued_events: int = 0
    watchdog_ms: int = WATCHDOG_MS_DEFAULT
    travellers_waiting: int = 0
    travellers_inside: int = 0
    travellers_passed: int = 0
    travellers_turned_back: int = 0
    plugged: bool = True
    max_request_gap_s: float = 0.0  # longest silence between valid requests while plugged
    faults_injected: dict[str, int] = field(default_factory=dict)

    def door(self, door: Door) -> DoorState:
        return self.entry if door is Door.ENTRY else self.exit


@dataclass
class DoorLeaf:
    """One door: its reported state and where the leaf physically is (0 shut, 1 open)."""

    state: DoorState = DoorState.CLOSED
    position: float = 0.0
    blocked_in_a_row: int = 0


class SimBoard:
    """The device side of protocol v1 on a pty, with a small physical lane behind it.

    Tests and scenarios act on the world through the public methods (travellers, fire
    input, tamper, mains, jams, reboot, cable) and read it back with ``snapshot()``; the
    host only ever sees bytes on ``path``.
    """

    def __init__(self, *, address: int = 1, speed: float = 1.0,
                 faults: BoardFaults | None = None, seed: int | None = None,
                 watchdog_ms: int = WATCHDOG_MS_DEFAULT, firmware: str = "egate-sim 1.0",
                 serial: str = "SIM0001", link_dir: str | None = None,
                 link_path: str | None = None, plan: FaultPlan | None = None,
                 stale_ack: str = "drop") -> None:
        if not 0 <= address <= 0xFF:
            raise ValueError("address must be 0..255")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if not WATCHDOG_MS_MIN <= watchdog_ms <= WATCHDOG_MS_MAX:
            raise ValueError(f"watchdog_ms must be {WATCHDOG_MS_MIN}..{WATCHDOG_MS_MAX}")
        if stale_ack not in ("drop", "keep"):
            raise ValueError("stale_ack must be 'drop' or 'keep'")
        self.stale_ack = stale_ack
        self.address = address
        self.speed = speed
        self.faults = faults or BoardFaults()
        self.firmware = firmware
        self.serial = serial
        self._default_watchdog_ms = watchdog_ms
        self._link_dir = link_dir
        self._link_path = link_path
        self._own_dir: str | None = None
        self._plan = list(plan.steps) if plan else []
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r, self._wake_w = -1, -1
        self.path = ""
        self._start_t: float | None = None

        #: called (on the serving thread, under the board lock: be quick) with each event
        #: as it is queued; for logs and demos, not for the protocol
        self.on_event: Callable[[BoardEvent], None] | None = None
        self.executed: list[tuple[int, int, bytes]] = []
        self.safety_violations: list[str] = []
        #: exceptions the serving thread survived (a simulator bug); tests assert it is empty
        self.internal_errors: list[str] = []
        self.faults_injected: dict[str, int] = {
            "dropped_requests": 0, "dropped_replies": 0, "corrupted_replies": 0,
            "noise_bursts": 0, "duplicates": 0, "other_address": 0, "bad_frames": 0,
        }
        self.crowd = Crowd()
        self._emergency = False
        self._tamper_open = False
        self._mains = True
        self._maintenance_key = False
        self._jammed_doorways: set[Door] = set()
        self._watchdog_trips = 0
        self._requests_seen = 0
        self._prev_request_t: float | None = None
        self._max_request_gap_s = 0.0
        self._power_on(announce=False)

    # ------------------------------------------------------------ lifecycle

    def _power_on(self, *, announce: bool) -> None:
        """Volatile state of the board's firmware, as after power-up."""
        now = time.monotonic()
        self._boot_t = now
        self._last_step_t = now
        self._doors = {Door.ENTRY: DoorLeaf(), Door.EXIT: DoorLeaf()}
        self._lamps = {Side.ENTRY: Signal.OFF, Side.EXIT: Signal.OFF}
        self._flags = Flag.NONE
        if self._emergency:
            self._flags |= Flag.EMERGENCY
        if not self._mains:
            self._flags |= Flag.ON_UPS
        if self._maintenance_key:
            self._flags |= Flag.MAINTENANCE_KEY
        if self._tamper_open:
            self._flags |= Flag.TAMPER
        self._events: deque[BoardEvent] = deque()
        self._next_event_id = 1
        self._last_event_id = 0
        self._watchdog_ms = self._default_watchdog_ms
        self._watchdog_armed = False
        self._last_valid_rx = now
        self._decoder = FrameDecoder()
        self._last_request: bytes | None = None
        self._last_reply: bytes | None = None
        self._beams = self._sense_beams()
        self._zone = self.crowd.zone_count()
        self._after_emergency = self._emergency
        self._violating = False
        if announce:
            self._emit(EventCode.RESTARTED, 0)
        if self._emergency:
            if announce:
                self._emit(EventCode.EMERGENCY_ON, 0)
            self._emergency_open()

    def start(self) -> str:
        """Open the pty and serve on a thread; returns the stable device path."""
        with self._lock:
            if self._thread is not None:
                return self.path
            if self._link_path is not None:
                self.path = os.path.abspath(self._link_path)
            else:
                base = self._link_dir
                if base is None:
                    base = self._own_dir = tempfile.mkdtemp(prefix="egate-sim-")
                self.path = os.path.join(base, f"barrier{self.address}")
            if os.path.lexists(self.path) and not os.path.islink(self.path):
                raise FileExistsError(f"{self.path} exists and is not a symlink")
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._open_pty()
            self._start_t = time.monotonic()
            self._stop.clear()
            self._thread = threading.Thread(target=self._serve, name="sim-board", daemon=True)
            self._thread.start()
            return self.path

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake()
        thread.join(timeout=2.0)
        with self._lock:
            self._thread = None
            self._close_pty()
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)
                self._own_dir = None

    def __enter__(self) -> SimBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw on the slave so that no byte is translated, echoed or eaten by line
        # discipline; the board itself holds the slave open so the master never sees
        # EIO while no host is connected.
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)

    def _close_pty(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(self.path):
                os.unlink(self.path)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    # ------------------------------------------------------------ the physical world

    def add_traveller(self, behaviour: TravellerBehaviour) -> None:
        with self._lock:
            self.crowd.add(behaviour)

    def send_queue_away(self) -> int:
        """Travellers still waiting outside ENTRY walk away (nobody inside is touched)."""
        with self._lock:
            return self.crowd.send_waiting_away()

    def set_emergency(self, active: bool) -> None:
        with self._lock:
            if active == self._emergency:
                return
            self._emergency = active
            if active:
                self._flags |= Flag.EMERGENCY
                self._after_emergency = True
                self._emit(EventCode.EMERGENCY_ON, 0)
                self._emergency_open()
            else:
                self._flags &= ~Flag.EMERGENCY
                self._emit(EventCode.EMERGENCY_OFF, 0)

    def set_tamper(self, open_: bool) -> None:
        with self._lock:
            if open_ == self._tamper_open:
                return
            self._tamper_open = open_
            if open_:
                self._flags |= Flag.TAMPER
            self._emit(EventCode.TAMPER, int(open_))

    def set_mains(self, present: bool) -> None:
        with self._lock:
            if present == self._mains:
                return
            self._mains = present
            if present:
                self._flags &= ~Flag.ON_UPS
            else:
                self._flags |= Flag.ON_UPS
            self._emit(EventCode.POWER, int(not present))

    def set_maintenance_key(self, on: bool) -> None:
        with self._lock:
            if on == self._maintenance_key:
                return
            self._maintenance_key = on
            if on:
                self._flags |= Flag.MAINTENANCE_KEY
            else:
                self._flags &= ~Flag.MAINTENANCE_KEY
            self._emit(EventCode.MAINTENANCE_KEY, int(on))

    def jam(self, door: Door) -> None:
        with self._lock:
            self._jammed_doorways.add(Door(door))
            self._sense()

    def clear_jam(self, door: Door) -> None:
        with self._lock:
            self._jammed_doorways.discard(Door(door))
            self._sense()

    def reboot(self) -> None:
        with self._lock:
            self._power_on(announce=True)

    def unplug(self) -> None:
        with self._lock:
            if self._master is None:
                return
            self._close_pty()
            self._wake()

    def replug(self) -> None:
        with self._lock:
            if self._master is not None or self._thread is None:
                return
            self._open_pty()
            self._decoder.reset()
            self._prev_request_t = None  # the cable was out: that silence is not the host's
            self._wake()

    def set_faults(self, faults: BoardFaults) -> None:
        with self._lock:
            self.faults = faults

    def run_plan(self, plan: FaultPlan) -> None:
        """Add steps to the timetable; their ``at_s`` counts from now."""
        with self._lock:
            offset = 0.0 if self._start_t is None else time.monotonic() - self._start_t
            for step in plan.steps:
                self._plan.append(FaultStep(step.at_s + offset, step.action, step.args))
            self._plan.sort(key=lambda s: s.at_s)

    # ------------------------------------------------------------ observation

    def snapshot(self) -> BoardSnapshot:
        with self._lock:
            return BoardSnapshot(
                entry=self._doors[Door.ENTRY].state,
                exit=self._doors[Door.EXIT].state,
                zone_count=self._zone,
                beams=self._beams,
                flags=self._flags,
                lamps=dict(self._lamps),
                watchdog_trips=self._watchdog_trips,
                requests_seen=self._requests_seen,
                requests_executed=len(self.executed),
                last_event_id=self._last_event_id,
                queued_events=len(self._events),
                watchdog_ms=self._watchdog_ms,
                travellers_waiting=self.crowd.waiting,
                travellers_inside=self.crowd.inside,
                travellers_passed=self.crowd.passed,
                travellers_turned_back=self.crowd.turned_back,
                plugged=self._master is not None,
                max_request_gap_s=self._max_request_gap_s,
                faults_injected=dict(self.faults_injected),
            )

    def safety_violations_list(self) -> list[str]:
        """A copy of ``safety_violations``: what a control proxy in another process
        (``sim.board_peer``) can fetch, where it cannot read an attribute."""
        with self._lock:
            return list(self.safety_violations)

    def internal_errors_list(self) -> list[str]:
        """A copy of ``internal_errors`` (see ``safety_violations_list``)."""
        with self._lock:
            return list(self.internal_errors)

    def executed_list(self) -> list[tuple[int, int, bytes]]:
        """A copy of ``executed``: (seq, type, payload) of every request carried out."""
        with self._lock:
            return list(self.executed)

    def status(self) -> BoardStatus:
        with self._lock:
            return BoardStatus(self._doors[Door.ENTRY].state, self._doors[Door.EXIT].state,
                               self._zone, self._beams, self._flags, self._last_event_id)

    # ------------------------------------------------------------ serving thread

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve_once()
            except Exception as exc:  # a simulator bug must show, not look like a dead link
                self.internal_errors.append(f"{type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
                time.sleep(TICK_S)

    def _serve_once(self) -> None:
        with self._lock:
            master = self._master
        fds = [self._wake_r] if master is None else [self._wake_r, master]
        try:
            readable, _, _ = select.select(fds, [], [], TICK_S)
        except (OSError, ValueError):
            readable = []  # the master was closed under us by unplug()
        with self._lock:
            now = time.monotonic()
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
            self._step(now)
            if master is None or master not in readable or master != self._master:
                return
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            bad_before = self._decoder.bad_crc
            for frame in self._decoder.feed(data, now):
                self._on_frame(frame, now)
            self.faults_injected["bad_frames"] += self._decoder.bad_crc - bad_before

    def _step(self, now: float) -> None:
        dt_sim = max(0.0, now - self._last_step_t) * self.speed
        self._last_step_t = now
        self.crowd.step(dt_sim, self._doors[Door.ENTRY].state, self._doors[Door.EXIT].state,
                        self._lamps[Side.ENTRY])
        self._sense()
        for door in Door:
            self._move_door(door, dt_sim)
        self._watchdog(now)
        self._run_due_plan(now)
        self._check_safety()

    def _sense_beams(self) -> Beam:
        beams = self.crowd.beams()
        for door in self._jammed_doorways:
            beams |= Beam.ENTRY if door is Door.ENTRY else Beam.EXIT
        return beams

    def _sense(self) -> None:
        beams = self._sense_beams()
        if beams != self._beams:
            self._beams = beams
            self._emit(EventCode.BEAMS, int(beams))
        zone = self.crowd.zone_count()
        if zone != self._zone:
            self._zone = zone
            self._emit(EventCode.ZONE_COUNT, zone)

    def _obstructed(self, door: Door) -> bool:
        return bool(self._beams & (Beam.ENTRY if door is Door.ENTRY else Beam.EXIT))

    def _set_door(self, door: Door, state: DoorState) -> None:
        leaf = self._doors[door]
        if leaf.state is state:
            return
        leaf.state = state
        self._emit(EventCode.DOOR_STATE, (int(door) << 4) | int(state))
        self._check_safety()

    def _start_opening(self, door: Door) -> None:
        other = self._doors[Door.EXIT if door is Door.ENTRY else Door.ENTRY]
        if other.state is not DoorState.CLOSED and not self._emergency:
            self.safety_violations.append(
                f"{door.name} started opening while the other door was {other.state.name}")
        self._set_door(door, DoorState.OPENING)

    def _move_door(self, door: Door, dt_sim: float) -> None:
        leaf = self._doors[door]
        if leaf.state in (DoorState.OPENING, DoorState.BLOCKED):
            leaf.position = min(1.0, leaf.position + dt_sim / OPEN_TRAVEL_S)
            if leaf.position >= 1.0:
                self._set_door(door, DoorState.OPEN)
        elif leaf.state is DoorState.CLOSING:
            if self._obstructed(door):
                leaf.blocked_in_a_row += 1
                if leaf.blocked_in_a_row >= BLOCKED_CLOSES_TO_JAM:
                    self._flags |= Flag.DOOR_FAULT
                    self._set_door(door, DoorState.JAMMED)
                else:
                    self._set_door(door, DoorState.BLOCKED)
                return
            leaf.position = max(0.0, leaf.position - dt_sim / CLOSE_TRAVEL_S)
            if leaf.position <= 0.0:
                leaf.blocked_in_a_row = 0
                self._set_door(door, DoorState.CLOSED)
        elif (leaf.state is DoorState.OPEN and self._flags & Flag.WATCHDOG
              and not self._emergency and not self._obstructed(door)):
            self._set_door(door, DoorState.CLOSING)  # the tripped watchdog keeps closing

    def _emergency_open(self) -> None:
        for door in Door:
            if self._doors[door].state in (DoorState.CLOSED, DoorState.CLOSING):
                self._start_opening(door)

    def _watchdog(self, now: float) -> None:
        if not self._watchdog_armed or self._flags & Flag.WATCHDOG:
            return
        if now - self._last_valid_rx <= self._watchdog_ms / 1000.0:
            return
        self._watchdog_trips += 1
        self._flags |= Flag.WATCHDOG
        self._lamps = {Side.ENTRY: Signal.OUT_OF_SERVICE, Side.EXIT: Signal.OUT_OF_SERVICE}
        self._emit(EventCode.WATCHDOG_TRIPPED, 0)
        if not self._emergency:
            for door in Door:
                if self._doors[door].state in (DoorState.OPEN, DoorState.OPENING,
                                               DoorState.BLOCKED):
                    self._set_door(door, DoorState.CLOSING)

    def _check_safety(self) -> None:
        entry, exit_ = self._doors[Door.ENTRY].state, self._doors[Door.EXIT].state
        if self._emergency:
            self._after_emergency = True
            return
        if DoorState.CLOSED in (entry, exit_):
            self._after_emergency = False
            self._violating = False
            return
        if not self._after_emergency and not self._violating:
            self._violating = True
            self.safety_violations.append(
                f"both doors not closed at {self._uptime_ms()} ms: "
                f"ENTRY {entry.name}, EXIT {exit_.name}")

    def _run_due_plan(self, now: float) -> None:
        start = self._start_t
        if start is None:
            return
        while self._plan and self._plan[0].at_s <= now - start:
            self._apply(self._plan.pop(0))

    def _apply(self, step: FaultStep) -> None:
        a = dict(step.args)
        match step.action:
            case "emergency":
                self.set_emergency(bool(a["active"]))
            case "tamper":
                self.set_tamper(bool(a["open"]))
            case "mains":
                self.set_mains(bool(a["present"]))
            case "maintenance_key":
                self.set_maintenance_key(bool(a["on"]))
            case "jam":
                self.jam(a["door"])
            case "clear_jam":
                self.clear_jam(a["door"])
            case "reboot":
                self.reboot()
            case "unplug":
                self.unplug()
            case "replug":
                self.replug()
            case "rates":
                current = self.faults
                self.faults = BoardFaults(
                    drop_reply=a.get("drop_reply", current.drop_reply),
                    drop_request=a.get("drop_request", current.drop_request),
                    corrupt_reply=a.get("corrupt_reply", current.corrupt_reply),
                    noise=a.get("noise", current.noise))
            case "traveller":
                self.add_traveller(TravellerBehaviour(**a))
            case _:
                raise ValueError(f"unknown fault action {step.action!r}")

    # ------------------------------------------------------------ events

    def _uptime_ms(self) -> int:
        return int((time.monotonic() - self._boot_t) * 1000) & 0xFFFFFFFF

    def _emit(self, code: EventCode, arg: int) -> None:
        event_id = self._next_event_id
        self._next_event_id = 1 if event_id >= 0xFFFF else event_id + 1
        self._last_event_id = event_id
        if len(self._events) >= EVENT_QUEUE_LEN:
            self._events.popleft()
            self._flags |= Flag.EVENT_OVERFLOW
        event = BoardEvent(event_id, int(code), arg & 0xFF, self._uptime_ms())
        self._events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _acknowledge(self, ack_id: int) -> None:
        if self.stale_ack == "drop":
            while self._events and not event_id_newer(self._events[0].event_id, ack_id):
                self._events.popleft()
            return
        for index, event in enumerate(self._events):
            if event.event_id == ack_id:
                for _ in range(index + 1):
                    self._events.popleft()
                return

    # ------------------------------------------------------------ requests

    def _on_frame(self, frame: Frame, now: float) -> None:
        if frame.addr != self.address:
            self.faults_injected["other_address"] += 1
            return
        if self._chance(self.faults.drop_request):
            self.faults_injected["dropped_requests"] += 1
            return
        self._requests_seen += 1
        if self._prev_request_t is not None:
            self._max_request_gap_s = max(self._max_request_gap_s, now - self._prev_request_t)
        self._prev_request_t = now
        self._last_valid_rx = now
        self._watchdog_armed = True
        raw = frame.encode()
        if raw == self._last_request and self._last_reply is not None:
            self.faults_injected["duplicates"] += 1
            reply = self._last_reply
        else:
            reply = self._execute(frame).encode()
            self._last_request, self._last_reply = raw, reply
            self.executed.append((frame.seq, frame.type, frame.payload))
            if len(self.executed) > 2 * EXECUTED_KEEP:
                del self.executed[:EXECUTED_KEEP]
        self._transmit(reply)

    def _chance(self, p: float) -> bool:
        return p > 0.0 and self._rng.random() < p

    def _transmit(self, reply: bytes) -> None:
        if self._chance(self.faults.drop_reply):
            self.faults_injected["dropped_replies"] += 1
            return
        out = bytearray(reply)
        if self._chance(self.faults.corrupt_reply):
            self.faults_injected["corrupted_replies"] += 1
            out[self._rng.randrange(len(out))] ^= self._rng.randrange(1, 256)
        if self._chance(self.faults.noise):
            self.faults_injected["noise_bursts"] += 1
            noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 8)))
            out[:0] = noise
        if self._master is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, bytes(out))

    def _reply(self, frame: Frame, kind: MsgType, payload: bytes = b"") -> Frame:
        return Frame(self.address, frame.seq, int(kind), payload)

    def _nak(self, frame: Frame, reason: NakReason) -> Frame:
        return self._reply(frame, MsgType.NAK, bytes((int(reason),)))

    def _execute(self, frame: Frame) -> Frame:
        p = frame.payload
        match frame.type:
            case MsgType.POLL:
                if len(p) != 2:
                    return self._nak(frame, NakReason.BAD_PAYLOAD)
                self._acknowledge(struct.unpack(">H", p)[0])
                if self._events:
                    return self._reply(frame, MsgType.EVENT, self._events[0].pack())
                return self._reply(frame, MsgType.STATUS, self.status().pack())
            case MsgType.GET_INFO:
                if p:
                    return self._nak(frame, NakReason.BAD_PAYLOAD)
                info = BoardInfo(PROTOCOL_VERSION, self._watchdog_ms, self.firmware, self.serial)
                return self._reply(frame, MsgType.INFO, info.pack())
            case MsgType.DOOR:
                return self._door_request(frame)
            case MsgType.LAMP:
                if len(p) != 2 or p[0] not in (1, 2) or p[1] not in SIGNAL_VALUES:
                    return self._nak(frame, NakReason.BAD_PAYLOAD)
                self._lamps[Side(p[0])] = Signal(p[1])
                return self._reply(frame, MsgType.ACK)
            case MsgType.CONFIG:
                if len(p) != 2:
                    return self._nak(frame, NakReason.BAD_PAYLOAD)
                value = struct.unpack(">H", p)[0]
                if not WATCHDOG_MS_MIN <= value <= WATCHDOG_MS_MAX:
                    return self._nak(frame, NakReason.BAD_PAYLOAD)
                self._watchdog_ms = value
                return self._reply(frame, MsgType.ACK)
            case MsgType.RESET_FAULTS:
                if p:
                    return self._nak(frame, NakReason.BAD_PAYLOAD)
                if self._reset_faults():
                    return self._reply(frame, MsgType.ACK)
                return self._nak(frame, NakReason.FAULT_ACTIVE)
            case _:
                return self._nak(frame, NakReason.UNKNOWN_TYPE)

    def _door_request(self, frame: Frame) -> Frame:
        p = frame.payload
        if len(p) != 2 or p[0] not in (1, 2) or p[1] not in (0, 1):
            return self._nak(frame, NakReason.BAD_PAYLOAD)
        door, opening = Door(p[0]), p[1] == 1
        leaf = self._doors[door]
        if self._flags & (Flag.EMERGENCY | Flag.WATCHDOG) or leaf.state is DoorState.JAMMED:
            return self._nak(frame, NakReason.FAULT_ACTIVE)
        if opening:
            if leaf.state in (DoorState.OPEN, DoorState.OPENING, DoorState.BLOCKED):
                return self._reply(frame, MsgType.ACK)
            other = self._doors[Door.EXIT if door is Door.ENTRY else Door.ENTRY]
            if other.state is not DoorState.CLOSED:
                return self._nak(frame, NakReason.NOT_ALLOWED)
            self._start_opening(door)
        elif leaf.state not in (DoorState.CLOSED, DoorState.CLOSING):
            self._set_door(door, DoorState.CLOSING)
        return self._reply(frame, MsgType.ACK)

    def _reset_faults(self) -> bool:
        persisting = Flag.NONE
        self._flags &= ~(Flag.WATCHDOG | Flag.EVENT_OVERFLOW)
        if self._flags & Flag.TAMPER:
            if self._tamper_open:
                persisting |= Flag.TAMPER
            else:
                self._flags &= ~Flag.TAMPER
        if self._flags & Flag.DOOR_FAULT:
            for door in Door:
                leaf = self._doors[door]
                if leaf.state is not DoorState.JAMMED:
                    continue
                if self._obstructed(door):
                    persisting |= Flag.DOOR_FAULT
                else:
                    leaf.blocked_in_a_row = 0
                    leaf.position = 1.0
                    self._set_door(door, DoorState.OPEN)
            if not persisting & Flag.DOOR_FAULT:
                self._flags &= ~Flag.DOOR_FAULT
        return persisting == Flag.NONE
