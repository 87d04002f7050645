"""The barrier as the lane sees it: doors, lamps, the zone, conditions, and typed notices.

This is the domain vocabulary every barrier backend speaks. It knows nothing of a wire:
``hardware.barrier.protocol`` maps protocol v1 (frames, flag bits, event codes) onto it,
and a second vendor's driver would map its own protocol onto the same types, so the lane
never changes with the board. The enum values are protocol v1's codes because that
protocol adopted these names first; the lane compares members, never numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Door(enum.IntEnum):
    ENTRY = 1
    EXIT = 2


class DoorAction(enum.IntEnum):
    CLOSE = 0
    OPEN = 1


class DoorState(enum.IntEnum):
    CLOSED = 0
    OPENING = 1
    OPEN = 2
    CLOSING = 3
    BLOCKED = 4  # something in the doorway stopped it
    JAMMED = 5


class Side(enum.IntEnum):
    """Where a lamp faces: the landside ENTRY or the airside EXIT."""

    ENTRY = 1
    EXIT = 2


class Signal(enum.IntEnum):
    OFF = 0
    GREEN_ARROW = 1
    RED_CROSS = 2
    WAIT = 3
    OFFICER_CALLED = 4
    OUT_OF_SERVICE = 5


class Condition(enum.Enum):
    """A condition of the board that is not a door, a beam or the zone count."""

    EMERGENCY = "EMERGENCY"  # the board opened both doors itself (fire alarm, button)
    WATCHDOG = "WATCHDOG"  # the host was silent too long (latched)
    TAMPER = "TAMPER"  # the cabinet was opened (latched)
    ON_UPS = "ON_UPS"  # mains lost, running on the battery
    DOOR_FAULT = "DOOR_FAULT"  # a door jammed (latched)
    MAINTENANCE_KEY = "MAINTENANCE_KEY"  # the maintenance key is turned
    EVENT_OVERFLOW = "EVENT_OVERFLOW"  # the board dropped events (latched)


#: Conditions that stay until the host asks the board to reset them.
LATCHED = frozenset({Condition.WATCHDOG, Condition.TAMPER, Condition.DOOR_FAULT,
                     Condition.EVENT_OVERFLOW})


@dataclass(frozen=True, slots=True)
class BarrierState:
    """The driver's picture of the board: what the lane decides on."""

    entry: DoorState
    exit: DoorState
    zone_count: int  # people the board counts inside the mantrap
    entry_beam: bool = False  # something is in the ENTRY doorway
    exit_beam: bool = False
    conditions: frozenset[Condition] = frozenset()
    #: The newest event number the board reported (0: none yet); backends use it to
    #: tell a resent event from a new one, the lane never reads it.
    last_event_id: int = 0

    def door(self, door: Door) -> DoorState:
        return self.entry if door is Door.ENTRY else self.exit

    def beam(self, door: Door) -> bool:
        """Whether the doorway of ``door`` is obstructed."""
        return self.entry_beam if door is Door.ENTRY else self.exit_beam

    @property
    def beams_clear(self) -> bool:
        return not (self.entry_beam or self.exit_beam)

    def has(self, condition: Condition) -> bool:
        return condition in self.conditions

    @property
    def latched(self) -> frozenset[Condition]:
        return self.conditions & LATCHED


# ------------------------------------------------------------------ notices


@dataclass(frozen=True, kw_only=True)
class BarrierNotice:
    """Something the lane should know about; ``state`` is the picture after it."""

    state: BarrierState | None = None

    def describe(self) -> str:
        """One line for timelines and logs (nothing personal is ever in a notice)."""
        return type(self).__name__


@dataclass(frozen=True, kw_only=True)
class LinkRestored(BarrierNotice):
    """The board answers (again); ``detail`` names it (firmware, serial, protocol)."""

    detail: str = ""

    def describe(self) -> str:
        return f"link up {self.detail}".strip()


@dataclass(frozen=True, kw_only=True)
class LinkLost(BarrierNotice):
    """No valid reply after the retries, or the port is gone."""

    detail: str = ""

    def describe(self) -> str:
        return f"link down: {self.detail}" if self.detail else "link down"


@dataclass(frozen=True, kw_only=True)
class BoardRestarted(BarrierNotice):
    """The board rebooted: its doors are closed, its lamps dark, its memory gone."""

    detail: str = ""

    def describe(self) -> str:
        return f"board restarted ({self.detail})" if self.detail else "board restarted"


@dataclass(frozen=True, kw_only=True)
class StateRefreshed(BarrierNotice):
    """A fresh full picture (after start, a link up, lost events, a restart)."""

    def describe(self) -> str:
        s = self.state
        if s is None:
            return "state unknown"
        cond = ",".join(sorted(c.value for c in s.conditions)) or "-"
        return f"state entry={s.entry.name} exit={s.exit.name} zone={s.zone_count} {cond}"


@dataclass(frozen=True, kw_only=True)
class BoardChange(BarrierNotice):
    """A change the board reported, once (a resent one is not delivered again).

    Itself, it is a board event with no meaning for the lane (e.g. the board's own record
    that it restarted, or a code a newer firmware added); the subclasses are the ones the
    lane acts on. ``event_id`` and ``raw`` are the backend's: the board's event number
    and its own encoding, kept so a restarted link can recognise a resend.
    """

    event_id: int = 0
    raw: bytes = b""
    name: str = "EVENT"

    def describe(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, kw_only=True)
class DoorMoved(BoardChange):
    door: Door
    position: DoorState

    def describe(self) -> str:
        return f"{self.door.name} {self.position.name}"


@dataclass(frozen=True, kw_only=True)
class ZoneCounted(BoardChange):
    count: int

    def describe(self) -> str:
        return f"zone count {self.count}"


@dataclass(frozen=True, kw_only=True)
class BeamsChanged(BoardChange):
    entry: bool
    exit: bool

    def describe(self) -> str:
        cut = [n for n, on in (("ENTRY", self.entry), ("EXIT", self.exit)) if on]
        return f"beams {'+'.join(cut) or 'clear'}"


@dataclass(frozen=True, kw_only=True)
class ConditionChanged(BoardChange):
    condition: Condition
    raised: bool

    def describe(self) -> str:
        return f"{self.condition.value} {'on' if self.raised else 'off'}"
