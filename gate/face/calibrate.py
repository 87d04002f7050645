"""Calibration: false-match and false-non-match rates against the decision threshold.

From a labelled pair set (document portrait vs live frame, same person or not) the pack
scores every pair; the threshold for a target FMR is the lowest score at which no more
than FMR × (impostor pairs) impostors still match. With *n* impostor pairs the smallest
FMR that can be measured is 1/n: below that the threshold is pinned just above the
highest impostor score and the result is flagged ``"measurable": false`` — a small pair
set cannot certify FMR 1e-4, and the calibration file says so instead of pretending: such
a target gets no threshold in ``thresholds`` (the verifier then says it has no calibration
for it) and its operating point has ``"threshold": null``.

Every FMR and FNMR is reported with its counts and its 95 % confidence interval
(:mod:`gate.face.rates`), and the DET curve as a table of points (:func:`det_points`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gate.face.rates import impostors_needed, rate, upper_bound
from gate.face.verify import fmr_key
from hardware import images
from models.face import FaceModel


@dataclass(frozen=True)
class LabelledPair:
    reference: np.ndarray
    live: np.ndarray
    same: bool


@dataclass(frozen=True)
class Scores:
    genuine: np.ndarray
    impostor: np.ndarray
    failed: int  # pairs where a face was not found (counted as non-matches in FNMR)


def _digest(img: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest()


def score_pairs(model: FaceModel, pairs: Iterable[LabelledPair]) -> Scores:
    """Score every pair; each distinct image is embedded once."""
    cache: dict[bytes, np.ndarray | None] = {}

    def embed(img: np.ndarray) -> np.ndarray | None:
        key = _digest(img)
        if key not in cache:
            faces = model.detect(img)
            if not faces:
                cache[key] = None
            else:
                face = model.landmarks(img, faces[0])
                cache[key] = model.embed([model.align(img, face)])[0]
        return cache[key]

    genuine: list[float] = []
    impostor: list[float] = []
    failed = 0
    for pair in pairs:
        a, b = embed(pair.reference), embed(pair.live)
        if a is None or b is None:
            failed += 1
            if pair.same:
                genuine.append(-math.inf)
            continue
        (genuine if pair.same else impostor).append(model.score(a, b))
    return Scores(np.asarray(genuine, np.float64), np.asarray(impostor, np.float64), failed)


def fmr_fnmr(scores: Scores, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FMR(t) = share of impostors scoring ≥ t; FNMR(t) = share of genuines scoring < t."""
    imp = np.sort(scores.impostor)
    gen = np.sort(scores.genuine)
    fmr = (len(imp) - np.searchsorted(imp, thresholds, side="left")) / max(len(imp), 1)
    fnmr = np.searchsorted(gen, thresholds, side="left") / max(len(gen), 1)
    return fmr, fnmr


def threshold_for_fmr(impostor: np.ndarray, target: float) -> tuple[float, bool]:
    """Lowest threshold with FMR ≤ target, and whether the pair set can measure it."""
    n = len(impostor)
    if n == 0:
        raise ValueError("no impostor pairs: FMR cannot be measured")
    desc = np.sort(impostor)[::-1]
    allowed = math.floor(target * n)  # impostors that may still match
    measurable = allowed >= 1
    cut = desc[allowed] if allowed < n else desc[-1]
    return float(np.nextafter(cut, math.inf)), measurable


def threshold_for_fmr_bound(impostor: np.ndarray, target: float) -> float | None:
    """Lowest threshold at which the pair set *shows* FMR ≤ target: the one-sided 95 %
    upper bound of the FMR measured there (k false matches of n) is at most the target.
    None when even no false match at all would not show it (n < ≈ 3/target)."""
    n = len(impostor)
    if n == 0:
        raise ValueError("no impostor pairs: FMR cannot be measured")
    if upper_bound(0, n) > target:
        return None
    desc = np.sort(impostor)[::-1]
    k = 0
    while k + 1 < n and upper_bound(k + 1, n) <= target:
        k += 1
    # k impostors may match: the cut sits just above the (k+1)-th highest score; ties can
    # let fewer match, never more
    return float(np.nextafter(desc[k], math.inf))


def _rates_at(scores: Scores, t: float) -> dict[str, Any]:
    """FMR, FNMR (failures to acquire counted as non-matches) and FNMR over the acquired
    faces at threshold ``t``, each with its counts and 95 % interval."""
    acquired = scores.genuine[np.isfinite(scores.genuine)]
    false_matches = int(np.sum(scores.impostor >= t))
    out: dict[str, Any] = {"fmr_ci": rate(false_matches, len(scores.impostor)).as_dict()}
    if len(scores.genuine):
        out["fnmr_ci"] = rate(int(np.sum(scores.genuine < t)), len(scores.genuine)).as_dict()
    if acquired.size:
        out["fnmr_acquired_ci"] = rate(int(np.sum(acquired < t)), acquired.size).as_dict()
    return out


