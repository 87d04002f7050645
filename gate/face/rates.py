"""Error rates with their uncertainty: every FMR or FNMR comes with its trial count and a
95 % confidence interval.

A rate measured as *k* errors in *n* independent trials is known only to within an
interval. Two-sided intervals are exact Clopper–Pearson (binomial tails, no normal
approximation, so they are right for the small *k* a biometric error rate has). With no
error at all the useful statement is one-sided: the rate is at most ``1 − 0.05^(1/n)``
with 95 % confidence, which is the "rule of three" ≈ 3/n (ISO/IEC 19795-1).

The trials of a pair set are not fully independent (every photo appears in many pairs,
and *p* people give only *p(p−1)/2* distinct impostor pairings), so these intervals are
lower bounds on the real uncertainty; :func:`rate` records the counts so a reader can
judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95


def _log_binom_pmf(i: int, n: int, p: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logs = [_log_binom_pmf(i, n, p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _root(f: Any, target: float, *, increasing: bool) -> float:
    """p in [0, 1] with f(p) = target for a monotone f (bisection to 1e-13)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        below = f(mid) < target if increasing else f(mid) > target
        lo, hi = (mid, hi) if below else (lo, mid)
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion (k errors in n trials): the
    lower end is the p with P(X ≥ k) = α/2, the upper the p with P(X ≤ k) = α/2."""
    if n <= 0:
        raise ValueError("no trials")
    if not 0 <= k <= n:
        raise ValueError(f"{k} errors in {n} trials")
    alpha = 1.0 - confidence
    lower = 0.0 if k == 0 else _root(lambda p: 1.0 - binom_cdf(k - 1, n, p), alpha / 2,
                                     increasing=True)
    upper = 1.0 if k == n else _root(lambda p: binom_cdf(k, n, p), alpha / 2,
                                     increasing=False)
    return lower, upper


def upper_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided exact upper bound: the p with P(X ≤ k | n, p) = 1 − confidence; the rate
    is at most this with that confidence (k = 0: :func:`zero_error_bound`)."""
    if n <= 0:
        raise ValueError("no trials")
    if k >= n:
        return 1.0
    return _root(lambda p: binom_cdf(k, n, p), 1.0 - confidence, increasing=False)


def zero_error_bound(n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper bound after 0 errors in n trials: 1 − (1 − c)^(1/n) ≈ 3/n at 95 %."""
    if n <= 0:
        raise ValueError("no trials")
    return 1.0 - (1.0 - confidence) ** (1.0 / n)


@dataclass(frozen=True)
class Rate:
    """k errors in n trials, with the 95 % interval."""

    errors: int
    trials: int
    low: float
    high: float
    method: str

    @property
    def value(self) -> float:
        return self.errors / self.trials

    def as_dict(self) -> dict[str, Any]:
        return {"errors": self.errors, "trials": self.trials, "rate": self.value,
                "ci95": [self.low, self.high], "ci_method": self.method}

    def text(self) -> str:
        """``3/140 = 2.14 % (95 % CI 0.44–6.13 %)``; with no error ``0/1210 (≤ 0.25 % at
        95 %, rule of three)``."""
        if self.errors == 0:
            return f"0/{self.trials} (≤ {_pct(self.high)} at 95 %, rule of three)"
        return (f"{self.errors}/{self.trials} = {_pct(self.value)} "
                f"(95 % CI {_pct(self.low)}–{_pct(self.high)})")


def rate(errors: int, trials: int) -> Rate:
    """The measured rate and its interval: Clopper–Pearson two-sided, or the one-sided
    bound when no error was seen."""
    if errors == 0:
        return Rate(0, trials, 0.0, zero_error_bound(trials), "one-sided exact (rule of 3)")
    low, high = clopper_pearson(errors, trials)
    return Rate(errors, trials, low, high, "Clopper-Pearson two-sided")


def _pct(x: float) -> str:
    v = 100 * x
    if v == 0:
        return "0 %"
    digits = max(2, 1 - math.floor(math.log10(v))) if v < 1 else 2
    return f"{v:.{digits}f} %"


def impostors_needed(target_fmr: float, confidence: float = CONFIDENCE) -> int:
    """Impostor comparisons without a false match needed to show FMR ≤ target at this
    confidence (≈ 3/target)."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-target_fmr))
