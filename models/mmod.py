"""dlib's MMOD CNN face detector on onnxruntime: tiled pyramid in, boxes out.

The converted network (``models.convert.mmod_to_onnx``) maps an image to a score map.
dlib runs it once on a canvas holding every pyramid level (scale 5/6 per level), and so
do we: one fixed input shape per camera resolution is also what keeps the CUDA provider
fast (a new input shape makes it redo its convolution-algorithm search).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

WINDOW = 80  # the detector window, pixels at the level's scale
STRIDE = 8  # output cell → input pixel: 8x + 14 (three 5×5 stride-2 convolutions)
OFFSET = 14
PAD = 16  # gap between tiles, filled with the input mean so it scores as background
MEAN = np.array([123, 117, 104], np.uint8)  # the network's input mean: scores as background
NMS_IOU = 0.3382761351109955  # from the model file's mmod options


@dataclass(frozen=True)
class Tile:
    scale: float
    x: int
    y: int
    w: int
    h: int


def plan_pyramid(height: int, width: int, min_size: int = WINDOW) -> tuple[list[Tile], int, int]:
    """Pyramid levels shelf-packed into a canvas; returns tiles and canvas height, width."""
    sizes: list[tuple[float, int, int]] = []
    scale = 1.0
    while min(height, width) * scale >= min_size:
        sizes.append((scale, round(height * scale), round(width * scale)))
        scale *= 5 / 6
    if not sizes:
        return [], 0, 0
    canvas_w = sizes[0][2] + (sizes[1][2] + PAD if len(sizes) > 1 else 0)
    tiles: list[Tile] = []
    x = y = shelf_h = 0
    for s, h, w in sizes:
        if x > 0 and x + w > canvas_w:
            y += shelf_h + PAD
            x = shelf_h = 0
        tiles.append(Tile(s, x, y, w, h))
        x += w + PAD
        shelf_h = max(shelf_h, h)
    canvas_h = y + shelf_h
    return tiles, canvas_h, canvas_w


def _nms(boxes: list[tuple[tuple[float, float, float, float], float]]
         ) -> list[tuple[tuple[float, float, float, float], float]]:
    kept: list[tuple[tuple[float, float, float, float], float]] = []
    for box, score in sorted(boxes, key=lambda b: -b[1]):
        ok = True
        for k, _ in kept:
            ix = max(0.0, min(box[2], k[2]) - max(box[0], k[0]))
            iy = max(0.0, min(box[3], k[3]) - max(box[1], k[1]))
            inter = ix * iy
            a1 = (box[2] - box[0]) * (box[3] - box[1])
            a2 = (k[2] - k[0]) * (k[3] - k[1])
            if inter / (a1 + a2 - inter) > NMS_IOU or inter >= min(a1, a2) * 0.999:
                ok = False
                break
        if ok:
            kept.append((box, score))
    return kept


class MmodDetector:
    def __init__(self, session: ort.InferenceSession, threshold: float = 0.0) -> None:
        self.session = session
        self.threshold = threshold
        self._plans: dict[tuple[int, int], tuple[list[Tile], np.ndarray]] = {}
        self._lock = threading.Lock()  # one canvas per frame shape, reused between calls

    def detect(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        import cv2

        h, w = rgb.shape[:2]
        with self._lock:
            plan = self._plans.get((h, w))
            if plan is None:
                tiles, ch, cw = plan_pyramid(h, w)
                canvas = np.empty((1, ch, cw, 3), np.uint8)
                canvas[:] = MEAN  # the gaps stay background; tiles are overwritten per call
                plan = self._plans[(h, w)] = (tiles, canvas)
            tiles, canvas = plan
            if not tiles:
                return []
            level = rgb
            for t in tiles:
                # each level from the previous one, as dlib's pyramid does: cheaper than
                # resampling the full frame every time
                if t.scale != 1.0:
                    level = cv2.resize(level, (t.w, t.h), interpolation=cv2.INTER_LINEAR)
                canvas[0, t.y : t.y + t.h, t.x : t.x + t.w] = level
            scores = self.session.run(None, {"image": canvas})[0][0, 0]
        rows, cols = np.nonzero(scores > self.threshold)
        found: list[tuple[tuple[float, float, float, float], float]] = []
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            cy, cx = STRIDE * r + OFFSET, STRIDE * c + OFFSET
            for t in tiles:
                if t.x <= cx < t.x + t.w and t.y <= cy < t.y + t.h:
                    lx, ly = (cx - t.x) / t.scale, (cy - t.y) / t.scale
                    half = WINDOW / 2 / t.scale
                    found.append(((lx - half, ly - half, lx + half, ly + half),
                                  float(scores[r, c])))
                    break
        return _nms(found)
