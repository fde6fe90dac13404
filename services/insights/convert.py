"""Protobuf ↔ domain for the insights service."""

from __future__ import annotations

import math
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2

from services.insights.domain.learning_paths import LearningPath
from services.insights.domain.rates import Counts, GroupRates, Rate
from services.insights.domain.roi import SEVERITY_NAMES, SEVERITY_OF_NAME, Roi, RoiAssumptions
from services.insights.domain.scopes import ScopeRef, ScopeType
from services.insights.domain.trends import Trend, TrendMetric
from services.insights.usecases.learning_paths import PathsView
from services.insights.usecases.refresh import PARTS, RefreshOutcome
from services.insights.usecases.roi import RoiView
from services.insights.usecases.team_metrics import GroupMetrics, TeamMetricsView
from shared.convert import timestamp_from_pb, timestamp_to_pb
from shared.errors import Violations

_SCOPE_TYPES = {
    common_pb2.SCOPE_TYPE_TEAM: ScopeType.TEAM,
    common_pb2.SCOPE_TYPE_REPOSITORY: ScopeType.REPOSITORY,
}
ALL_METRICS = tuple(TrendMetric)
MAX_SCOPE_NAME = 2048


def scope_from_pb(
    scope: common_pb2.Scope,
    violations: Violations,
    *,
    field: str = "scope",
    teams_only: bool = False,
) -> ScopeRef:
    name = scope.id.strip()
    kind = _SCOPE_TYPES.get(scope.type)
    if kind is None or (teams_only and kind is not ScopeType.TEAM):
        allowed = "SCOPE_TYPE_TEAM" if teams_only else "SCOPE_TYPE_TEAM or SCOPE_TYPE_REPOSITORY"
        violations.add(
            f"{field}.type",
            f"must be {allowed}: insights are per team and repository, never global or per person",
        )
        kind = ScopeType.TEAM
    if not name:
        violations.add(f"{field}.id", "is required (a team name or repository URL)")
    elif len(name) > MAX_SCOPE_NAME:
        violations.add(f"{field}.id", f"is longer than {MAX_SCOPE_NAME} characters")
    return ScopeRef(kind, name)


def scope_to_pb(ref: ScopeRef) -> common_pb2.Scope:
    kind = (
        common_pb2.SCOPE_TYPE_TEAM
        if ref.scope_type is ScopeType.TEAM
        else common_pb2.SCOPE_TYPE_REPOSITORY
    )
    return common_pb2.Scope(type=kind, id=ref.name)


def optional_time(value: Timestamp, field: str, violations: Violations) -> datetime | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    return timestamp_from_pb(value, field, violations)


def trend_metrics_from_pb(values: list[int], violations: Violations) -> tuple[TrendMetric, ...]:
    if not values:
        return ALL_METRICS
    metrics = []
    for index, value in enumerate(values):
        try:
            metrics.append(TrendMetric(value))
        except ValueError:
            violations.add(f"metrics[{index}]", "is not a known trend metric")
    return tuple(dict.fromkeys(metrics))


def assumptions_from_pb(
    message: insights_pb2.RoiAssumptions, defaults: RoiAssumptions, violations: Violations
) -> RoiAssumptions:
    def value(name: str) -> float | None:
        if not message.HasField(name):  # type: ignore[arg-type]
            return None
        number = float(getattr(message, name))
        if not math.isfinite(number) or number < 0:
            violations.add(f"assumptions.{name}", "must be a finite number ≥ 0")
            return None
        return number

    by_severity: dict[int, float] = {}
    for name, minutes in message.minutes_saved_by_severity.items():
        severity = SEVERITY_OF_NAME.get(name.strip().lower())
        if severity is None:
            violations.add(
                f"assumptions.minutes_saved_by_severity[{name}]",
                f"is not a severity ({', '.join(SEVERITY_NAMES.values())})",
            )
        elif not math.isfinite(minutes) or minutes < 0:
            violations.add(
                f"assumptions.minutes_saved_by_severity[{name}]", "must be a finite number ≥ 0"
            )
        else:
            by_severity[severity] = float(minutes)
    return defaults.overridden(
        minutes_saved_per_positive=value("minutes_saved_per_positive"),
        minutes_lost_per_negative=value("minutes_lost_per_negative"),
        minutes_lost_per_dismissed=value("minutes_lost_per_dismissed"),
        hourly_cost=value("hourly_cost"),
        minutes_saved_by_severity=by_severity,
    )


