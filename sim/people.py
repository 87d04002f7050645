"""Real face photos that ship inside our dependencies, as simulated travellers.

No face data set can be downloaded on a lane PC, so the simulator draws its people from
images already installed: the group photo and the portrait shipped in the ``insightface``
wheel and scikit-image's astronaut. Each person is one face in one photo; the face box is
data (measured once with dlib's HOG detector, checked by ``tests/test_people.py``).

Eight identities is small: they serve as genuine/impostor material for tests and the
simulator, not as an accuracy benchmark population.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Person:
    person_id: str
    source: str  # file name or data set id, for provenance
    box: tuple[int, int, int, int]  # x, y, w, h of the face in the source photo

    @property
    def photo(self) -> np.ndarray:
        """The whole source photo, BGR uint8 (shared: copy before drawing on it)."""
        return _load(self.source)

    def face_crop(self, margin: float = 0.6, size: int | None = None) -> np.ndarray:
        """The face with ``margin`` × box size of context on each side, BGR.

        Parts of the margin that fall outside the photo are filled by edge replication,
        as an ID photo studio background would be.
        """
        x, y, w, h = self.box
        m = round(max(w, h) * margin)
        img = self.photo
        padded = cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_REPLICATE)
        crop = padded[y : y + h + 2 * m, x : x + w + 2 * m].copy()
        if size is not None:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        return crop

    def portrait(self, width: int = 280, height: int = 360) -> np.ndarray:
        """An ICAO-style portrait (35×45 mm aspect): head centred, shoulders below."""
        x, y, w, h = self.box
        cx, cy = x + w / 2, y + h / 2
        # Face box height ≈ 55 % of the portrait height (chin to crown ≈ 70–80 %).
        ph = h / 0.55
        pw = ph * width / height
        top = cy - ph * 0.45
        left = cx - pw / 2
        img = self.photo
        pad = round(max(ph, pw))
        padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        t, lft = round(top) + pad, round(left) + pad
        crop = padded[t : t + round(ph), lft : lft + round(pw)]
        return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def _insightface_image(name: str) -> str:
    import insightface

    return os.path.join(os.path.dirname(insightface.__file__), "data", "images", name)


@functools.lru_cache(maxsize=8)
def _load(source: str) -> np.ndarray:
    if source == "skimage:astronaut":
        import skimage.data

        return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    img = cv2.imread(_insightface_image(source), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"sample photo {source!r} is missing from insightface")
    return img


_PEOPLE = (
    Person("t1-a", "t1.jpg", (67, 283, 109, 109)),
    Person("t1-b", "t1.jpg", (275, 176, 90, 90)),
    Person("t1-c", "t1.jpg", (450, 295, 108, 108)),
    Person("t1-d", "t1.jpg", (724, 367, 109, 109)),
    Person("t1-e", "t1.jpg", (870, 67, 130, 130)),
    Person("t1-f", "t1.jpg", (1118, 283, 109, 109)),
    Person("astronaut", "skimage:astronaut", (175, 76, 91, 91)),
    Person("tom", "Tom_Hanks_54745.png", (6, 26, 91, 91)),
)


def people() -> tuple[Person, ...]:
    """Every simulated identity, in a fixed order."""
    return _PEOPLE


def person(person_id: str) -> Person:
    for p in _PEOPLE:
        if p.person_id == person_id:
            return p
    raise KeyError(f"no simulated person {person_id!r}; known: {[p.person_id for p in _PEOPLE]}")
