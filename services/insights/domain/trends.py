"""Weekly trends: a robust slope (Theil–Sen, SciPy) and a significance test (Mann–Kendall,
pymannkendall) → improving / worsening / stable / insufficient data.

A week whose group is smaller than the minimum group size is *withheld*: its rate is not shown
and it does not enter the slope or the test (its value would mostly be noise, and showing it
would let a reader single out a few people's reactions). Counts (findings) are never withheld.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import IntEnum

import numpy as np

from services.insights.domain.rates import Counts


class TrendMetric(IntEnum):
    """Values match ``reviewlearn.insights.v1.TrendMetric``."""

    ACCEPTANCE_RATE = 1
    NOT_USEFUL_RATE = 2
    FINDINGS = 3
    FINDINGS_PER_REVIEW = 4


class TrendDirection(IntEnum):
    """Values match ``reviewlearn.insights.v1.TrendDirection``."""

    IMPROVING = 1
    WORSENING = 2
    STABLE = 3
    INSUFFICIENT_DATA = 4


# Whether a rising value is good news: more accepted findings is; more noise, more findings and
# more findings per review are not (the team keeps making the mistakes the bot flags).
HIGHER_IS_BETTER = {
    TrendMetric.ACCEPTANCE_RATE: True,
    TrendMetric.NOT_USEFUL_RATE: False,
    TrendMetric.FINDINGS: False,
    TrendMetric.FINDINGS_PER_REVIEW: False,
}
METRIC_WORDS = {
    TrendMetric.ACCEPTANCE_RATE: "acceptance",
    TrendMetric.NOT_USEFUL_RATE: "not-useful rate",
    TrendMetric.FINDINGS: "findings",
    TrendMetric.FINDINGS_PER_REVIEW: "findings per review",
}


@dataclass(frozen=True)
class WeekCounts:
    week_start: date
    counts: Counts
    reviews: int = 0


@dataclass(frozen=True)
class TrendPoint:
    week_start: date
    value: float
    samples: int
    withheld: bool


@dataclass(frozen=True)
class Trend:
    metric: TrendMetric
    category: str
    points: tuple[TrendPoint, ...]
    slope: float
    slope_lower: float
    slope_upper: float
    p_value: float
    direction: TrendDirection
    summary: str


@dataclass(frozen=True)
class TrendPolicy:
    alpha: float = 0.05
    """Significance level of the Mann–Kendall test."""
    min_points: int = 6
    """Weeks with a value needed before a direction is claimed."""
    min_group_size: int = 5


def points_of(
    metric: TrendMetric, weeks: Sequence[WeekCounts], *, min_group_size: int
) -> tuple[TrendPoint, ...]:
    points = []
    for week in weeks:
        c = week.counts
        if metric is TrendMetric.ACCEPTANCE_RATE:
            samples, value = c.decided, c.positive / c.decided if c.decided else 0.0
            withheld = c.findings < min_group_size or c.decided == 0
        elif metric is TrendMetric.NOT_USEFUL_RATE:
            samples = c.reacted
            value = (c.negative + c.dismissed) / c.reacted if c.reacted else 0.0
            withheld = c.findings < min_group_size or c.reacted == 0
        elif metric is TrendMetric.FINDINGS:
            samples, value, withheld = c.findings, float(c.findings), False
        else:
            samples = week.reviews
            value = c.findings / week.reviews if week.reviews else 0.0
            withheld = week.reviews == 0
        points.append(TrendPoint(week.week_start, 0.0 if withheld else value, samples, withheld))
    return tuple(points)


def analyse(
    metric: TrendMetric,
    category: str,
    weeks: Sequence[WeekCounts],
    policy: TrendPolicy,
) -> Trend:
    """The trend of one metric over consecutive weeks (oldest first)."""
    points = points_of(metric, weeks, min_group_size=policy.min_group_size)
    shown = [(index, p.value) for index, p in enumerate(points) if not p.withheld]
    label = METRIC_WORDS[metric] + (f" ({category})" if category else "")
    if len(shown) < policy.min_points:
        return Trend(
            metric, category, points, 0.0, 0.0, 0.0, 1.0, TrendDirection.INSUFFICIENT_DATA,
            f"{label}: {len(shown)} of {len(points)} weeks have enough data "
            f"(needs {policy.min_points}); no trend claimed",
        )  # fmt: skip
    # Imported here: SciPy and pymannkendall cost a second of start-up that a process which
    # only serves cached answers never pays.
    import pymannkendall
    from scipy.stats import theilslopes

    x = np.array([index for index, _ in shown], dtype=np.float64)
    y = np.array([value for _, value in shown], dtype=np.float64)
    if np.ptp(y) == 0.0:  # a flat line: no slope, nothing to test (and no 0/0 inside the test)
        slope = lower = upper = 0.0
        p_value = 1.0
    else:
        fit = theilslopes(y, x, alpha=0.95)
        slope, lower, upper = float(fit.slope), float(fit.low_slope), float(fit.high_slope)
        p_value = float(pymannkendall.original_test(y, alpha=policy.alpha).p)
    if p_value >= policy.alpha or slope == 0.0:
        direction = TrendDirection.STABLE
    elif (slope > 0) == HIGHER_IS_BETTER[metric]:
        direction = TrendDirection.IMPROVING
    else:
        direction = TrendDirection.WORSENING
    return Trend(
        metric, category, points, slope, lower, upper, p_value, direction,
        _summary(metric, label, slope, p_value, direction),
    )  # fmt: skip


def _summary(
    metric: TrendMetric, label: str, slope: float, p_value: float, direction: TrendDirection
) -> str:
    if metric in (TrendMetric.ACCEPTANCE_RATE, TrendMetric.NOT_USEFUL_RATE):
        pace = f"{slope * 100:+.1f} pp/week"
    else:
        pace = f"{slope:+.2f}/week"
    verdict = {
        TrendDirection.IMPROVING: "improving",
        TrendDirection.WORSENING: "worsening",
        TrendDirection.STABLE: "stable (no significant trend)",
    }[direction]
    return f"{label} {pace}, Mann–Kendall p = {p_value:.3g}: {verdict}"
