"""The two-layer cache: hits on a repeat, invalidation by the fold (also across replicas), Redis
or the cache tables as layer 2, and correct answers when Redis is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.insights.v1 import insights_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from shared.redis_namespace import default_prefix
from tests.conftest import StartService, auth
from tests.integration.feedback.conftest import event
from tests.integration.insights.conftest import Stub, fold, start_insights, stub_of, team
from tests.integration.insights.history import GeneratedLog

READER = auth("reader")
REPORT = insights_pb2.GetInsightsReportRequest(scope=team("team-0"))


def a_pending_recent_finding(log: GeneratedLog) -> int:
    with_events = {e["finding_id"] for e in log.events}
    recent = datetime.now(UTC) - timedelta(days=10)
    return next(
        f["id"]
        for f in log.findings
        if f["team_id"] == 1 and f["id"] not in with_events and f["created_at"] > recent
    )


async def act_on(start_service: StartService, finding_id: int) -> None:
    """Records an 'applied' through the feedback service, which notifies the insights fold."""
    feedback = await start_service(build_feedback, FeedbackSettings)
    stub = feedback_pb2_grpc.FeedbackServiceStub(feedback.channel)
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(
            event=event(f"act-{finding_id}", finding_id, common_pb2.FEEDBACK_KIND_APPLIED)
        ),
        metadata=auth("ingest"),
    )


async def wait_for_positive(
    stub: Stub, positive: int, within: float = 30.0
) -> insights_pb2.GetInsightsReportResponse:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        report = await stub.GetInsightsReport(REPORT, metadata=READER)
        if report.metrics.metrics.positive == positive:
            return report
        assert asyncio.get_running_loop().time() < deadline, "the fold never reached the cache"
        await asyncio.sleep(0.1)


async def test_repeat_hits_and_new_feedback_invalidates_without_redis(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    insights = await start_insights(start_service)
    stub = stub_of(insights)
    await fold(stub)
    first = await stub.GetInsightsReport(REPORT, metadata=READER)
    assert not first.from_cache
    second = await stub.GetInsightsReport(REPORT, metadata=READER)
    assert second.from_cache
    assert second.metrics == first.metrics
    async with db_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM cached_metrics")) == 1
    # A second replica finds the first one's answer in layer 2 (the cached_* tables).
    other = stub_of(await start_insights(start_service))
    assert (await other.GetInsightsReport(REPORT, metadata=READER)).from_cache

    await act_on(start_service, a_pending_recent_finding(generated))
    positive = first.metrics.metrics.positive + 1
    # The feedback service's NOTIFY wakes the fold (its poll is an hour away), the fold bumps
    # the team's version, and the next answer is computed afresh, on both replicas.
    fresh = await wait_for_positive(stub, positive)
    assert not fresh.from_cache
    assert (await wait_for_positive(other, positive)).metrics.metrics.positive == positive


@pytest.mark.redis
async def test_redis_is_layer_two_and_is_invalidated_by_the_fold(
    start_service: StartService, generated: GeneratedLog, redis_url: str, database_url: str
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        insights = await start_insights(start_service, redis_url=redis_url)
        stub = stub_of(insights)
        await fold(stub)
        first = await stub.GetInsightsReport(REPORT, metadata=READER)
        assert not first.from_cache
        assert await client.keys(f"{default_prefix(database_url)}cached_metrics:*")
        other = stub_of(await start_insights(start_service, redis_url=redis_url))
        assert (await other.GetInsightsReport(REPORT, metadata=READER)).from_cache
        # Redis pub/sub carries the feedback service's notification here.
        feedback = await start_service(build_feedback, FeedbackSettings, redis_url=redis_url)
        await feedback_pb2_grpc.FeedbackServiceStub(feedback.channel).RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(
                event=event("act-redis", a_pending_recent_finding(generated), 1)
            ),
            metadata=auth("ingest"),
        )
        positive = first.metrics.metrics.positive + 1
        assert not (await wait_for_positive(stub, positive)).from_cache
        await wait_for_positive(other, positive)
    finally:
        await client.flushdb()
        await client.aclose()


async def test_redis_down_gives_correct_answers_and_no_errors(
    start_service: StartService, generated: GeneratedLog
) -> None:
    healthy = stub_of(await start_insights(start_service, cache_ttl_seconds=0))
    await fold(healthy)
    expected = await healthy.GetInsightsReport(REPORT, metadata=READER)
    assert not expected.from_cache
    # Nothing listens on port 1: every Redis call fails at once.
    broken = stub_of(await start_insights(start_service, redis_url="redis://127.0.0.1:1/0"))
    answer = await broken.GetInsightsReport(REPORT, metadata=READER)
    assert not answer.from_cache
    assert numbers(answer) == numbers(expected)
    again = await broken.GetInsightsReport(REPORT, metadata=READER)
    assert again.from_cache  # layer 1 still works
    assert numbers(again) == numbers(expected)
    metrics = await broken.GetTeamMetrics(
        insights_pb2.GetTeamMetricsRequest(scope=team("team-0")), metadata=READER
    )
    assert list(metrics.categories) == list(expected.metrics.categories)


def numbers(report: insights_pb2.GetInsightsReportResponse) -> tuple[object, ...]:
    """The report without the times it was computed at."""
    m = report.metrics.metrics
    return (
        (m.findings, m.positive, m.negative, m.dismissed, m.acceptance, m.median_minutes_to_action),
        list(report.metrics.categories),
        list(report.metrics.rules),
        list(report.trends.trends),
        list(report.learning_paths.paths),
        list(report.roi.categories),
        report.roi.net_minutes_interval,
    )
