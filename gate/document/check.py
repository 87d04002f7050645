"""The document stage the lane calls: read the MRZ, judge eligibility, cut the portrait.

:class:`MrzDocumentCheck` implements :class:`gate.stages.DocumentCheck`. It is built from
the lane's ``[document]`` configuration (:class:`~gate.document.policy.DocumentPolicy`).
A document is *accepted* only when every one of these holds: the MRZ is valid (all check
digits, known codes, real dates), the reading is stable across frames, the name — which no
check digit protects — was read with confidence, the policy finds the holder eligible, and
a usable face was found in the portrait. Otherwise the reasons say which did not.

Nothing personal goes to the log: :meth:`DocumentOutcome.log_summary` is what is logged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import structlog

from gate.document.photo import PortraitCut, cut_portrait, face_detector
from gate.document.policy import DocumentPolicy
from gate.document.reader import MrzReader, MrzReading
from gate.stages import DocumentOutcome

log = structlog.get_logger(__name__)

#: Reasons that concern the reading, not the document: the traveller should try again.
RETRY_REASONS = frozenset({
    "IMAGE_UNREADABLE", "IMAGE_EMPTY", "IMAGE_TOO_SMALL", "IMAGE_TOO_LARGE", "MRZ_NOT_FOUND",
    "MULTIPLE_DOCUMENTS", "MRZ_INCOMPLETE", "MRZ_UNSTABLE", "NAME_LOW_CONFIDENCE",
    "MRZ_LOW_CONFIDENCE",
})


class MrzDocumentCheck:
    """The lane's document stage (a :class:`gate.stages.DocumentCheck`)."""

    def __init__(
        self,
        policy: DocumentPolicy | Mapping[str, Any] | None = None,
        reader: MrzReader | None = None,
        log_outcomes: bool = True,
    ) -> None:
        if policy is None:
            policy = DocumentPolicy()
        elif not isinstance(policy, DocumentPolicy):
            policy = DocumentPolicy.from_dict(policy)
        self.policy = policy
        self.reader = reader or MrzReader()
        self.log_outcomes = log_outcomes
        face_detector()  # load the face detector now, not on the first traveller (~3 s)

    def examine(
        self, pages: Sequence[np.ndarray], today: date | None = None
    ) -> tuple[DocumentOutcome, MrzReading, PortraitCut | None, dict[str, Any]]:
        """Everything the stage found; :meth:`check` returns only the outcome."""
        t0 = time.perf_counter()
        today = today or self.policy.today
        reading = self.reader.read(pages, today)
        t_read = (time.perf_counter() - t0) * 1000
        reasons = list(reading.reasons)
        eligible_reasons: list[str] = []
        portrait: PortraitCut | None = None
        if reading.result is not None and reading.result.mrz_type and reading.zone is not None:
            eligible_reasons = self.policy.judge(reading.result, today)
            t1 = time.perf_counter()
            n = len(reading.result.lines[0])
            portrait = cut_portrait(pages[reading.frame_index], reading.zone,
                                    reading.result.mrz_type, n)
            t_photo = (time.perf_counter() - t1) * 1000
        else:
            t_photo = 0.0
        for r in eligible_reasons:
            if r != "MRZ_INVALID" and r not in reasons:
                reasons.append(r)
        if reading.result is not None and not reading.result.valid and "MRZ_INVALID" not in reasons:
            reasons.insert(0, "MRZ_INVALID")
        if portrait is not None and portrait.reason:
            reasons.append(portrait.reason)
        accepted = bool(reading.valid and not reasons)
        timings = {"read_ms": round(t_read, 1), "photo_ms": round(t_photo, 1),
                   "total_ms": round((time.perf_counter() - t0) * 1000, 1)}
        mrz = reading.to_dict()
        mrz["eligible"] = reading.valid and not eligible_reasons
        mrz["eligibility_reasons"] = eligible_reasons if reading.valid else ["MRZ_INVALID"]
        mrz["photo"] = {**portrait.to_dict(), "frame": reading.frame_index} if portrait else None
        outcome = DocumentOutcome(
            accepted=accepted,
            reasons=tuple(reasons),
            portrait=portrait.portrait if portrait and not portrait.reason else None,
            mrz=mrz,
            timings_ms=timings,
        )
        if self.log_outcomes:
            log.info("document_checked", **outcome.log_summary())
        return outcome, reading, portrait, timings

    def check(self, pages: Sequence[np.ndarray]) -> DocumentOutcome:
        try:
            return self.examine(pages)[0]
        except Exception as exc:  # a stage must answer; the lane treats this as a retry
            log.error("document_check_failed", error=type(exc).__name__)
            return DocumentOutcome(accepted=False, reasons=("DOCUMENT_CHECK_FAILED",))
