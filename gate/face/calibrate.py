"""Calibration: false-match and false-non-match rates against the decision threshold.

From a labelled pair set (document portrait vs live frame, same person or not) the pack
scores every pair; the threshold for a target FMR is the lowest score at which no more
than FMR × (impostor pairs) impostors still match. With *n* impostor pairs the smallest
FMR that can be measured is 1/n: below that the threshold is pinned just above the
highest impostor score and the result is flagged ``"measurable": false`` — a small pair
set cannot certify FMR 1e-4, and the calibration file says so instead of pretending.
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


def calibrate(scores: Scores, targets: Sequence[float]) -> dict[str, Any]:
    thresholds: dict[str, float] = {}
    table: list[dict[str, Any]] = []
    for target in targets:
        t, measurable = threshold_for_fmr(scores.impostor, target)
        fmr, fnmr = fmr_fnmr(scores, np.array([t]))
        acquired = scores.genuine[np.isfinite(scores.genuine)]
        fnmr_acquired = float(np.mean(acquired < t)) if acquired.size else float("nan")
        thresholds[fmr_key(target)] = round(t, 6)
        table.append({"target_fmr": target, "threshold": round(t, 6),
                      "fmr": float(fmr[0]), "fnmr": float(fnmr[0]),
                      "fnmr_acquired": fnmr_acquired, "measurable": measurable})
    return {
        "genuine_pairs": len(scores.genuine), "impostor_pairs": len(scores.impostor),
        "failed_pairs": scores.failed,
        # genuine pairs without a face found count as false non-matches in "fnmr";
        # "fnmr_acquired" leaves them out (failure to acquire is reported apart)
        "genuine_failed_to_acquire": int(np.sum(~np.isfinite(scores.genuine))),
        "fmr_resolution": 1.0 / max(len(scores.impostor), 1),
        "genuine_score": _summary(scores.genuine), "impostor_score": _summary(scores.impostor),
        "thresholds": thresholds, "operating_points": table,
    }


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


def folder_pairs(root: Path) -> Iterator[LabelledPair]:
    """``root/<identity>/*.jpg|jpeg|png|jp2``: the first image (sorted) of each identity is
    its reference; every other image is a live sample, compared with every reference.

    Files are read through :mod:`hardware.images` (regular files, JPEG/PNG/JPEG 2000 by
    magic bytes, sizes checked before decoding); a file it refuses is left out."""
    refs: dict[str, np.ndarray] = {}
    lives: dict[str, list[np.ndarray]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir()
                       if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".jp2", ".j2k"))
        imgs = [img for f in files if (img := images.load(f)[0]) is not None]
        if len(imgs) >= 2:
            refs[d.name], lives[d.name] = imgs[0], imgs[1:]
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