def assumptions_key(assumptions: RoiAssumptions) -> str:
    severities = ",".join(
        f"{s}={m:g}" for s, m in sorted(assumptions.minutes_saved_by_severity.items())
    )
    return (
        f"{assumptions.minutes_saved_per_positive:g}/{assumptions.minutes_lost_per_negative:g}/"
        f"{assumptions.minutes_lost_per_dismissed:g}/{assumptions.hourly_cost:g}/{severities}"
    )


# ---------------------------------------------------------------- domain → protobuf


def rate_to_pb(rate: Rate) -> common_pb2.Rate:
    return common_pb2.Rate(
        successes=rate.successes,
        trials=rate.trials,
        value=rate.value,
        wilson95=common_pb2.Interval(lower=rate.lower, upper=rate.upper),
        smoothed=rate.smoothed,
    )


def _set_rates(message: object, rates: GroupRates) -> None:
    if rates.acceptance is not None:
        message.acceptance.CopyFrom(rate_to_pb(rates.acceptance))  # type: ignore[attr-defined]
    if rates.not_useful is not None:
        message.not_useful.CopyFrom(rate_to_pb(rates.not_useful))  # type: ignore[attr-defined]
    message.rates_withheld_reason = rates.withheld_reason  # type: ignore[attr-defined]


def _set_counts(message: object, counts: Counts) -> None:
    message.findings = counts.findings  # type: ignore[attr-defined]
    message.positive = counts.positive  # type: ignore[attr-defined]
    message.negative = counts.negative  # type: ignore[attr-defined]
    message.dismissed = counts.dismissed  # type: ignore[attr-defined]


def category_to_pb(group: GroupMetrics) -> insights_pb2.CategoryMetrics:
    message = insights_pb2.CategoryMetrics(
        category=group.key,
        pending=group.counts.pending,
        median_minutes_to_action=group.median_minutes_to_action,
    )
    _set_counts(message, group.counts)
    _set_rates(message, group.rates)
    return message


def rule_to_pb(group: GroupMetrics) -> insights_pb2.RuleMetrics:
    message = insights_pb2.RuleMetrics(rule_id=group.key, category=group.category)
    _set_counts(message, group.counts)
    _set_rates(message, group.rates)
    return message


def team_metrics_to_pb(view: TeamMetricsView) -> insights_pb2.GetTeamMetricsResponse:
    overall = view.overall
    metrics = insights_pb2.TeamMetrics(
        scope=scope_to_pb(view.scope.ref),
        period_start=timestamp_to_pb(view.window.start),
        period_end=timestamp_to_pb(view.window.end),
        pending=overall.counts.pending,
        median_minutes_to_action=overall.median_minutes_to_action,
        reviews=view.reviews,
        repositories=view.repositories,
        timed_actions=overall.timed_actions,
    )
    _set_counts(metrics, overall.counts)
    _set_rates(metrics, overall.rates)
    response = insights_pb2.GetTeamMetricsResponse(
        metrics=metrics,
        categories=[category_to_pb(c) for c in view.categories],
        rules=[rule_to_pb(r) for r in view.rules],
    )
    if view.data_as_of is not None:
        response.data_as_of.CopyFrom(timestamp_to_pb(view.data_as_of))
    return response


def trend_to_pb(trend: Trend) -> insights_pb2.Trend:
    return insights_pb2.Trend(
        metric=int(trend.metric),  # type: ignore[arg-type]
        category=trend.category,
        points=[
            insights_pb2.TrendPoint(
                week_start=timestamp_to_pb(
                    datetime(p.week_start.year, p.week_start.month, p.week_start.day)
                ),
                value=p.value,
                samples=p.samples,
                withheld=p.withheld,
            )
            for p in trend.points
        ],
        slope=trend.slope,
        p_value=trend.p_value,
        direction=int(trend.direction),  # type: ignore[arg-type]
        slope_interval=common_pb2.Interval(lower=trend.slope_lower, upper=trend.slope_upper),
        summary=trend.summary,
    )


