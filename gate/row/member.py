"""A lane as one of a row: ``[row]`` of lane.toml, and what ``gate run`` adds for it.

With ``[row] broker`` set the lane service (:mod:`gate.service`) joins the row through a
:class:`RowMember`:

* its cases go to the station over the case stream instead of straight into a store (the
  spool keeps each one until the stream acknowledged it);
* it publishes its state (nothing personal) every ``state_interval_s`` and at every
  change: doors, zone count, alarms, time in state, and the referral waiting for an
  officer — its case id and the single-use nonce the station's command must carry;
* it answers the station's signed commands (:class:`gate.row.commands.LaneCommands`): a
  release acts only through the lane's own officer-release guard;
* the station's heartbeat is a device of the lane (``station``): after
  ``unsupervised_after_s`` without it the lane admits nobody new (``UNSUPERVISED``), and it
  admits again on its own when the station is back. A passage under way always finishes:
  every safety decision is the lane's own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gate.config import ConfigError
from gate.lane import OUT_OF_SERVICE, Lane, PassageRecord, StateChange
from gate.row.commands import LaneCommands, load_station_key
from gate.row.link import LaneLink
from gate.row.settings import RowSettings, row_tls
from hardware.device import DeviceHealth

log = structlog.get_logger(__name__)

UNSUPERVISED = "UNSUPERVISED"
#: case kinds a station may answer with a release while the traveller is still inside
_RELEASABLE = ("REJECTION",)
#: lane triggers that raise an alarm for the passage under way
_ALARM_TRIGGERS = {"tailgate_detected": "TAILGATING", "intruder_detected": "INTRUDER",
                   "emergency_raised": "EMERGENCY"}
#: board flags shown as alarms
_ALARM_FLAGS = {"EMERGENCY", "TAMPER", "DOOR_FAULT"}


@dataclass
class _Referral:
    case_id: str
    passage_id: int
    nonce: str
    kind: str


class RowMember:
    """The lane's membership of a row: link, commands, state, supervision."""

    def __init__(self, lane_id: str, settings: RowSettings) -> None:
        self.lane_id, self.settings = lane_id, settings
        try:
            key = load_station_key(Path(settings.station_key).read_bytes())
        except OSError as exc:
            raise ConfigError(f"[row] station_key {settings.station_key}: "
                              f"{exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"[row] station_key {settings.station_key}: {exc}") from exc
        self.commands = LaneCommands(lane_id, key, self._act, self._current_case,
                                     max_age_s=settings.command_max_age_s)
        self.link = LaneLink(settings.broker, lane_id, self.commands, tls=row_tls(settings))
        self._lane: Lane | None = None
        self._referral: _Referral | None = None
        self._alarms: set[str] = set()
        self._since = time.time()
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = log.bind(lane=lane_id)

    # ------------------------------------------------------------ start and stop

    def start(self, timeout: float = 2.0) -> RowMember:
        """Connect (a broker that is not there yet is joined when it comes)."""
        self.link.start(timeout)
        self._log.info("row.joined" if self.link.connected else "row.broker_not_there_yet",
                       broker=self.settings.broker)
        return self

    def attach(self, lane: Lane, recorder: Any) -> None:
        """Follow ``lane``; ``recorder`` (gate.cases.CaseRecorder) tells the referrals."""
        self._lane = lane
        lane.subscribe_states(self._on_state)
        if recorder is not None:
            recorder.subscribe_opened(self._on_case_opened)
        self._thread = threading.Thread(target=self._publish_loop, name="row-state",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(3.0)
        self.link.close()

    def case_sink(self) -> Any:
        return self.link.case_sink()

    # ------------------------------------------------------------ supervision

    def health(self) -> DeviceHealth:
        """The station as one of the lane's devices: bad after the unsupervised time."""
        silent = self.link.station_silent_s()
        if silent <= self.settings.unsupervised_after_s:
            return DeviceHealth.good()
        heard = "never heard" if silent == float("inf") else f"silent {silent:.0f} s"
        return DeviceHealth.bad(UNSUPERVISED, f"no station heartbeat ({heard}, limit "
                                f"{self.settings.unsupervised_after_s:g} s)")

    # ------------------------------------------------------------ referrals and commands

    def _on_case_opened(self, case_id: str, kind: str, record: PassageRecord) -> None:
        """On the lane's thread: a case opened; a referral while the traveller is inside."""
        lane = self._lane
        if kind not in _RELEASABLE or lane is None or lane.passage_id != record.passage_id:
            return
        nonce = self.commands.issue_nonce(case_id)
        with self._lock:
            self._referral = _Referral(case_id, record.passage_id, nonce, kind)
        self._changed.set()

    def _current(self) -> _Referral | None:
        lane = self._lane
        with self._lock:
            referral = self._referral
        if referral is None or lane is None or lane.passage_id != referral.passage_id:
            return None
        return referral

    def _current_case(self) -> str | None:
        referral = self._current()
        return referral.case_id if referral is not None else None

    def _act(self, case_id: str, officer: str, op: str) -> str | None:
        """The lane's own guard decides (``Lane.officer_release``)."""
        referral, lane = self._current(), self._lane
        if referral is None or lane is None or referral.case_id != case_id:
            return "COMMAND_NOT_CURRENT"
        if op != "release":
            return "COMMAND_MALFORMED"
        if lane.officer_release(referral.passage_id, timeout=1.5):
            self._log.info("row.officer_release", case_id=case_id, passage=referral.passage_id)
            return None
        status = lane.barrier_state
        if status is not None and status.zone_count != 1:
            return "RELEASE_REFUSED:ZONE_NOT_ONE"
        return "RELEASE_REFUSED:"

    # ------------------------------------------------------------ state

    def _on_state(self, change: StateChange) -> None:
        with self._lock:
            self._since = change.at
            alarm = _ALARM_TRIGGERS.get(change.trigger)
            if alarm is not None:
                self._alarms.add(alarm)
            if change.passage_id is None:
                self._alarms.clear()
                self._referral = None
        self._changed.set()

    def state(self) -> dict[str, Any]:
        """What the station sees of this lane: nothing personal."""
        lane = self._lane
        referral = self._current()
        with self._lock:
            alarms = set(self._alarms)
            since = self._since
        status = lane.barrier_state if lane is not None else None
        state = lane.state if lane is not None else "starting"
        flags = sorted(c.value for c in status.conditions) if status is not None else []
        alarms |= {f for f in flags if f in _ALARM_FLAGS}
        zone = status.zone_count if status is not None else None
        if state == OUT_OF_SERVICE and zone:
            alarms.add("OUT_OF_SERVICE_WITH_TRAVELLER")
        supervision = self.health()
        return {
            "state": state,
            "since": since,
            "entry": status.entry.name if status is not None else None,
            "exit": status.exit.name if status is not None else None,
            "zone_count": zone,
            "flags": flags,
            "link_up": lane.link_up if lane is not None else False,
            "alarms": sorted(alarms),
            "supervised": supervision.ok,
            "case": None if referral is None else {
                "case_id": referral.case_id, "nonce": referral.nonce, "kind": referral.kind},
        }

    def _publish_loop(self) -> None:
        interval = self.settings.state_interval_s
        while not self._stop.is_set():
            self._changed.wait(interval)
            self._changed.clear()
            if self._stop.is_set():
                return
            try:
                self.link.publish_state(self.state())
            except Exception as exc:  # a state that cannot be built must not stop the loop
                self._log.warning("row.state_failed", error=type(exc).__name__)
