"""A loaded face model pack: detect → 5 landmarks → aligned chip → embedding.

Two kinds of pack share one interface (:class:`FaceModel`) so the capture and
verification code never asks which it got:

* ``dlib`` — our converted pack (HOG or MMOD detector, dlib 5-point landmarks,
  ``get_face_chip`` alignment, the ResNet descriptor on onnxruntime);
* ``insightface`` — an operator's folder of SCRFD + ArcFace ONNX files, loaded through
  insightface's model zoo on the same runtime policy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import structlog

from models.chip import face_chip
from models.pack import (
    DEFAULT_PACK,
    Manifest,
    PackError,
    read_calibration,
    resolve_pack,
    verify_pack,
)
from models.runtime import GpuUnavailable, RuntimeSettings, SessionInfo, open_session

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    landmarks: np.ndarray | None = field(default=None, repr=False)  # 5×2, frame pixels
    #: which 5 points: "dlib5" (dlib's predictor: two corners of each eye, the base of the
    #: nose) or "arcface5" (YuNet, SCRFD: eye centres, nose tip, mouth corners)
    layout: str = "dlib5"

    def eyes_and_nose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left eye centre, right eye centre (as the viewer sees them: smaller x first)
        and the nose point, whatever the layout — what the quality measures read."""
        if self.landmarks is None:
            raise ValueError("no landmarks")
        pts = np.asarray(self.landmarks, np.float64)
        if self.layout == "dlib5":
            a, b, nose = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0), pts[4]
        elif self.layout == "arcface5":
            a, b, nose = pts[0], pts[1], pts[2]
        else:
            raise ValueError(f"unknown landmark layout {self.layout!r}")
        return (a, b, nose) if a[0] <= b[0] else (b, a, nose)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


class FaceModel(Protocol):
    """What capture and verification need from a pack."""

    pack_id: str
    pack_hash: str
    sessions: tuple[SessionInfo, ...]
    default_threshold: float
    chip_size: int

    def detect(self, frame_bgr: np.ndarray) -> list[DetectedFace]: ...

    def landmarks(self, frame_bgr: np.ndarray, face: DetectedFace) -> DetectedFace: ...

    def align(self, frame_bgr: np.ndarray, face: DetectedFace) -> np.ndarray: ...

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray: ...

    def score(self, a: np.ndarray, b: np.ndarray) -> float: ...

    @property
    def provider(self) -> str: ...

    @property
    def calibration(self) -> dict[str, Any] | None: ...


def _rgb(frame_bgr: np.ndarray) -> np.ndarray:
    if frame_bgr.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB))
    return np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))


ALIGNERS = ("dlib", "opencv")
MMOD_PYRAMIDS = ("auto", "opencv", "graph")


