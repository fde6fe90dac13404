"""GetTeamMetrics: counts, rates with intervals, per category and rule, time to first action."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from services.insights.domain.action_times import median_minutes
from services.insights.domain.rates import Counts, GroupRates, RatePolicy, group_rates
from services.insights.domain.scopes import ResolvedScope
from services.insights.domain.windows import Window
from services.insights.usecases.reads import OutcomeRow
from shared.outcome import Outcome


class MetricsReads(Protocol):
    async def outcome_counts(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[OutcomeRow]: ...
    async def action_histogram(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[tuple[str, int, int]]: ...
    async def activity(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> tuple[int, int]: ...
    async def global_counts(
        self, first_day: date, last_day: date
    ) -> list[tuple[str, int, int]]: ...
    async def data_as_of(self) -> datetime | None: ...


@dataclass(frozen=True)
class GroupMetrics:
    key: str
    """The category or rule id; empty for the whole scope."""
    category: str
    counts: Counts
    rates: GroupRates
    median_minutes_to_action: float = 0.0
    timed_actions: int = 0


@dataclass(frozen=True)
class TeamMetricsView:
    scope: ResolvedScope
    window: Window
    overall: GroupMetrics
    reviews: int
    repositories: int
    categories: list[GroupMetrics]
    rules: list[GroupMetrics]
    data_as_of: datetime | None


_SLOT = {int(Outcome.POSITIVE): 0, int(Outcome.NEGATIVE): 1, int(Outcome.DISMISSED): 2,
         int(Outcome.PENDING): 3}  # fmt: skip


def counts_of(pairs: Iterable[tuple[int, int]]) -> Counts:
    """Counts from (outcome, findings) pairs."""
    slots = [0, 0, 0, 0]
    for outcome, findings in pairs:
        slots[_SLOT[outcome]] += findings
    return Counts(positive=slots[0], negative=slots[1], dismissed=slots[2], pending=slots[3])


async def team_metrics(
    reads: MetricsReads,
    scope: ResolvedScope,
    window: Window,
    policy: RatePolicy,
    rows: list[OutcomeRow] | None = None,
) -> TeamMetricsView:
    """``rows``: the window's outcome counts when the caller has them already (the report
    shares them with ROI)."""
    first, last = window.first_day, window.last_day
    if rows is None:
        rows = await reads.outcome_counts(scope, first, last)
    histogram = await reads.action_histogram(scope, first, last)
    reviews, repositories = await reads.activity(scope, first, last)
    world = counts_of((o, n) for _, o, n in await reads.global_counts(first, last))
    world_rates = group_rates(world, parent=None, policy=RatePolicy(1, policy.strength))

    overall_counts = counts_of((r.outcome, r.findings) for r in rows)
    overall_rates = group_rates(overall_counts, parent=world_rates, policy=policy)
    whole_histogram: dict[int, int] = {}
    category_histograms: dict[str, dict[int, int]] = {}
    for category, bucket, findings in histogram:
        whole_histogram[bucket] = whole_histogram.get(bucket, 0) + findings
        per = category_histograms.setdefault(category, {})
        per[bucket] = per.get(bucket, 0) + findings

    by_category: dict[str, list[OutcomeRow]] = {}
    by_rule: dict[tuple[str, str], list[OutcomeRow]] = {}
    for row in rows:
        by_category.setdefault(row.category, []).append(row)
        by_rule.setdefault((row.category, row.rule_id), []).append(row)
    categories: dict[str, GroupMetrics] = {}
    for category, group in by_category.items():
        counts = counts_of((r.outcome, r.findings) for r in group)
        own_histogram = category_histograms.get(category, {})
        categories[category] = GroupMetrics(
            key=category,
            category=category,
            counts=counts,
            rates=group_rates(counts, parent=overall_rates, policy=policy),
            median_minutes_to_action=median_minutes(own_histogram),
            timed_actions=sum(own_histogram.values()),
        )
    rules = []
    for (category, rule_id), group in by_rule.items():
        counts = counts_of((r.outcome, r.findings) for r in group)
        rules.append(
            GroupMetrics(
                key=rule_id,
                category=category,
                counts=counts,
                rates=group_rates(counts, parent=categories[category].rates, policy=policy),
            )
        )

    def noisiest_first(group: GroupMetrics) -> tuple[bool, float, int, str]:
        acceptance = group.rates.acceptance
        return (
            acceptance is None,
            acceptance.value if acceptance is not None else 0.0,
            -group.counts.findings,
            group.key,
        )

    return TeamMetricsView(
        scope=scope,
        window=window,
        overall=GroupMetrics(
            key="",
            category="",
            counts=overall_counts,
            rates=overall_rates,
            median_minutes_to_action=median_minutes(whole_histogram),
            timed_actions=sum(whole_histogram.values()),
        ),
        reviews=reviews,
        repositories=repositories,
        categories=sorted(categories.values(), key=lambda g: (-g.counts.findings, g.key)),
        rules=sorted(rules, key=noisiest_first),
        data_as_of=await reads.data_as_of(),
    )
