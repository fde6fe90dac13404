"""The pure parts of insights: rates, trends, time to action, ROI, learning paths, charts."""

from __future__ import annotations

import random
import statistics
from datetime import date, timedelta

import numpy as np
import pytest
from scipy.stats import binomtest

from services.insights.dashboard.charts import interval_bar, line_chart
from services.insights.domain.action_times import bucket_bounds, bucket_of, median_minutes
from services.insights.domain.learning_paths import PathEvidence, PathPolicy, rank_paths
from services.insights.domain.rates import Counts, RatePolicy, group_rates, wilson_interval
from services.insights.domain.roi import OutcomeCounts, RoiAssumptions, roi_of
from services.insights.domain.trends import (
    TrendDirection,
    TrendMetric,
    TrendPolicy,
    WeekCounts,
    analyse,
)

MONDAY = date(2026, 9, 7)


def weeks_of(acceptance: list[float], decided: int = 60) -> list[WeekCounts]:
    return [
        WeekCounts(
            MONDAY + timedelta(days=7 * i),
            Counts(positive=round(rate * decided), negative=decided - round(rate * decided)),
            reviews=10,
        )
        for i, rate in enumerate(acceptance)
    ]


@pytest.mark.parametrize(
    ("series", "metric", "direction"),
    [
        (
            [0.30 + 0.03 * i for i in range(12)],
            TrendMetric.ACCEPTANCE_RATE,
            TrendDirection.IMPROVING,
        ),
        (
            [0.80 - 0.04 * i for i in range(12)],
            TrendMetric.ACCEPTANCE_RATE,
            TrendDirection.WORSENING,
        ),
        (
            [0.5, 0.52, 0.48, 0.5, 0.51, 0.49, 0.5, 0.52, 0.48, 0.5, 0.49, 0.51],
            TrendMetric.ACCEPTANCE_RATE,
            TrendDirection.STABLE,
        ),
        ([0.5] * 12, TrendMetric.ACCEPTANCE_RATE, TrendDirection.STABLE),
        # The not-useful rate is 1 - acceptance here: falling noise is good news...
        (
            [0.30 + 0.03 * i for i in range(12)],
            TrendMetric.NOT_USEFUL_RATE,
            TrendDirection.IMPROVING,
        ),
        # ...rising noise is bad news.
        (
            [0.80 - 0.04 * i for i in range(12)],
            TrendMetric.NOT_USEFUL_RATE,
            TrendDirection.WORSENING,
        ),
    ],
)
def test_trends_classify_rising_falling_and_flat_series(
    series: list[float], metric: TrendMetric, direction: TrendDirection
) -> None:
    trend = analyse(metric, "", weeks_of(series), TrendPolicy())
    assert trend.direction is direction, trend.summary
    if direction in (TrendDirection.IMPROVING, TrendDirection.WORSENING):
        assert trend.p_value < 0.05
        assert trend.slope_lower <= trend.slope <= trend.slope_upper
    else:
        assert trend.p_value >= 0.05 or trend.slope == 0


def test_findings_rising_is_worsening_and_sparse_weeks_are_withheld() -> None:
    weeks = [
        WeekCounts(MONDAY + timedelta(days=7 * i), Counts(positive=5 + 3 * i, negative=5), 5)
        for i in range(12)
    ]
    assert analyse(TrendMetric.FINDINGS, "", weeks, TrendPolicy()).direction is (
        TrendDirection.WORSENING
    )
    sparse = [
        WeekCounts(MONDAY + timedelta(days=7 * i), Counts(positive=2, negative=1))
        for i in range(12)
    ]
    trend = analyse(TrendMetric.ACCEPTANCE_RATE, "", sparse, TrendPolicy(min_group_size=5))
    assert trend.direction is TrendDirection.INSUFFICIENT_DATA
    assert all(p.withheld and p.value == 0 for p in trend.points)