class DlibFaceModel:
    """The default pack: dlib's detector and landmarks, the converted ResNet on onnxruntime.

    Detection runs on a copy of the frame scaled so its longer side is ``detect_width``
    pixels (HOG finds faces from 80 px up, so a 1280×720 frame at 640 finds faces from
    160 px up, i.e. a traveller within about 1.5 m), and small images (document portraits)
    are scaled up to that size.
    """

    chip_size = 150

    def __init__(self, folder: Path, manifest: Manifest, settings: RuntimeSettings,
                 detector: str = "hog", detect_width: int = 640,
                 aligner: str = "dlib", mmod_pyramid: str = "auto",
                 camera_size: tuple[int, int] = (1280, 720)) -> None:
        import dlib

        if aligner not in ALIGNERS:
            raise PackError(f"unknown aligner {aligner!r} ({' or '.join(ALIGNERS)})")
        if mmod_pyramid not in MMOD_PYRAMIDS:
            raise PackError(f"unknown mmod_pyramid {mmod_pyramid!r} "
                            f"({' | '.join(MMOD_PYRAMIDS)})")
        self.aligner = aligner

        self.folder = folder
        self.manifest = manifest
        self.pack_id = manifest.pack_id
        self.pack_hash = manifest.pack_hash
        self.settings = settings
        self.detect_width = detect_width
        emb = manifest.file("embedder")
        self._embedder, info = open_session(folder / emb, settings,
                                            sha256=manifest.files[emb]["sha256"])
        infos = [info]
        self._shape = dlib.shape_predictor(str(folder / manifest.file("landmarks")))
        self.detector_name = detector
        self._hog: Any = None
        self._mmod: Any = None
        if detector == "hog":
            self._hog = dlib.get_frontal_face_detector()
        elif detector == "mmod":
            from models.mmod import MmodDetector

            det = manifest.file("detector_cnn")
            # Lane frames and document portraits tile into different canvas shapes; an
            # exhaustive cuDNN search on each change of shape would cost more than it saves.
            session, dinfo = open_session(folder / det, settings, fixed_shape=False,
                                          sha256=manifest.files[det]["sha256"])
            infos.append(dinfo)
            fused = {}
            if mmod_pyramid == "graph" or (mmod_pyramid == "auto" and dinfo.device != "cpu"):
                # the lane camera's frames: pyramid on the device, one fixed input shape
                import onnx

                from models.mmod import pyramid_model

                w, h = camera_size
                scale = self._detect_scale((h, w))
                shape = (round(h * scale), round(w * scale))
                try:
                    graph = pyramid_model(onnx.load(str(folder / det)), *shape)
                    fsession, finfo = open_session(
                        folder / det, settings, sha256=manifest.files[det]["sha256"],
                        model=graph.SerializeToString(),
                        name=f"{det}+pyramid{shape[1]}x{shape[0]}")
                except (ValueError, onnx.checker.ValidationError, RuntimeError) as exc:
                    if mmod_pyramid == "graph" or isinstance(exc, GpuUnavailable):
                        raise
                    # auto: the host pyramid still works, only slower
                    log.warning("mmod_pyramid_graph_unavailable", error=str(exc)[:200])
                else:
                    fused[shape] = fsession
                    infos.append(finfo)
            self._mmod = MmodDetector(session, fused=fused)
        else:
            raise PackError(f"unknown detector {detector!r} (hog or mmod)")
        self.sessions = tuple(infos)
        self.default_threshold = float(manifest.data["embedder"].get("default_threshold", 0.4))

    @property
    def provider(self) -> str:
        return self.sessions[0].provider

    @property
    def calibration(self) -> dict[str, Any] | None:
        return read_calibration(self.folder)

    def _detect_scale(self, shape: tuple[int, ...]) -> float:
        longest = max(shape[0], shape[1])
        return self.detect_width / longest

    def detect(self, frame_bgr: np.ndarray) -> list[DetectedFace]:
        scale = self._detect_scale(frame_bgr.shape)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(frame_bgr, None, fx=scale, fy=scale, interpolation=interp)
        if self._mmod is not None:
            # colour-converted straight into the detector's canvas: one copy fewer
            boxes = self._mmod.detect(
                cv2.cvtColor(small, cv2.COLOR_GRAY2BGR) if small.ndim == 2 else small,
                bgr=True)
        else:
            rects, scores, _ = self._hog.run(_rgb(small), 0, 0.0)
            boxes = [((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s))
                     for r, s in zip(rects, scores, strict=True)]
        faces = [DetectedFace(box=(x0 / scale, y0 / scale, x1 / scale, y1 / scale), score=s)
                 for (x0, y0, x1, y1), s in boxes]
        return sorted(faces, key=lambda f: -f.width)

    @staticmethod
    def _around(frame_bgr: np.ndarray, box: tuple[float, float, float, float]
                ) -> tuple[np.ndarray, int, int]:
        """RGB of the face's neighbourhood only: colour-converting a whole 1280×720 frame
        twice per face costs more than the landmarks themselves."""
        x0, y0, x1, y1 = box
        m = max(x1 - x0, y1 - y0)
        h, w = frame_bgr.shape[:2]
        left, top = max(0, int(x0 - m)), max(0, int(y0 - m))
        right, bottom = min(w, int(x1 + m) + 1), min(h, int(y1 + m) + 1)
        return _rgb(frame_bgr[top:bottom, left:right]), left, top

    def landmarks(self, frame_bgr: np.ndarray, face: DetectedFace) -> DetectedFace:
        """dlib's shape predictor reads pixel intensity as the mean of the three channels,
        so it runs on the BGR frame itself: no crop, no colour conversion (tested: the
        same points as on the RGB neighbourhood)."""
        import dlib

        frame = np.ascontiguousarray(frame_bgr)
        x0, y0, x1, y1 = (round(v) for v in face.box)
        shape = self._shape(frame, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float32)
        return DetectedFace(face.box, face.score, pts)

    def align(self, frame_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        """The 150×150 RGB chip exactly as dlib cuts it (the descriptor was trained on it):
        ``aligner = "dlib"`` calls dlib's ``get_face_chip`` on the BGR frame, ``"opencv"``
        reproduces it with numpy + OpenCV (``models.chip``; no faster on a 2-core CPU, and
        slower for faces over ~400 px, so not the default)."""
        if face.landmarks is None:
            face = self.landmarks(frame_bgr, face)
        assert face.landmarks is not None
        if self.aligner == "opencv":
            chip = face_chip(frame_bgr, np.round(face.landmarks), size=self.chip_size,
                             padding=0.25)
            if chip.ndim == 2:
                return cv2.cvtColor(chip, cv2.COLOR_GRAY2RGB)
            return cv2.cvtColor(chip, cv2.COLOR_BGR2RGB)
        return self._dlib_chip(frame_bgr, face.landmarks, face.box)

    def _dlib_chip(self, frame_bgr: np.ndarray, landmarks: np.ndarray,
                   box: tuple[float, float, float, float]) -> np.ndarray:
        """dlib's get_face_chip interpolates each channel alone, so it cuts the chip from
        the BGR frame itself (only the face's bounding box is read) and the chip's channels
        are swapped after: the same pixels as from an RGB copy, without the copy."""
        import dlib

        bgr = frame_bgr.ndim == 3 and frame_bgr.shape[2] == 3
        if bgr:
            image, left, top = np.ascontiguousarray(frame_bgr), 0, 0
        else:  # grey or 4-channel: an RGB copy of the neighbourhood, as before
            image, left, top = self._around(frame_bgr, box)
        x0, y0, x1, y1 = (round(v) for v in box)
        parts = [dlib.point(round(float(x)) - left, round(float(y)) - top)
                 for x, y in landmarks]
        rect = dlib.rectangle(x0 - left, y0 - top, x1 - 1 - left, y1 - 1 - top)
        shape = dlib.full_object_detection(rect, parts)
        chip = np.asarray(dlib.get_face_chip(image, shape, size=self.chip_size, padding=0.25))
        return cv2.cvtColor(chip, cv2.COLOR_BGR2RGB) if bgr else chip

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, 128), np.float32)
        batch = np.stack([np.asarray(c, np.float32) for c in chips]).transpose(0, 3, 1, 2)
        out = self._embedder.run(None, {"chips": np.ascontiguousarray(batch)})[0]
        return np.asarray(out, np.float32)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """1 − Euclidean distance: higher is more alike; dlib's own cut is 0.4 here."""
        return float(1.0 - np.linalg.norm(np.asarray(a) - np.asarray(b)))


