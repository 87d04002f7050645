"""The lane's machine as data: one row per state, the transitions, the facts, the stages.

``STATE_TABLE`` is the whole per-state picture — where the doors should be, what the lamps
show, whether a passage is open and a traveller may be inside, where its time counts,
which stage it waits for — and every tuple the rest of the lane uses (``PASSAGE_STATES``,
``DOOR_WANTS``, ``LAMPS`` …) is derived from it, so a new state is one row here, its
transitions, and (if it waits for a stage) one ``STAGES`` entry. ``gate diagram`` draws
the machine from ``TRANSITIONS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from transitions import Machine

from gate.stages import CaptureOutcome, DocumentOutcome, MatchDecision
from hardware.barrier.api import DoorState, Signal

IDLE = "idle"
READING_DOCUMENT = "reading_document"
ADMITTING = "admitting"
CLOSING_ENTRY = "closing_entry"
CAPTURING_FACE = "capturing_face"
VERIFYING = "verifying"
RELEASING = "releasing"
CLOSING_EXIT = "closing_exit"
REJECTED = "rejected"
CLOSING_REJECTED = "closing_rejected"
RECOVERING = "recovering"
OUT_OF_SERVICE = "out_of_service"
EMERGENCY = "emergency"
MAINTENANCE = "maintenance"
FAULT = "fault"


@dataclass(frozen=True)
class StateSpec:
    """One state of the lane, with everything that is decided per state."""

    name: str
    #: where (ENTRY, EXIT) should be; None: the host leaves the doors alone
    doors: tuple[DoorState, DoorState] | None
    lamps: tuple[Signal, Signal]  # (ENTRY side, EXIT side)
    text: str  # one line for docs and ``gate diagram``
    passage: bool = False  # a passage is open in this state
    admitted: bool = False  # a traveller may be inside the lane
    pre_release: bool = False  # before the exit is released: a second person is tailgating
    time: str | None = None  # where its time counts: "system" (stages) or "physical"
    overlay: bool = False  # emergency, maintenance, out of service, fault


OPEN, SHUT = DoorState.OPEN, DoorState.CLOSED
S = Signal
STATE_TABLE: tuple[StateSpec, ...] = (
    StateSpec(IDLE, (SHUT, SHUT), (S.WAIT, S.RED_CROSS),  # present your document here
              "doors closed, zone empty; waiting for a document"),
    StateSpec(READING_DOCUMENT, (SHUT, SHUT), (S.WAIT, S.RED_CROSS),
              "the document stage runs on a worker", passage=True, time="system"),
    StateSpec(ADMITTING, (OPEN, SHUT), (S.GREEN_ARROW, S.RED_CROSS),
              "ENTRY open; waiting for exactly one person inside and the ENTRY beam clear",
              passage=True, admitted=True, pre_release=True, time="physical"),
    StateSpec(CLOSING_ENTRY, (SHUT, SHUT), (S.RED_CROSS, S.WAIT),
              "ENTRY closing behind the traveller",
              passage=True, admitted=True, pre_release=True, time="physical"),
    StateSpec(CAPTURING_FACE, (SHUT, SHUT), (S.RED_CROSS, S.WAIT),
              "both doors closed; live face capture",
              passage=True, admitted=True, pre_release=True, time="system"),
    StateSpec(VERIFYING, (SHUT, SHUT), (S.RED_CROSS, S.WAIT),
              "1:1 comparison of document photo and live face",
              passage=True, admitted=True, pre_release=True, time="system"),
    StateSpec(RELEASING, (SHUT, OPEN), (S.RED_CROSS, S.GREEN_ARROW),
              "EXIT open; waiting for the zone to clear",
              passage=True, admitted=True, time="physical"),
    StateSpec(CLOSING_EXIT, (SHUT, SHUT), (S.WAIT, S.RED_CROSS),
              "EXIT closing behind the traveller", passage=True, admitted=True,
              time="physical"),
    StateSpec(REJECTED, (OPEN, SHUT), (S.OFFICER_CALLED, S.RED_CROSS),
              "traveller sent back through ENTRY, EXIT shut, officer called",
              passage=True, admitted=True, time="physical"),
    StateSpec(CLOSING_REJECTED, (SHUT, SHUT), (S.OFFICER_CALLED, S.RED_CROSS),
              "ENTRY closing behind the turned-back traveller",
              passage=True, admitted=True, time="physical"),
    StateSpec(RECOVERING, (SHUT, SHUT), (S.WAIT, S.RED_CROSS),
              "re-reading the board, resetting faults, closing doors"),
    StateSpec(OUT_OF_SERVICE, (SHUT, SHUT), (S.OUT_OF_SERVICE, S.OUT_OF_SERVICE),
              "link down, watchdog, jam, tamper or mains loss", overlay=True),
    StateSpec(EMERGENCY, None, (S.GREEN_ARROW, S.GREEN_ARROW),  # evacuate either way
              "the board opened both doors; the host commands none", overlay=True),
    StateSpec(MAINTENANCE, None, (S.OUT_OF_SERVICE, S.OUT_OF_SERVICE),
              "maintenance key or operator; the host commands no doors", overlay=True),
    StateSpec(FAULT, (SHUT, SHUT), (S.OFFICER_CALLED, S.OUT_OF_SERVICE),
              "an exception in the lane itself; officer reset needed", overlay=True),
)
SPECS: dict[str, StateSpec] = {spec.name: spec for spec in STATE_TABLE}

STATES: tuple[str, ...] = tuple(SPECS)
#: A passage is open while the lane is in one of these states.
PASSAGE_STATES = tuple(s.name for s in STATE_TABLE if s.passage)
#: Before the exit has been released: a second person in the zone here is tailgating.
PRE_RELEASE_STATES = tuple(s.name for s in STATE_TABLE if s.pre_release)
#: A traveller may be inside the lane (so mains loss lets the passage finish).
ADMITTED_STATES = tuple(s.name for s in STATE_TABLE if s.admitted)
OVERLAY_STATES = tuple(s.name for s in STATE_TABLE if s.overlay)
#: Where time is spent on the host (stages) versus in the physical world (doors, walking).
SYSTEM_STATES = tuple(s.name for s in STATE_TABLE if s.time == "system")
PHYSICAL_STATES = tuple(s.name for s in STATE_TABLE if s.time == "physical")
#: Where each door should be, per state: (ENTRY, EXIT). None: the host leaves the doors alone.
DOOR_WANTS: dict[str, tuple[DoorState, DoorState] | None] = {
    s.name: s.doors for s in STATE_TABLE}
#: What each lamp shows, per state: (ENTRY side, EXIT side).
LAMPS: dict[str, tuple[Signal, Signal]] = {s.name: s.lamps for s in STATE_TABLE}


def _all_but(*excluded: str) -> list[str]:
    return [s for s in STATES if s not in excluded]


#: Each entry: trigger, source(s), dest (None: internal), and optional conditions/before/after.
TRANSITIONS: list[dict[str, Any]] = [
    # ---- the passage
    {"trigger": "document_presented", "source": IDLE, "dest": READING_DOCUMENT,
     "conditions": "lane_is_clear"},
    {"trigger": "document_accepted", "source": READING_DOCUMENT, "dest": ADMITTING},
    {"trigger": "document_rejected", "source": READING_DOCUMENT, "dest": IDLE,
     "before": "mark_document_rejected"},
    {"trigger": "timeout", "source": READING_DOCUMENT, "dest": IDLE, "before": "mark_timeout"},
    {"trigger": "tailgate_detected", "source": list(PRE_RELEASE_STATES), "dest": REJECTED,
     "before": "mark_tailgating"},
    {"trigger": "intruder_detected", "source": [READING_DOCUMENT, ADMITTING], "dest": REJECTED,
     "before": "mark_intruder"},
    {"trigger": "traveller_inside", "source": ADMITTING, "dest": CLOSING_ENTRY},
    # somebody stepped into the zone and back out before the lane saw them inside: close
    # ENTRY and let the closed doors tell (zone empty: TURNED_BACK; back inside: capture)
    {"trigger": "zone_cleared", "source": ADMITTING, "dest": CLOSING_ENTRY,
     "conditions": "someone_was_inside"},
    {"trigger": "timeout", "source": ADMITTING, "dest": CLOSING_ENTRY, "before": "mark_timeout"},
    {"trigger": "doors_closed", "source": CLOSING_ENTRY, "dest": CAPTURING_FACE,
     "conditions": "zone_has_one"},
    {"trigger": "doors_closed", "source": CLOSING_ENTRY, "dest": IDLE,
     "conditions": "zone_is_empty", "before": "mark_turned_back"},
    {"trigger": "timeout", "source": CLOSING_ENTRY, "dest": REJECTED, "before": "mark_timeout"},
    {"trigger": "face_captured", "source": CAPTURING_FACE, "dest": VERIFYING},
    {"trigger": "face_not_captured", "source": CAPTURING_FACE, "dest": REJECTED,
     "before": "mark_face_not_captured"},
    {"trigger": "timeout", "source": CAPTURING_FACE, "dest": REJECTED,
     "before": "mark_face_not_captured"},
    {"trigger": "match_confirmed", "source": VERIFYING, "dest": RELEASING,
     "conditions": "exit_may_open"},
    {"trigger": "match_confirmed", "source": VERIFYING, "dest": REJECTED,
     "unless": "exit_may_open", "before": "mark_release_refused"},
    {"trigger": "match_refused", "source": VERIFYING, "dest": REJECTED,
     "before": "mark_face_mismatch"},
    {"trigger": "timeout", "source": VERIFYING, "dest": REJECTED, "before": "mark_timeout"},
    {"trigger": "zone_cleared", "source": RELEASING, "dest": CLOSING_EXIT},
    {"trigger": "timeout", "source": RELEASING, "dest": REJECTED,
     "before": "mark_turned_back"},
    {"trigger": "doors_closed", "source": CLOSING_EXIT, "dest": IDLE,
     "conditions": "zone_is_empty", "before": "mark_passed"},
    {"trigger": "doors_closed", "source": CLOSING_EXIT, "dest": REJECTED,
     "unless": "zone_is_empty", "before": "mark_turned_back"},
    {"trigger": "timeout", "source": CLOSING_EXIT, "dest": OUT_OF_SERVICE,
     "before": "mark_timeout"},
    {"trigger": "zone_cleared", "source": REJECTED, "dest": CLOSING_REJECTED},
    {"trigger": "timeout", "source": REJECTED, "dest": OUT_OF_SERVICE, "before": "mark_timeout"},
    {"trigger": "doors_closed", "source": CLOSING_REJECTED, "dest": IDLE,
     "conditions": "zone_is_empty"},
    {"trigger": "doors_closed", "source": CLOSING_REJECTED, "dest": REJECTED,
     "unless": "zone_is_empty"},
    {"trigger": "timeout", "source": CLOSING_REJECTED, "dest": OUT_OF_SERVICE,
     "before": "mark_timeout"},
    {"trigger": "timeout", "source": IDLE, "dest": None, "after": "end_red_cross"},
    # ---- recovery: doors closed and the zone empty before a new traveller
    {"trigger": "doors_closed", "source": RECOVERING, "dest": IDLE,
     "conditions": "zone_is_empty"},
    {"trigger": "doors_closed", "source": RECOVERING, "dest": REJECTED,
     "unless": "zone_is_empty"},  # the new passage is marked OCCUPIED_AFTER_RECOVERY
    {"trigger": "timeout", "source": RECOVERING, "dest": OUT_OF_SERVICE},
    {"trigger": "timeout", "source": OUT_OF_SERVICE, "dest": RECOVERING,
     "prepare": "clear_latched_faults", "conditions": "nothing_blocks"},
    {"trigger": "timeout", "source": OUT_OF_SERVICE, "dest": None, "after": "rearm_timer"},
    {"trigger": "board_restarted", "source": [IDLE, *PASSAGE_STATES, RECOVERING],
     "dest": RECOVERING},
    {"trigger": "officer_reset", "source": [FAULT, REJECTED, CLOSING_REJECTED, OUT_OF_SERVICE],
     "dest": RECOVERING},
    # an officer who reviewed the case clears the traveller still inside: a human decision
    {"trigger": "officer_released", "source": [REJECTED, CLOSING_REJECTED], "dest": RELEASING,
     "conditions": "officer_may_release", "before": "mark_officer_release"},
    # ---- overlays
    {"trigger": "emergency_raised", "source": _all_but(EMERGENCY), "dest": EMERGENCY},
    {"trigger": "emergency_cleared", "source": EMERGENCY, "dest": RECOVERING},
    {"trigger": "maintenance_started", "source": _all_but(EMERGENCY, MAINTENANCE),
     "dest": MAINTENANCE},
    {"trigger": "maintenance_ended", "source": MAINTENANCE, "dest": RECOVERING},
    {"trigger": "service_lost", "source": _all_but(*OVERLAY_STATES), "dest": OUT_OF_SERVICE},
    {"trigger": "callback_failed", "source": _all_but(FAULT), "dest": FAULT},
]

#: Facts checked after every input, in this order; each names the trigger it fires.
FACTS: tuple[str, ...] = ("intruder_detected", "tailgate_detected", "traveller_inside",
                          "zone_cleared", "doors_closed")


@dataclass(frozen=True)
class Stage:
    """How one stage's result drives the machine."""

    state: str  # the state that waits for it
    result_type: type  # what the stage returns
    field: str  # where the passage keeps it
    positive: str  # the result's attribute that says yes
    accepted: str  # trigger on yes
    refused: str  # trigger on no (with the result's reasons) or on a crash
    error_prefix: str  # reason code prefix when the stage raised


STAGES: dict[str, Stage] = {
    "document": Stage(READING_DOCUMENT, DocumentOutcome, "document", "accepted",
                      "document_accepted", "document_rejected", "DOCUMENT"),
    "capture": Stage(CAPTURING_FACE, CaptureOutcome, "capture", "ok",
                     "face_captured", "face_not_captured", "CAPTURE"),
    "verify": Stage(VERIFYING, MatchDecision, "decision", "match",
                    "match_confirmed", "match_refused", "VERIFY"),
}


def build_machine(model: object | None) -> Machine:
    """The lane's machine; ``model`` None gives a machine for drawing only."""
    return Machine(
        model=model,
        states=list(STATES), transitions=[dict(t) for t in TRANSITIONS],
        initial=RECOVERING, auto_transitions=False, ignore_invalid_triggers=True,
        send_event=True, before_state_change="before_transition" if model else None,
        after_state_change="after_transition" if model else None,
        name="lane",
    )


def describe(states: Iterable[str] = STATES) -> dict[str, str]:
    """One line per state, for docs and ``gate diagram``."""
    return {s: SPECS[s].text for s in states}
