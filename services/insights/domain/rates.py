"""Rates with honest uncertainty: Wilson 95% intervals, shrinkage toward the parent group, and
the minimum group size below which a rate is withheld.

The two rates (docs/PHASE_5_ARCHITECTURE.md §6.1, the same words everywhere):

* acceptance = positive / (positive + negative), i.e. positive / decided;
* not useful = (negative + dismissed) / (positive + negative + dismissed), the effective
  false-positive rate (findings nobody acted on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Z_95 = 1.959963984540054
"""Two-sided 95% normal quantile."""


@dataclass(frozen=True)
class Counts:
    """Findings of a group by outcome."""

    positive: int = 0
    negative: int = 0
    dismissed: int = 0
    pending: int = 0

    @property
    def findings(self) -> int:
        return self.positive + self.negative + self.dismissed + self.pending

    @property
    def decided(self) -> int:
        return self.positive + self.negative

    @property
    def reacted(self) -> int:
        return self.positive + self.negative + self.dismissed

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.positive + other.positive,
            self.negative + other.negative,
            self.dismissed + other.dismissed,
            self.pending + other.pending,
        )


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    value: float
    lower: float
    upper: float
    smoothed: float


def wilson_interval(
    successes: npt.ArrayLike, trials: npt.ArrayLike, *, z: float = Z_95
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Wilson score interval, element-wise; no trials gives the uninformative (0, 1)."""
    s, n = np.broadcast_arrays(
        np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    )
    if np.any(s < 0) or np.any(s > n):
        raise ValueError("counts must satisfy 0 <= successes <= trials")
    safe_n = np.where(n == 0, 1.0, n)
    p = s / safe_n
    z2_n = z * z / safe_n
    denominator = 1.0 + z2_n
    centre = (p + z2_n / 2.0) / denominator
    half = z * np.sqrt(np.maximum(p * (1.0 - p) / safe_n + z2_n / safe_n / 4.0, 0.0)) / denominator
    lower = np.where(s == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    upper = np.where(s == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return lower, upper


def wilson_bounds(successes: int, trials: int, *, z: float = Z_95) -> tuple[float, float]:
    """``wilson_interval`` for one group, in plain floats (a report has hundreds of rates, and
    NumPy's per-call overhead on scalars would dominate)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2_n = z * z / trials
    denominator = 1.0 + z2_n
    centre = (p + z2_n / 2.0) / denominator
    half = z * math.sqrt(max(p * (1.0 - p) / trials + z2_n / trials / 4.0, 0.0)) / denominator
    lower = 0.0 if successes == 0 else min(max(centre - half, 0.0), 1.0)
    upper = 1.0 if successes == trials else min(max(centre + half, 0.0), 1.0)
    return lower, upper


def rate(successes: int, trials: int, *, parent: float, strength: float) -> Rate:
    """A rate with its Wilson interval, shrunk toward ``parent`` with ``strength`` pseudo-counts:
    ``(s + k·p) / (n + k)``."""
    lower, upper = wilson_bounds(successes, trials)
    smoothed = (successes + strength * parent) / (trials + strength) if trials + strength else 0.0
    return Rate(
        successes=successes,
        trials=trials,
        value=successes / trials if trials else 0.0,
        lower=lower,
        upper=upper,
        smoothed=float(smoothed),
    )


@dataclass(frozen=True)
class GroupRates:
    """A group's two rates, or the reason they are withheld."""

    acceptance: Rate | None
    not_useful: Rate | None
    withheld_reason: str = ""


@dataclass(frozen=True)
class RatePolicy:
    min_group_size: int = 5
    """Groups with fewer findings get no rates: with a handful of findings a rate says more
    about one developer's reactions than about the rule or the team."""
    strength: float = 10.0
    """Pseudo-counts of the parent in the smoothed value."""


ROOT_PRIOR = (0.5, 2.0)
"""The global root is shrunk toward ½ with strength 2, as in the learning service."""


def group_rates(counts: Counts, *, parent: GroupRates | None, policy: RatePolicy) -> GroupRates:
    """Both rates of a group, smoothed toward the parent's smoothed rates (or the root prior)."""
    if counts.findings < policy.min_group_size:
        return GroupRates(
            None,
            None,
            f"withheld: {counts.findings} finding{'s' if counts.findings != 1 else ''}, fewer "
            f"than the minimum group size of {policy.min_group_size}",
        )
    if parent is None or parent.acceptance is None or parent.not_useful is None:
        acceptance_parent, not_useful_parent, strength = ROOT_PRIOR[0], ROOT_PRIOR[0], ROOT_PRIOR[1]
    else:
        acceptance_parent = parent.acceptance.smoothed
        not_useful_parent = parent.not_useful.smoothed
        strength = policy.strength
    return GroupRates(
        acceptance=rate(
            counts.positive, counts.decided, parent=acceptance_parent, strength=strength
        ),
        not_useful=rate(
            counts.negative + counts.dismissed,
            counts.reacted,
            parent=not_useful_parent,
            strength=strength,
        ),
    )
