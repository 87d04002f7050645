"""The door driver: moves the doors towards what the lane's state wants, shows its lamps.

It owns what door commands need to remember (a command sent and not yet seen, a doorway
blocked since when, the lamps already shown), never decides whether a door may move:
every command first asks the lane's one guard (``gate.lane.guards.door_refusal``) through
the ``refusal`` callable it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hardware.barrier.api import (
    Barrier,
    BarrierError,
    CommandRejected,
    Door,
    DoorAction,
    DoorState,
    Side,
    Signal,
)

#: A door command that produced no state change is retried after this long.
DOOR_COMMAND_RETRY_S = 1.5

Refusal = Callable[[Door, DoorAction], str | None]


class DoorDriver:
    def __init__(self, barrier: Barrier, log: Any, clock: Callable[[], float],
                 obstructed_doorway_s: float) -> None:
        self._barrier = barrier
        self._log = log
        self._clock = clock
        self._obstructed_doorway_s = obstructed_doorway_s
        self._pending: dict[Door, tuple[DoorAction, float]] = {}
        self._seen: dict[Door, DoorState] = {}
        self._obstructed_since: dict[Door, float] = {}
        self._entry_cycled = False
        self._lamps_shown: dict[Side, Signal] = {}
        self._last_refusal: dict[Door, str] = {}

    def forget(self) -> None:
        """The board's picture may be stale (link lost or back, reboot): command afresh."""
        self._lamps_shown.clear()
        self._pending.clear()

    def rejection_started(self) -> None:
        """A rejection begins: ENTRY is first closed, then opened to send the traveller back."""
        self._entry_cycled = False

    def drive(self, wants: tuple[DoorState, DoorState] | None, refusal: Refusal, *,
              cycle_entry: bool, **context: Any) -> None:
        """Move each door towards ``wants`` (ENTRY, EXIT), closes first.

        ``cycle_entry``: an ENTRY still open from admitting is closed first and then
        reopened — the reopening is what tells the traveller (and a tailgater) to go back.
        """
        status = self._barrier.state
        if wants is None or status is None or not self._barrier.link_up:
            return
        if cycle_entry and not self._entry_cycled:
            self._entry_cycled = status.entry is DoorState.CLOSED
            if not self._entry_cycled:
                wants = (DoorState.CLOSED, DoorState.CLOSED)
        now = self._clock()
        for door in Door:
            seen = status.door(door)
            if self._seen.get(door) is not seen:
                self._seen[door] = seen
                self._pending.pop(door, None)
            pending = self._pending.get(door)
            if pending is not None and now - pending[1] > DOOR_COMMAND_RETRY_S:
                self._pending.pop(door, None)
        plan: list[tuple[Door, DoorAction]] = []
        for door, want in zip(Door, wants, strict=True):
            seen = status.door(door)
            obstructed = status.beam(door)
            if not obstructed:
                self._obstructed_since.pop(door, None)
            elif door not in self._obstructed_since:
                self._obstructed_since[door] = now
            if door in self._pending:
                continue
            if want is DoorState.CLOSED and seen in (DoorState.OPEN, DoorState.OPENING,
                                                     DoorState.BLOCKED):
                # Never close on a body in the doorway; but a doorway blocked for long is
                # given an obstruction-safe try, so a real jam ends as DOOR_FAULT.
                if obstructed and (now - self._obstructed_since[door]
                                   < self._obstructed_doorway_s):
                    continue
                if obstructed:
                    self._obstructed_since[door] = now
                plan.insert(0, (door, DoorAction.CLOSE))
            elif want is DoorState.OPEN and seen is DoorState.CLOSED:
                plan.append((door, DoorAction.OPEN))
        for door, action in plan:
            self.command(door, action, refusal, **context)

    def command(self, door: Door, action: DoorAction, refusal: Refusal,
                **context: Any) -> None:
        """One door command, if the guard allows it (a refusal is logged once)."""
        why = refusal(door, action)
        if why is not None:
            if self._last_refusal.get(door) != why:
                self._log.info("lane.door_refused", door=door.name, action=action.name,
                               reason=why, **context)
                self._last_refusal[door] = why
            return
        self._last_refusal.pop(door, None)
        self._pending[door] = (action, self._clock())
        self._log.info("lane.door_command", door=door.name, action=action.name, **context)
        try:
            if action is DoorAction.OPEN:
                self._barrier.open_door(door)
            else:
                self._barrier.close_door(door)
        except CommandRejected as exc:
            # the board knew better (flags not yet polled, interlock): re-decide later
            self._log.warning("lane.door_nak", door=door.name, action=action.name,
                              reason=str(exc.reason))
        except BarrierError as exc:
            self._log.warning("lane.door_failed", door=door.name, action=action.name,
                              error=type(exc).__name__)

    def show(self, lamps: tuple[Signal, Signal]) -> None:
        """Show (ENTRY side, EXIT side), sending only what changed."""
        if self._barrier.state is None or not self._barrier.link_up:
            return
        for side, signal in zip((Side.ENTRY, Side.EXIT), lamps, strict=True):
            if self._lamps_shown.get(side) is signal:
                continue
            try:
                self._barrier.set_lamp(side, signal)
            except BarrierError as exc:
                self._log.warning("lane.lamp_failed", side=side.name, error=type(exc).__name__)
                return
            self._lamps_shown[side] = signal
