"""The simulated data pages: valid identities, deliberate defects, capture conditions."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from gate.document.policy import DocumentPolicy
from hardware.docreader import mrz as icao
from sim.documents import BAD_KINDS, CONDITIONS, capture, generate, random_identity, render_page

TODAY = date(2026, 6, 1)


@pytest.mark.parametrize("mrz_type", ["TD3", "TD2", "TD1"])
def test_random_identities_are_valid_and_eligible(mrz_type: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        ident = random_identity(rng, mrz_type, today=TODAY)
        r = icao.parse(ident.mrz(), TODAY)
        assert r.valid, (ident.mrz(), r.problems)
        assert r.mrz_type == mrz_type
        # the simulator prints some pages for UTO, the specimen state: allowed explicitly
        assert DocumentPolicy(today=TODAY, allow_specimen=True).judge(r) == []


@pytest.mark.parametrize(
    ("defect", "reason"),
    [("bad_check", "MRZ_INVALID"), ("expired", "EXPIRED"), ("minor", "UNDER_MINIMUM_AGE"),
     ("unknown_state", "MRZ_INVALID"), ("stolen", "DOCUMENT_LISTED")],
)
def test_defects(defect: str, reason: str) -> None:
    assert defect in BAD_KINDS
    rng = np.random.default_rng(1)
    ident = random_identity(rng, "TD3", today=TODAY, defect=defect)
    policy = DocumentPolicy(today=TODAY, allow_specimen=True, listed_numbers=frozenset(
        {ident.document_number} if defect == "stolen" else ()))
    assert reason in policy.judge(icao.parse(ident.mrz(), TODAY))


@pytest.mark.timeout(60)
def test_conditions_keep_the_page_in_view() -> None:
    rng = np.random.default_rng(2)
    page = render_page(random_identity(rng, "TD3", today=TODAY), rng)
    assert page.image.shape[:2] == (round(88 * 300 / 25.4), round(125 * 300 / 25.4))
    for cond in CONDITIONS:
        shot = capture(page, cond, rng)
        h, w = shot.image.shape[:2]
        x, y, bw, bh = shot.photo_box
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h, cond
        assert shot.image.dtype == np.uint8 and shot.mrz == page.mrz
    assert len(generate(2, seed=3, conditions=["clean", "dpi150"])) == 4
