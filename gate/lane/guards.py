"""The lane's safety rules, as pure functions of the lane's state, the board and the passage.

Nothing here commands, logs or remembers: each function answers from its arguments, so
every rule can be tested on its own and no caller can skip one. ``door_refusal`` is THE
guard every door command passes; ``blocking_cause`` says why the lane may not serve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gate.lane.machine import (
    ADMITTED_STATES,
    ADMITTING,
    EMERGENCY,
    MAINTENANCE,
    OUT_OF_SERVICE,
    REJECTED,
    RELEASING,
)
from gate.lane.records import Passage
from hardware.barrier.api import BarrierState, Condition, Door, DoorAction, DoorState
from hardware.device import DeviceHealth

_OTHER = {Door.ENTRY: Door.EXIT, Door.EXIT: Door.ENTRY}

#: Board conditions that put the lane out of service while they last (their names are the
#: reasons the lane gives).
OUT_OF_SERVICE_CONDITIONS = (Condition.WATCHDOG, Condition.TAMPER, Condition.DOOR_FAULT)


@dataclass(frozen=True)
class Cause:
    """Why the lane may not serve travellers now: the overlay it goes to, and the reason."""

    overlay: str  # EMERGENCY | MAINTENANCE | OUT_OF_SERVICE
    reason: str


def blocking_cause(*, state: str, board: BarrierState | None, link_up: bool,
                   maintenance_requested: bool, shutdown: str | None,
                   stop_admitting_on_mains_loss: bool,
                   devices: Mapping[str, Callable[[], DeviceHealth]]) -> Cause | None:
    """Why the lane may not serve travellers now, highest priority first.

    ``shutdown`` is None, "drain" (a traveller inside finishes) or "now". Device health
    (camera, document reader) only counts before a traveller is let in: a traveller
    inside finishes with what the lane already has.
    """
    if board is not None and board.has(Condition.EMERGENCY):
        return Cause(EMERGENCY, "EMERGENCY")
    if board is None or not link_up:
        return Cause(OUT_OF_SERVICE, "LINK_DOWN")
    if board.has(Condition.MAINTENANCE_KEY):
        return Cause(MAINTENANCE, "MAINTENANCE_KEY")
    if maintenance_requested:
        return Cause(MAINTENANCE, "OPERATOR")
    for condition in OUT_OF_SERVICE_CONDITIONS:
        if board.has(condition):
            return Cause(OUT_OF_SERVICE, condition.value)
    admitted = state in ADMITTED_STATES
    if shutdown == "now" or (shutdown == "drain" and not admitted):
        return Cause(OUT_OF_SERVICE, "SHUTDOWN")
    if board.has(Condition.ON_UPS) and stop_admitting_on_mains_loss and not admitted:
        return Cause(OUT_OF_SERVICE, "MAINS_LOST")
    if not admitted:
        for name, probe in devices.items():
            health = probe()
            if not health.ok:
                return Cause(OUT_OF_SERVICE, health.reason or f"{name.upper()}_FAILED")
    return None


def door_refusal(door: Door, action: DoorAction, *, state: str, board: BarrierState | None,
                 link_up: bool, passage: Passage | None) -> str | None:
    """THE safety guard: every door command passes here. None means allowed.

    Never a command while the link is down or EMERGENCY is raised (the board owns
    the doors then); never open a door unless the other is CLOSED; ENTRY opens only to
    admit into an empty zone or to send a traveller back; EXIT opens only to release a
    traveller with a positive decision who is alone in the zone with ENTRY CLOSED.
    """
    if board is None or not link_up:
        return "LINK_DOWN"
    if board.has(Condition.EMERGENCY) or state == EMERGENCY:
        return "EMERGENCY"
    if action is DoorAction.CLOSE:
        return None
    if board.door(_OTHER[door]) is not DoorState.CLOSED:
        return "OTHER_DOOR_NOT_CLOSED"
    if door is Door.ENTRY:
        if state == ADMITTING:
            return None if board.zone_count == 0 else "ZONE_NOT_EMPTY"
        return None if state == REJECTED else "ENTRY_NOT_WANTED"
    if state != RELEASING:
        return "NOT_RELEASING"
    return release_refusal(board, passage)


def release_refusal(board: BarrierState, passage: Passage | None) -> str | None:
    """Why the EXIT may not open for ``passage`` now (None: it may)."""
    if passage is None or not passage.positive:
        return "NO_POSITIVE_DECISION"
    if passage.tailgating_seen:
        return "TAILGATING"
    if board.zone_count != 1:
        return "ZONE_NOT_ONE"
    if board.entry is not DoorState.CLOSED:
        return "ENTRY_NOT_CLOSED"
    if board.has(Condition.EMERGENCY):
        return "EMERGENCY"
    return None


def officer_may_release(board: BarrierState | None, passage: Passage | None,
                        cause: Cause | None) -> bool:
    """Only a lone traveller, never after tailgating, never with a cause blocking."""
    return (board is not None and passage is not None and not passage.tailgating_seen
            and board.zone_count == 1 and board.beams_clear  # not on the way out
            and cause is None)


def lane_is_clear(board: BarrierState | None, cause: Cause | None) -> bool:
    """A new traveller may be admitted: nothing blocks, nobody inside, both doors shut."""
    return (board is not None and cause is None
            and board.zone_count == 0 and board.beams_clear
            and board.entry is DoorState.CLOSED and board.exit is DoorState.CLOSED)


def fact_holds(fact: str, board: BarrierState, passage: Passage | None,
               entry_opened: bool) -> bool:
    """Whether one of the machine's FACTS holds on this picture of the board.

    ``entry_opened``: ENTRY has opened for this passage (before that, anybody in the zone
    is an intruder).
    """
    if fact == "intruder_detected":
        return board.zone_count > 0 and not entry_opened
    if fact == "tailgate_detected":
        return board.zone_count > 1 or (passage is not None and passage.tailgating_seen)
    if fact == "traveller_inside":
        return board.zone_count == 1 and not board.entry_beam
    if fact == "zone_cleared":
        return board.zone_count == 0 and board.beams_clear
    if fact == "doors_closed":
        return board.entry is DoorState.CLOSED and board.exit is DoorState.CLOSED
    raise KeyError(fact)
