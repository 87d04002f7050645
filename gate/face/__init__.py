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
from dataclasses import dataclass
from typing import Any

from gate import schema
from gate.face.capture import CaptureSettings, LiveFaceCapture
from gate.face.verify import FaceMatch, PresentationAttackCheck
from gate.schema import ConfigError, setting
from hardware.camera import Camera
from models.face import ALIGNERS, MMOD_PYRAMIDS, load_face_model
from models.pack import DEFAULT_PACK
from models.runtime import GPU_POLICIES, RuntimeSettings

DETECTORS = ("hog", "mmod")


@dataclass(frozen=True)
class FaceConfig:
    """The lane's ``[face]`` table; every key declared with its type and range."""

    pack: str = setting(DEFAULT_PACK, nonempty=True)  # pack id (built/cached) or a pack folder
    gpu: str = setting("preferred", choices=GPU_POLICIES)  # required | preferred | off
    device_id: int = setting(0, low=0, high=63)
    tensorrt: bool = setting(False)
    detector: str = setting("hog", choices=DETECTORS)  # hog | mmod (dlib pack)
    # long side of the frame as the detector sees it
    detect_width: int = setting(640, low=160, high=4096, unit="px")
    # dlib (get_face_chip on the BGR frame) | opencv (models.chip)
    aligner: str = setting("dlib", choices=ALIGNERS)
    mmod_pyramid: str = setting("auto", choices=MMOD_PYRAMIDS)  # auto (graph on a GPU) | ...
    # width, height: the shape the GPU graph fits
    camera_size: tuple[int, int] = setting((1280, 720), low=16, high=8192, unit="px")
    # the false-match rate the calibrated threshold is chosen for
    target_fmr: float = setting(1e-3, low=1e-6, high=1e-2)
    # overrides the calibrated threshold when set; a score is at most 1 (identical faces),
    # and a threshold at or below 0 would match nearly anybody. Less strict than the
    # calibrated one for target_fmr: a warning (config.threshold_below_calibrated)
    threshold: float | None = setting(None, above=0.0, high=1.0)
    capture: CaptureSettings = setting(factory=CaptureSettings)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaceConfig:
        """From a TOML ``[face]`` table; unknown keys, wrong types and values out of range
        are a :class:`gate.schema.ConfigError` naming the key."""
        if "camera" in data:
            raise ConfigError("face.camera is no longer a face setting: the lane camera is "
                              "a device, set it as [devices] camera")
        return schema.load(cls, data, "face")


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
