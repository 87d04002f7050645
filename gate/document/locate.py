"""Finding the MRZ in a page image and bringing it to a canonical, fixed-pitch frame.

Why our own locator and not passporteye's: passporteye finds the zone reliably but takes
0.6–1.4 s a page, most of the lane's budget; the MRZ is the easiest thing on a page to find
(2–3 long, parallel, equally long lines of dark, evenly spaced glyphs), so a morphological
line finder on a reduced copy does it in a few milliseconds and also gives the geometry
(tilt, perspective) that the recogniser needs undone.

The canonical frame: the text lines horizontal, ``PITCH`` pixels per character cell, the
same scale vertically (glyph aspect preserved); ``to_image`` maps it back to the image, which
also anchors the portrait cut-out (the photo sits at a fixed place relative to the MRZ).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PITCH = 20  # canonical pixels per character cell
WORK_SIDE = 1000  # long side of the reduced copy the locator works on


@dataclass(frozen=True)
class TextLine:
    centre: np.ndarray  # (x, y) in image coordinates
    direction: np.ndarray  # unit vector along the line, pointing right (x >= 0)
    length: float
    thickness: float

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        half = self.direction * self.length / 2
        return self.centre - half, self.centre + half


@dataclass(frozen=True)
class MrzZone:
    """A located MRZ: its lines (top to bottom) and the canonical frame."""

    lines: tuple[TextLine, ...]
    canonical: np.ndarray  # grey uint8, lines horizontal
    to_image: np.ndarray  # 3x3 homography canonical -> image
    line_y: tuple[float, ...]  # centre of each text line in the canonical image
    span_x: tuple[float, float]  # left and right end of the lines in the canonical image
    complete: bool  # lines of equal length (a covered part shortens one)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def find_lines(grey: np.ndarray) -> tuple[list[TextLine], float]:
    """Long thin dark text lines, in image coordinates; also the reduction scale used."""
    h, w = grey.shape
    s = WORK_SIDE / max(h, w)
    small = cv2.resize(grey, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    # Dark text on lighter print: black-hat keeps dark things narrower than the kernel.
    rect = cv2.MORPH_RECT
    bh = cv2.morphologyEx(small, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(rect, (21, 21)))
    _, bw = cv2.threshold(bh, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bw = cv2.morphologyEx(bw, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    # Join the glyphs of a line (gaps up to ~1 pitch at this scale), then drop thin print.
    merged = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, cv2.getStructuringElement(rect, (29, 3)))
    merged = cv2.morphologyEx(merged, cv2.MORPH_OPEN, cv2.getStructuringElement(rect, (9, 5)))
    contours, _ = cv2.findContours(merged, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out: list[TextLine] = []
    for c in contours:
        if len(c) < 5:
            continue
        (cx, cy), (rw, rh), ang = cv2.minAreaRect(c)
        length, thick = max(rw, rh), min(rw, rh)
        if thick < 4 or length < 12 * thick or length < 0.15 * WORK_SIDE:
            continue
        theta = np.deg2rad(ang if rw >= rh else ang + 90)
        d = np.array([np.cos(theta), np.sin(theta)])
        if d[0] < 0:
            d = -d
        if abs(d[1]) > 0.4:  # steeper than ~24°: not a line of a page on the reader
            continue
        area = cv2.contourArea(c)
        if area < 0.55 * length * thick:  # ragged: a picture edge, not a text line
            continue
        out.append(TextLine(np.array([cx, cy]) / s, d, length / s, thick / s))
    return out, s


def _group(lines: list[TextLine]) -> list[list[TextLine]]:
    """Sets of 2–3 parallel, stacked, aligned lines of similar length: MRZ candidates."""
    lines = sorted(lines, key=lambda t: t.centre[1])
    used: set[int] = set()
    groups: list[list[TextLine]] = []
    for i, a in enumerate(lines):
        if i in used:
            continue
        group = [a]
        members = [i]
        normal = np.array([-a.direction[1], a.direction[0]])
        for j in range(i + 1, len(lines)):
            b = lines[j]
            last = group[-1]
            if j in used or abs(float(np.dot(a.direction, b.direction))) < 0.995:
                continue
            off = b.centre - last.centre
            across = float(np.dot(off, normal))
            along = float(np.dot(off, a.direction))
            scale = max(a.thickness, b.thickness)
            if not (1.0 * scale < across < 3.5 * scale):
                continue
            if abs(along) > 0.35 * max(a.length, b.length):
                continue
            if min(a.length, b.length) < 0.4 * max(a.length, b.length):
                continue
            group.append(b)
            members.append(j)
            if len(group) == 3:
                break
        # An MRZ line is 30–44 glyphs long: far longer than its height, unlike printed fields.
        if len(group) >= 2 and max(t.length for t in group) >= 18 * group[0].thickness:
            used.update(members)
            groups.append(group)
    return groups


def locate(image: np.ndarray) -> list[MrzZone]:
    """Every MRZ-like zone in the image (more than one: more than one document)."""
    grey = _grey(image)
    lines, _ = find_lines(grey)
    return [_canonical(grey, g) for g in _group(lines)]


def _canonical(grey: np.ndarray, group: list[TextLine]) -> MrzZone:
    top, bottom = group[0], group[-1]
    lengths = [t.length for t in group]
    complete = min(lengths) > 0.93 * max(lengths)
    tl, tr = top.ends()
    bl, br = bottom.ends()
    # Lines of unequal length (one covered or ending early): anchor on the longest's ends.
    longest = max(group, key=lambda t: t.length)
    ll, lr = longest.ends()
    if not complete:
        normal = np.array([-longest.direction[1], longest.direction[0]])
        tl = ll + normal * float(np.dot(top.centre - longest.centre, normal))
        tr = lr + normal * float(np.dot(top.centre - longest.centre, normal))
        bl = ll + normal * float(np.dot(bottom.centre - longest.centre, normal))
        br = lr + normal * float(np.dot(bottom.centre - longest.centre, normal))
    span = float(np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    sep = float(np.linalg.norm((bl + br) / 2 - (tl + tr) / 2)) / max(len(group) - 1, 1)
    # Canonical width: 44 or 30 cells; the 36-cell guess is made later on the same image.
    n_guess = 30 if len(group) == 3 else 44
    width_c = n_guess * PITCH
    k = width_c / span
    margin = 1.2 * sep * k
    line_y = tuple(margin + i * sep * k for i in range(len(group)))
    height_c = round(line_y[-1] + margin)
    src = np.array([tl, tr, br, bl], np.float32)
    dst = np.array(
        [[PITCH, line_y[0]], [PITCH + width_c, line_y[0]], [PITCH + width_c, line_y[-1]],
         [PITCH, line_y[-1]]],
        np.float32,
    )
    to_canon = cv2.getPerspectiveTransform(src, dst)
    canon = cv2.warpPerspective(
        grey,
        to_canon,
        (width_c + 2 * PITCH, height_c),
        flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    middle = [(lambda e: (e[0] + e[1]) / 2)(t.ends()) for t in group]
    ys = []
    for m in middle:
        p = to_canon @ np.array([m[0], m[1], 1.0])
        ys.append(float(p[1] / p[2]))
    return MrzZone(
        lines=tuple(group),
        canonical=canon,
        to_image=np.linalg.inv(to_canon),
        line_y=tuple(ys),
        span_x=(float(PITCH), float(PITCH + width_c)),
        complete=complete,
    )
