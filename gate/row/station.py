"""The officers' station over the row bus: the review app's ``LaneControl`` for a row.

:class:`RowControl` is what the review server (``gate.review.app``) asks when an officer
clears a traveller: it finds the lane's referral (its case id and single-use nonce come
with the lane's state), signs the command with the station's key, sends it by
request/reply and writes the lane's answer — acted or the lane's refusal code — into the
audit chain (``LANE_COMMAND``). A lane that is not reachable is refused at once
(``LANE_UNREACHABLE``), never queued. The store claims a case for one officer before the
command goes out (``CaseStore.claim_for_release``), and the lane's nonce is single use:
two officers cannot both release one case.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import structlog

from gate.review.store import CaseStore
from gate.row.commands import LANE_UNREACHABLE, Answer, StationSigner, answer_record
from gate.row.link import StationLink

log = structlog.get_logger(__name__)

#: the station waits this long for a lane's answer (the lane's guard answers in < 2 s)
COMMAND_TIMEOUT_S = 3.0
NO_REFERRAL = "NO_REFERRAL"


class RowControl:
    """``gate.review.cases.LaneControl`` for lanes reached over the row bus."""

    def __init__(self, link: StationLink, signer: StationSigner, store: CaseStore,
                 timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.link, self._signer, self._store, self._timeout = link, signer, store, timeout_s
        self._refusals: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def _referral(self, lane: str, case_id: str) -> dict[str, Any] | None:
        for view in self.link.lanes():
            case = view.get("case")
            if view.get("lane") == lane and isinstance(case, dict) \
                    and case.get("case_id") == case_id:
                return case
        return None

    def command(self, case_id: str, officer: str, op: str = "release") -> Answer:
        record = self._store.case(case_id)
        lane = record.lane_id if record is not None else ""
        if record is None or not self.link.reachable(lane):
            answer = Answer(False, LANE_UNREACHABLE if record is not None else NO_REFERRAL,
                            lane, case_id)
        else:
            referral = self._referral(lane, case_id)
            if referral is None:  # the traveller left, or another is inside now
                answer = Answer(False, NO_REFERRAL, lane, case_id)
            else:
                data = self._signer.command(lane, case_id, officer, op,
                                            str(referral.get("nonce", "")))
                answer = self.link.command(lane, data, self._timeout)
        self._store.audit(officer, "LANE_COMMAND", case_id,
                          json.dumps({"op": op, **answer_record(answer)}, sort_keys=True))
        log.info("station.command", case_id=case_id, lane=lane, op=op, acted=answer.acted,
                 reason=answer.reason)
        if not answer.acted:
            with self._lock:
                self._refusals[case_id] = answer.reason or "REFUSED"
                while len(self._refusals) > 500:
                    self._refusals.popitem(last=False)
        return answer

    def close(self) -> None:
        self.link.close()

    # -- LaneControl ---------------------------------------------------------------------

    def release_exit(self, case_id: str, officer: str) -> bool:
        return self.command(case_id, officer, "release").acted

    def refusal(self, case_id: str) -> str | None:
        """Why the last command for ``case_id`` did not act (shown to the officer)."""
        with self._lock:
            return self._refusals.get(case_id)

    def lane_states(self) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        for view in self.link.lanes():
            view = dict(view)
            lane = str(view.pop("lane"))
            case = view.pop("case", None)
            view.pop("sent_at", None)
            view["case_waiting"] = case.get("case_id") if isinstance(case, dict) else None
            states[lane] = view  # the nonce stays at the station
        return states
