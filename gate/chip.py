"""The passport chip in the lane: a document check and a face verifier around the others.

:class:`ChipDocumentCheck` reads the page first (the MRZ gives the chip's keys), then opens
the chip (PACE, else BAC), reads EF.COM, EF.SOD, DG1, DG14, DG15 and runs passive
authentication: the traveller is admitted on that, and the rest — chip or active
authentication and DG2, the portrait, the slow part on real chips (0.5–3 s) — runs in the
background while the ENTRY door opens and the traveller walks in (:class:`PendingChip`).
:class:`ChipPortraitVerifier` waits for it at the face comparison and compares the live face
with the **chip's portrait** when the chip is authentic; the page portrait is then a
cross-check whose score the record keeps, and the fallback the record names when the lane
only prefers the chip.

``[chip] required = true`` (the default at a border) refuses a document whose chip is
absent, mute, closed to our keys or not authentic; ``false`` admits on the page alone then
(the record says ``reference = "page"`` and why). A trust store that is missing, empty or
expired puts the lane out of service (the chip device's health), never a silent pass.
The trust store is reloaded when its folder or file changes (new master lists, CRLs).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from gate.schema import setting
from gate.stages import CaptureOutcome, DocumentCheck, DocumentOutcome, FaceVerifier, MatchDecision
from hardware.chip.api import ChipError, ChipReader
from hardware.chip.session import DEFAULT_READ, ChipSession
from hardware.chip.trust import TrustStore
from hardware.chip.verdict import ChipVerdict
from hardware.device import DeviceHealth

log = structlog.get_logger("gate.chip")

CHIP_NOT_AUTHENTIC = "CHIP_NOT_AUTHENTIC"
CHIP_PORTRAIT_TIMEOUT = "CHIP_PORTRAIT_TIMEOUT"
CHIP_PORTRAIT_UNREADABLE = "CHIP_PORTRAIT_UNREADABLE"
CHIP_MISSING = "CHIP_MISSING"


@dataclass(frozen=True)
class ChipSettings:
    """``[chip]``: the lane's chip policy (the reader itself is ``[devices] chip``)."""

    # refuse a document whose chip is absent, mute or not authentic (a border's default)
    required: bool = setting(True)
    # CSCA trust store: folder (certificates, CRLs, .ml) or one .ml; "": STATE/trust
    trust: str = setting("")
    # how long the document stage waits for a chip in the reader's field
    connect_timeout_s: float = setting(2.0, above=0, high=30.0, unit="seconds")
    # how long the face comparison waits for DG2 and chip authentication
    portrait_timeout_s: float = setting(8.0, above=0, high=60.0, unit="seconds")
    # a DS without a valid CRL of its CSCA is refused (else a note)
    crl_required: bool = setting(False)
    # plain bytes per READ BINARY: more than 223 needs extended length (a chip that
    # refuses it with 6700 gets short reads)
    max_read: int = setting(DEFAULT_READ, low=1, high=65536, unit="bytes")