class InsightfaceModel:
    """An insightface-layout pack (SCRFD detector + ArcFace recogniser ONNX files).

    No such pack ships with the lane (the public ones are non-commercial); operators with
    a licensed one point ``pack`` at its folder. The folder needs a ``manifest.json`` with
    ``kind = "insightface"`` and file roles ``detector`` and ``embedder`` so it is
    checksummed like ours (see docs/face.md).
    """

    chip_size = 112

    def __init__(self, folder: Path, manifest: Manifest, settings: RuntimeSettings,
                 det_size: int = 640) -> None:
        from insightface.model_zoo import model_zoo

        self.folder = folder
        self.pack_id = manifest.pack_id
        self.pack_hash = manifest.pack_hash
        self.manifest = manifest
        infos = []
        models: dict[str, Any] = {}
        for role in ("detector", "embedder"):
            name = manifest.file(role)
            session, info = open_session(folder / name, settings,
                                         sha256=manifest.files[name]["sha256"])
            models[role] = model_zoo.get_model(str(folder / name), session=session)
            infos.append(info)
        self._det = models["detector"]
        self._rec = models["embedder"]
        self._det.prepare(ctx_id=0 if settings.gpu != "off" else -1,
                          input_size=(det_size, det_size), det_thresh=0.5)
        self.sessions = tuple(infos)
        self.default_threshold = float(manifest.data.get("embedder", {}).get(
            "default_threshold", 0.3))

    @property
    def provider(self) -> str:
        return self.sessions[-1].provider

    @property
    def calibration(self) -> dict[str, Any] | None:
        return read_calibration(self.folder)

    def detect(self, frame_bgr: np.ndarray) -> list[DetectedFace]:
        boxes, kps = self._det.detect(frame_bgr, max_num=0)
        faces = [DetectedFace(tuple(float(v) for v in b[:4]), float(b[4]),  # type: ignore[arg-type]
                              None if kps is None else np.asarray(k, np.float32),
                              layout="arcface5")
                 for b, k in zip(boxes, kps if kps is not None else [None] * len(boxes),
                                 strict=True)]
        return sorted(faces, key=lambda f: -f.width)

    def landmarks(self, frame_bgr: np.ndarray, face: DetectedFace) -> DetectedFace:
        if face.landmarks is None:
            raise PackError("this insightface detector gives no landmarks")
        return face

    def align(self, frame_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        from insightface.utils import face_align

        if face.landmarks is None:
            raise PackError("alignment needs the detector's 5 landmarks")
        chip = face_align.norm_crop(frame_bgr, landmark=face.landmarks,
                                    image_size=self.chip_size)
        return np.asarray(chip)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, 512), np.float32)
        return np.asarray(self._rec.get_feat(list(chips)), np.float32)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a).ravel()
        b = np.asarray(b).ravel()
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def load_face_model(pack: str | Path = DEFAULT_PACK,
                    settings: RuntimeSettings | None = None, *, detector: str = "hog",
                    detect_width: int = 640, aligner: str = "dlib",
                    mmod_pyramid: str = "auto", camera_size: tuple[int, int] = (1280, 720),
                    warm_up: bool = True) -> FaceModel:
    """Open a pack, check its files, create its sessions and warm them up.

    Warm-up runs one detection and one embedding on a synthetic frame so that the first
    traveller does not pay for lazy initialisation (cuDNN algorithm search, allocations).
    """
    settings = settings or RuntimeSettings()
    folder = resolve_pack(pack)
    manifest = verify_pack(folder)
    model: FaceModel
    if manifest.kind == "dlib":
        model = DlibFaceModel(folder, manifest, settings, detector=detector,
                              detect_width=detect_width, aligner=aligner,
                              mmod_pyramid=mmod_pyramid, camera_size=camera_size)
    elif manifest.kind == "sface":
        from models.sface import SFaceModel

        model = SFaceModel(folder, manifest, settings, detect_width=detect_width)
    elif manifest.kind == "insightface":
        model = InsightfaceModel(folder, manifest, settings)
    else:
        raise PackError(f"pack {manifest.pack_id}: unknown kind {manifest.kind!r}")
    t0 = time.perf_counter()
    if warm_up:
        frame = np.full((camera_size[1], camera_size[0], 3), 128, np.uint8)
        model.detect(frame)
        model.embed([np.full((model.chip_size, model.chip_size, 3), 128, np.uint8)])
    log.info("face_pack_ready", pack=model.pack_id, pack_hash=model.pack_hash[:16],
             sessions=[{"model": s.model, "sha256": s.sha256[:16], "provider": s.provider,
                        "device": s.device} for s in model.sessions],
             gpu=settings.gpu, warm_up_ms=round((time.perf_counter() - t0) * 1000, 1))
    return model