def calibrate(scores: Scores, targets: Sequence[float]) -> dict[str, Any]:
    """For each target FMR, the lowest threshold at which the pair set shows FMR ≤ target
    with 95 % confidence (:func:`threshold_for_fmr_bound`), and its rates with their
    intervals. A target the set is too small for (fewer than ≈ 3/FMR impostor pairs) is
    ``measurable: false`` with no threshold: the verifier then has no calibration for it."""
    thresholds: dict[str, float] = {}
    table: list[dict[str, Any]] = []
    acquired = scores.genuine[np.isfinite(scores.genuine)]
    for target in targets:
        bound = threshold_for_fmr_bound(scores.impostor, target)
        needed = impostors_needed(target)
        point: dict[str, Any] = {
            "target_fmr": target, "measurable": bound is not None,
            # impostor comparisons, none matching, that show FMR ≤ target at 95 %
            "impostor_pairs_needed": needed,
            "rule": "lowest threshold whose one-sided 95 % upper FMR bound <= target",
        }
        if bound is None:
            point.update({"threshold": None, "fmr": None, "fnmr": None,
                          "fnmr_acquired": None,
                          "why": f"{len(scores.impostor)} impostor pairs cannot show FMR <= "
                                 f"{fmr_key(target)} (at least {needed} without a false "
                                 "match needed)"})
            table.append(point)
            continue
        t = bound
        fmr, fnmr = fmr_fnmr(scores, np.array([t]))
        thresholds[fmr_key(target)] = round(t, 6)
        rates = _rates_at(scores, t)
        point.update({"threshold": round(t, 6), "fmr": float(fmr[0]), "fnmr": float(fnmr[0]),
                      "fnmr_acquired": float(np.mean(acquired < t)) if acquired.size
                      else None, **rates,
                      "fmr_upper95": upper_bound(rates["fmr_ci"]["errors"],
                                                 len(scores.impostor))})
        table.append(point)
    return {
        "genuine_pairs": len(scores.genuine), "impostor_pairs": len(scores.impostor),
        "failed_pairs": scores.failed,
        # genuine pairs without a face found count as false non-matches in "fnmr";
        # "fnmr_acquired" leaves them out (failure to acquire is reported apart)
        "genuine_failed_to_acquire": int(np.sum(~np.isfinite(scores.genuine))),
        "fmr_resolution": 1.0 / max(len(scores.impostor), 1),
        "genuine_score": _summary(scores.genuine), "impostor_score": _summary(scores.impostor),
        "thresholds": thresholds, "operating_points": table,
        "equal_error_rate": equal_error_rate(scores),
        "det": det_points(scores),
    }


def at_threshold(scores: Scores, t: float) -> dict[str, Any]:
    """The rates at a given threshold (e.g. the shipped one), with their intervals."""
    fmr, fnmr = fmr_fnmr(scores, np.array([t]))
    return {"threshold": round(t, 6), "fmr": float(fmr[0]), "fnmr": float(fnmr[0]),
            **_rates_at(scores, t)}


def equal_error_rate(scores: Scores) -> dict[str, float]:
    """Where FMR and FNMR cross (over the scores themselves as thresholds); with no
    overlap it is 0 at every threshold between the highest impostor and the lowest
    genuine score."""
    grid = np.unique(np.concatenate([scores.impostor,
                                     scores.genuine[np.isfinite(scores.genuine)]]))
    grid = np.concatenate([grid, [np.nextafter(grid[-1], math.inf)]]) if grid.size else grid
    if grid.size == 0:
        return {}
    fmr, fnmr = fmr_fnmr(scores, grid)
    i = int(np.argmin(np.abs(fmr - fnmr) + np.maximum(fmr, fnmr) * 1e-9))
    return {"eer": round(float(max(fmr[i], fnmr[i])), 6), "threshold": round(float(grid[i]), 6)}


