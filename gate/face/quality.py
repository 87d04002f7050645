"""Per-frame quality gates for live capture, and the guidance each failure gives.

The gates follow what an ABC lane needs from a frame before it is worth comparing
(ISO/IEC 29794-5 in spirit, measured simply): one face, big enough, frontal (from the 5
landmarks), sharp, well exposed, eyes not covered. Each measure is a number so the
decision record can hold it; the thresholds are settings, tuned on the simulated lane.

The measures are computed by this one function for every pack, from the eye centres and
the nose point (:meth:`models.face.DetectedFace.eyes_and_nose`) and the face box. What
differs between packs is what their landmarks mark: dlib's 5 points give the eye corners
and the *base* of the nose, YuNet's the eye centres and the nose *tip*; the pitch measure
is the drop of the nose base, so for YuNet's points it adds the measured median offset
between the two (:data:`NOSE_BASE_OFFSET`). :data:`OFIQ_TERMS` names each measure's
ISO/IEC 29794-5 (OFIQ) counterpart where one exists — ours are simpler proxies, not
OFIQ's algorithms or its 0–100 scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gate.schema import setting
from models.face import DetectedFace

#: guidance keys, in the order a traveller should fix them
STEP_CLOSER = "STEP_CLOSER"
STEP_BACK = "STEP_BACK"
LOOK_AT_CAMERA = "LOOK_AT_CAMERA"
ONE_PERSON_ONLY = "ONE_PERSON_ONLY"
HOLD_STILL = "HOLD_STILL"
MOVE_INTO_LIGHT = "MOVE_INTO_LIGHT"
UNCOVER_EYES = "UNCOVER_EYES"


#: our measure -> the ISO/IEC 29794-5 quality component it stands for (a proxy, not OFIQ's
#: algorithm or scale); measures without an OFIQ counterpart are not listed
OFIQ_TERMS = {
    "faces": "SingleFacePresent (number of faces found)",
    "eye_distance_px": "InterEyeDistance (pixels between the eye centres)",
    "yaw": "HeadPoseYaw (proxy: nose offset along the eye line / eye distance)",
    "pitch": "HeadPosePitch (proxy: nose-base drop below the eye line / eye distance)",
    "roll_deg": "HeadPoseRoll (degrees, from the eye line)",
    "sharpness": "Sharpness (proxy: variance of the Laplacian, face at 128 px wide)",
    "brightness": "LuminanceMean (mean grey of the face box, 0-255)",
    "clipped": "UnderExposurePrevention + OverExposurePrevention (share of face pixels "
               "at 0-5 or 250-255)",
    "eye_contrast": "EyesVisible (proxy: grey-level spread at the eye centres / face)",
    "eye_band_dark": "EyesVisible (proxy: share of the eye band much darker than the face)",
}

#: eye distances from the nose point to the base of the nose, per landmark layout: YuNet
#: marks the tip; median of (dlib pitch − YuNet pitch) on 59 real photographs (faces-johns
#: and face_recognition's test photos) where both packs found the face: 0.23 (spread 0.065)
NOSE_BASE_OFFSET = {"dlib5": 0.0, "arcface5": 0.23}


@dataclass(frozen=True)
class QualitySettings:
    # ICAO asks ≥ 60 for stored images; live may be less
    min_eye_distance_px: float = setting(40.0, low=10, high=1000, unit="px")
    # face wider than this share of the frame: too close
    max_face_fraction: float = setting(0.8, above=0, high=1.0)
    # nose offset from the eye midpoint / eye distance
    max_yaw: float = setting(0.3, above=0, high=2.0)
    # alignment undoes roll; beyond this detection fails
    max_roll_deg: float = setting(30.0, above=0, high=90.0, unit="degrees")
    # nose drop below the eyes / eye distance
    pitch_range: tuple[float, float] = setting((0.4, 1.4), low=0, high=5.0, ordered=True)
    # variance of the Laplacian on a 128-px-wide face crop
    min_sharpness: float = setting(60.0, low=0, high=10000.0)
    # mean grey level of the face
    exposure_range: tuple[float, float] = setting((55.0, 210.0), low=0, high=255.0,
                                                  ordered=True)
    # share of face pixels at 0–5 or 250–255
    max_clipped: float = setting(0.15, low=0, high=1.0)
    # std of eye patches / std of the face
    min_eye_contrast: float = setting(0.3, low=0, high=10.0)
    # share of the eye band darker than 0.4 × the face's median grey (dark glasses): bare
    # faces measured ≤ 0.23 (59 real photographs) and ≤ 0.14 (48 simulated lane frames),
    # dark glasses 0.46-0.89 where the glasses cover the eyes
    max_eye_band_dark: float = setting(0.35, low=0, high=1.0)
    # a second face this big (vs the first) is a tailgater
    other_face_fraction: float = setting(0.5, above=0, high=1.0)


@dataclass(frozen=True)
class FrameQuality:
    measures: dict[str, float]
    failures: tuple[str, ...]  # guidance keys of the failed gates, most urgent first

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def score(self) -> float:
        """Rank of passing frames: sharper, more frontal and larger is better."""
        m = self.measures
        return (min(m["sharpness"], 400.0) / 400.0 + (1.0 - min(abs(m["yaw"]) * 4, 1.0))
                + min(m["eye_distance_px"] / 120.0, 1.0))


def assess(frame_bgr: np.ndarray, face: DetectedFace, settings: QualitySettings,
           others: int = 0) -> FrameQuality:
    """Measure one detected face (landmarks required) and list the gates it fails."""
    if face.landmarks is None:
        raise ValueError("quality needs the 5 landmarks")
    # eye centres and nose from either pack's 5 points (dlib: eye corners and nose base;
    # YuNet: eye centres and nose tip): the same measures from the same kind of points
    left, right, nose = face.eyes_and_nose()
    eye_vec = right - left
    iod = float(np.hypot(*eye_vec))
    mid = (left + right) / 2
    roll = math.degrees(math.atan2(float(eye_vec[1]), float(eye_vec[0])))
    # Project the nose onto the eye axis: sideways offset ≈ yaw, drop ≈ pitch.
    unit = eye_vec / max(iod, 1e-6)
    normal = np.array([-unit[1], unit[0]])
    rel = nose - mid
    yaw = float(rel @ unit) / max(iod, 1e-6)
    pitch = float(rel @ normal) / max(iod, 1e-6) + NOSE_BASE_OFFSET.get(face.layout, 0.0)

    h, w = frame_bgr.shape[:2]
    x0, y0, x1, y1 = face.box
    bx0, by0 = max(0, int(x0)), max(0, int(y0))
    bx1, by1 = min(w, math.ceil(x1)), min(h, math.ceil(y1))
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
    crop = grey[by0:by1, bx0:bx1]
    if crop.size == 0:
        crop = np.zeros((8, 8), np.uint8)
    norm = cv2.resize(crop, (128, max(8, round(128 * crop.shape[0] / max(crop.shape[1], 1)))),
                      interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(norm, cv2.CV_64F).var())
    brightness = float(crop.mean())
    clipped = float(np.mean((crop <= 5) | (crop >= 250)))
    face_std = float(crop.std()) + 1.0
    half = max(2, round(iod * 0.12))
    eye_stds = []
    for c in (left, right):
        cx, cy = round(float(c[0])), round(float(c[1]))
        patch = grey[max(0, cy - half):cy + half, max(0, cx - half):cx + half]
        eye_stds.append(float(patch.std()) if patch.size else 0.0)
    eye_contrast = min(eye_stds) / face_std
    # the band along the eye line, from beyond one eye to beyond the other: a detector
    # that cannot see the eyes (dark glasses) still guesses points, often at the lenses'
    # edges where the patches above look busy; the band is dark whatever the guess
    ey = (left[1] + right[1]) / 2
    band = grey[max(0, int(ey - 0.2 * iod)):max(0, int(ey + 0.2 * iod)),
                max(0, int(left[0] - 0.35 * iod)):max(0, int(right[0] + 0.35 * iod))]
    eye_band_dark = float(np.mean(band < 0.4 * float(np.median(crop)))) if band.size else 1.0

    s = settings
    failures: list[str] = []
    if others > 0:
        failures.append(ONE_PERSON_ONLY)
    if iod < s.min_eye_distance_px:
        failures.append(STEP_CLOSER)
    if (x1 - x0) > s.max_face_fraction * w:
        failures.append(STEP_BACK)
    if abs(yaw) > s.max_yaw or abs(roll) > s.max_roll_deg or not (
            s.pitch_range[0] <= pitch <= s.pitch_range[1]):
        failures.append(LOOK_AT_CAMERA)
    if eye_contrast < s.min_eye_contrast or eye_band_dark > s.max_eye_band_dark:
        failures.append(UNCOVER_EYES)
    if not (s.exposure_range[0] <= brightness <= s.exposure_range[1]) or clipped > s.max_clipped:
        failures.append(MOVE_INTO_LIGHT)
    if sharpness < s.min_sharpness:
        failures.append(HOLD_STILL)
    measures = {
        "eye_distance_px": round(iod, 2), "yaw": round(yaw, 4), "pitch": round(pitch, 4),
        "roll_deg": round(roll, 2), "sharpness": round(sharpness, 2),
        "brightness": round(brightness, 2), "clipped": round(clipped, 4),
        "eye_contrast": round(eye_contrast, 4), "eye_band_dark": round(eye_band_dark, 4),
        "faces": float(1 + others),
        "detector_score": round(face.score, 4),
        "box_x0": round(x0, 1), "box_y0": round(y0, 1), "box_x1": round(x1, 1),
        "box_y1": round(y1, 1),
    }
    return FrameQuality(measures, tuple(failures))
