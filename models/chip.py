"""dlib's ``get_face_chip`` (5 landmarks → aligned 150×150 chip) with numpy and OpenCV.

The descriptor was trained on dlib's chips, so the geometry here is dlib's own, step for
step (``dlib/image_transforms/interpolation.h``): the similarity transform from the
5-point template (Umeyama), the chip rectangle with dlib's ``drectangle`` conventions,
the ``pyramid_down<2>`` levels it samples from when the chip is more than 2× smaller
than the face (same 5×5 filter, same pixel grid, same truncation), and bilinear sampling
truncated to uint8. What differs: OpenCV's warp quantises sample positions to 1/32 pixel,
and a sample whose 2×2 neighbourhood leaves the image is blended with black instead of
being black — so a few pixels differ by a grey level or two (tested against dlib: same
descriptor within a small fraction of the decision margin).

Why: dlib's call needs an RGB copy of the face's surroundings and costs about as much as
the landmarks themselves; this works on the BGR frame in place, touching only the
face's bounding box.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# get_face_chip_details, 5-point shapes: where the landmarks sit in an unpadded unit chip
_TEMPLATE_5 = np.array([[0.8595674595992, 0.2134981538014],
                        [0.6460604764104, 0.2289674387677],
                        [0.1205750620789, 0.2137274526848],
                        [0.3340850613712, 0.2290642403242],
                        [0.4901123135679, 0.6277975316475]])


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dlib's find_similarity_transform (Umeyama, eqs. 34–43): dst ≈ m @ src + t."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    sigma = float((s**2).sum(1).mean())
    cov = d.T @ s / len(src)
    u, dd, vt = np.linalg.svd(cov)
    flip = np.eye(2)
    det = np.linalg.det(cov)
    if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        flip[(1, 1) if dd[1] < dd[0] else (0, 0)] = -1
    r = u @ flip @ vt
    c = float(np.trace(np.diag(dd) @ flip)) / sigma if sigma else 1.0
    return c * r, md - c * r @ ms


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """pyramid_down<2>::rect_down: p/2 − (1.25, 0.75) on both corners."""
    left, top, right, bottom = rect
    return left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75


def _area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    return max(0.0, right - left + 1) * max(0.0, bottom - top + 1)


def _pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down_2_1 on a float32 image: 5×5 binomial filter, output (r, c)
    centred on input (2r+2, 2c+2), size (n−3)/2, integer division by 256 (``floor`` of
    the caller). OpenCV's pyrDown is the same filter centred on 2r, so it runs on the image
    shifted by 2; in float32 its sums (integers below 2^24, then /256) are exact."""
    rows, cols = (img.shape[0] - 3) // 2, (img.shape[1] - 3) // 2
    if img.shape[0] <= 8 or img.shape[1] <= 8:
        return img[:0, :0]
    return np.floor(cv2.pyrDown(img[2:, 2:])[:rows, :cols])


def face_chip(image: np.ndarray, landmarks: np.ndarray, size: int = 150,
              padding: float = 0.25) -> np.ndarray:
    """The chip dlib's ``get_face_chip(image, shape, size, padding)`` cuts, in the
    image's own channel order. ``landmarks``: the 5 points, as dlib's shape predictor
    gives them (integer pixel positions)."""
    tmpl = (padding + _TEMPLATE_5) / (2 * padding + 1) * size
    m, t = _similarity(tmpl, np.asarray(landmarks, np.float64))
    px, py = m @ np.array([1.0, 0.0])
    angle, scale = math.atan2(py, px), math.hypot(px, py)
    cx, cy = m @ np.array([size / 2, size / 2]) + t
    half = (size * scale - 1) / 2  # centered_drect: width − 1 between the corners
    rect = (cx - half, cy - half, cx + half, cy + half)
    ca, sa = math.cos(angle), math.sin(angle)

    def corners(r: tuple[float, float, float, float]) -> np.ndarray:
        mx, my = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
        pts = np.array([[r[0], r[1]], [r[2], r[1]], [r[0], r[3]], [r[2], r[3]]]) - (mx, my)
        return pts @ np.array([[ca, sa], [-sa, ca]]) + (mx, my)

    chip_px = size * size
    depth, grow = 0, 2.0
    probe = _rect_down(rect)
    while _area(probe) > chip_px:
        probe = _rect_down(probe)
        depth += 1
        grow = grow * 2 + 2
    h, w = image.shape[:2]
    rot = corners(rect)
    gl, gt = max(rot[:, 0].min() - grow, 0.0), max(rot[:, 1].min() - grow, 0.0)
    gr, gb = min(rot[:, 0].max() + grow, w - 1.0), min(rot[:, 1].max() + grow, h - 1.0)
    if gr < gl or gb < gt:  # the chip lies outside the image: dlib gives black
        return np.zeros((size, size, *image.shape[2:]), image.dtype)
    bl, bt = math.floor(gl + 0.5), math.floor(gt + 0.5)
    br, bb = math.floor(gr + 0.5), math.floor(gb + 0.5)
    source = image[bt : bb + 1, bl : br + 1].astype(np.float32)
    rect = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    level = -1
    while _area(_rect_down(rect)) > chip_px:
        level += 1
        rect = _rect_down(rect)
    for _ in range(level + 1):
        source = _pyramid_down(source)
    # chip (0,0), (size−1,0), (0,size−1) → the rotated rectangle's tl, tr, bl corners
    tl, tr, bl_ = corners(rect)[:3]
    to_source = np.array([[(tr - tl)[0] / (size - 1), (bl_ - tl)[0] / (size - 1), tl[0]],
                          [(tr - tl)[1] / (size - 1), (bl_ - tl)[1] / (size - 1), tl[1]]])
    chip = cv2.warpAffine(source, to_source, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    chip = np.floor(chip).astype(np.uint8)  # dlib truncates its bilinear result
    ends = np.array([[0.0, 0.0, 1.0], [size - 1.0, 0.0, 1.0], [0.0, size - 1.0, 1.0],
                     [size - 1.0, size - 1.0, 1.0]]) @ to_source.T
    sh, sw = source.shape[:2]
    if ends.min() < 0 or ends[:, 0].max() >= sw - 1 or ends[:, 1].max() >= sh - 1:
        # dlib leaves black every pixel whose 2×2 neighbourhood is not all in the source
        gy, gx = np.mgrid[0:size, 0:size].astype(np.float64)
        sx = np.floor(to_source[0, 0] * gx + to_source[0, 1] * gy + to_source[0, 2])
        sy = np.floor(to_source[1, 0] * gx + to_source[1, 1] * gy + to_source[1, 2])
        chip[(sx < 0) | (sy < 0) | (sx + 1 >= sw) | (sy + 1 >= sh)] = 0
    return chip
