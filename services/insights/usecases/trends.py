"""GetTrends: weekly series over the last complete weeks, their slope and significance.

Only complete weeks count (the current week is partial: its findings count would always look
like an improvement). The statistics run in a worker thread: a few dozen series of SciPy work
would otherwise hold the event loop for tens of milliseconds. The reads and the statistics are
separate steps (``weekly_series``, ``analyse_series``), so that a caller with more reads to make
(the report) makes them while the statistics run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from services.insights.domain.rates import Counts
from services.insights.domain.scopes import ResolvedScope
from services.insights.domain.trends import Trend, TrendMetric, TrendPolicy, WeekCounts, analyse
from services.insights.domain.windows import week_start
from services.insights.usecases.reads import WeekRow
from services.insights.usecases.team_metrics import counts_of


class TrendReads(Protocol):
    async def weekly_counts(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[WeekRow]: ...
    async def weekly_reviews(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> dict[date, int]: ...


def complete_weeks(today: date, weeks: int) -> list[date]:
    """The Mondays of the last ``weeks`` complete weeks before ``today``, oldest first."""
    last = week_start(today) - timedelta(days=7)
    return [last - timedelta(days=7 * (weeks - 1 - i)) for i in range(weeks)]


@dataclass(frozen=True)
class TrendQuery:
    """Which trends: every metric of ``metrics`` over the last ``weeks`` complete weeks before
    ``today``, overall and, with ``per_category``, per category."""

    today: date
    weeks: int
    metrics: Sequence[TrendMetric]
    per_category: bool


TrendSeries = list[tuple[TrendMetric, str, list[WeekCounts]]]
"""(metric, category or "" for the whole scope, its weeks oldest first): what ``analyse_series``
turns into trends."""


async def weekly_series(reads: TrendReads, scope: ResolvedScope, query: TrendQuery) -> TrendSeries:
    """The weekly counts of every series ``query`` asks for: the reads of a trend answer."""
    mondays = complete_weeks(query.today, query.weeks)
    first, last = mondays[0], mondays[-1] + timedelta(days=6)
    rows = await reads.weekly_counts(scope, first, last)
    reviews = await reads.weekly_reviews(scope, first, last)
    grouped: dict[tuple[date, str], list[tuple[int, int]]] = {}
    for row in rows:
        grouped.setdefault((row.week_start, row.category), []).append((row.outcome, row.findings))
    categories = sorted({category for _, category in grouped})

    def series(category: str | None) -> list[WeekCounts]:
        result = []
        for monday in mondays:
            if category is None:
                pairs = [p for c in categories for p in grouped.get((monday, c), [])]
            else:
                pairs = grouped.get((monday, category), [])
            counts = counts_of(pairs) if pairs else Counts()
            result.append(WeekCounts(monday, counts, reviews.get(monday, 0)))
        return result

    work: TrendSeries = []
    overall = series(None)
    work += [(metric, "", overall) for metric in query.metrics]
    if query.per_category:
        for category in categories:
            weekly = series(category)
            work += [(metric, category, weekly) for metric in query.metrics]
    return work


def analyse_series(work: TrendSeries, policy: TrendPolicy) -> list[Trend]:
    """The statistics of a trend answer: CPU only (SciPy), for a worker thread."""
    return [analyse(metric, category, weekly, policy) for metric, category, weekly in work]


async def trends(
    reads: TrendReads, scope: ResolvedScope, query: TrendQuery, policy: TrendPolicy
) -> list[Trend]:
    """The trends ``query`` asks for."""
    work = await weekly_series(reads, scope, query)
    return await asyncio.to_thread(analyse_series, work, policy)
