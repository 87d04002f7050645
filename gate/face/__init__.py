"""The lane's face stage: live capture and 1:1 verification, built from configuration.

The lane holds one :class:`FaceConfig` (its ``[face]`` table) and calls
:func:`face_stage` once at start-up; the pack is opened, checked against its manifest and
warmed up there, so a lane with a bad pack or without its required GPU never opens.

The camera is not part of ``[face]``: it is a device of the lane (``[devices] camera``),
opened and watched for health by whoever assembles the lane, and handed in here.

    camera = hardware.camera.open_camera(config.devices.camera); camera.start()
    capture, verifier = face_stage(FaceConfig.from_mapping(config["face"]), camera)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gate.face.capture import CaptureSettings, LiveFaceCapture
from gate.face.quality import QualitySettings
from gate.face.verify import FaceMatch, PresentationAttackCheck
from hardware.camera import Camera
from models.face import load_face_model
from models.pack import DEFAULT_PACK
from models.runtime import GPU_POLICIES, RuntimeSettings


@dataclass(frozen=True)
class FaceConfig:
    pack: str = DEFAULT_PACK  # pack id (built/cached) or a pack folder
    gpu: str = "preferred"  # required | preferred | off
    device_id: int = 0
    tensorrt: bool = False
    detector: str = "hog"  # hog | mmod (dlib pack)
    detect_width: int = 640  # long side of the frame as the detector sees it
    aligner: str = "dlib"  # dlib (get_face_chip on the BGR frame) | opencv (models.chip)
    mmod_pyramid: str = "auto"  # auto (graph on a GPU) | opencv | graph
    camera_size: tuple[int, int] = (1280, 720)  # width, height: the shape the GPU graph fits
    target_fmr: float = 1e-3
    threshold: float | None = None  # overrides the calibrated threshold when set
    capture: CaptureSettings = field(default_factory=CaptureSettings)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaceConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if "camera" in unknown:
            raise ValueError("face.camera is no longer a face setting: the lane camera is "
                             "a device, set it as [devices] camera")
        if unknown:
            raise ValueError(f"unknown face settings: {sorted(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("capture"), Mapping):
            cap = dict(kwargs["capture"])
            if isinstance(cap.get("quality"), Mapping):
                cap["quality"] = QualitySettings(**cap["quality"])
            kwargs["capture"] = CaptureSettings(**cap)
        if "camera_size" in kwargs:
            kwargs["camera_size"] = tuple(int(v) for v in kwargs["camera_size"])
        config = cls(**kwargs)
        if config.gpu not in GPU_POLICIES:
            raise ValueError(f"face.gpu must be one of {GPU_POLICIES}")
        return config


def face_stage(config: FaceConfig, camera: Camera, pad: PresentationAttackCheck | None = None
               ) -> tuple[LiveFaceCapture, FaceMatch]:
    """Open the pack once and hand out the lane's FaceCapture (on ``camera``, which the
    caller owns: started and closed by whoever opened it) and FaceVerifier."""
    settings = RuntimeSettings(gpu=config.gpu, device_id=config.device_id,  # type: ignore[arg-type]
                               tensorrt=config.tensorrt)
    model = load_face_model(config.pack, settings, detector=config.detector,
                            detect_width=config.detect_width, aligner=config.aligner,
                            mmod_pyramid=config.mmod_pyramid,
                            camera_size=config.camera_size)
    capture = LiveFaceCapture(model, camera, config.capture)
    verifier = FaceMatch(model, target_fmr=config.target_fmr, threshold=config.threshold,
                         pad=pad)
    return capture, verifier


__all__ = ["FaceConfig", "face_stage"]
