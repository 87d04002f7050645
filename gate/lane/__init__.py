"""The lane: one traveller at a time through the ENTRY/EXIT mantrap.

``machine`` — the machine as data (states, transitions, facts, stages); ``guards`` — the
safety rules as pure functions; ``doors`` — the door driver; ``records`` — passages and
their records; ``controller`` — the ``Lane`` that owns them all on one thread.
"""

from gate.lane.controller import Lane, StageRunner, ThreadStageRunner
from gate.lane.machine import (
    ADMITTED_STATES,
    ADMITTING,
    CAPTURING_FACE,
    CLOSING_ENTRY,
    CLOSING_EXIT,
    CLOSING_REJECTED,
    DOOR_WANTS,
    EMERGENCY,
    FACTS,
    FAULT,
    IDLE,
    LAMPS,
    MAINTENANCE,
    OUT_OF_SERVICE,
    OVERLAY_STATES,
    PASSAGE_STATES,
    PHYSICAL_STATES,
    PRE_RELEASE_STATES,
    READING_DOCUMENT,
    RECOVERING,
    REJECTED,
    RELEASING,
    STAGES,
    STATE_TABLE,
    STATES,
    SYSTEM_STATES,
    TRANSITIONS,
    VERIFYING,
    StateSpec,
    build_machine,
    describe,
)
from gate.lane.records import Outcome, PassageEvidence, PassageRecord, StateChange

__all__ = [
    "ADMITTED_STATES", "ADMITTING", "CAPTURING_FACE", "CLOSING_ENTRY", "CLOSING_EXIT",
    "CLOSING_REJECTED", "DOOR_WANTS", "EMERGENCY", "FACTS", "FAULT", "IDLE", "LAMPS",
    "MAINTENANCE", "OUT_OF_SERVICE", "OVERLAY_STATES", "PASSAGE_STATES", "PHYSICAL_STATES",
    "PRE_RELEASE_STATES", "READING_DOCUMENT", "RECOVERING", "REJECTED", "RELEASING",
    "STAGES", "STATES", "STATE_TABLE", "SYSTEM_STATES", "TRANSITIONS", "VERIFYING", "Lane",
    "Outcome", "PassageEvidence", "PassageRecord", "StageRunner", "StateChange",
    "StateSpec", "ThreadStageRunner", "build_machine", "describe",
]
