"""Cutting a canonical MRZ into its fixed-pitch character cells.

OCR-B in an MRZ is monospaced at ten characters per inch, so once the lines are
horizontal the cells follow from the ends of the ink on each line and the known number of
characters (30, 36 or 44): no per-glyph segmentation that blur or touching glyphs can break.
Ink is measured against a local background (a grey-level closing), which takes out uneven
light and the pastel security print before the cells are cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gate.document.locate import PITCH, MrzZone

CELL_H, CELL_W = 32, 28
#: Mean OCR-B side bearing as a fraction of the advance (measured on OCRB.otf).
BEARING = 0.16


@dataclass(frozen=True)
class CellGrid:
    cells: np.ndarray  # float32 (lines*n, CELL_H, CELL_W), ink 1, paper 0
    n: int
    lines: int
    ok: bool  # every line had ink where it should


def ink_image(canonical: np.ndarray) -> np.ndarray:
    """Ink density in [0, 1] relative to the local paper brightness."""
    g = canonical.astype(np.float32)
    h, w = g.shape
    # The paper level varies slowly: estimate it on a quarter-size copy (much faster).
    small = cv2.resize(g, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (PITCH // 2 + 1, PITCH // 2 + 1))
    bg_small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, k)
    bg_small = cv2.GaussianBlur(bg_small, (0, 0), PITCH / 8)
    bg = cv2.resize(bg_small, (w, h), interpolation=cv2.INTER_LINEAR)
    ink = np.clip((bg - g) / np.maximum(bg, 1.0), 0.0, 1.0)
    return ink


def cut(zone: MrzZone, n: int, ink: np.ndarray | None = None) -> CellGrid:
    """The ``len(zone.lines) × n`` cells of ``zone``, each resized to CELL_H × CELL_W."""
    if ink is None:
        ink = ink_image(zone.canonical)
    h = ink.shape[0]
    k = len(zone.line_y)
    sep = (zone.line_y[-1] - zone.line_y[0]) / max(k - 1, 1)
    out = np.zeros((k * n, CELL_H, CELL_W), np.float32)
    ok = True
    for row, yc in enumerate(zone.line_y):
        y0, y1 = max(0, round(yc - sep / 2)), min(h, round(yc + sep / 2))
        strip = ink[y0:y1]
        grid = _fit_grid(strip, zone.span_x, n) if strip.size else None
        if grid is None:
            ok = False
            continue
        norm, edges, top, bottom = grid
        gh = bottom - top
        ty0, ty1 = top - 0.15 * gh, bottom + 0.15 * gh
        for i in range(n):
            wi = edges[i + 1] - edges[i]
            out[row * n + i] = _cell(norm, edges[i] - 0.15 * wi, edges[i + 1] + 0.15 * wi, ty0, ty1)
    return CellGrid(out, n, k, ok)


def _fit_grid(
    strip: np.ndarray, span_x: tuple[float, float], n: int
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(normalised strip, the n+1 cell edges in x, glyph top, glyph bottom).

    Glyphs are connected components of glyph size near the line's middle; their centres
    are fitted to the 1-D projective grid ``x(u) = (a·u + b) / (c·u + 1)``, ``u = i + ½`` for
    integer ``i`` — a least-squares fit over every glyph, so stray print at a line end or one
    broken glyph cannot shift the grid, and what perspective the line-end homography left
    (its ends are only a few millimetres apart vertically) is taken out along the line.
    """
    scale = float(np.percentile(strip, 99.5))
    if scale < 0.05:
        return None
    norm = np.clip(strip / scale, 0.0, 1.0)
    binary = (norm > 0.4).astype(np.uint8)
    p_est = (span_x[1] - span_x[0]) / n
    count, _, stats, cent = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return None
    x, y, w, hh = (stats[1:, i].astype(float) for i in range(4))
    cx = cent[1:, 0]
    mid = strip.shape[0] / 2
    keep = (hh >= 0.55 * p_est) & (hh <= 1.5 * p_est) & (w <= 1.3 * p_est) & (w >= 0.15 * p_est)
    keep &= np.abs(y + hh / 2 - mid) < 0.6 * p_est
    keep &= (cx > span_x[0] - 1.5 * p_est) & (cx < span_x[1] + 1.5 * p_est)
    if keep.sum() < max(3, n // 4):
        return None
    x, y, w, hh, cx = x[keep], y[keep], w[keep], hh[keep], cx[keep]
    centres = x + w / 2
    left, right = float(x.min()), float((x + w).max())
    p = (right - left) / (n - 2 * BEARING)
    x0 = left - BEARING * p
    a, b, c = p, x0, 0.0  # x(u) = (a·u + b) / (c·u + 1)
    # First indices by walking the glyphs left to right (robust to a pitch that drifts along
    # the line); later ones from the fitted model.
    order = np.argsort(centres)
    centres = centres[order]
    steps = np.maximum(np.round(np.diff(centres) / p), 1)
    first = max(0.0, float(np.round((centres[0] - x0) / p - 0.5)))
    idx = np.concatenate([[first], first + np.cumsum(steps)])
    for it in range(4):
        if it > 0:
            u_est = (centres - b) / np.maximum(a - c * centres, 1e-6)
            idx = np.round(u_est - 0.5)
        inside = (idx >= 0) & (idx < n)
        if inside.sum() < 4 or np.ptp(idx[inside]) < n / 3:
            break
        u = idx[inside] + 0.5
        xs = centres[inside]
        if it == 0:  # affine first: the projective term needs the indices right
            slope, icpt = np.polyfit(u, xs, 1)
            cand = (float(slope), float(icpt), 0.0)
        else:
            design = np.stack([u, np.ones_like(u), -u * xs], 1)
            sol, *_ = np.linalg.lstsq(design, xs, rcond=None)
            cand = (float(sol[0]), float(sol[1]), float(sol[2]))
        pitch_start = cand[0] - cand[2] * cand[1]  # dx/du at u = 0
        if not (0.7 * p_est < pitch_start < 1.4 * p_est) or abs(cand[2]) * n > 0.3:
            break
        a, b, c = cand
    us = np.arange(n + 1, dtype=np.float64)
    edges = (a * us + b) / (c * us + 1.0)
    top = float(np.median(y))
    bottom = float(np.median(y + hh))
    return norm, edges, top, bottom


def _cell(strip: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    sx = (x1 - x0) / CELL_W
    sy = (y1 - y0) / CELL_H
    m = np.array([[sx, 0, x0], [0, sy, y0]], np.float32)
    return cv2.warpAffine(
        strip,
        m,
        (CELL_W, CELL_H),
        flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