class TrustSource:
    """The lane's trust store, reloaded when its path changes on disk."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None
        self._store = TrustStore.load(self.path)
        self._stamp = self._mtime()
        self._lock = threading.Lock()

    def _mtime(self) -> tuple[float, int] | None:
        try:
            if self.path.is_dir():
                stamps = [p.stat().st_mtime for p in self.path.iterdir()]
                return (max([self.path.stat().st_mtime, *stamps]), len(stamps))
            return (self.path.stat().st_mtime, 1)
        except OSError:
            return None

    @property
    def store(self) -> TrustStore:
        with self._lock:
            stamp = self._mtime()
            if stamp != self._stamp:
                self._store = TrustStore.load(self.path)
                self._stamp = stamp
                log.info("chip.trust_reloaded", cscas=len(self._store.cscas),
                         problems=len(self._store.problems))
            return self._store

    def health(self) -> DeviceHealth:
        problem = self.store.out_of_service(datetime.now(UTC))
        if problem:
            return DeviceHealth.bad(problem, str(self.path))
        return DeviceHealth.good(f"{len(self.store.cscas)} CSCAs")


class PendingChip:
    """The second half of a chip read, in a thread: CA/AA, DG2, the verdict."""

    def __init__(self, session: ChipSession, card: Any, trust: TrustStore,
                 settings: ChipSettings) -> None:
        self.session = session
        self.verdict: ChipVerdict | None = None
        self.error: str | None = None
        self.started = time.perf_counter()
        self.finished_ms: float | None = None
        self._done = threading.Event()

        def finish() -> None:
            try:
                self.verdict = session.finish(trust, at=datetime.now(UTC),
                                              crl_required=settings.crl_required)
            except ChipError as err:
                self.error = err.reason
                log.warning("chip.second_half_failed", reason=err.reason, detail=str(err),
                            access=session.access, apdus=session.apdus,
                            ms=round((time.perf_counter() - self.started) * 1000, 1),
                            timings_ms={k: round(v, 1) for k, v in session.timings_ms.items()})
            except Exception as err:
                self.error = f"{CHIP_NOT_AUTHENTIC} ({type(err).__name__})"
            finally:
                self.finished_ms = (time.perf_counter() - self.started) * 1000
                with contextlib.suppress(Exception):
                    card.close()
                self._done.set()

        threading.Thread(target=finish, name="chip-finish", daemon=True).start()

    def result(self, timeout_s: float) -> ChipVerdict | None:
        self._done.wait(timeout_s)
        return self.verdict

    @property
    def done(self) -> bool:
        return self._done.is_set()


def _summary(access: str | None, verdict: ChipVerdict | None, *, reference: str,
             reasons: Sequence[str] = (), timings: dict[str, float] | None = None
             ) -> dict[str, Any]:
    """What the case and the record keep of the chip (no images, nothing but codes)."""
    out: dict[str, Any] = {"access": access, "reference": reference,
                           "reasons": list(reasons)}
    if verdict is not None:
        data = verdict.to_dict()
        out.update({k: data[k] for k in ("authentic", "dg1_matches_mrz",
                                         "passive_authentication", "chip_authentication",
                                         "portrait")})
        out["reasons"] = list(dict.fromkeys([*reasons, *verdict.reasons]))
    if timings:
        out["timings_ms"] = {k: round(v, 1) for k, v in timings.items()}
    return out


class ChipDocumentCheck:
    """The page check, then the chip's first half (admission on DG1 + SOD + PA)."""

    def __init__(self, inner: DocumentCheck, reader: ChipReader, trust: TrustSource,
                 settings: ChipSettings) -> None:
        self.inner, self.reader, self.trust, self.settings = inner, reader, trust, settings

    def __getattr__(self, name: str) -> Any:  # model ... of the page check
        return getattr(self.inner, name)

    @property
    def policy(self) -> Any:
        """The page check's eligibility policy (read and replaced there, not here)."""
        return self.inner.policy  # type: ignore[attr-defined]

    @policy.setter
    def policy(self, value: Any) -> None:
        self.inner.policy = value  # type: ignore[attr-defined]

    def _refuse_or_page(self, outcome: DocumentOutcome, reasons: tuple[str, ...],
                        access: str | None, verdict: Any = None) -> DocumentOutcome:
        mrz = dict(outcome.mrz)
        if self.settings.required:
            mrz["chip"] = _summary(access, None, reference="none", reasons=reasons)
            return replace(outcome, accepted=False, reasons=(*outcome.reasons, *reasons),
                           mrz=mrz)
        mrz["chip"] = _summary(access, None, reference="page", reasons=reasons)
        return replace(outcome, mrz=mrz)

    def check(self, pages: Sequence[np.ndarray]) -> DocumentOutcome:
        outcome = self.inner.check(pages)
        if not outcome.accepted:
            return outcome
        lines = outcome.mrz.get("lines") or []
        if not lines:
            return self._refuse_or_page(outcome, (CHIP_MISSING,), None)
        t0 = time.perf_counter()
        trust = self.trust.store
        problem = trust.out_of_service(datetime.now(UTC))
        if problem:
            return self._refuse_or_page(outcome, (problem,), None)
        try:
            card = self.reader.connect(self.settings.connect_timeout_s)
        except ChipError as err:
            log.info("chip.unread", reason=err.reason)
            return self._refuse_or_page(outcome, (err.reason,), None)
        session = ChipSession(card, "\n".join(lines), max_read=self.settings.max_read)
        try:
            session.open()
            session.read_security_files()
            pa = session.passive(trust, at=datetime.now(UTC),
                                 crl_required=self.settings.crl_required)
        except ChipError as err:
            card.close()
            log.info("chip.unread", reason=err.reason, access=session.access)
            return self._refuse_or_page(outcome, (err.reason,), session.access)
        timings = {**dict(outcome.timings_ms), "chip_first_half_ms":
                   (time.perf_counter() - t0) * 1000}
        if not pa.valid:
            card.close()
            log.info("chip.not_authentic", reasons=list(pa.reasons), access=session.access)
            return self._refuse_or_page(replace(outcome, timings_ms=timings),
                                        (CHIP_NOT_AUTHENTIC, *pa.reasons), session.access)
        pending = PendingChip(session, card, trust, self.settings)
        log.info("chip.admitted_on_passive_authentication", access=session.access,
                 ms=round(timings["chip_first_half_ms"], 1))
        return replace(outcome, chip=pending, timings_ms=timings)


