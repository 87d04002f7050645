"""Error rates with confidence intervals, and thresholds chosen by the 95 % bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.face.calibrate import Scores, calibrate, det_points, threshold_for_fmr_bound
from gate.face.rates import (
    binom_cdf,
    clopper_pearson,
    impostors_needed,
    rate,
    upper_bound,
    zero_error_bound,
)

# Clopper–Pearson limits from the beta quantiles (scipy.stats.beta.ppf(0.025, k, n−k+1),
# beta.ppf(0.975, k+1, n−k)), computed once
KNOWN = [((3, 140), (0.004441076375614849, 0.06134501024238676)),
         ((1, 200), (0.00012658102786701825, 0.02754189845720562)),
         ((7, 1690), (0.001666875799556016, 0.008515395752681218)),
         ((50, 100), (0.39832112950330095, 0.601678870496699))]


@pytest.mark.parametrize(("kn", "limits"), KNOWN)
def test_clopper_pearson_matches_the_beta_quantiles(kn: tuple[int, int],
                                                    limits: tuple[float, float]) -> None:
    low, high = clopper_pearson(*kn)
    assert low == pytest.approx(limits[0], rel=1e-8)
    assert high == pytest.approx(limits[1], rel=1e-8)


def test_edges_and_the_rule_of_three() -> None:
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    for n in (100, 1385, 30000):
        bound = zero_error_bound(n)
        assert bound == pytest.approx(1 - 0.05 ** (1 / n))
        assert 2.9 / n < bound < 3.0 / n  # −ln 0.05 = 2.996
        assert upper_bound(0, n) == pytest.approx(bound, rel=1e-9)
    assert impostors_needed(1e-3) == 2995 and impostors_needed(5e-4) == 5990
    assert binom_cdf(2, 5, 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        rate(0, 0)


def test_a_rate_says_its_counts() -> None:
    assert rate(0, 1385).text() == "0/1385 (≤ 0.22 % at 95 %, rule of three)"
    assert rate(3, 140).text() == "3/140 = 2.14 % (95 % CI 0.44 %–6.13 %)"
    d = rate(7, 1385).as_dict()
    assert d["errors"] == 7 and d["trials"] == 1385 and d["ci95"][0] < 7 / 1385 < d["ci95"][1]


def test_one_sided_bound_is_monotone_and_covers() -> None:
    bounds = [upper_bound(k, 1000) for k in range(6)]
    assert bounds == sorted(bounds) and all(b > k / 1000 for k, b in enumerate(bounds))
    assert binom_cdf(4, 1000, bounds[4]) == pytest.approx(0.05, abs=1e-9)


def test_threshold_is_set_by_the_bound_and_refused_when_unmeasurable() -> None:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0, 0.1, 10_000)
    genuine = rng.normal(0.8, 0.1, 500)
    t = threshold_for_fmr_bound(impostor, 1e-3)
    assert t is not None
    k = int(np.sum(impostor >= t))
    assert upper_bound(k, 10_000) <= 1e-3 < upper_bound(k + 1, 10_000)
    assert threshold_for_fmr_bound(impostor[:2000], 1e-3) is None  # < 2995 pairs
    result = calibrate(Scores(genuine, impostor[:2000], 0), [1e-2, 1e-3])
    assert set(result["thresholds"]) == {"1e-02"}
    low, high = (p for p in result["operating_points"])
    assert low["measurable"] and low["fmr_upper95"] <= 1e-2
    assert low["fmr_ci"]["trials"] == 2000 and low["fnmr_ci"]["trials"] == 500
    assert not high["measurable"] and high["threshold"] is None and high["fmr"] is None
    assert high["impostor_pairs_needed"] == 2995
    rows = {r["fmr_target"]: r for r in det_points(Scores(genuine, impostor[:2000], 0))}
    assert rows[1e-3]["measurable"] and rows[1e-3]["false_matches"] <= 2
    assert not rows[1e-4]["measurable"]
    assert math.isclose(result["fmr_resolution"], 1 / 2000)
