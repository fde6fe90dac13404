"""E. Data integrity: nothing lost to a crash, the log and its derivations agree, numbers repeat."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2

from shared.outcome import Outcome
from tests.conftest import auth
from tests.integration.feedback.conftest import event, timestamp
from tests.integration.test_integration_phase5.conftest import (
    Clients,
    Names,
    Seeded,
    findings,
    reactions,
    repository_scope,
    team_scope,
)
from tests.system import System, fold_equals_recompute

APPLIED = common_pb2.FEEDBACK_KIND_APPLIED
REJECTED = common_pb2.FEEDBACK_KIND_REJECTED
DISMISSED = common_pb2.FEEDBACK_KIND_DISMISSED


async def _feedback_of(clients: Clients, finding_id: int) -> list[feedback_pb2.FeedbackRecord]:
    response = await clients.feedback.ListFeedback(
        feedback_pb2.ListFeedbackRequest(finding_id=finding_id, page_size=1000),
        metadata=auth("reader"),
    )
    return list(response.feedback)


class TestDataIntegrity:
    async def test_no_data_loss_on_crash(
        self, clients: Clients, names: Names, system: System
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(10))).findings]
        events = reactions(names, ids, APPLIED, label="a")
        acknowledged = (await clients.react(events)).results
        assert all(r.feedback_id for r in acknowledged)
        # SIGKILL: no shutdown hook, no flush. Whatever was acknowledged must be in the log.
        system.kill("feedback")
        system.kill("learning")
        system.start("feedback", "learning")
        stored = []
        for finding_id in ids:
            stored += await _feedback_of(clients, finding_id)
        assert sorted(r.feedback_id for r in stored) == sorted(r.feedback_id for r in acknowledged)
        metric = await clients.folded(names.repository, reactions=10)
        assert (metric.shown, metric.positive) == (10, 10)
        # A retry after the crash with the same ids is recognised, not stored twice.
        again = await clients.react(events)
        assert again.duplicate_count == 10
        checked = fold_equals_recompute(system)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    async def test_feedback_feedback_consistency(self, clients: Clients, names: Names) -> None:
        """The feedback log, each finding's outcome and the learned counts say the same."""
        ids = [f.finding_id for f in (await clients.record(names, findings(4))).findings]
        now = datetime.now(UTC)
        await clients.react(
            [
                event(names.event_id(1), ids[0], DISMISSED, occurred_at=now - timedelta(hours=3)),
                event(names.event_id(2), ids[0], APPLIED, occurred_at=now - timedelta(hours=2)),
                event(names.event_id(3), ids[1], APPLIED, occurred_at=now - timedelta(hours=2)),
                event(names.event_id(4), ids[1], REJECTED, occurred_at=now - timedelta(hours=1)),
                event(names.event_id(5), ids[2], DISMISSED, occurred_at=now - timedelta(hours=1)),
            ]
        )
        expected = {
            ids[0]: (common_pb2.OUTCOME_POSITIVE, 2),
            ids[1]: (common_pb2.OUTCOME_NEGATIVE, 2),
            ids[2]: (common_pb2.OUTCOME_DISMISSED, 1),
            ids[3]: (common_pb2.OUTCOME_PENDING, 0),
        }
        for finding_id, (outcome, count) in expected.items():
            finding = (
                await clients.feedback.GetFinding(
                    feedback_pb2.GetFindingRequest(finding_id=finding_id), metadata=auth("reader")
                )
            ).finding
            assert (finding.outcome, finding.feedback_count) == (outcome, count)
            assert len(await _feedback_of(clients, finding_id)) == count
        metric = await clients.folded(names.repository, reactions=3)
        assert (metric.positive, metric.negative, metric.dismissed, metric.pending) == (1, 1, 1, 1)

    async def test_metrics_calculation_determinism(self, clients: Clients, seeded: Seeded) -> None:
        team = seeded.teams[0]
        repository = next(r.repository_url for r in seeded.history.reviews if r.team == team)

        async def snapshot() -> tuple[object, ...]:
            learned = await clients.repository_metrics(repository, learning_pb2.DIMENSION_RULE)
            metrics = await clients.insights.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(
                    scope=team_scope(team), end_time=timestamp(datetime.now(UTC))
                ),
                metadata=auth("reader"),
            )
            ranked = await clients.learning.RankSuggestions(
                learning_pb2.RankSuggestionsRequest(
                    repository_url=repository,
                    finding_ids=seeded.team_findings(team)[:40],
                    options=learning_pb2.RankOptions(diversity=0.3, exploration=True, seed=11),
                ),
                metadata=auth("reader"),
            )
            return (
                [m.SerializeToString(deterministic=True) for m in learned.metrics],
                metrics.metrics.positive,
                [c.SerializeToString(deterministic=True) for c in metrics.categories],
                [r.SerializeToString(deterministic=True) for r in metrics.rules],
                [(i.ref.finding_id, i.rank, i.score) for i in ranked.findings],
            )

        first = await snapshot()
        assert first[1] == seeded.team_counts(team)[Outcome.POSITIVE]
        # Asked again, and by several callers at once: the very same numbers and order.
        assert list(await asyncio.gather(*(snapshot() for _ in range(3)))) == [first] * 3
        assert await snapshot() == first

    async def test_historical_data_preserved_correctly(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(2))).findings]
        weeks_ago = datetime(2026, 9, 1, 12, 30, tzinfo=UTC)
        first = event(names.event_id("old"), ids[0], DISMISSED, occurred_at=weeks_ago)
        first.comment = "not now"
        await clients.react([first])
        later = event(names.event_id("new"), ids[0], APPLIED)
        await clients.react([later])
        history = sorted(await _feedback_of(clients, ids[0]), key=lambda r: r.feedback_id)
        # Both reactions are kept as sent, in order; the later decisive one decides.
        assert [r.event.event_id for r in history] == [first.event_id, later.event_id]
        assert history[0].event.occurred_at == first.occurred_at
        assert history[0].event.comment == "not now"
        assert history[0].repository_url == names.repository
        finding = (
            await clients.feedback.GetFinding(
                feedback_pb2.GetFindingRequest(finding_id=ids[0]), metadata=auth("reader")
            )
        ).finding
        assert finding.outcome == common_pb2.OUTCOME_POSITIVE
        # The same event id with other content is refused: history cannot be rewritten.
        rewritten = event(names.event_id("old"), ids[0], REJECTED, occurred_at=weeks_ago)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await clients.feedback.RecordFeedback(
                feedback_pb2.RecordFeedbackRequest(event=rewritten), metadata=auth("ingest")
            )
        assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
        assert len(await _feedback_of(clients, ids[0])) == 2
        await clients.folded(names.repository, reactions=1)
        await clients.refresh_insights()
        repository = await clients.insights.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=repository_scope(names.repository)),
            metadata=auth("reader"),
        )
        assert (repository.metrics.positive, repository.metrics.dismissed) == (1, 0)