def _decode(image: bytes) -> np.ndarray | None:
    import cv2

    from hardware import images

    if images.sniff(image) not in ("jpeg", "jp2", "j2k"):
        return None
    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    return decoded if decoded is not None and decoded.size else None


class ChipPortraitVerifier:
    """1:1 against the chip's portrait when the chip is authentic (page portrait as the
    cross-check), else by the lane's policy: refuse, or the page portrait as fallback."""

    def __init__(self, inner: FaceVerifier, settings: ChipSettings) -> None:
        self.inner, self.settings = inner, settings

    def __getattr__(self, name: str) -> Any:  # threshold, config_warnings ... of the face
        return getattr(self.inner, name)

    def verify(self, document: DocumentOutcome, capture: CaptureOutcome) -> MatchDecision:
        pending = document.chip
        if not isinstance(pending, PendingChip):
            return self.inner.verify(document, capture)
        t0 = time.perf_counter()
        verdict = pending.result(self.settings.portrait_timeout_s)
        waited_ms = (time.perf_counter() - t0) * 1000
        timings = {**pending.session.timings_ms, "waited_for_chip_ms": waited_ms}
        access = pending.session.access
        reasons: tuple[str, ...] = ()
        # the chip's portrait, decoded whenever it was read: the officer compares it with
        # the page's even when the chip is not authentic (a swapped photo shows there)
        shown = _decode(verdict.portrait.image) if verdict and verdict.portrait else None
        chip_image = None
        if verdict is None:
            reasons = (pending.error or CHIP_PORTRAIT_TIMEOUT,)
        elif not verdict.authentic:
            reasons = (CHIP_NOT_AUTHENTIC, *verdict.reasons)
        else:
            chip_image = shown
            if chip_image is None:
                reasons = (CHIP_PORTRAIT_UNREADABLE,)
        if chip_image is None:
            if self.settings.required:
                summary = _summary(access, verdict, reference="none", reasons=reasons,
                                   timings=timings)
                return MatchDecision(False, float("nan"), float(self.inner_threshold()),
                                     reasons=reasons, record={"chip": summary},
                                     chip_portrait=shown)
            decision = self.inner.verify(document, capture)
            summary = _summary(access, verdict, reference="page", reasons=reasons,
                               timings=timings)
            return replace(decision, record={**decision.record, "chip": summary},
                           chip_portrait=shown)
        chip_doc = replace(document, portrait=chip_image,
                           mrz={k: v for k, v in document.mrz.items() if k != "photo"})
        # the page's portrait as the cross-check, beside the decision (not after it: the
        # traveller waits in the zone for this step)
        pages: list[MatchDecision] = []
        cross_thread = None
        if document.portrait is not None:
            cross_thread = threading.Thread(
                target=lambda: pages.append(self.inner.verify(document, capture)),
                name="chip-cross-check", daemon=True)
            cross_thread.start()
        decision = self.inner.verify(chip_doc, capture)
        cross: dict[str, Any] = {"page_portrait": document.portrait is not None}
        if cross_thread is not None:
            cross_thread.join(self.settings.portrait_timeout_s)
            if pages:
                page = pages[0]
                cross.update({"page_score": None if page.score != page.score
                              else round(page.score, 4), "page_match": page.match})
        summary = _summary(access, verdict, reference="chip", timings=timings)
        summary["cross_check"] = cross
        return replace(decision, record={**decision.record, "chip": summary},
                       chip_portrait=chip_image)

    def inner_threshold(self) -> float:
        return float(getattr(self.inner, "threshold", float("nan")))


def default_trust_path(state_dir: Path) -> str:
    return str(state_dir / "trust")


def open_chip_reader(url: str) -> ChipReader:
    """``pcsc:NAME`` / ``pcsc:`` (the only backend so far; a vendor SDK would add one)."""
    from hardware.chip.pcsc import PcscReader

    if not url.startswith("pcsc:"):
        raise ValueError(f"[devices] chip {url!r}: use pcsc:READER NAME or pcsc: (the first "
                         "reader)")
    return PcscReader.from_url(url)


def chip_health(reader: ChipReader, trust: TrustSource) -> DeviceHealth:
    health = trust.health()
    if not health.ok:
        return health
    return reader.health()


__all__ = ["CHIP_NOT_AUTHENTIC", "ChipDocumentCheck", "ChipPortraitVerifier", "ChipSettings",
           "PendingChip", "TrustSource", "chip_health", "default_trust_path",
           "open_chip_reader"]
