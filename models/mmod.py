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
import onnx
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


def _nms(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """dlib's greedy suppression (IoU above ``NMS_IOU``, or one box inside another):
    indices of the kept boxes, best first. The overlap test is one n×n array operation;
    only the greedy walk is Python."""
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    ix = np.clip(np.minimum(b[:, None, 2], b[None, :, 2])
                 - np.maximum(b[:, None, 0], b[None, :, 0]), 0.0, None)
    iy = np.clip(np.minimum(b[:, None, 3], b[None, :, 3])
                 - np.maximum(b[:, None, 1], b[None, :, 1]), 0.0, None)
    inter = ix * iy
    clash = ((inter / (areas[:, None] + areas[None, :] - inter) > NMS_IOU)
             | (inter >= np.minimum(areas[:, None], areas[None, :]) * 0.999)).tolist()
    kept: list[int] = []
    for i in range(len(order)):
        if not any(clash[i][k] for k in kept):
            kept.append(i)
    return order[kept]


@dataclass
class _Plan:
    """Everything fixed for one frame shape: tiles, the reused canvas, and per output cell
    the tile it falls in (−1 for gaps), so decoding is array lookups."""

    tiles: list[Tile]
    canvas: np.ndarray
    cell_tile: np.ndarray | None = None
    tile_table: np.ndarray | None = None  # per tile: x, y, scale

    def cells(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if self.cell_tile is None or self.cell_tile.shape != shape:
            cy = STRIDE * np.arange(shape[0])[:, None] + OFFSET
            cx = STRIDE * np.arange(shape[1])[None, :] + OFFSET
            owner = np.full(shape, -1, np.int32)
            for i, t in enumerate(self.tiles):
                inside = (t.x <= cx) & (cx < t.x + t.w) & (t.y <= cy) & (cy < t.y + t.h)
                owner[inside & (owner < 0)] = i
            self.cell_tile = owner
            self.tile_table = np.array([[t.x, t.y, t.scale] for t in self.tiles], np.float64)
        assert self.tile_table is not None
        return self.cell_tile, self.tile_table


class MmodDetector:
    """``fused``: sessions of :func:`pyramid_model` by frame shape (height, width) — the
    lane camera's, usually; BGR frames of that shape go to it, everything else (document
    portraits, RGB input) through the OpenCV pyramid and ``session``."""

    def __init__(self, session: ort.InferenceSession, threshold: float = 0.0,
                 fused: dict[tuple[int, int], ort.InferenceSession] | None = None) -> None:
        self.session = session
        self.threshold = threshold
        self.fused = dict(fused or {})
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._lock = threading.Lock()  # one canvas per frame shape, reused between calls

    def _plan(self, h: int, w: int) -> _Plan:
        plan = self._plans.get((h, w))
        if plan is None:
            tiles, ch, cw = plan_pyramid(h, w)
            canvas = np.empty((1, ch, cw, 3), np.uint8)
            canvas[:] = MEAN  # the gaps stay background; tiles are overwritten per call
            plan = self._plans[(h, w)] = _Plan(tiles, canvas)
        return plan

    def detect(self, image: np.ndarray, *, bgr: bool = False
               ) -> list[tuple[tuple[float, float, float, float], float]]:
        """Faces in an RGB image (``bgr=True``: BGR, converted straight into the canvas).

        Every level is resampled from the previous one, as dlib's pyramid does, and
        written in place into its tile: no intermediate images, one copy per level."""
        import cv2

        h, w = image.shape[:2]
        fused = self.fused.get((h, w)) if bgr and image.ndim == 3 else None
        with self._lock:
            plan = self._plan(h, w)
            if not plan.tiles:
                return []
            if fused is not None:
                scores = fused.run(None, {"frame": np.ascontiguousarray(image)[None]})[0][0, 0]
                cell_tile, table = plan.cells(scores.shape)
                return self._decode(scores, cell_tile, table)
            tiles, canvas = plan.tiles, plan.canvas[0]
            first = canvas[tiles[0].y : tiles[0].y + h, tiles[0].x : tiles[0].x + w]
            if bgr:
                cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=first)
            else:
                first[:] = image
            prev = first
            for t in tiles[1:]:
                level = canvas[t.y : t.y + t.h, t.x : t.x + t.w]
                cv2.resize(prev, (t.w, t.h), dst=level, interpolation=cv2.INTER_LINEAR)
                prev = level
            scores = self.session.run(None, {"image": plan.canvas})[0][0, 0]
            cell_tile, table = plan.cells(scores.shape)
        return self._decode(scores, cell_tile, table)

    def _decode(self, scores: np.ndarray, cell_tile: np.ndarray, table: np.ndarray
                ) -> list[tuple[tuple[float, float, float, float], float]]:
        rows, cols = np.nonzero((scores > self.threshold) & (cell_tile >= 0))
        if rows.size == 0:
            return []
        owner = table[cell_tile[rows, cols]]
        scale = owner[:, 2]
        lx = (STRIDE * cols + OFFSET - owner[:, 0]) / scale
        ly = (STRIDE * rows + OFFSET - owner[:, 1]) / scale
        half = WINDOW / 2 / scale
        boxes = np.stack([lx - half, ly - half, lx + half, ly + half], axis=1)
        values = scores[rows, cols].astype(np.float64)
        return [((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(values[i]))
                for i in _nms(boxes, values).tolist() for b in (boxes[i],)]


def pyramid_model(detector: onnx.ModelProto, height: int, width: int) -> onnx.ModelProto:
    """The detector with the pyramid in front of it, for BGR frames of one shape.

    Input ``frame``: 1×height×width×3 uint8 BGR. The graph reverses the channels, builds
    each level from the previous one with bilinear resampling (half-pixel centres, as
    OpenCV's INTER_LINEAR) rounded to whole grey levels (as OpenCV's uint8 levels), and
    pads every level into the canvas of :func:`plan_pyramid` (gaps = the input mean), so
    on a GPU the host only uploads the small frame: no resampling, no 2.8 MB canvas copy.
    Levels can differ from OpenCV's by a grey level (fixed-point weights there)."""
    from onnx import TensorProto, helper, numpy_helper

    tiles, ch, cw = plan_pyramid(height, width)
    if not tiles:
        raise ValueError(f"{width}×{height} is smaller than the detector window")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, f"pyr_{name}"))
        return f"pyr_{name}"

    mean = const("mean", MEAN.astype(np.float32).reshape(1, 3, 1, 1))
    half = const("half", np.array(0.5, np.float32))  # Floor(x + ½): OpenCV's rounding
    nodes += [
        helper.make_node("Cast", ["frame"], ["pyr_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pyr_f"], ["pyr_bgr"], perm=[0, 3, 1, 2]),
        helper.make_node("Gather", ["pyr_bgr", const("rgb", np.array([2, 1, 0], np.int64))],
                         ["pyr_l0"], axis=1),
    ]
    placed = []
    prev = "pyr_l0"
    for i, t in enumerate(tiles):
        if i:
            size = const(f"size{i}", np.array([1, 3, t.h, t.w], np.int64))
            nodes += [helper.make_node("Resize", [prev, "", "", size], [f"pyr_r{i}"],
                                       mode="linear",
                                       coordinate_transformation_mode="half_pixel"),
                      helper.make_node("Add", [f"pyr_r{i}", half], [f"pyr_h{i}"]),
                      helper.make_node("Floor", [f"pyr_h{i}"], [f"pyr_l{i}"])]
            prev = f"pyr_l{i}"
        pads = const(f"pads{i}", np.array([0, 0, t.y, t.x, 0, 0, ch - t.y - t.h,
                                           cw - t.x - t.w], np.int64))
        nodes += [helper.make_node("Sub", [prev, mean], [f"pyr_c{i}"]),
                  helper.make_node("Pad", [f"pyr_c{i}", pads], [f"pyr_p{i}"])]
        placed.append(f"pyr_p{i}")
    nodes += [helper.make_node("Sum", placed, ["pyr_sum"]),
              helper.make_node("Add", ["pyr_sum", mean], ["pyr_canvas"]),
              helper.make_node("Transpose", ["pyr_canvas"], ["pyr_nhwc"], perm=[0, 2, 3, 1]),
              helper.make_node("Cast", ["pyr_nhwc"], ["image"], to=TensorProto.UINT8)]
    g = detector.graph
    graph = helper.make_graph(
        nodes + list(g.node), "mmod_with_pyramid",
        [helper.make_tensor_value_info("frame", TensorProto.UINT8, [1, height, width, 3])],
        list(g.output), initializer=inits + list(g.initializer))
    model = helper.make_model(graph, opset_imports=list(detector.opset_import))
    model.ir_version = detector.ir_version
    onnx.checker.check_model(model)
    return model
