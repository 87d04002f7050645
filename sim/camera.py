"""Simulated lane camera: frames of a lane scene built from real face photos.

The faces are the real photos of :mod:`sim.people`; what the simulator changes is what a
lane camera changes — distance (face size), head pose, light, focus/motion blur, sensor
noise, a hand or dark glasses over the eyes, a second person behind, no one at all, and a
camera that stops delivering. A head turn cannot be rendered from one flat photo, so
``yaw`` moves the nose region sideways with a smooth warp (what the pose gate measures);
``roll`` rotates the head.

:class:`SimCamera` has the ``cv2.VideoCapture`` surface the capture code uses
(``isOpened``, ``read``, ``release``), so the capture code cannot tell it from a camera.
Scenarios are data (a table of timed views), not code paths in the capture.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from sim.people import Person, people, person

FRAME_W, FRAME_H = 1280, 720


@dataclass(frozen=True)
class View:
    """How one person appears in one frame."""

    face_px: float = 240.0  # width of the face box in the frame
    cx: float = 640.0  # face centre
    cy: float = 320.0
    yaw: float = 0.0  # −1…1: nose shift as a share of the face width × 0.45
    roll_deg: float = 0.0
    light: float = 1.0  # gain on the face
    side_light: float = 0.0  # −1…1 left/right shading
    blur: float = 0.0  # Gaussian sigma in pixels (focus)
    motion: int = 0  # horizontal motion-blur length in pixels
    eyes_covered: bool = False


def _background(seed: int = 0) -> np.ndarray:
    """A lane interior: graded wall, floor, a door frame, mild texture."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, FRAME_H, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, FRAME_W, dtype=np.float32)[None, :]
    wall = np.asarray(150 + 40 * (1 - y) + 10 * x, np.float32)
    img = np.stack([wall * 0.95, wall * 0.97, wall], axis=-1)
    img[int(FRAME_H * 0.78):] = (95, 100, 105)
    img[:, 90:120] = (70, 70, 75)
    img[:, FRAME_W - 120 : FRAME_W - 90] = (70, 70, 75)
    img += np.asarray(rng.normal(0, 2.0, img.shape), np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


_BACKGROUND = _background()


def _yaw_warp(img: np.ndarray, box: tuple[int, int, int, int], yaw: float) -> np.ndarray:
    if abs(yaw) < 1e-3:
        return img
    x, y, w, h = box
    ny, nx = y + 0.62 * h, x + 0.5 * w  # around the nose
    sigma = 0.22 * w
    gy, gx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
    bump = np.exp(-(((gx - nx) ** 2) + ((gy - ny) ** 2)) / (2 * sigma**2))
    shift = (yaw * 0.45 * w) * bump
    return cv2.remap(img, gx - shift, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _face_layer(p: Person, view: View) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The person's head, scaled and posed, with a soft mask; and its top-left corner."""
    margin = 0.6
    crop = p.face_crop(margin=margin)
    side = crop.shape[0]
    box_in_crop = round(p.box[2] * margin)
    crop = _yaw_warp(crop, (box_in_crop, box_in_crop, p.box[2], p.box[3]), view.yaw)
    scale = view.face_px / p.box[2]
    size = max(8, round(side * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    head = cv2.resize(crop, (size, size), interpolation=interp).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    # An ellipse a bit taller than wide: head and neck, not the photo's background.
    r = ((xx - c) / (0.40 * size)) ** 2 + ((yy - c * 1.05) / (0.48 * size)) ** 2
    mask = np.clip((1.15 - r) / 0.3, 0, 1).astype(np.float32)
    if view.eyes_covered:  # dark glasses: two lenses and a bridge
        ey = round(c - 0.15 * view.face_px)
        for dx in (-0.2, 0.2):
            cv2.ellipse(head, (round(c + dx * view.face_px), ey),
                        (round(0.17 * view.face_px), round(0.12 * view.face_px)), 0, 0, 360,
                        (20, 18, 16), -1)
        cv2.line(head, (round(c - 0.06 * view.face_px), ey),
                 (round(c + 0.06 * view.face_px), ey), (20, 18, 16), 3)
    if view.roll_deg:
        m = cv2.getRotationMatrix2D((c, c), view.roll_deg, 1.0)
        head = np.asarray(cv2.warpAffine(head, m, (size, size),
                                         borderMode=cv2.BORDER_REFLECT), np.float32)
        mask = np.asarray(cv2.warpAffine(mask, m, (size, size)), np.float32)
    shade = view.light * (1 + 0.45 * view.side_light * (xx - c) / max(c, 1))
    head = head * shade[..., None]
    left = round(view.cx - size / 2)
    top = round(view.cy - size / 2)
    return head, mask, left, top


def _composite(dst: np.ndarray, layer: np.ndarray, mask: np.ndarray, left: int, top: int
               ) -> None:
    h, w = layer.shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(dst.shape[1], left + w), min(dst.shape[0], top + h)
    if x1 <= x0 or y1 <= y0:
        return
    sub = layer[y0 - top : y1 - top, x0 - left : x1 - left]
    m = mask[y0 - top : y1 - top, x0 - left : x1 - left, None]
    mixed = dst[y0:y1, x0:x1].astype(np.float32) * (1 - m) + sub * m
    dst[y0:y1, x0:x1] = np.clip(mixed, 0, 255).astype(np.uint8)


_NOISE = np.random.default_rng(7).normal(0, 1.0, (FRAME_H + 64, FRAME_W + 64, 3)).astype(
    np.float32)


def render(main: tuple[Person, View] | None, others: Sequence[tuple[Person, View]] = (),
           seed: int = 0, noise: float = 2.5) -> np.ndarray:
    """One 1280×720 BGR lane frame; ``others`` are drawn behind the main traveller."""
    frame = _BACKGROUND.copy()
    layers = [*others, main] if main is not None else list(others)
    focus = main[1] if main is not None else View()
    for p, view in layers:
        head, mask, left, top = _face_layer(p, view)
        _composite(frame, head, mask, left, top)
    if focus.blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), focus.blur)
    if focus.motion > 1:
        k = np.zeros((focus.motion, focus.motion), np.float32)
        k[focus.motion // 2, :] = 1.0 / focus.motion
        frame = cv2.filter2D(frame, -1, k)
    rng = np.random.default_rng(seed)
    oy, ox = (int(v) for v in rng.integers(0, 64, 2))
    grain = (_NOISE[oy : oy + FRAME_H, ox : ox + FRAME_W] * noise).astype(np.int16)
    return np.clip(frame.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def document_portrait(p: Person, seed: int = 0) -> np.ndarray:
    """The portrait as it comes off a document page: printed, then rescanned.

    Printing flattens contrast and colour, adds a screen pattern; the scanner adds blur,
    noise and JPEG compression. The result is a smaller, softer image than the live one.
    """
    img = p.portrait(width=280, height=360).astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + 0.7 * (img - grey)  # washed-out colour
    img = 30 + img * 0.8  # lifted blacks, lower contrast
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    img += (4.0 * np.sin(xx * 1.9) * np.sin(yy * 1.9))[..., None]  # print screen
    img = cv2.resize(img, (210, 270), interpolation=cv2.INTER_AREA)  # scanned at lower dpi
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    img += np.random.default_rng(seed).normal(0, 2.0, img.shape).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR))


def document_page(p: Person, seed: int = 0) -> np.ndarray:
    """A simplified ID-1-like data page: pale guilloche background, portrait, text bars."""
    page = np.full((540, 856, 3), (215, 228, 232), np.uint8)
    xx = np.arange(856)
    for k in range(0, 540, 9):
        ys = (k + 6 * np.sin(xx / 23.0 + k)).astype(int)
        ok = (ys >= 0) & (ys < 540)
        page[ys[ok], xx[ok]] = (190, 205, 215)
    portrait = cv2.resize(document_portrait(p, seed), (240, 308))
    page[110:418, 40:280] = portrait
    for i in range(7):
        y = 120 + 40 * i
        cv2.rectangle(page, (320, y), (320 + 280 + 37 * (i % 3), y + 14), (60, 60, 60), -1)
    return page


# --- scenarios: timed views, as data --------------------------------------------------

Scene = Callable[[float], tuple[View | None, tuple[tuple[str, View], ...], bool]]
"""t (s) → main traveller's view (None: nobody), others (person id, view), camera alive."""


def _approach(t: float) -> View:
    grow = min(1.0, t / 1.5)
    return View(face_px=70 + 190 * grow, cy=300 + 20 * grow, blur=0.3,
                cx=640 + 6 * math.sin(t * 3))


SCENES: dict[str, Scene] = {
    "approach": lambda t: (_approach(t), (), True),
    "look_away": lambda t: (replace(_approach(t), roll_deg=40.0 if t < 2.5 else 0.0), (),
                            True),
    "tilted": lambda t: (replace(_approach(t), roll_deg=40.0), (), True),
    "dark": lambda t: (replace(_approach(t), light=0.2), (), True),
    "blurred": lambda t: (replace(_approach(t), motion=31, blur=2.5), (), True),
    "eyes_covered": lambda t: (replace(_approach(t), eyes_covered=True), (), True),
    "tailgater": lambda t: (View(face_px=250, cy=330), (("t1-e", View(face_px=160, cx=930,
                                                                           cy=260)),), True),
    "no_face": lambda t: (None, (), True),
    # the camera dies before the first usable frame: YuNet passes the size gate from 0.3 s
    "camera_failure": lambda t: (_approach(t), (), t < 0.25),
}


class SimCamera:
    """A scenario played as a camera: ``read()`` gives the frame for the current time.

    ``realtime=False`` steps the clock one frame per read (fast tests); ``True`` paces
    reads at ``fps`` like a real device. A failed camera returns ``(False, None)``, and in
    realtime mode it also *hangs* for ``stall_s`` per read, as a dead USB camera does.
    """

    def __init__(self, scene: str = "approach", person_id: str = "astronaut", fps: float = 15.0,
                 realtime: bool = False, stall_s: float = 0.5, seed: int = 0) -> None:
        if scene not in SCENES:
            raise KeyError(f"unknown sim scene {scene!r}; known: {sorted(SCENES)}")
        self.scene = SCENES[scene]
        self.person = person(person_id)
        self.fps = fps
        self.realtime = realtime
        self.stall_s = stall_s
        self.seed = seed
        self._index = 0
        self._start = time.monotonic()
        self._open = True
        self._lock = threading.Lock()

    def isOpened(self) -> bool:
        return self._open

    def release(self) -> None:
        self._open = False

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self._lock:
            if not self._open:
                return False, None
            if self.realtime:  # scene time is wall time, paced at fps
                due = self._start + self._index / self.fps
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t = time.monotonic() - self._start
            else:
                t = self._index / self.fps
            self._index += 1
        main, others, alive = self.scene(t)
        if not alive:
            if self.realtime:
                time.sleep(self.stall_s)
            return False, None
        drawn = [(person(pid), v) for pid, v in others]
        frame = render((self.person, main) if main is not None else None, drawn,
                       seed=self.seed * 100_003 + self._index)
        return True, frame


def open_sim_camera(spec: str) -> SimCamera:
    """``sim:SCENE[?person=ID&realtime=1&fps=N]`` → a :class:`SimCamera`."""
    rest = spec.split(":", 1)[1] if ":" in spec else spec
    scene, _, query = rest.partition("?")
    opts = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
    return SimCamera(scene or "approach", person_id=opts.get("person", "astronaut"),
                     fps=float(opts.get("fps", 15)),
                     realtime=opts.get("realtime", "0") in ("1", "true", "yes"),
                     seed=int(opts.get("seed", 0)))


# --- labelled pairs for tests and calibration ------------------------------------------

@dataclass(frozen=True)
class Pair:
    reference: np.ndarray  # document portrait (printed, rescanned)
    live: np.ndarray  # a 1280×720 lane frame
    same: bool
    reference_id: str
    live_id: str


def live_variants(count: int, seed: int = 0) -> list[View]:
    """Plausible good-to-fair live views (what passes a lane's quality gates)."""
    rng = np.random.default_rng(seed)
    views = []
    for _ in range(count):
        views.append(View(
            face_px=float(rng.uniform(170, 300)), cx=float(rng.uniform(560, 720)),
            cy=float(rng.uniform(290, 360)), yaw=float(rng.uniform(-0.2, 0.2)),
            roll_deg=float(rng.uniform(-8, 8)), light=float(rng.uniform(0.7, 1.25)),
            side_light=float(rng.uniform(-0.6, 0.6)), blur=float(rng.uniform(0, 1.5))))
    return views


def pairs(variants: int = 6, seed: int = 0, ids: Sequence[str] | None = None,
          portraits: int = 1) -> Iterator[Pair]:
    """Genuine pairs (same person, every variant) and impostor pairs (every other person).

    Eight identities give 8·v·p genuine and 56·v·p impostor pairs for v live variants and
    p prints of each portrait: enough to test the code and see the score distributions,
    far too few to *certify* an FMR of 1e-3 or 1e-4 — the impostor pairs come from only
    28 pairs of people, so they are strongly correlated whatever their count.
    """
    chosen = [p for p in people() if ids is None or p.person_id in ids]
    views = live_variants(variants, seed)
    lives = {p.person_id: [render((p, v), seed=seed + i) for i, v in enumerate(views)]
             for p in chosen}
    for ref in chosen:
        for k in range(portraits):
            portrait = document_portrait(ref, seed + k)
            for other in chosen:
                for live in lives[other.person_id]:
                    yield Pair(portrait, live, ref.person_id == other.person_id,
                               ref.person_id, other.person_id)