def det_points(scores: Scores, fmrs: Sequence[float] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4,
                                                        1e-4)) -> list[dict[str, Any]]:
    """The DET curve as a table of point estimates: for each FMR the pair set can resolve
    (at least 1/FMR impostor pairs), the lowest threshold with at most FMR × n false
    matches and the FNMR there, with counts; finer FMRs are listed ``measurable: false``.
    (The operating points of :func:`calibrate` ask more: the 95 % bound.)"""
    rows: list[dict[str, Any]] = []
    for target in fmrs:
        t, measurable = threshold_for_fmr(scores.impostor, target)
        if not measurable:
            rows.append({"fmr_target": target, "measurable": False})
            continue
        fmr, fnmr = fmr_fnmr(scores, np.array([t]))
        rows.append({"fmr_target": target, "measurable": True, "threshold": round(t, 6),
                     "fmr": float(fmr[0]), "fnmr": float(fnmr[0]),
                     "false_matches": int(np.sum(scores.impostor >= t)),
                     "false_non_matches": int(np.sum(scores.genuine < t))})
    return rows


def _summary(a: np.ndarray) -> dict[str, float]:
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return {}
    return {"min": round(float(finite.min()), 4), "median": round(float(np.median(finite)), 4),
            "max": round(float(finite.max()), 4)}


def plot_det(scores: Scores, path: Path, title: str) -> None:
    """DET curve (FNMR against FMR, log axes) and the two score histograms, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = np.concatenate([scores.genuine[np.isfinite(scores.genuine)], scores.impostor])
    grid = np.linspace(finite.min() - 0.01, finite.max() + 0.01, 400)
    fmr, fnmr = fmr_fnmr(scores, grid)
    floor = 0.5 / max(len(scores.impostor), len(scores.genuine), 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.loglog(np.maximum(fmr, floor), np.maximum(fnmr, floor), lw=2)
    ax1.set_xlabel("FMR")
    ax1.set_ylabel("FNMR")
    ax1.set_title("DET")
    ax1.axvline(1.0 / max(len(scores.impostor), 1), ls=":", c="grey",
                label="FMR resolution (1/impostor pairs)")
    ax1.legend(loc="lower left")
    ax1.grid(True, which="both", alpha=0.3)
    ax2.hist(scores.impostor, bins=40, alpha=0.6, label=f"impostor ({len(scores.impostor)})")
    ax2.hist(scores.genuine[np.isfinite(scores.genuine)], bins=40, alpha=0.6,
             label=f"genuine ({len(scores.genuine)})")
    ax2.set_xlabel("score")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sim_pairs(variants: int, seed: int = 0, portraits: int = 1) -> Iterator[LabelledPair]:
    from sim.camera import pairs

    for p in pairs(variants=variants, seed=seed, portraits=portraits):
        yield LabelledPair(p.reference, p.live, p.same)


def _identities(root: Path) -> dict[str, list[np.ndarray]]:
    """Images per identity folder; an image identical to one already read (faces-johns
    holds one photo twice) is left out: its pair would score 1 and prove nothing."""
    out: dict[str, list[np.ndarray]] = {}
    seen: set[bytes] = set()
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir()
                       if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".jp2", ".j2k"))
        out[d.name] = []
        for f in files:
            img = images.load(f)[0]
            if img is not None and (key := _digest(img)) not in seen:
                seen.add(key)
                out[d.name].append(img)
    return out


def folder_pairs(root: Path, every_pair: bool = False) -> Iterator[LabelledPair]:
    """``root/<identity>/*.jpg|jpeg|png|jp2``: the first image (sorted) of each identity is
    its reference; every other image is a live sample, compared with every reference.

    ``every_pair``: every unordered pair of images once instead (genuine within an
    identity, impostor across; an identity with one image gives impostor pairs only) —
    many more pairs from a small set of real photographs, though not independent ones.

    Files are read through :mod:`hardware.images` (regular files, JPEG/PNG/JPEG 2000 by
    magic bytes, sizes checked before decoding); a file it refuses is left out."""
    people = _identities(root)
    if every_pair:
        flat = [(pid, img) for pid, imgs in people.items() for img in imgs]
        for i, (a, ia) in enumerate(flat):
            for b, ib in flat[i + 1:]:
                yield LabelledPair(ia, ib, a == b)
        return
    refs: dict[str, np.ndarray] = {}
    lives: dict[str, list[np.ndarray]] = {}
    for pid, imgs in people.items():
        if len(imgs) >= 2:
            refs[pid], lives[pid] = imgs[0], imgs[1:]
    for rid, ref in refs.items():
        for lid, samples in lives.items():
            for live in samples:
                yield LabelledPair(ref, live, rid == lid)


def write_calibration(folder: Path, model: FaceModel, result: dict[str, Any], source: str
                      ) -> Path:
    data = {"pack": model.pack_id, "pack_hash": model.pack_hash, "pairs": source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    path = folder / "calibration.json"
    path.write_text(json.dumps(data, indent=2))
    return path
