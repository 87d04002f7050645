"""Recognising MRZ characters: an OCR-B cell classifier, field-aware decoding, correction.

The classifier (``models/ocrb/ocrb.onnx``, trained by ``models/ocrb/train.py``) gives a
probability for each of the 37 MRZ characters in each cell. Decoding then uses what the
layout knows: a date position can only hold a digit, a name only a letter or ``<``.

Correction is deliberately narrow. Only where a check digit covers a field, and only between
characters OCR-B readers are known to confuse (O/0/D/Q, I/1/L, B/8, S/5, Z/2, G/6…), may the
decoder pick the classifier's second choice, and only when that makes the check digit hold.
Names, nationality and sex have no check digit: their confidence is reported, never
"corrected".
"""

from __future__ import annotations

import functools
import itertools
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hardware.docreader import mrz as icao

MODEL_PATH = pathlib.Path(__file__).resolve().parents[2] / "models" / "ocrb" / "ocrb.onnx"
_IDX = {c: i for i, c in enumerate(icao.ALPHABET)}

CONFUSABLE: dict[str, str] = {
    "0": "ODQ", "O": "0DQ", "D": "0O", "Q": "0O",
    "1": "IL7", "I": "1L", "L": "1I", "7": "1T", "T": "7",
    "8": "B", "B": "8", "5": "S", "S": "5", "2": "Z", "Z": "2", "6": "G", "G": "6",
    "4": "A", "A": "4", "U": "V", "V": "U", "<": "KX", "K": "<", "X": "<",
    "3": "9", "9": "3",
}


class OcrbRecogniser:
    """The cell classifier on onnxruntime (CPU; one thread: the lane PC is small)."""

    def __init__(self, model_path: str | os.PathLike[str] = MODEL_PATH, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def probabilities(self, cells: np.ndarray) -> np.ndarray:
        """(N, H, W) ink cells -> (N, 37) probabilities over :data:`icao.ALPHABET`."""
        if len(cells) == 0:
            return np.zeros((0, len(icao.ALPHABET)), np.float32)
        x = np.ascontiguousarray(cells[:, None], dtype=np.float32)
        out = self.session.run(None, {"cells": x})[0]
        return np.asarray(out, dtype=np.float32)


@functools.lru_cache(maxsize=2)
def default_recogniser() -> OcrbRecogniser:
    return OcrbRecogniser()


@functools.lru_cache(maxsize=16)
def _masks(mrz_type: str) -> np.ndarray:
    """(lines, n, 37) booleans: which characters each position may hold."""
    layout = icao.LAYOUTS[mrz_type]
    grid = np.zeros((layout.lines, layout.length, len(icao.ALPHABET)), bool)
    for r, row in enumerate(layout.kinds()):
        for c, kind in enumerate(row):
            for ch in icao.KIND_CHARS[kind]:
                grid[r, c, _IDX[ch]] = True
    return grid


def layout_of(probs: np.ndarray) -> str:
    """Layout from the grid shape and, for 2-line zones, whether the code reads 'V'."""
    lines, n = probs.shape[:2]
    names = icao.SHAPES[(lines, n)]
    if len(names) == 1:
        return names[0]
    visa = int(np.argmax(probs[0, 0])) == _IDX["V"]
    return names[1] if visa else names[0]


@dataclass
class Decoded:
    mrz_type: str
    lines: tuple[str, ...]
    conf: np.ndarray  # (lines, n) probability of the chosen character (within its class)
    corrections: int
    score: float  # mean log-probability of the chosen characters
    checks_ok: bool = False  # every check digit holds (after repair)
    repaired: frozenset[tuple[int, int]] = frozenset()  # positions a check digit corrected


def decode(probs: np.ndarray, mrz_type: str | None = None) -> Decoded:
    """Field-aware decoding of a (lines, n, 37) probability grid, then check-digit repair."""
    mrz_type = mrz_type or layout_of(probs)
    mask = _masks(mrz_type)
    p = np.where(mask, probs, 0.0)
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-12)
    best = p.argmax(-1)
    chars = [[icao.ALPHABET[i] for i in row] for row in best]
    before = [row.copy() for row in chars]
    corrections = _repair(chars, p, icao.LAYOUTS[mrz_type])
    repaired = frozenset(
        (r, c) for r, row in enumerate(chars) for c, ch in enumerate(row) if ch != before[r][c]
    )
    idx = np.array([[_IDX[c] for c in row] for row in chars])
    conf = np.take_along_axis(p, idx[..., None], -1)[..., 0]
    score = float(np.mean(np.log(np.maximum(conf, 1e-9))))
    checks_ok = all(_check_ok(chars, spec) for spec in icao.LAYOUTS[mrz_type].checks)
    return Decoded(mrz_type, tuple("".join(r) for r in chars), conf, corrections, score,
                   checks_ok, repaired)


