"""The ``sface`` pack kind: YuNet detection with 5 landmarks, the 5-point similarity
alignment to 112×112 (the ArcFace template), the SFace 128-d embedding, cosine score.

Both networks are OpenCV Zoo's (Apache-2.0), folded to fp32 at pack-build time
(:mod:`models.onnxfold`) and run on onnxruntime under the lane's GPU policy. The decoding
of YuNet's outputs and the alignment are OpenCV's own (``cv::FaceDetectorYN``,
``cv::FaceRecognizerSF::alignCrop``) rewritten in numpy, so the embeddings equal
``cv2.FaceRecognizerSF.feature`` on the same crops (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.face import DetectedFace
from models.pack import Manifest, PackError, read_calibration
from models.runtime import RuntimeSettings, SessionInfo, open_session

#: where the 5 points go in the 112×112 crop (right eye, left eye, nose tip, right and
#: left mouth corner, as the viewer sees them left to right): the ArcFace / InsightFace
#: template that SFace was trained on, and that OpenCV's alignCrop uses.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
CHIP = 112
STRIDES = (8, 16, 32)

#: the 5 YuNet points relative to its own box (share of width, of height), mean over 59
#: real photographs (faces-johns and face_recognition 1.3.0's test photos; spread 0.02 in
#: y, 0.06-0.10 in x); a last resort when a face box comes without points and YuNet finds
#: no face near it (the document stage's box, from another detector: approximate)
BOX_LANDMARKS = np.array([[0.290, 0.330], [0.784, 0.333], [0.543, 0.538], [0.310, 0.710],
                          [0.743, 0.714]], np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """The 2×3 least-squares similarity (rotation, uniform scale, shift; no reflection)
    taking ``src`` to ``dst`` (Umeyama 1991), as OpenCV's ``getSimilarityTransformMatrix``."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    sm, dm = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - sm, dst - dm
    a = d0.T @ s0 / len(src)
    d = np.ones(2)
    if np.linalg.det(a) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(a)
    rank = np.linalg.matrix_rank(a)
    t = np.eye(3)
    if rank == 0:
        raise ValueError("degenerate landmarks")
    if rank == 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            t[:2, :2] = u @ vt
        else:
            sign = d[1]
            d[1] = -1
            t[:2, :2] = u @ np.diag(d) @ vt
            d[1] = sign
    else:
        t[:2, :2] = u @ np.diag(d) @ vt
    var = s0.var(axis=0).sum()
    scale = 1.0 / var * (s @ d)
    t[:2, 2] = dm - scale * (t[:2, :2] @ sm)
    t[:2, :2] *= scale
    return t[:2]


