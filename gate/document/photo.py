"""Cutting the holder's portrait out of the data page, anchored on the MRZ.

The MRZ is the one thing on a page whose geometry we know exactly after reading it (its
cell pitch, its lines, its tilt and perspective), and Doc 9303 puts the portrait at a fixed
place relative to it. So the portrait region is given in MRZ units — character pitches from
the left end and the centre of the first line — and mapped through the zone's homography:
tilt and perspective come out for free. dlib's HOG frontal face detector (shipped in the
``dlib-bin`` wheel, no model download; opencv 5 has no Haar cascades) then confirms that a
usable face is there before it goes to verification.

Reason codes: ``PORTRAIT_NOT_FOUND`` (no face in the region), ``PORTRAIT_TOO_SMALL``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gate.document.locate import MrzZone

#: Portrait region per MRZ layout: (x0, y0, x1, y1) in character pitches, relative to the
#: left end of the MRZ lines and the centre of the first line (negative y: above the MRZ).
#: From Doc 9303 Parts 4–6 nominal layouts, with a margin for print tolerances.
PORTRAIT_REGION = {
    "TD3": (-1.0, -22.5, 14.8, -2.8),
    "MRVA": (-1.0, -22.5, 14.8, -2.8),
    "TD2": (-1.6, -20.4, 10.8, -4.9),
    "MRVB": (-1.6, -20.4, 10.8, -4.9),
    "TD1": (-1.0, -13.4, 8.4, -1.8),
}
OUT_W = 300  # portrait width in pixels after rectification (height follows the region)
MIN_FACE_FRACTION = 0.2  # of the region width: smaller is no usable portrait


@dataclass(frozen=True)
class PortraitCut:
    portrait: np.ndarray | None  # BGR, rectified; personal
    box: tuple[int, int, int, int] | None  # x, y, w, h of the region in the image
    face_box: tuple[int, int, int, int] | None  # in the portrait
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box) if self.box else None,
            "face_found": self.face_box is not None,
            # where this stage's detector found the face in the portrait (x, y, w, h): the
            # verifier starts from it when its own detector misses (e.g. a 3/4 profile)
            "face_box": list(self.face_box) if self.face_box else None,
            "reason": self.reason,
        }


@functools.lru_cache(maxsize=1)
def face_detector() -> Any:
    import dlib

    return dlib.get_frontal_face_detector()


def region_to_canonical(zone: MrzZone, mrz_type: str, n: int) -> np.ndarray:
    """The portrait region's four corners in the zone's canonical coordinates."""
    pitch = (zone.span_x[1] - zone.span_x[0]) / n
    x0, y0, x1, y1 = PORTRAIT_REGION[mrz_type]
    ox, oy = zone.span_x[0], zone.line_y[0]
    return np.array(
        [[ox + x0 * pitch, oy + y0 * pitch], [ox + x1 * pitch, oy + y0 * pitch],
         [ox + x1 * pitch, oy + y1 * pitch], [ox + x0 * pitch, oy + y1 * pitch]],
        np.float64,
    )


def cut_portrait(image: np.ndarray, zone: MrzZone, mrz_type: str, n: int) -> PortraitCut:
    corners_c = region_to_canonical(zone, mrz_type, n)
    pts = np.c_[corners_c, np.ones(4)] @ zone.to_image.T
    quad = pts[:, :2] / pts[:, 2:3]
    h_img, w_img = image.shape[:2]
    x0, y0 = np.clip(quad.min(0), 0, [w_img, h_img])
    x1, y1 = np.clip(quad.max(0), 0, [w_img, h_img])
    box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
    if box[2] < 16 or box[3] < 16:
        return PortraitCut(None, None, None, "PORTRAIT_NOT_FOUND")
    rw = float(np.linalg.norm(corners_c[1] - corners_c[0]))
    rh = float(np.linalg.norm(corners_c[3] - corners_c[0]))
    out_h = round(OUT_W * rh / rw)
    dst = np.array([[0, 0], [OUT_W, 0], [OUT_W, out_h], [0, out_h]], np.float32)
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    colour = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    portrait = cv2.warpPerspective(colour, m, (OUT_W, out_h), flags=cv2.INTER_AREA,
                                   borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY)
    faces = face_detector()(grey, 0)
    if len(faces) == 0:
        # Dim or uneven light flattens the face for HOG: stretch the contrast locally.
        clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4))
        grey = clahe.apply(grey)
        faces = face_detector()(grey, 0)
    if len(faces) == 0:
        faces = face_detector()(grey, 1)
    if len(faces) == 0:
        face_box = _tilted_face(grey)
        if face_box is None:
            return PortraitCut(portrait, box, None, "PORTRAIT_NOT_FOUND")
    else:
        f = max(faces, key=lambda r: r.width() * r.height())
        face_box = (f.left(), f.top(), f.width(), f.height())
    if face_box[2] < MIN_FACE_FRACTION * OUT_W:
        return PortraitCut(portrait, box, face_box, "PORTRAIT_TOO_SMALL")
    return PortraitCut(portrait, box, face_box, None)


def _tilted_face(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    """HOG frontal detection misses heads tilted beyond ~10°; try the crop turned ±12°.

    The box returned is axis-aligned around the face centre mapped back into the portrait.
    """
    h, w = grey.shape
    smooth = cv2.GaussianBlur(grey, (0, 0), 1.2)  # capture noise breaks HOG gradients
    for angle in (-12.0, 12.0):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        turned = cv2.warpAffine(smooth, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        faces = face_detector()(turned, 0)
        if len(faces) == 0:
            continue
        f = max(faces, key=lambda r: r.width() * r.height())
        back = cv2.invertAffineTransform(m)
        cx, cy = back @ np.array([f.left() + f.width() / 2, f.top() + f.height() / 2, 1.0])
        return (round(cx - f.width() / 2), round(cy - f.height() / 2), f.width(), f.height())
    return None
