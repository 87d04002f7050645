"""The sim lane's stages: the REAL document and face stages, fed by simulated devices.

The lane under test gets the production stages — :class:`gate.document.check.MrzDocumentCheck`
on rendered pages, :class:`gate.face.capture.LiveFaceCapture` and
:class:`gate.face.verify.FaceMatch` on the converted dlib networks — and only the devices
in front of them are simulated: a document reader that holds the page of the traveller at
the glass (:mod:`sim.documents`), and a lane camera that shows that traveller
(:mod:`sim.camera`). Any device may be real instead (``--camera``, ``--documents``).

The stages are built once per run (the face pack is opened and warmed up once, as on a lane
PC), and told before each passage who is at the lane.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gate.document.check import MrzDocumentCheck
from gate.document.policy import DocumentPolicy
from gate.face import FaceConfig, face_stage
from gate.face.capture import CaptureSettings, FrameSource, LiveFaceCapture, open_camera
from gate.simlane.scenario import UNREADABLE_CONDITIONS, TravellerSpec
from gate.stages import DocumentCheck

#: The production capture settings, except how long it waits for a face that never comes
#: (4 s, not 10 s) and for a camera that went silent (1 s, not 2 s): only refusals get
#: quicker, so the system time measured for a passing traveller is the production one.
SIM_CAPTURE = dataclasses.replace(CaptureSettings(), window_s=4.0, camera_timeout_s=1.0)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class StagesUnavailable(RuntimeError):
    """A real stage cannot be built on this machine (a model file missing, no GPU...)."""


@dataclass(frozen=True)
class StageOptions:
    camera: str | None = None  # a real camera spec (camera:0, file:..., rtsp://...); None: sim
    documents: str | None = None  # a folder of page images; None: rendered pages
    gpu: str = "preferred"  # the face runtime's policy: required | preferred | off
    document: Mapping[str, Any] = field(default_factory=dict)  # a lane's [document] section
    face: Mapping[str, Any] = field(default_factory=dict)  # a lane's [face] section


class TravellerCamera:
    """The lane camera, showing whoever the runner says is in the zone now.

    Called by :class:`LiveFaceCapture` once per capture to open its frame source, exactly
    where a lane opens ``cv2.VideoCapture``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scene = "no_face"
        self._person = "astronaut"
        self._seed = 0

    def show(self, scene: str, person_id: str, seed: int) -> None:
        with self._lock:
            self._scene, self._person, self._seed = scene, person_id, seed

    def __call__(self) -> FrameSource:
        from sim.camera import SimCamera

        with self._lock:
            return SimCamera(self._scene, person_id=self._person, seed=self._seed)


def _smear(image: np.ndarray) -> np.ndarray:
    """A page pulled across the glass mid-exposure: nothing of the MRZ survives."""
    k = np.zeros((61, 61), np.float32)
    k[30, :] = 1.0 / 61
    smeared = cv2.filter2D(image, -1, k)
    return np.asarray(cv2.GaussianBlur(smeared, (0, 0), 6.0))


def _cover(image: np.ndarray) -> np.ndarray:
    """A hand over the bottom of the page, where every MRZ is printed."""
    out = image.copy()
    h = out.shape[0]
    out[int(h * 0.70):, :] = (120, 150, 200)  # a skin tone, BGR
    return out


def render_document(spec: TravellerSpec, rng: np.random.Generator,
                    today: date | None = None) -> tuple[np.ndarray, str]:
    """The page the traveller lays on the reader, and its document number (for the list)."""
    from sim import documents

    identity = documents.random_identity(rng, spec.document, today=today, defect=spec.defect)
    identity = dataclasses.replace(identity, person_id=spec.document_person)
    page = documents.render_page(identity, rng)
    if spec.condition in UNREADABLE_CONDITIONS:
        image = _smear(page.image) if spec.condition == "smeared" else _cover(page.image)
    else:
        image = documents.capture(page, spec.condition, rng).image
    return image, identity.document_number


class PageFolder:
    """Page images from a folder, one passage after another (a real reader's output)."""

    def __init__(self, folder: str) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise StagesUnavailable(f"--documents {folder}: not a folder")
        self.paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise StagesUnavailable(f"--documents {folder}: no page images "
                                    f"({', '.join(IMAGE_SUFFIXES)})")
        self._next = 0

    def next_page(self) -> tuple[np.ndarray, str]:
        path = self.paths[self._next % len(self.paths)]
        self._next += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:  # an unreadable file is still a page: the stage names the outcome
            image = np.zeros((0, 0, 3), np.uint8)
        return image, path.name


class LaneStages:
    """The three stages the lane calls, plus the simulated devices in front of them.

    Built the way a lane builds them: the document policy from the ``[document]`` section
    and the face stage through :func:`gate.face.face_stage` from the ``[face]`` section of a
    lane configuration (``StageOptions.document`` / ``.face``). Only the camera source is
    swapped for the simulated one, unless ``--camera`` names a real camera.
    """

    def __init__(self, options: StageOptions | None = None,
                 document_check: DocumentCheck | None = None) -> None:
        self.options = options or StageOptions()
        try:
            self.base_policy = DocumentPolicy.from_dict(self.options.document)
            self.document_check: Any = document_check or MrzDocumentCheck(self.base_policy)
        except Exception as exc:  # onnxruntime says NO_SUCHFILE etc.: say what is missing
            raise StagesUnavailable(
                f"the document stage cannot start: {type(exc).__name__}: {exc}") from exc
        policy = getattr(self.document_check, "policy", None)
        if isinstance(policy, DocumentPolicy):
            self.base_policy = policy
        camera = self.options.camera
        if camera and camera.isdigit():
            camera = f"camera:{camera}"
        try:
            settings: dict[str, Any] = {"gpu": self.options.gpu, "capture": SIM_CAPTURE,
                                        **dict(self.options.face)}
            if camera:
                settings["camera"] = camera
            self.face_config = FaceConfig.from_mapping(settings)
            product_capture, self.face_verifier = face_stage(self.face_config)
        except Exception as exc:
            raise StagesUnavailable(
                f"the face stage cannot start: {type(exc).__name__}: {exc}") from exc
        self.face_model = product_capture.model
        self.camera = TravellerCamera()
        if camera:
            # fail now, not at the first traveller, when a real camera is not there
            probe = open_camera(camera)
            opened = probe.isOpened()
            probe.release()
            if not opened:
                raise StagesUnavailable(f"--camera {self.options.camera}: cannot open it")
            self.face_capture = product_capture
        else:
            self.face_capture = LiveFaceCapture(self.face_model, self.camera,
                                                self.face_config.capture)
        self.pages = PageFolder(self.options.documents) if self.options.documents else None
        self._listed: set[str] = set()

    @property
    def provider(self) -> str:
        return str(self.face_model.provider)

    def present(self, spec: TravellerSpec, seed: int) -> list[np.ndarray]:
        """Put ``spec``'s traveller in front of the devices; returns the page(s) read."""
        rng = np.random.default_rng([spec.seed, seed])
        if self.pages is not None:
            image, _ = self.pages.next_page()
        else:
            image, number = render_document(spec, rng)
            if spec.defect == "stolen":  # the national list has it: the lane's copy too
                self._listed.add(number.upper())
                self.document_check.policy = dataclasses.replace(
                    self.base_policy,
                    listed_numbers=self.base_policy.listed_numbers | frozenset(self._listed))
        self.camera.show(spec.camera, spec.person, seed)
        return [image]


__all__ = ["SIM_CAPTURE", "LaneStages", "StageOptions", "StagesUnavailable", "TravellerCamera",
           "render_document"]
