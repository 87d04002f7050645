"""The simulated people are real faces where the data says they are."""

import cv2
import dlib
import pytest

from sim.people import people


@pytest.mark.parametrize("p", people(), ids=lambda p: p.person_id)
def test_face_box_holds_a_face(p) -> None:
    detector = dlib.get_frontal_face_detector()
    crop = p.face_crop(margin=0.5)
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    if crop.shape[0] < 200:
        rgb = cv2.resize(rgb, None, fx=2, fy=2)
    faces = detector(rgb, 1)
    assert len(faces) == 1


def test_portrait_shape() -> None:
    img = people()[0].portrait()
    assert img.shape == (360, 280, 3)