def trends_to_pb(trends: list[Trend]) -> insights_pb2.GetTrendsResponse:
    return insights_pb2.GetTrendsResponse(trends=[trend_to_pb(t) for t in trends])


def path_to_pb(path: LearningPath) -> insights_pb2.LearningPath:
    return insights_pb2.LearningPath(
        rank=path.rank,
        category=path.category,
        weight=path.weight,
        real_findings=path.real_findings,
        critical_findings=path.critical_findings,
        high_findings=path.high_findings,
        recent_findings=path.recent_findings,
        top_rules=list(path.top_rules),
        recommendation=path.recommendation,
        example_finding_ids=list(path.example_finding_ids),
    )


def paths_to_pb(view: PathsView) -> insights_pb2.GetLearningPathsResponse:
    response = insights_pb2.GetLearningPathsResponse(paths=[path_to_pb(p) for p in view.paths])
    if view.computed_at is not None:
        response.computed_time.CopyFrom(timestamp_to_pb(view.computed_at))
    return response


def assumptions_to_pb(assumptions: RoiAssumptions) -> insights_pb2.RoiAssumptions:
    return insights_pb2.RoiAssumptions(
        minutes_saved_per_positive=assumptions.minutes_saved_per_positive,
        minutes_lost_per_negative=assumptions.minutes_lost_per_negative,
        minutes_lost_per_dismissed=assumptions.minutes_lost_per_dismissed,
        hourly_cost=assumptions.hourly_cost,
        minutes_saved_by_severity={
            SEVERITY_NAMES[s]: m for s, m in assumptions.minutes_saved_by_severity.items()
        },
    )


def _category_roi(roi: Roi, assumptions: RoiAssumptions) -> insights_pb2.CategoryRoi:
    return insights_pb2.CategoryRoi(
        category=roi.key,
        positive=roi.positive,
        negative=roi.negative,
        dismissed=roi.dismissed,
        minutes_saved=roi.minutes_saved,
        minutes_lost=roi.minutes_lost,
        net_minutes=roi.net_minutes,
        net_minutes_interval=common_pb2.Interval(lower=roi.net_lower, upper=roi.net_upper),
        net_cost_saved=roi.cost(roi.net_minutes, assumptions),
    )


def roi_to_pb(view: RoiView) -> insights_pb2.GetRoiResponse:
    total, assumptions = view.total, view.assumptions
    return insights_pb2.GetRoiResponse(
        categories=[_category_roi(c, assumptions) for c in view.categories],
        net_minutes=total.net_minutes,
        net_cost_saved=total.cost(total.net_minutes, assumptions),
        assumptions=assumptions_to_pb(assumptions),
        net_minutes_interval=common_pb2.Interval(lower=total.net_lower, upper=total.net_upper),
        net_cost_interval=common_pb2.Interval(
            lower=total.cost(total.net_lower, assumptions),
            upper=total.cost(total.net_upper, assumptions),
        ),
        minutes_saved=total.minutes_saved,
        minutes_lost=total.minutes_lost,
        period_start=timestamp_to_pb(view.window.start),
        period_end=timestamp_to_pb(view.window.end),
    )


def refresh_parts_from_pb(parts: list[str], violations: Violations) -> list[str]:
    chosen = []
    for index, part in enumerate(parts):
        name = part.strip().lower()
        if name not in PARTS:
            violations.add(f"parts[{index}]", f"is not one of {', '.join(PARTS)}")
        else:
            chosen.append(name)
    return chosen


def refresh_to_pb(outcome: RefreshOutcome) -> insights_pb2.RefreshInsightsResponse:
    return insights_pb2.RefreshInsightsResponse(
        refreshed_parts=outcome.parts,
        rows_written=outcome.rows_written,
        rows_archived=outcome.rows_archived,
        teams=outcome.teams,
        changes=[
            insights_pb2.RefreshChange(
                team=c.team, part=c.part, rows_written=c.rows_written, rows_archived=c.rows_archived
            )
            for c in outcome.changes
        ],
    )
