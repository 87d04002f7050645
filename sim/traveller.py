"""Simulated travellers as the lane's sensors see them: bodies in doorways and in the zone.

Each person is a tiny state machine driven by the board's simulated clock::

    WAITING --ENTRY OPEN, lane empty, entry lamp OFF/GREEN--> ENTERING (ENTRY beam)
    ENTERING --hesitate_s + walk_s--> IN_ZONE (zone +1)
    IN_ZONE --EXIT OPEN--> LEAVING_EXIT (zone -1, EXIT beam) --walk_s--> PASSED
    IN_ZONE --ENTRY OPEN again after it had closed--> LEAVING_ENTRY (zone -1, ENTRY beam)
            --walk_s--> TURNED_BACK

Kinds (``TravellerBehaviour.kind``):

- ``normal``: as drawn above. Rejection = the host opens ENTRY again while EXIT stays shut.
- ``tailgate``: two people. The second steps into the ENTRY doorway the moment the first
  leaves it (the beam stays interrupted), as long as ENTRY is not CLOSED; a door already
  closing is therefore BLOCKED by the tailgater. Zone count reaches 2. If ENTRY shut
  before the second one could follow, the second waits in the queue like anyone else.
- ``hesitate``: stands in the ENTRY doorway for ``hesitate_s`` (beam interrupted) before
  walking in, so a close attempt meanwhile is BLOCKED.
- ``turn_back``: walks in, then wants out the way it came. It takes ``walk_s`` in the zone
  to turn round, then steps straight back into the ENTRY doorway if ENTRY is not CLOSED
  (open, opening, blocked or even closing — a close then gets BLOCKED); otherwise it waits
  in the zone and leaves as soon as ENTRY is no longer CLOSED. It never leaves through
  EXIT, even when EXIT opens.
- ``wait``: refused, stays in the zone for an officer however long ENTRY stands open, and
  leaves only through EXIT when an officer's release opens it.

Walking and hesitating durations are simulated seconds (the board divides real time by
its ``speed``). Only one person (plus a tailgater) is in the lane at a time: the next in
the queue waits until the lane is empty, ENTRY is OPEN and the entry-side lamp shows OFF or
GREEN_ARROW (a red cross, WAIT, OFFICER_CALLED or OUT_OF_SERVICE keeps people out).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hardware.barrier.protocol import Beam, DoorState, Signal

KINDS = ("normal", "tailgate", "hesitate", "turn_back", "wait")


@dataclass
class TravellerBehaviour:
    """One simulated person waiting in front of the ENTRY door."""

    kind: str = "normal"
    walk_s: float = 0.6
    hesitate_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown traveller kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.walk_s <= 0 or self.hesitate_s < 0:
            raise ValueError("walk_s must be > 0 and hesitate_s >= 0")
        if self.kind == "hesitate" and self.hesitate_s == 0:
            self.hesitate_s = 1.5


class Where(enum.Enum):
    WAITING = "waiting"
    ENTERING = "entering"
    IN_ZONE = "in_zone"
    LEAVING_EXIT = "leaving_exit"
    LEAVING_ENTRY = "leaving_entry"
    PASSED = "passed"
    TURNED_BACK = "turned_back"


IN_LANE = frozenset({Where.ENTERING, Where.IN_ZONE, Where.LEAVING_EXIT, Where.LEAVING_ENTRY})
IN_ENTRY_DOORWAY = frozenset({Where.ENTERING, Where.LEAVING_ENTRY})
WALK_IN_LAMPS = frozenset({Signal.OFF, Signal.GREEN_ARROW})


@dataclass(eq=False)
class Traveller:
    number: int
    behaviour: TravellerBehaviour
    leader: Traveller | None = None  # a tailgater follows this person in
    where: Where = Where.WAITING
    remaining_s: float = 0.0
    entry_closed_behind: bool = False  # ENTRY shut after this person came in

    @property
    def turns_back(self) -> bool:
        return self.behaviour.kind == "turn_back"

    @property
    def waits(self) -> bool:
        """Refused, they stay in the zone for an officer (leave only through EXIT)."""
        return self.behaviour.kind == "wait"


class Crowd:
    """Everybody in front of and inside one lane, stepped by the board's physics loop."""

    def __init__(self) -> None:
        self.people: list[Traveller] = []
        self.passed = 0
        self.turned_back = 0
        self._numbers = 0

    def add(self, behaviour: TravellerBehaviour) -> None:
        first = self._new(behaviour)
        if behaviour.kind == "tailgate":
            self._new(TravellerBehaviour("normal", behaviour.walk_s), leader=first)

    def _new(self, behaviour: TravellerBehaviour, leader: Traveller | None = None) -> Traveller:
        self._numbers += 1
        person = Traveller(self._numbers, behaviour, leader=leader)
        self.people.append(person)
        return person

    def clear(self) -> None:
        self.people.clear()

    def send_waiting_away(self) -> int:
        """Everybody still queued outside ENTRY walks away; returns how many left."""
        before = len(self.people)
        self.people[:] = [p for p in self.people if p.where is not Where.WAITING]
        return before - len(self.people)

    # ------------------------------------------------------------ sensors

    def beams(self) -> Beam:
        beams = Beam.NONE
        for p in self.people:
            if p.where in IN_ENTRY_DOORWAY:
                beams |= Beam.ENTRY
            elif p.where is Where.LEAVING_EXIT:
                beams |= Beam.EXIT
        return beams

    def zone_count(self) -> int:
        return min(3, sum(1 for p in self.people if p.where is Where.IN_ZONE))

    @property
    def waiting(self) -> int:
        return sum(1 for p in self.people if p.where is Where.WAITING)

    @property
    def inside(self) -> int:
        return sum(1 for p in self.people if p.where in IN_LANE)

    # ------------------------------------------------------------ motion

    def step(self, dt_s: float, entry: DoorState, exit_: DoorState, entry_lamp: Signal) -> None:
        self._walk_on(dt_s)
        if entry is DoorState.CLOSED:
            for p in self.people:
                if p.where is Where.IN_ZONE:
                    p.entry_closed_behind = True
        self._followers_step_in(entry)
        self._zone_leaves(dt_s, entry, exit_)
        self._queue_steps_in(entry, entry_lamp)

    def _walk_on(self, dt_s: float) -> None:
        for p in self.people:
            if p.where not in (Where.ENTERING, Where.LEAVING_EXIT, Where.LEAVING_ENTRY):
                continue
            p.remaining_s -= dt_s
            if p.remaining_s > 0:
                continue
            if p.where is Where.ENTERING:
                p.where = Where.IN_ZONE
                p.entry_closed_behind = False
                p.remaining_s = p.behaviour.walk_s  # a turn_back needs this long to turn
            elif p.where is Where.LEAVING_EXIT:
                p.where = Where.PASSED
                self.passed += 1
            else:
                p.where = Where.TURNED_BACK
                self.turned_back += 1
        self.people = [p for p in self.people if p.where not in (Where.PASSED, Where.TURNED_BACK)]

    def _entry_doorway_busy(self) -> bool:
        return any(p.where in IN_ENTRY_DOORWAY for p in self.people)

    def _followers_step_in(self, entry: DoorState) -> None:
        for p in self.people:
            if p.where is not Where.WAITING or p.leader is None:
                continue
            leader = p.leader
            if leader.where in (Where.WAITING, Where.ENTERING):
                continue  # still right behind the leader
            if entry is not DoorState.CLOSED and not self._entry_doorway_busy():
                p.where = Where.ENTERING
                p.remaining_s = p.behaviour.walk_s
            p.leader = None  # in, or shut out and now an ordinary queuer

    def _zone_leaves(self, dt_s: float, entry: DoorState, exit_: DoorState) -> None:
        for p in self.people:
            if p.where is not Where.IN_ZONE:
                continue
            exit_busy = any(q.where is Where.LEAVING_EXIT for q in self.people)
            if p.turns_back:
                p.remaining_s -= dt_s
                if (p.remaining_s <= 0 and entry is not DoorState.CLOSED
                        and not self._entry_doorway_busy()):
                    self._leave(p, Where.LEAVING_ENTRY)
                continue
            if exit_ is DoorState.OPEN and not exit_busy:
                self._leave(p, Where.LEAVING_EXIT)
            elif (entry is DoorState.OPEN and p.entry_closed_behind and not p.waits
                  and not self._entry_doorway_busy()):
                self._leave(p, Where.LEAVING_ENTRY)

    @staticmethod
    def _leave(p: Traveller, where: Where) -> None:
        p.where = where
        p.remaining_s = p.behaviour.walk_s

    def _queue_steps_in(self, entry: DoorState, entry_lamp: Signal) -> None:
        if entry is not DoorState.OPEN or entry_lamp not in WALK_IN_LAMPS:
            return
        if any(p.where in IN_LANE for p in self.people):
            return
        front = next((p for p in self.people
                      if p.where is Where.WAITING and p.leader is None), None)
        if front is None:
            return
        front.where = Where.ENTERING
        front.remaining_s = front.behaviour.hesitate_s + front.behaviour.walk_s