def _check_ok(chars: list[list[str]], spec: icao.CheckSpec) -> bool:
    lines = ["".join(r) for r in chars]
    return icao._check_value(lines, spec) or _long_ok(lines, spec)


def _long_ok(lines: list[str], spec: icao.CheckSpec) -> bool:
    """A '<' at the document-number check that continues into optional data (TD1/TD2)."""
    if spec.name != "document_number" or lines[spec.at[0]][spec.at[1]] != "<":
        return False
    layout = icao.layout_for(lines)
    if layout is None:
        return False
    number, _, digit, is_long = icao._long_document_number(lines, layout)
    return is_long and digit in icao.DIGITS and digit == icao.check_digit(number)


def _repair(
    chars: list[list[str]], p: np.ndarray, layout: icao.Layout, max_changes: int = 2
) -> int:
    """Swap confusable characters inside check-digit-covered spans until the checks hold.

    Only alternatives the classifier itself gives some probability are tried, best first;
    a repair is kept only if its check digit then holds. Returns the number of changes.
    """
    changes = 0
    # Individual checks first, the composite last (it spans the others).
    for spec in sorted(layout.checks, key=lambda c: c.name == "composite"):
        if _check_ok(chars, spec):
            continue
        positions = [spec.at] + [
            (s.line, i) for s in spec.covers for i in range(s.start, s.end)
        ]
        options: list[tuple[float, tuple[int, int], str]] = []
        for r, c in positions:
            cur = chars[r][c]
            for alt in CONFUSABLE.get(cur, ""):
                q = float(p[r, c, _IDX[alt]])
                if q > 1e-4:
                    cost = np.log(max(float(p[r, c, _IDX[cur]]), 1e-9)) - np.log(q)
                    options.append((float(cost), (r, c), alt))
        options.sort()
        options = options[:12]
        trials: list[tuple[float, tuple[tuple[float, tuple[int, int], str], ...]]] = []
        for k in range(1, max_changes + 1):
            for combo in itertools.combinations(options, k):
                if len({o[1] for o in combo}) < k:
                    continue
                trials.append((sum(o[0] for o in combo), combo))
        trials.sort(key=lambda t: t[0])
        for cost, combo in trials:
            if cost > 12.0:  # more than ~e^12 less likely than what was read: not a repair
                break
            saved = [(pos, chars[pos[0]][pos[1]]) for _, pos, _ in combo]
            for _, (r, c), alt in combo:
                chars[r][c] = alt
            if _check_ok(chars, spec):
                changes += len(combo)
                break
            for (r, c), old in saved:
                chars[r][c] = old
    return changes


def vote(grids: Sequence[np.ndarray]) -> np.ndarray:
    """Combine several frames' probability grids (same shape) by summed log-probability."""
    logp = np.sum([np.log(np.maximum(g, 1e-6)) for g in grids], axis=0)
    logp -= logp.max(-1, keepdims=True)
    e = np.exp(logp)
    return np.asarray(e / e.sum(-1, keepdims=True), dtype=np.float32)
