"""B. Database consistency, seen through the services: cascades, references, concurrency."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2

from tests.conftest import auth
from tests.integration.control.conftest import eventually
from tests.integration.test_integration_phase5.conftest import (
    Clients,
    Names,
    backdate,
    findings,
    reactions,
    repository_scope,
    team_scope,
)
from tests.system import System

APPLIED = common_pb2.FEEDBACK_KIND_APPLIED
REJECTED = common_pb2.FEEDBACK_KIND_REJECTED
DISMISSED = common_pb2.FEEDBACK_KIND_DISMISSED
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


async def _repository_feedback(
    clients: Clients, repository: str
) -> list[feedback_pb2.FeedbackRecord]:
    records: list[feedback_pb2.FeedbackRecord] = []
    token = ""
    while True:
        page = await clients.feedback.ListFeedback(
            feedback_pb2.ListFeedbackRequest(
                repository_url=repository, page_size=1000, page_token=token
            ),
            metadata=auth("reader"),
        )
        records += page.feedback
        token = page.next_page_token
        if not token:
            return records


async def _team_findings(clients: Clients, team: str) -> insights_pb2.TeamMetrics:
    await clients.refresh_insights()
    response = await clients.insights.GetTeamMetrics(
        insights_pb2.GetTeamMetricsRequest(scope=team_scope(team)), metadata=auth("reader")
    )
    return response.metrics


class TestDatabaseConsistency:
    async def test_finding_deletion_cascades_to_feedback(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(3))).findings]
        await clients.react(reactions(names, ids, DISMISSED, label="d", minutes_ago=5))
        await clients.react(reactions(names, ids[:1], APPLIED, label="a"))
        await clients.folded(names.repository, reactions=3)
        deleted = await clients.feedback.DeleteFinding(
            feedback_pb2.DeleteFindingRequest(finding_id=ids[0], reason="integration suite"),
            metadata=auth("operator"),
        )
        assert deleted.deleted_feedback_count == 2
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await clients.feedback.GetFinding(
                feedback_pb2.GetFindingRequest(finding_id=ids[0]), metadata=auth("reader")
            )
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        remaining = await _repository_feedback(clients, names.repository)
        assert sorted(r.event.finding_id for r in remaining) == sorted(ids[1:])

        async def refolded() -> bool:
            metric = (await clients.repository_metrics(names.repository)).metrics[0]
            return metric.shown == 2

        await eventually(refolded, within=30, what="learning drops the deleted finding")
        metric = (await clients.repository_metrics(names.repository)).metrics[0]
        assert (metric.positive, metric.dismissed) == (0, 2)

    async def test_concurrent_feedback_updates_dont_corrupt(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(20))).findings]
        events = reactions(names, ids[:10], APPLIED, label="a") + reactions(
            names, ids[10:], REJECTED, label="r"
        )
        # Ten clients send the same twenty events at once (a retry storm).
        responses = await asyncio.gather(*(clients.react(events) for _ in range(10)))
        assert sum(r.stored_count for r in responses) == 20
        assert sum(r.duplicate_count for r in responses) == 180
        assert all(r.failed_count == 0 for r in responses)
        for position in range(20):
            assert len({r.results[position].feedback_id for r in responses}) == 1
        stored = await _repository_feedback(clients, names.repository)
        assert sorted(r.event.event_id for r in stored) == sorted(e.event_id for e in events)
        metric = await clients.folded(names.repository, reactions=20)
        assert (metric.positive, metric.negative) == (10, 10)

    async def test_foreign_key_constraints_enforced(self, clients: Clients, names: Names) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(1))).findings]
        missing = ids[0] + 10_000_000
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await clients.feedback.RecordFeedback(
                feedback_pb2.RecordFeedbackRequest(
                    event=reactions(names, [missing], APPLIED, label="x")[0]
                ),
                metadata=auth("ingest"),
            )
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        mixed = reactions(names, [ids[0], missing], APPLIED, label="m")
        response = await clients.react(mixed)
        assert (response.stored_count, response.failed_count) == (1, 1)
        assert response.results[1].error.code == NOT_FOUND
        assert response.results[1].feedback_id == 0
        stored = await _repository_feedback(clients, names.repository)
        assert [r.event.finding_id for r in stored] == [ids[0]]

    async def test_orphaned_records_cleaned_up(self, clients: Clients, names: Names) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(4))).findings]
        await clients.react(reactions(names, ids, APPLIED, label="a"))
        await clients.folded(names.repository, reactions=4)
        assert (await _team_findings(clients, names.team)).findings == 4
        await clients.feedback.DeleteFinding(
            feedback_pb2.DeleteFindingRequest(finding_id=ids[0], reason="integration suite"),
            metadata=auth("operator"),
        )
        # Nothing downstream keeps the deleted finding: not ranking, not insights, not learning.
        ranked = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(repository_url=names.repository, finding_ids=ids),
            metadata=auth("reader"),
        )
        assert [e.code for e in ranked.item_errors] == [NOT_FOUND]
        assert sorted(i.ref.finding_id for i in ranked.findings) == sorted(ids[1:])
        team = await _team_findings(clients, names.team)
        assert (team.findings, team.positive) == (3, 3)

        async def refolded() -> bool:
            metric = (await clients.repository_metrics(names.repository)).metrics[0]
            return (metric.shown, metric.positive) == (3, 3)

        await eventually(refolded, within=30, what="learning forgets the deleted finding")

    async def test_transaction_isolation_with_parallel_updates(
        self, clients: Clients, names: Names
    ) -> None:
        batch = findings(5)
        responses = await asyncio.gather(
            *(clients.record(names, batch, request_id=names.event_id("push")) for _ in range(8))
        )
        assert len({r.review_id for r in responses}) == 1
        assert len({tuple(f.finding_id for f in r.findings) for r in responses}) == 1
        assert sum(not r.replayed for r in responses) == 1
        ids = [f.finding_id for f in responses[0].findings]
        await clients.react(reactions(names, ids, APPLIED, label="a"))
        metric = await clients.folded(names.repository, reactions=5)
        assert metric.shown == 5
        assert (await _team_findings(clients, names.team)).findings == 5

    async def test_metrics_consistency_after_update(self, clients: Clients, names: Names) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(9))).findings]
        await clients.react(reactions(names, ids[:4], APPLIED, label="a"))
        await clients.react(reactions(names, ids[4:6], REJECTED, label="r"))
        await clients.react(reactions(names, ids[6:8], DISMISSED, label="d"))
        learned = await clients.folded(names.repository, reactions=8)
        await clients.refresh_insights()
        insight = (
            await clients.insights.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(scope=repository_scope(names.repository)),
                metadata=auth("reader"),
            )
        ).metrics
        # Two services, two derived stores, one log: the same counts.
        assert (learned.shown, learned.positive, learned.negative, learned.dismissed) == (
            insight.findings,
            insight.positive,
            insight.negative,
            insight.dismissed,
        )
        assert learned.pending == insight.pending == 1
        assert learned.acceptance.successes == insight.acceptance.successes == 4
        assert learned.acceptance.trials == insight.acceptance.trials == 6

    async def test_learning_paths_update_atomically(self, clients: Clients, names: Names) -> None:
        security = findings(6, category="security", severity=common_pb2.SEVERITY_HIGH)
        style = findings(6, start=50, category="style", severity=common_pb2.SEVERITY_LOW)
        ids = [f.finding_id for f in (await clients.record(names, security + style)).findings]
        await clients.react(reactions(names, ids[:6], APPLIED, label="first"))
        await clients.refresh_insights("rollups", "learning_paths")
        request = insights_pb2.GetLearningPathsRequest(scope=team_scope(names.team))

        async def paths() -> list[tuple[str, int]]:
            response = await clients.insights.GetLearningPaths(request, metadata=auth("reader"))
            assert [p.rank for p in response.paths] == list(range(1, len(response.paths) + 1))
            return [(p.category, p.real_findings) for p in response.paths]

        before = await paths()
        assert before == [("security", 6)]
        await clients.react(reactions(names, ids[6:], APPLIED, label="second"))
        # Readers while the paths are recomputed see the old set or the new one, never a mix.
        refresh = asyncio.ensure_future(clients.refresh_insights("rollups", "learning_paths"))
        seen = [await paths() for _ in range(15)]
        await refresh
        after = await paths()
        assert sorted(after) == [("security", 6), ("style", 6)]
        assert all(s in (before, after) for s in seen), seen

    async def test_trends_data_integrity_on_bulk_insert(
        self, clients: Clients, names: Names, system: System
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(300))).findings]
        await backdate(system, ids, days=7)
        # One bulk call: every finding dismissed first, then applied.
        events = reactions(names, ids, DISMISSED, label="d", minutes_ago=10) + reactions(
            names, ids, APPLIED, label="a"
        )
        response = await clients.react(events)
        assert (response.stored_count, response.failed_count) == (600, 0)
        assert len(await _repository_feedback(clients, names.repository)) == 600
        await clients.refresh_insights(rebuild=True)
        trends = await clients.insights.GetTrends(
            insights_pb2.GetTrendsRequest(
                scope=team_scope(names.team),
                metrics=[
                    insights_pb2.TREND_METRIC_FINDINGS,
                    insights_pb2.TREND_METRIC_ACCEPTANCE_RATE,
                ],
            ),
            metadata=auth("reader"),
        )
        by_metric = {t.metric: t.points[-1] for t in trends.trends}
        assert by_metric[insights_pb2.TREND_METRIC_FINDINGS].value == 300
        acceptance = by_metric[insights_pb2.TREND_METRIC_ACCEPTANCE_RATE]
        assert (acceptance.samples, acceptance.value) == (300, 1.0)
        assert sum(p.value for p in trends.trends[0].points) == 300  # no week counted twice