def align_crop(frame_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112×112 BGR crop SFace reads: the 5 points warped onto the ArcFace template,
    bilinear, black outside the frame (OpenCV's alignCrop)."""
    m = similarity_transform(landmarks)
    if frame_bgr.ndim == 2:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    elif frame_bgr.shape[2] == 4:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
    return cv2.warpAffine(frame_bgr, m, (CHIP, CHIP), flags=cv2.INTER_LINEAR)


def decode_yunet(outputs: dict[str, np.ndarray], pad_h: int, pad_w: int,
                 score_threshold: float, nms_threshold: float, top_k: int = 5000
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """YuNet (2023mar) outputs → [(box x0,y0,x1,y1, 5×2 landmarks, score)], after NMS;
    the arithmetic of OpenCV's ``FaceDetectorYN::postProcess``, vectorised."""
    boxes, points, scores = [], [], []
    for stride in STRIDES:
        cols, rows = pad_w // stride, pad_h // stride
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        keep = np.nonzero(score >= score_threshold)[0]
        if keep.size == 0:
            continue
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
        kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[keep]
        c = (keep % cols).astype(np.float32)
        r = (keep // cols).astype(np.float32)
        cx = (c + bbox[:, 0]) * stride
        cy = (r + bbox[:, 1]) * stride
        w = np.exp(bbox[:, 2]) * stride
        h = np.exp(bbox[:, 3]) * stride
        boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))
        grid = np.stack([c, r], axis=1)[:, None, :]
        points.append((kps + grid) * stride)
        scores.append(score[keep])
        del rows
    if not boxes:
        return []
    xywh = np.concatenate(boxes)
    pts = np.concatenate(points)
    sc = np.concatenate(scores)
    kept = cv2.dnn.NMSBoxes(xywh.tolist(), sc.tolist(), score_threshold, nms_threshold,
                            eta=1.0, top_k=top_k)
    out = []
    for i in np.asarray(kept, np.int64).reshape(-1):
        x, y, w, h = (float(v) for v in xywh[i])
        out.append((np.array([x, y, x + w, y + h]), pts[i].astype(np.float32), float(sc[i])))
    return out


class SFaceModel:
    """YuNet + SFace on onnxruntime (the ``sface`` pack kind).

    Detection runs on a copy of the frame scaled so its longer side is at most
    ``detect_width`` pixels (a 1280×720 lane frame is seen at 640×360; smaller images,
    such as document portraits, at their own size), padded to a multiple of 32 as OpenCV
    does. The landmarks come with the detection, so :meth:`landmarks` is free.
    """

    chip_size = CHIP
    landmark_layout = "arcface5"

    def __init__(self, folder: Path, manifest: Manifest, settings: RuntimeSettings,
                 detect_width: int = 640) -> None:
        self.folder = folder
        self.manifest = manifest
        self.pack_id = manifest.pack_id
        self.pack_hash = manifest.pack_hash
        self.settings = settings
        self.detect_width = detect_width
        det_conf = manifest.data.get("detector", {})
        self.score_threshold = float(det_conf.get("score_threshold", 0.6))
        self.nms_threshold = float(det_conf.get("nms_threshold", 0.3))
        emb = manifest.file("embedder")
        det = manifest.file("detector")
        self._embedder, einfo = open_session(folder / emb, settings,
                                             sha256=manifest.files[emb]["sha256"])
        # document portraits and lane frames are different shapes: no exhaustive search
        self._detector, dinfo = open_session(folder / det, settings, fixed_shape=False,
                                             sha256=manifest.files[det]["sha256"])
        self._det_outputs = [o.name for o in self._detector.get_outputs()]
        self.sessions: tuple[SessionInfo, ...] = (einfo, dinfo)
        self.default_threshold = float(manifest.data["embedder"].get("default_threshold",
                                                                     0.363))

    @property
    def provider(self) -> str:
        return self.sessions[0].provider

    @property
    def calibration(self) -> dict[str, Any] | None:
        return read_calibration(self.folder)

    def detect(self, frame_bgr: np.ndarray) -> list[DetectedFace]:
        if frame_bgr.ndim == 2:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
        elif frame_bgr.shape[2] == 4:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
        h, w = frame_bgr.shape[:2]
        scale = min(1.0, self.detect_width / max(h, w))
        small = frame_bgr if scale == 1.0 else cv2.resize(
            frame_bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        ph, pw = (sh - 1) // 32 * 32 + 32, (sw - 1) // 32 * 32 + 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :sh, :sw] = small.transpose(2, 0, 1)
        raw = self._detector.run(self._det_outputs, {"input": blob})
        found = decode_yunet(dict(zip(self._det_outputs, raw, strict=True)), ph, pw,
                             self.score_threshold, self.nms_threshold)
        sx, sy = w / sw, h / sh
        faces = [DetectedFace(box=(float(b[0] * sx), float(b[1] * sy), float(b[2] * sx),
                                   float(b[3] * sy)),
                              score=s, landmarks=(p * np.array([sx, sy], np.float32)),
                              layout=self.landmark_layout)
                 for b, p, s in found]
        return sorted(faces, key=lambda f: -f.width)

    def landmarks(self, frame_bgr: np.ndarray, face: DetectedFace) -> DetectedFace:
        """YuNet gives the points with the box. A bare box (from elsewhere) is detected
        again in its neighbourhood; where nothing is found there, the points are placed
        at their mean position in a YuNet box."""
        if face.landmarks is not None:
            return face
        x0, y0, x1, y1 = face.box
        m = max(x1 - x0, y1 - y0) * 0.5
        h, w = frame_bgr.shape[:2]
        left, top = max(0, int(x0 - m)), max(0, int(y0 - m))
        right, bottom = min(w, int(x1 + m) + 1), min(h, int(y1 + m) + 1)
        if right - left >= 16 and bottom - top >= 16:
            near = self.detect(frame_bgr[top:bottom, left:right])
            best = max(near, key=lambda f: _iou(
                (f.box[0] + left, f.box[1] + top, f.box[2] + left, f.box[3] + top),
                face.box), default=None)
            if best is not None and best.landmarks is not None:
                return DetectedFace(face.box, face.score,
                                    best.landmarks + np.array([left, top], np.float32),
                                    layout=self.landmark_layout)
        pts = BOX_LANDMARKS * [x1 - x0, y1 - y0] + [x0, y0]
        return DetectedFace(face.box, face.score, pts.astype(np.float32),
                            layout=self.landmark_layout)

    def align(self, frame_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        """The 112×112 crop, BGR (the embedder swaps to RGB as OpenCV's SFace does)."""
        if face.landmarks is None:
            face = self.landmarks(frame_bgr, face)
        assert face.landmarks is not None
        if face.layout != self.landmark_layout:
            raise PackError(f"SFace alignment needs YuNet's 5 points, not {face.layout}")
        return align_crop(frame_bgr, face.landmarks)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """SFace features (not normalised; :meth:`score` is the cosine). The network
        reads RGB 0–255 NCHW, as ``cv::dnn::blobFromImage(crop, 1, 112², 0, swapRB)``."""
        if not chips:
            return np.zeros((0, 128), np.float32)
        batch = np.stack([np.asarray(c, np.float32)[:, :, ::-1] for c in chips])
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return np.asarray(self._embedder.run(None, {"data": x})[0], np.float32)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity, -1..1 (OpenCV's FR_COSINE; its published cut is 0.363)."""
        a = np.asarray(a, np.float64).ravel()
        b = np.asarray(b, np.float64).ravel()
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]
         ) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
