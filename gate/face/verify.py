"""1:1 verification: the document portrait against the best live frames.

The decision threshold is not a guess: it comes from a calibration (``gate calibrate``)
that measured the false-match rate of this pack against score, stored beside the pack
as ``calibration.json`` keyed by target FMR. Without a calibration the pack's own default
is used and the decision record says so (``threshold_source = "pack-default"``).

An explicit ``[face] threshold`` less strict than the calibrated one for the configured
target FMR lets more impostors through than the lane was calibrated for: it is kept (a
site may have its reasons) but never silently — :class:`FaceMatch` logs
``config.threshold_below_calibrated`` with both numbers, holds it in ``config_warnings``
(the lane service shows it on ``/healthz`` and ``/metrics``) and writes both numbers into
every decision record; ``gate run --check`` shows it without loading the model
(:func:`check_pack_threshold`).

Presentation-attack detection (PAD) plugs in at :class:`PresentationAttackCheck`; until
one is configured, the record says ``pad.checked = False`` so an auditor sees it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from gate.schema import ConfigWarning
from gate.stages import CaptureOutcome, DocumentOutcome, MatchDecision
from models.face import DetectedFace, FaceModel

log = structlog.get_logger(__name__)

NO_FACE_IN_DOCUMENT = "NO_FACE_IN_DOCUMENT"
NO_FACE_IN_LIVE = "NO_FACE_IN_LIVE"
SCORE_BELOW_THRESHOLD = "SCORE_BELOW_THRESHOLD"
PRESENTATION_ATTACK = "PRESENTATION_ATTACK"


@dataclass(frozen=True)
class PadResult:
    bona_fide: bool
    score: float
    method: str


class PresentationAttackCheck(Protocol):
    """A PAD method (texture, depth, challenge–response…) judging the live frames."""

    def check(self, frames: Sequence[np.ndarray],
              quality: Sequence[Mapping[str, float]]) -> PadResult: ...


def fmr_key(target_fmr: float) -> str:
    return f"{target_fmr:.0e}"


def calibrated_threshold(calibration: Mapping[str, Any] | None, pack_hash: str | None,
                         target_fmr: float) -> float | None:
    """The calibration's threshold for ``target_fmr``, if it was made for this pack
    (``pack_hash`` None: not known yet, the calibration is taken at its word)."""
    if not calibration or (pack_hash is not None
                           and calibration.get("pack_hash") != pack_hash):
        return None
    t = calibration.get("thresholds", {}).get(fmr_key(target_fmr))
    return None if t is None else float(t)


def resolve_threshold(model: FaceModel, target_fmr: float, threshold: float | None
                      ) -> tuple[float, str]:
    """Explicit setting > calibration for this FMR and this pack > the pack's default."""
    if threshold is not None:
        return float(threshold), "configured"
    cal = model.calibration
    t = calibrated_threshold(cal, model.pack_hash, target_fmr)
    if t is not None and cal is not None:
        return t, f"calibration:{cal.get('pairs', '?')}"
    return model.default_threshold, "pack-default"


THRESHOLD_WARNING = "config.threshold_below_calibrated"


def threshold_warning(threshold: float | None, calibrated: float | None, target_fmr: float,
                      pack: str) -> ConfigWarning | None:
    """A warning when an explicit threshold is less strict than the calibrated one."""
    if threshold is None or calibrated is None or threshold >= calibrated:
        return None
    return ConfigWarning(
        THRESHOLD_WARNING,
        f"[face] threshold {threshold:g} is less strict than the calibrated {calibrated:g} "
        f"for target FMR {fmr_key(target_fmr)} (pack {pack}): more impostors match than "
        "the lane was calibrated for",
        {"threshold": threshold, "calibrated": calibrated, "target_fmr": target_fmr,
         "pack": pack})


def check_pack_threshold(pack: str, target_fmr: float, threshold: float | None
                         ) -> tuple[str, ConfigWarning | None]:
    """For ``gate run --check``: the threshold the lane will use and, if it is less strict
    than the calibrated one, the warning — from the pack's files, without loading it."""
    from models.pack import (
        SHIPPED_CALIBRATIONS,
        PackError,
        cache_root,
        read_calibration,
        read_manifest,
    )

    folder = Path(pack) if Path(pack).is_dir() else cache_root() / pack
    pack_hash: str | None = None
    calibration: dict[str, Any] | None = None
    if folder.is_dir():
        try:
            pack_hash = read_manifest(folder).pack_hash
        except (PackError, KeyError, OSError):
            pack_hash = None
        calibration = read_calibration(folder)
    elif (SHIPPED_CALIBRATIONS / f"{pack}.json").is_file():  # not built yet: the shipped one
        calibration = read_calibration(SHIPPED_CALIBRATIONS / pack)
    calibrated = calibrated_threshold(calibration, pack_hash, target_fmr)
    where = f"pack {pack}, target FMR {fmr_key(target_fmr)}"
    warning = threshold_warning(threshold, calibrated, target_fmr, pack)
    if warning is not None:
        return warning.message, warning
    if threshold is not None:
        known = f"calibrated {calibrated:g}" if calibrated is not None else "no calibration"
        return f"threshold {threshold:g} configured ({known}; {where})", None
    if calibrated is not None:
        return f"threshold {calibrated:g} from the calibration ({where})", None
    return f"no calibration for {where}: the pack's default threshold", None


def _box_from_quality(q: Mapping[str, float]) -> tuple[float, float, float, float] | None:
    try:
        return (q["box_x0"], q["box_y0"], q["box_x1"], q["box_y1"])
    except KeyError:
        return None


