"""The insights RPCs against a brute-force recomputation from the raw rows, and their errors."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2
from scipy.stats import binomtest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.insights.domain.action_times import bucket_bounds, bucket_of
from shared.outcome import Outcome, outcome_of
from tests.conftest import StartService, auth
from tests.integration.feedback.test_ingestion import violations_of
from tests.integration.insights.conftest import (
    Stub,
    fold,
    repository,
    start_insights,
    stub_of,
    team,
)
from tests.integration.insights.history import GeneratedLog, utc_day

READER = auth("reader")
M = TypeVar("M", bound=Message)


def in_period(moment: datetime, response_start: datetime, response_end: datetime) -> bool:
    """The rollups are daily: a window covers every UTC day it touches."""
    last = response_end.date()
    if response_end == datetime(last.year, last.month, last.day, tzinfo=UTC):
        last -= timedelta(days=1)
    return response_start.date() <= utc_day(moment) <= last


def brute_force_counts(
    log: GeneratedLog, team_id: int, start: datetime, end: datetime, repository_id: int = 0
) -> tuple[Counter[str], dict[str, Counter[str]], dict[str, Counter[str]], list[float], int]:
    """(overall, per category, per rule, first-action minutes, reviews) from the raw log."""
    events: dict[int, list[tuple[int, datetime, int]]] = {}
    for e in log.events:
        events.setdefault(e["finding_id"], []).append((e["kind"], e["occurred_at"], e["id"]))
    names = {Outcome.POSITIVE: "positive", Outcome.NEGATIVE: "negative",
             Outcome.DISMISSED: "dismissed", Outcome.PENDING: "pending"}  # fmt: skip
    overall: Counter[str] = Counter()
    categories: dict[str, Counter[str]] = {}
    rules: dict[str, Counter[str]] = {}
    minutes: list[float] = []
    reviews: set[int] = set()
    for f in log.findings:
        if f["team_id"] != team_id or not in_period(f["created_at"], start, end):
            continue
        if repository_id and f["repository_id"] != repository_id:
            continue
        own = events.get(f["id"], [])
        name = names[outcome_of(own)]
        for counter in (
            overall,
            categories.setdefault(f["category"], Counter()),
            rules.setdefault(f["rule_id"], Counter()),
        ):
            counter[name] += 1
            counter["findings"] += 1
        decisive = [at for kind, at, _ in own if kind != 5]
        if decisive:
            minutes.append(max(0.0, (min(decisive) - f["created_at"]).total_seconds() / 60))
        reviews.add(f["review_id"])
    return overall, categories, rules, minutes, len(reviews)


def wilson(successes: int, trials: int) -> tuple[float, float]:
    interval = binomtest(successes, trials).proportion_ci(method="wilson")
    return interval.low, interval.high


async def test_team_metrics_equal_a_brute_force_recomputation(
    start_service: StartService, generated: GeneratedLog
) -> None:
    stub = stub_of(await start_insights(start_service))
    await fold(stub)
    response = await stub.GetTeamMetrics(
        insights_pb2.GetTeamMetricsRequest(scope=team("team-1")), metadata=READER
    )
    m = response.metrics
    start, end = m.period_start.ToDatetime(UTC), m.period_end.ToDatetime(UTC)
    assert end - start == timedelta(days=30)
    overall, categories, rules, minutes, reviews = brute_force_counts(generated, 2, start, end)
    assert overall["findings"] > 50  # the test means something
    assert (m.findings, m.positive, m.negative, m.dismissed, m.pending) == (
        overall["findings"], overall["positive"], overall["negative"],
        overall["dismissed"], overall["pending"],
    )  # fmt: skip
    assert m.reviews == reviews
    assert m.repositories == 2
    decided = overall["positive"] + overall["negative"]
    assert m.acceptance.successes == overall["positive"]
    assert m.acceptance.trials == decided
    assert m.acceptance.value == pytest.approx(overall["positive"] / decided)
    low, high = wilson(overall["positive"], decided)
    assert m.acceptance.wilson95.lower == pytest.approx(low, abs=1e-9)
    assert m.acceptance.wilson95.upper == pytest.approx(high, abs=1e-9)
    reacted = decided + overall["dismissed"]
    assert m.not_useful.trials == reacted
    assert m.not_useful.successes == overall["negative"] + overall["dismissed"]
    # The median from the 1/8-octave histogram lies in the bucket of the exact median.
    assert m.timed_actions == len(minutes)
    exact = statistics.median(minutes)
    ordered = sorted(minutes)
    lows = bucket_bounds(bucket_of(ordered[(len(ordered) - 1) // 2]))
    highs = bucket_bounds(bucket_of(ordered[len(ordered) // 2]))
    assert lows[0] - 1e-9 <= m.median_minutes_to_action <= highs[1] + 1e-9
    assert abs(m.median_minutes_to_action - exact) <= 0.2 * exact + 1e-6
    assert {c.category: c.findings for c in response.categories} == {
        name: counts["findings"] for name, counts in categories.items()
    }
    for c in response.categories:
        assert (c.positive, c.negative, c.dismissed) == (
            categories[c.category]["positive"],
            categories[c.category]["negative"],
            categories[c.category]["dismissed"],
        )
    assert {r.rule_id: r.findings for r in response.rules} == {
        name: counts["findings"] for name, counts in rules.items()
    }
    shown = [r.acceptance.value for r in response.rules if r.HasField("acceptance")]
    assert shown == sorted(shown)  # noisiest rules first


async def test_repository_scope_counts_only_that_repository(
    start_service: StartService, generated: GeneratedLog
) -> None:
    stub = stub_of(await start_insights(start_service))
    await fold(stub)
    url = "https://git.example.com/team-0/repo-1"
    response = await stub.GetTeamMetrics(
        insights_pb2.GetTeamMetricsRequest(scope=repository(url)), metadata=READER
    )
    m = response.metrics
    start, end = m.period_start.ToDatetime(UTC), m.period_end.ToDatetime(UTC)
    repository_id = generated.repositories[url][0]
    overall, *_ = brute_force_counts(generated, 1, start, end, repository_id)
    assert m.findings == overall["findings"] > 0
    assert m.repositories == 1


async def test_a_team_is_the_sum_of_its_repositories(
    start_service: StartService, generated: GeneratedLog
) -> None:
    """The team and the repository statements of an aggregate are separate SQL: they agree."""
    stub = stub_of(await start_insights(start_service))
    await fold(stub)
    whole = (
        await stub.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=team("team-0")), metadata=READER
        )
    ).metrics
    parts = [
        (
            await stub.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(scope=repository(url)), metadata=READER
            )
        ).metrics
        for url, (_, team_id) in generated.repositories.items()
        if team_id == 1
    ]
    assert len(parts) > 1
    for field in ("findings", "positive", "negative", "dismissed", "pending", "reviews"):
        assert getattr(whole, field) == sum(getattr(part, field) for part in parts) > 0, field
    assert whole.repositories == sum(part.repositories for part in parts)


def _without_times(message: M) -> M:
    """``message`` without the instants an answer stamps when it is computed (and the last
    fold's, which the service's own background fold may move between two calls)."""
    copy = type(message)()
    copy.CopyFrom(message)
    for name in ("period_start", "period_end", "generate_time", "computed_time", "data_as_of"):
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    if "metrics" in copy.DESCRIPTOR.fields_by_name:
        copy.metrics.ClearField("period_start")
        copy.metrics.ClearField("period_end")
    return copy


async def test_the_report_is_what_each_rpc_answers(
    start_service: StartService, generated: GeneratedLog
) -> None:
    """The report reads its parts in its own order (the trend statistics run while the rest is
    read): each part equals the answer of its own RPC."""
    stub = stub_of(await start_insights(start_service, cache_ttl_seconds=0))
    await fold(stub)
    for name in ("team-0", "team-1", "team-2"):
        report = await stub.GetInsightsReport(
            insights_pb2.GetInsightsReportRequest(scope=team(name)), metadata=READER
        )
        metrics = await stub.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=team(name)), metadata=READER
        )
        trends = await stub.GetTrends(
            insights_pb2.GetTrendsRequest(scope=team(name)), metadata=READER
        )
        paths = await stub.GetLearningPaths(
            insights_pb2.GetLearningPathsRequest(scope=team(name)), metadata=READER
        )
        roi = await stub.GetRoi(insights_pb2.GetRoiRequest(scope=team(name)), metadata=READER)
        assert report.metrics.metrics.findings > 0
        assert _without_times(report.metrics) == _without_times(metrics)
        assert report.trends == trends
        assert _without_times(report.learning_paths) == _without_times(paths)
        assert _without_times(report.roi) == _without_times(roi)


async def test_roi_equals_the_assumptions_applied_to_the_counts_and_its_interval_holds_it(
    start_service: StartService, generated: GeneratedLog
) -> None:
    stub = stub_of(await start_insights(start_service))
    await fold(stub)
    assumptions = insights_pb2.RoiAssumptions(
        minutes_lost_per_negative=7.0, minutes_saved_by_severity={"critical": 120.0}
    )
    response = await stub.GetRoi(
        insights_pb2.GetRoiRequest(scope=team("team-0"), assumptions=assumptions),
        metadata=READER,
    )
    used = response.assumptions
    assert used.minutes_lost_per_negative == 7.0  # overridden
    assert used.minutes_lost_per_dismissed == 2.0  # default kept
    assert used.minutes_saved_by_severity["critical"] == 120.0
    assert used.minutes_saved_by_severity["high"] == 30.0
    start, end = response.period_start.ToDatetime(UTC), response.period_end.ToDatetime(UTC)
    events: dict[int, list[tuple[int, datetime, int]]] = {}
    for e in generated.events:
        events.setdefault(e["finding_id"], []).append((e["kind"], e["occurred_at"], e["id"]))
    saved = lost = 0.0
    for f in generated.findings:
        if f["team_id"] != 1 or not in_period(f["created_at"], start, end):
            continue
        outcome = outcome_of(events.get(f["id"], []))
        if outcome is Outcome.POSITIVE:
            saved += used.minutes_saved_by_severity[
                ["info", "low", "medium", "high", "critical"][f["severity"] - 1]
            ]
        elif outcome is Outcome.NEGATIVE:
            lost += 7.0
        elif outcome is Outcome.DISMISSED:
            lost += 2.0
    assert response.minutes_saved == pytest.approx(saved)
    assert response.minutes_lost == pytest.approx(lost)
    assert response.net_minutes == pytest.approx(saved - lost)
    assert response.net_minutes_interval.lower <= response.net_minutes
    assert response.net_minutes <= response.net_minutes_interval.upper
    assert response.net_minutes_interval.lower < response.net_minutes_interval.upper
    assert response.net_cost_saved == pytest.approx((saved - lost) / 60 * 100.0)
    for category in response.categories:
        assert category.net_minutes_interval.lower <= category.net_minutes
        assert category.net_minutes <= category.net_minutes_interval.upper
    assert sum(c.net_minutes for c in response.categories) == pytest.approx(response.net_minutes)


async def test_trends_report_every_metric_over_complete_weeks(
    start_service: StartService, generated: GeneratedLog
) -> None:
    stub = stub_of(await start_insights(start_service))
    await fold(stub)
    response = await stub.GetTrends(
        insights_pb2.GetTrendsRequest(scope=team("team-2"), per_category=True), metadata=READER
    )
    overall = [t for t in response.trends if not t.category]
    assert [t.metric for t in overall] == [1, 2, 3, 4]
    findings = next(t for t in overall if t.metric == insights_pb2.TREND_METRIC_FINDINGS)
    assert len(findings.points) == 12
    weeks = [p.week_start.ToDatetime(UTC) for p in findings.points]
    assert all(w.weekday() == 0 for w in weeks)
    assert weeks[-1] + timedelta(days=7) <= datetime.now(UTC)  # the current week is left out
    first, last = weeks[0], weeks[-1] + timedelta(days=7)
    expected = Counter(
        (utc_day(f["created_at"]) - timedelta(days=utc_day(f["created_at"]).weekday()))
        for f in generated.findings
        if f["team_id"] == 3 and first.date() <= utc_day(f["created_at"]) < last.date()
    )
    assert [int(p.value) for p in findings.points] == [expected.get(w.date(), 0) for w in weeks]
    for trend in response.trends:
        assert trend.direction != insights_pb2.TREND_DIRECTION_UNSPECIFIED
        assert 0.0 <= trend.p_value <= 1.0
        assert trend.summary
    assert {t.category for t in response.trends if t.category} <= {
        "security", "performance", "style", "correctness"
    }  # fmt: skip


async def test_learning_paths_follow_the_acted_on_findings(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = stub_of(await start_insights(start_service))
    await fold(stub)
    refresh = await stub.RefreshInsights(
        insights_pb2.RefreshInsightsRequest(parts=["learning_paths"], scopes=[team("team-0")]),
        metadata=auth("operator"),
    )
    assert refresh.teams == 1
    response = await stub.GetLearningPaths(
        insights_pb2.GetLearningPathsRequest(scope=team("team-0")), metadata=READER
    )
    assert response.paths
    assert response.computed_time.seconds > 0  # served from what RefreshInsights persisted
    weights = [p.weight for p in response.paths]
    assert weights == sorted(weights, reverse=True)
    async with db_engine.connect() as connection:
        for path in response.paths:
            assert path.recommendation.startswith(f"Study {path.category}")
            assert path.top_rules
            assert path.example_finding_ids
            rows = (
                await connection.execute(
                    text("SELECT team_id, category FROM findings WHERE id = ANY(:ids)"),
                    {"ids": list(path.example_finding_ids)},
                )
            ).all()
            assert {(1, path.category)} == set(rows)
            events = {e["finding_id"]: [] for e in generated.events}  # type: ignore[var-annotated]
            for e in generated.events:
                events[e["finding_id"]].append((e["kind"], e["occurred_at"], e["id"]))
            assert all(outcome_of(events[i]) is Outcome.POSITIVE for i in path.example_finding_ids)


async def test_unknown_teams_are_not_found_and_empty_teams_answer_empty(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    stub = stub_of(await start_insights(start_service))
    for call in (
        stub.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=team("nobody")), metadata=READER
        ),
        stub.GetInsightsReport(
            insights_pb2.GetInsightsReportRequest(scope=team("nobody")), metadata=READER
        ),
        stub.GetRoi(
            insights_pb2.GetRoiRequest(scope=repository("https://nowhere/x")), metadata=READER
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    async with db_engine.begin() as connection:
        await connection.execute(text("INSERT INTO teams (name) VALUES ('quiet')"))
    report = await stub.GetInsightsReport(
        insights_pb2.GetInsightsReportRequest(scope=team("quiet")), metadata=READER
    )
    metrics = report.metrics.metrics
    assert metrics.findings == 0
    assert not metrics.HasField("acceptance")
    assert "minimum group size" in metrics.rates_withheld_reason
    assert not report.learning_paths.paths
    assert report.roi.net_minutes == 0
    assert all(
        t.direction == insights_pb2.TREND_DIRECTION_INSUFFICIENT_DATA
        for t in report.trends.trends
        if t.metric != insights_pb2.TREND_METRIC_FINDINGS
    )


async def test_small_groups_have_their_rates_withheld(
    start_service: StartService, generated: GeneratedLog
) -> None:
    stub = stub_of(await start_insights(start_service, min_group_size=40))
    await fold(stub)
    response = await stub.GetTeamMetrics(
        insights_pb2.GetTeamMetricsRequest(scope=team("team-0")), metadata=READER
    )
    withheld = [r for r in response.rules if r.findings < 40]
    assert withheld
    for rule in withheld:
        assert not rule.HasField("acceptance")
        assert "fewer than the minimum group size of 40" in rule.rates_withheld_reason
    shown = [r for r in response.rules if r.findings >= 40]
    assert all(r.HasField("acceptance") for r in shown)


async def test_bad_requests_are_invalid_argument_with_field_violations(
    start_service: StartService,
) -> None:
    stub: Stub = stub_of(await start_insights(start_service))
    now = datetime.now(UTC)

    def stamp(moment: datetime) -> Timestamp:
        value = Timestamp()
        value.FromDatetime(moment)
        return value

    cases = [
        (
            stub.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(
                    scope=team("t"), start_time=stamp(now), end_time=stamp(now - timedelta(days=1))
                ),
                metadata=READER,
            ),
            "end_time",
        ),
        (
            stub.GetRoi(
                insights_pb2.GetRoiRequest(
                    scope=team("t"), start_time=stamp(now - timedelta(days=3000))
                ),
                metadata=READER,
            ),
            "start_time",
        ),
        (
            stub.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(
                    scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_GLOBAL)
                ),
                metadata=READER,
            ),
            "scope.type",
        ),
        (stub.GetTrends(insights_pb2.GetTrendsRequest(scope=team("t"), weeks=500), metadata=READER),
         "weeks"),
        (stub.GetTrends(insights_pb2.GetTrendsRequest(scope=team("t"), metrics=[9]),  # type: ignore[list-item]
                        metadata=READER), "metrics[0]"),
        (stub.GetLearningPaths(
            insights_pb2.GetLearningPathsRequest(scope=repository("https://x/y")), metadata=READER),
         "scope.type"),
        (stub.GetRoi(insights_pb2.GetRoiRequest(
            scope=team("t"), assumptions=insights_pb2.RoiAssumptions(hourly_cost=-1)),
            metadata=READER), "assumptions.hourly_cost"),
        (stub.RefreshInsights(insights_pb2.RefreshInsightsRequest(parts=["everything"]),
                              metadata=auth("operator")), "parts[0]"),
        (stub.GetTeamMetrics(insights_pb2.GetTeamMetricsRequest(), metadata=READER), "scope.id"),
    ]  # fmt: skip
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in violations_of(caught.value), (field, violations_of(caught.value))


async def test_refresh_is_idempotent_and_archives_old_trends(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = stub_of(await start_insights(start_service))
    async with db_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO insights_trends (team_id, period, metric, category, value, samples) "
                "VALUES (1, :old, 3, '', 12, 12)"
            ),
            {"old": (datetime.now(UTC) - timedelta(days=800)).date()},
        )
    operator = auth("operator")
    first = await stub.RefreshInsights(
        insights_pb2.RefreshInsightsRequest(request_id="r1"), metadata=operator
    )
    assert first.refreshed_parts == ["rollups", "team_metrics", "trends", "learning_paths", "roi"]
    assert first.teams == 3
    assert first.rows_written > 0
    assert first.rows_archived == 1
    parts = {(c.team, c.part) for c in first.changes}
    assert {("team-0", p) for p in ("team_metrics", "trends", "learning_paths", "roi")} <= parts
    again = await stub.RefreshInsights(
        insights_pb2.RefreshInsightsRequest(request_id="r1"), metadata=operator
    )
    assert (again.rows_written, again.rows_archived, list(again.changes)) == (0, 0, [])
    async with db_engine.connect() as connection:
        archived = await connection.scalar(text("SELECT count(*) FROM insights_trends_archive"))
        paths = await connection.scalar(text("SELECT count(*) FROM learning_paths"))
        snapshots = await connection.scalar(text("SELECT count(*) FROM team_metrics"))
    assert archived == 1
    assert paths > 0
    assert snapshots == 3


async def test_every_rpc_is_unavailable_with_the_reason_when_learning_is_off(
    start_service: StartService,
) -> None:
    stub = stub_of(await start_insights(start_service, learning_enabled=False))
    calls = [
        stub.GetTeamMetrics(insights_pb2.GetTeamMetricsRequest(scope=team("t")), metadata=READER),
        stub.GetTrends(insights_pb2.GetTrendsRequest(scope=team("t")), metadata=READER),
        stub.GetLearningPaths(
            insights_pb2.GetLearningPathsRequest(scope=team("t")), metadata=READER
        ),
        stub.GetRoi(insights_pb2.GetRoiRequest(scope=team("t")), metadata=READER),
        stub.GetInsightsReport(
            insights_pb2.GetInsightsReportRequest(scope=team("t")), metadata=READER
        ),
        stub.RefreshInsights(insights_pb2.RefreshInsightsRequest(), metadata=auth("operator")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "LEARNING_ENABLED=false" in (caught.value.details() or "")
