"""D. Error recovery and resilience: bad input, thin data, lost database connections."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import auth
from tests.integration.control.conftest import eventually, violations
from tests.integration.test_integration_phase5.conftest import (
    Clients,
    Names,
    Seeded,
    findings,
    reactions,
    team_scope,
)
from tests.system import System, health

APPLIED = common_pb2.FEEDBACK_KIND_APPLIED
REJECTED = common_pb2.FEEDBACK_KIND_REJECTED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def _terminate_sessions(system: System) -> int:
    """Ends every session the services hold on their database (what a failover does)."""
    database = make_url(system.database_url).database
    engine = create_async_engine(system.database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :database AND pid <> pg_backend_pid()"
                ),
                {"database": database},
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


class TestErrorRecoveryAndResilience:
    async def test_learning_continues_with_partial_feedback(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(4))).findings]
        good = reactions(names, ids, APPLIED, label="ok")
        unknown = reactions(names, [ids[0] + 10_000_000], APPLIED, label="unknown")[0]
        no_kind = feedback_pb2.FeedbackEvent(event_id=names.event_id("nokind"), finding_id=ids[0])
        response = await clients.react([good[0], unknown, good[1], no_kind, *good[2:]])
        assert (response.stored_count, response.failed_count) == (4, 2)
        assert response.results[1].error.code == NOT_FOUND
        assert response.results[3].error.code == INVALID_ARGUMENT
        assert all(
            not r.HasField("error") for i, r in enumerate(response.results) if i not in (1, 3)
        )
        metric = await clients.folded(names.repository, reactions=4)
        assert (metric.positive, metric.pending) == (4, 0)

    async def test_ranking_handles_missing_confidence(
        self, clients: Clients, names: Names, seeded: Seeded
    ) -> None:
        # Never-seen rule and category, no confidence from the bot (0 on the wire).
        rule, category = f"novel-{names.suffix}", f"cat{names.suffix}"
        novel = findings(3, rule_id=rule, category=category, confidence=0.0)
        response = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(repository_url=names.repository, findings=novel),
            metadata=auth("reader"),
        )
        assert response.learning_applied
        assert response.model_version  # the model fitted on the seeded history
        assert len(response.findings) == 3
        for item in response.findings:
            assert 0.0 < item.calibrated_probability < 1.0
            assert len(item.explanation.terms) > 1
            # Levels never seen carry no evidence and add nothing: their parents speak.
            unseen = [t for t in item.explanation.terms if t.key in (rule, category)]
            assert all(t.outcomes == 0 and t.contribution == 0 for t in unseen)

    async def test_insights_generation_with_sparse_data(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(2))).findings]
        await clients.react(reactions(names, ids[:1], APPLIED))
        await clients.refresh_insights()
        report = await clients.insights.GetInsightsReport(
            insights_pb2.GetInsightsReportRequest(scope=team_scope(names.team)),
            metadata=auth("reader"),
        )
        metrics = report.metrics.metrics
        assert (metrics.findings, metrics.positive) == (2, 1)
        assert metrics.rates_withheld_reason  # two findings: too few to publish a rate
        assert not metrics.HasField("acceptance")
        rates = [t for t in report.trends.trends if t.metric != insights_pb2.TREND_METRIC_FINDINGS]
        assert rates
        assert all(t.direction == insights_pb2.TREND_DIRECTION_INSUFFICIENT_DATA for t in rates)
        assert report.roi.minutes_saved > 0

    async def test_metrics_calculation_error_handling(self, clients: Clients) -> None:
        # Malformed requests to every service: INVALID_ARGUMENT naming the field, never INTERNAL.
        calls = {
            "learning.page_token": clients.learning.GetLearningMetrics(
                learning_pb2.GetLearningMetricsRequest(page_token="garbage"),
                metadata=auth("reader"),
            ),
            "insights.scope": clients.insights.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(), metadata=auth("reader")
            ),
            "feedback.repository_url": clients.feedback.RecordFindings(
                feedback_pb2.RecordFindingsRequest(team="t", findings=findings(1)),
                metadata=auth("ingest"),
            ),
            "insights.max_paths": clients.insights.GetLearningPaths(
                insights_pb2.GetLearningPathsRequest(scope=team_scope("nobody"), max_paths=-1),
                metadata=auth("reader"),
            ),
        }
        for label, call in calls.items():
            error = await _refused(call)
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (label, error)
            field = label.split(".", 1)[1]
            assert any(field in name for name in violations(error)), (label, violations(error))

    async def test_ranking_with_invalid_findings(self, clients: Clients, names: Names) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(2))).findings]
        response = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url=names.repository, finding_ids=[ids[0], ids[1] + 10_000_000, ids[1]]
            ),
            metadata=auth("reader"),
        )
        assert [(e.index, e.code) for e in response.item_errors] == [(1, NOT_FOUND)]
        assert sorted(i.ref.finding_id for i in response.findings) == sorted(ids)
        bad = findings(1, confidence=1.5)
        error = await _refused(
            clients.learning.RankSuggestions(
                learning_pb2.RankSuggestionsRequest(repository_url=names.repository, findings=bad),
                metadata=auth("reader"),
            )
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert any("confidence" in field for field in violations(error))

    async def test_batch_job_partial_failure_recovery(self, clients: Clients, names: Names) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(6))).findings]
        await clients.react(reactions(names, ids, APPLIED))
        missing = names.other_repository("never-recorded")
        slot = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)

        async def run(repositories: list[str], when: datetime) -> learning_pb2.JobRun:
            scheduled = Timestamp()
            scheduled.FromDatetime(when)
            response = await clients.learning.RunJobs(
                learning_pb2.RunJobsRequest(
                    request_id=uuid.uuid4().hex,
                    job_names=["calculate_roi"],
                    repository_urls=repositories,
                    scheduled_time=scheduled,
                ),
                metadata=auth("operator"),
            )
            assert len(response.runs) == 1
            return response.runs[0]

        # One repository of the run fails (the insights service answers NOT_FOUND for it) ...
        partial = await run([names.repository, missing], slot)
        assert partial.status == learning_pb2.JOB_STATUS_PARTIAL
        assert list(partial.repositories_done) == [names.repository]
        assert [f.repository_url for f in partial.repositories_failed] == [missing]
        assert "NOT_FOUND" in partial.repositories_failed[0].reason
        assert partial.attempts == 3  # retried before giving up on it
        # ... the same slot again runs nothing: it ran once ...
        again = await run([names.repository, missing], slot)
        assert again.already_ran
        assert again.run_id == partial.run_id
        # ... and the next slot, without the bad repository, succeeds.
        recovered = await run([names.repository], slot + timedelta(hours=1))
        assert recovered.status == learning_pb2.JOB_STATUS_SUCCEEDED
        assert list(recovered.repositories_done) == [names.repository]
        history = await clients.learning.ListJobRuns(
            learning_pb2.ListJobRunsRequest(job_name="calculate_roi"), metadata=auth("reader")
        )
        statuses = {run.run_id: run.status for run in history.runs}
        assert statuses[partial.run_id] == learning_pb2.JOB_STATUS_PARTIAL
        assert statuses[recovered.run_id] == learning_pb2.JOB_STATUS_SUCCEEDED

    async def test_database_reconnect_preserves_state(
        self, clients: Clients, names: Names, system: System
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(3))).findings]
        await clients.react(reactions(names, ids[:2], APPLIED, label="before"))
        before = await clients.folded(names.repository, reactions=2)
        starts = {name: service.starts for name, service in system.services.items()}
        assert await _terminate_sessions(system) > 0
        # Every service gets over its dead connections without a restart; a caller may see
        # UNAVAILABLE (and retry), never INTERNAL.
        codes: list[grpc.StatusCode] = []

        async def accepted() -> bool:
            try:
                await clients.react(reactions(names, ids[2:], REJECTED, label="after"))
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
                return False
            return True

        await eventually(accepted, within=30, what="feedback is accepted again")
        assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}, codes
        after = await clients.folded(names.repository, reactions=3)
        assert (after.positive, after.negative) == (before.positive, 1)
        for name, service in system.services.items():
            assert service.starts == starts[name], name  # recovered without a restart
            assert health(service.address) == health_pb2.HealthCheckResponse.SERVING, name