class FaceMatch:
    """The lane's :class:`gate.stages.FaceVerifier`."""

    def __init__(self, model: FaceModel, target_fmr: float = 1e-3,
                 threshold: float | None = None,
                 pad: PresentationAttackCheck | None = None) -> None:
        self.model = model
        self.target_fmr = target_fmr
        self.threshold, self.threshold_source = resolve_threshold(model, target_fmr, threshold)
        self.calibrated_threshold = calibrated_threshold(model.calibration, model.pack_hash,
                                                         target_fmr)
        self.pad = pad
        warning = threshold_warning(threshold, self.calibrated_threshold, target_fmr,
                                    model.pack_id)
        #: what an officer or maintainer must be shown about this configuration
        self.config_warnings: tuple[ConfigWarning, ...] = () if warning is None else (warning,)
        if warning is not None:
            log.warning(warning.code, **warning.values, message=warning.message)

    def _base_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"pack": self.model.pack_id, "target_fmr": self.target_fmr}
        if self.config_warnings:  # the case's evidence says the lane ran below calibration
            record["threshold_below_calibrated"] = {
                "threshold": self.threshold, "calibrated": self.calibrated_threshold}
        return record

    def _embed_largest(self, image: np.ndarray, box: tuple[float, float, float, float] | None,
                       timings: dict[str, float]) -> np.ndarray | None:
        t = time.perf_counter()
        if box is not None:
            face = DetectedFace(box, 1.0)
        else:
            faces = self.model.detect(image)
            if not faces:
                timings["detect_ms"] = timings.get("detect_ms", 0) + _ms(t)
                return None
            face = faces[0]
        t1 = time.perf_counter()
        timings["detect_ms"] = timings.get("detect_ms", 0) + (t1 - t) * 1000
        face = self.model.landmarks(image, face)
        chip = self.model.align(image, face)
        t2 = time.perf_counter()
        timings["align_ms"] = timings.get("align_ms", 0) + (t2 - t1) * 1000
        emb = self.model.embed([chip])[0]
        timings["embed_ms"] = timings.get("embed_ms", 0) + _ms(t2)
        return emb

    def compare(self, reference: np.ndarray, lives: Sequence[np.ndarray],
                live_quality: Sequence[Mapping[str, float]] = (),
                reference_box: tuple[float, float, float, float] | None = None
                ) -> MatchDecision:
        """Score a portrait (or a whole document page) against live frames.

        ``reference_box`` (x0, y0, x1, y1) is where the document stage found the face in
        the portrait; it is used only when this model's detector finds none there, so
        the two stages cannot disagree on whether the document holds a face.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        record: dict[str, Any] = {
            **self._base_record(), "pack_hash": self.model.pack_hash,
            "provider": self.model.provider,
            "threshold_source": self.threshold_source, "live_quality": list(live_quality),
        }
        ref = self._embed_largest(reference, None, timings)
        if ref is None and reference_box is not None:
            ref = self._embed_largest(reference, reference_box, timings)
            record["reference_box"] = "document_stage"
        if ref is None:
            return self._decide(False, float("nan"), (NO_FACE_IN_DOCUMENT,), record, timings,
                                t0)
        scores: list[float | None] = []
        for i, live in enumerate(lives):
            q = live_quality[i] if i < len(live_quality) else {}
            emb = self._embed_largest(live, _box_from_quality(q), timings)
            scores.append(None if emb is None else self.model.score(ref, emb))
        record["frame_scores"] = [None if s is None else round(s, 4) for s in scores]
        valid = [s for s in scores if s is not None]
        if not valid:
            return self._decide(False, float("nan"), (NO_FACE_IN_LIVE,), record, timings, t0)
        score = max(valid)
        reasons: list[str] = []
        if self.pad is not None:
            result = self.pad.check(lives, live_quality)
            record["pad"] = {"checked": True, "bona_fide": result.bona_fide,
                             "score": result.score, "method": result.method}
            if not result.bona_fide:
                reasons.append(PRESENTATION_ATTACK)
        else:
            record["pad"] = {"checked": False}
        if score < self.threshold:
            reasons.append(SCORE_BELOW_THRESHOLD)
        return self._decide(not reasons, score, tuple(reasons), record, timings, t0)

    def verify(self, document: DocumentOutcome, capture: CaptureOutcome) -> MatchDecision:
        if document.portrait is None:
            return self._decide(False, float("nan"), (NO_FACE_IN_DOCUMENT,),
                                self._base_record(), {}, time.perf_counter())
        if not capture.ok or not capture.frames:
            return self._decide(False, float("nan"), (NO_FACE_IN_LIVE,),
                                self._base_record(), {}, time.perf_counter())
        photo = document.mrz.get("photo") or {}
        found = photo.get("face_box") if isinstance(photo, Mapping) else None
        box = None
        if found is not None and len(found) == 4:
            x, y, w, h = (float(v) for v in found)
            box = (x, y, x + w, y + h)
        return self.compare(document.portrait, capture.frames, capture.quality,
                            reference_box=box)

    def _decide(self, match: bool, score: float, reasons: tuple[str, ...],
                record: dict[str, Any], timings: dict[str, float], t0: float) -> MatchDecision:
        record["timings_ms"] = {k: round(v, 2) for k, v in timings.items()}
        record["timings_ms"]["total_ms"] = round(_ms(t0), 2)
        decision = MatchDecision(match=match, score=score, threshold=self.threshold,
                                 reasons=reasons, record=record)
        log.info("face_match", **decision.log_summary())
        return decision


def _ms(t: float) -> float:
    return (time.perf_counter() - t) * 1000