def test_wilson_matches_scipy_and_small_groups_are_withheld() -> None:
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(1, 500)
        k = rng.randint(0, n)
        lower, upper = wilson_interval(k, n)
        expected = binomtest(k, n).proportion_ci(method="wilson")
        assert float(lower) == pytest.approx(expected.low, abs=1e-9)
        assert float(upper) == pytest.approx(expected.high, abs=1e-9)
    policy = RatePolicy(min_group_size=5, strength=10)
    small = group_rates(Counts(positive=3, negative=1), parent=None, policy=policy)
    assert small.acceptance is None
    assert "4 findings" in small.withheld_reason
    parent = group_rates(Counts(positive=800, negative=200), parent=None, policy=policy)
    child = group_rates(Counts(positive=1, negative=9), parent=parent, policy=policy)
    assert child.acceptance is not None
    assert parent.acceptance is not None
    # Shrunk toward the parent: (1 + 10·p) / (10 + 10).
    assert child.acceptance.smoothed == pytest.approx((1 + 10 * parent.acceptance.smoothed) / 20)


def test_median_from_the_histogram_is_within_its_bucket_of_the_exact_median() -> None:
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 100, 5001):
        minutes = rng.lognormal(4, 1.5, size)
        histogram: dict[int, int] = {}
        for m in minutes:
            histogram[bucket_of(m)] = histogram.get(bucket_of(m), 0) + 1
        estimate = median_minutes(histogram)
        exact = statistics.median(minutes)
        ordered = np.sort(minutes)
        low = bucket_bounds(bucket_of(ordered[(size - 1) // 2]))[0]
        high = bucket_bounds(bucket_of(ordered[size // 2]))[1]
        assert low <= estimate <= high
        if size % 2:  # one middle value: the estimate is within its bucket, 9% wide
            assert abs(estimate - exact) <= 0.1 * exact
    assert median_minutes({}) == 0.0
    assert bucket_of(-5) == 0


def test_roi_interval_contains_the_point_value() -> None:
    assumptions = RoiAssumptions()
    rng = random.Random(9)
    for _ in range(200):
        counts = OutcomeCounts(
            {s: rng.randint(0, 30) for s in range(1, 6)}, rng.randint(0, 50), rng.randint(0, 50)
        )
        roi = roi_of("x", counts, assumptions)
        expected = sum(
            n * assumptions.minutes_saved(s) for s, n in counts.positive_by_severity.items()
        )
        assert roi.minutes_saved == pytest.approx(expected)
        assert roi.net_minutes == pytest.approx(expected - roi.minutes_lost)
        assert roi.net_lower <= roi.net_minutes <= roi.net_upper
    empty = roi_of("none", OutcomeCounts({}, 0, 0), assumptions)
    assert (empty.net_minutes, empty.net_lower, empty.net_upper) == (0.0, 0.0, 0.0)
    cheaper = assumptions.overridden(hourly_cost=50.0, minutes_saved_by_severity={5: 200.0})
    assert cheaper.hourly_cost == 50.0
    assert cheaper.minutes_saved(5) == 200.0
    assert cheaper.minutes_saved(4) == assumptions.minutes_saved(4)


def test_learning_paths_weigh_severity_and_recency() -> None:
    policy = PathPolicy()
    evidence = [
        # Many old low-severity style findings...
        PathEvidence("style", "sty/1", 2, 40, 40 * 0.1, 0),
        # ...weigh less than a few recent critical security ones.
        PathEvidence("security", "sec/1", 5, 6, 6 * 0.9, 6),
        PathEvidence("security", "sec/2", 4, 3, 3 * 0.9, 3),
        PathEvidence("performance", "perf/1", 3, 2, 2.0, 2),  # under the minimum: not a path
    ]
    paths = rank_paths(evidence, policy, max_paths=5)
    assert [p.category for p in paths] == ["security", "style"]
    security = paths[0]
    assert (security.real_findings, security.critical_findings, security.high_findings) == (9, 6, 3)
    assert security.top_rules == ("sec/1", "sec/2")
    assert security.recommendation.startswith("Study security: 9 findings acted on")


def test_charts_break_lines_at_withheld_weeks_and_clamp_bars() -> None:
    chart = line_chart([0.5, None, 0.25, 1.0], ["a", "b", "c", "d"], rate=True)
    assert chart.path.count("M") == 2  # a gap at the withheld week
    assert len(chart.dots) == 3
    bar = interval_bar(0.5, 0.4, 1.7, low=0, high=1)
    assert (bar.value, bar.lower, bar.upper) == (50.0, 40.0, 100.0)
