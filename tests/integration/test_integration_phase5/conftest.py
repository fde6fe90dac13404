"""The whole system for the cross-service suite: four service processes, a fresh database, a
private Redis, started once for the package, and a review history loaded through the RPCs.

Every test works in repositories and teams of its own (``Names``), so the tests share the
processes without sharing data; the seeded history (``Seeded``) is only ever read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.cli.loader import load_feedback, load_reviews
from services.cli.synthetic import SyntheticHistory, generate_history
from shared.db import migrate
from shared.outcome import FeedbackKind, Outcome, outcome_of
from tests.conftest import _create_database, _drop_database, auth
from tests.integration.control.conftest import eventually
from tests.integration.feedback.conftest import event, finding_input
from tests.system import System, private_redis, running_system


@pytest.fixture(scope="package")
def system_database(postgres_server_url: str) -> Iterator[str]:
    """A database of its own: no other test's clean-up runs under these processes."""
    url = asyncio.run(_create_database(postgres_server_url))
    asyncio.run(migrate.upgrade(url))
    yield url
    asyncio.run(_drop_database(postgres_server_url, url))


@pytest.fixture(scope="package")
def system(system_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    logs = tmp_path_factory.mktemp("phase5-logs")
    with (
        private_redis() as redis_url,
        running_system(system_database, Path(logs), redis_url=redis_url) as running,
    ):
        yield running


@dataclass
class Clients:
    """Stubs of the four services, on channels of the running test's event loop."""

    feedback: feedback_pb2_grpc.FeedbackServiceAsyncStub
    learning: learning_pb2_grpc.LearningServiceAsyncStub
    insights: insights_pb2_grpc.InsightsServiceAsyncStub
    control: control_pb2_grpc.ControlServiceAsyncStub

    async def record(
        self,
        names: Names,
        findings: list[common_pb2.FindingInput],
        *,
        pull_request: int = 1,
        request_id: str = "",
        repository: str | None = None,
    ) -> feedback_pb2.RecordFindingsResponse:
        return await self.feedback.RecordFindings(
            feedback_pb2.RecordFindingsRequest(
                request_id=request_id,
                repository_url=repository or names.repository,
                team=names.team,
                pull_request=pull_request,
                head_commit="c0ffee",
                findings=findings,
            ),
            metadata=auth("ingest"),
        )

    async def react(
        self, events: list[feedback_pb2.FeedbackEvent]
    ) -> feedback_pb2.BatchRecordFeedbackResponse:
        return await self.feedback.BatchRecordFeedback(
            feedback_pb2.BatchRecordFeedbackRequest(events=events), metadata=auth("ingest")
        )

    async def repository_metrics(
        self, repository: str, dimension: int = learning_pb2.DIMENSION_ALL
    ) -> learning_pb2.GetLearningMetricsResponse:
        return await self.learning.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(
                scope=repository_scope(repository),
                dimension=dimension,  # type: ignore[arg-type]
                page_size=1000,
            ),
            metadata=auth("reader"),
        )

    async def folded(self, repository: str, *, reactions: int) -> learning_pb2.LearningMetric:
        """Waits until learning has folded ``reactions`` decided-or-dismissed findings of a
        repository (and nothing is left in the backlog); returns its DIMENSION_ALL metric."""
        found: list[learning_pb2.LearningMetric] = []

        async def caught_up() -> bool:
            try:
                response = await self.repository_metrics(repository)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:  # not folded at all yet
                    return False
                raise
            if response.backlog or not response.metrics:
                return False
            metric = response.metrics[0]
            found[:] = [metric]
            return metric.positive + metric.negative + metric.dismissed >= reactions

        await eventually(
            caught_up, within=30, what=f"learning folds {reactions} reactions of {repository}"
        )
        return found[0]

    async def refresh_insights(
        self, *parts: str, rebuild: bool = False
    ) -> insights_pb2.RefreshInsightsResponse:
        return await self.insights.RefreshInsights(
            insights_pb2.RefreshInsightsRequest(
                request_id=uuid.uuid4().hex,
                parts=list(parts or ("rollups",)),
                rebuild_rollups=rebuild,
            ),
            metadata=auth("operator"),
        )

    async def tune(self) -> learning_pb2.TuneConfidenceThresholdsResponse:
        return await self.learning.TuneConfidenceThresholds(
            learning_pb2.TuneConfidenceThresholdsRequest(
                request_id=uuid.uuid4().hex, reason="integration suite"
            ),
            metadata=auth("operator"),
        )


@pytest.fixture
async def clients(system: System) -> AsyncIterator[Clients]:
    channels = {name: grpc.aio.insecure_channel(system.address(name)) for name in system.services}
    yield Clients(
        feedback_pb2_grpc.FeedbackServiceStub(channels["feedback"]),
        learning_pb2_grpc.LearningServiceStub(channels["learning"]),
        insights_pb2_grpc.InsightsServiceStub(channels["insights"]),
        control_pb2_grpc.ControlServiceStub(channels["control"]),
    )
    for channel in channels.values():
        await channel.close()


@dataclass(frozen=True)
class Names:
    """A team and repositories that only the running test uses."""

    suffix: str

    @property
    def team(self) -> str:
        return f"team-{self.suffix}"

    @property
    def repository(self) -> str:
        return f"https://git.example.com/{self.suffix}/api"

    def other_repository(self, name: str) -> str:
        return f"https://git.example.com/{self.suffix}/{name}"

    def event_id(self, label: object) -> str:
        return f"{self.suffix}-{label}"


@pytest.fixture
def names() -> Names:
    return Names(uuid.uuid4().hex[:10])


async def backdate(system: System, finding_ids: list[int], *, days: int) -> None:
    """Moves findings' posting time into the past: time passing, the one thing no RPC does
    (trends count complete weeks only, so findings posted today show in none yet). The
    insights rollups have to be rebuilt after it (RefreshInsights ``rebuild_rollups``)."""
    engine = create_async_engine(system.database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE findings SET created_at = created_at - make_interval(days => :days) "
                    "WHERE id = ANY(:ids)"
                ),
                {"days": days, "ids": finding_ids},
            )
    finally:
        await engine.dispose()


def team_scope(team: str) -> common_pb2.Scope:
    return common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=team)


def repository_scope(url: str) -> common_pb2.Scope:
    return common_pb2.Scope(type=common_pb2.SCOPE_TYPE_REPOSITORY, id=url)


def findings(count: int, *, start: int = 0, **overrides: object) -> list[common_pb2.FindingInput]:
    return [finding_input(start + i, **overrides) for i in range(count)]


def reactions(
    names: Names, finding_ids: list[int], kind: int, *, label: str = "r", minutes_ago: int = 1
) -> list[feedback_pb2.FeedbackEvent]:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return [
        event(names.event_id(f"{label}-{i}"), finding_id, kind, occurred_at=moment)
        for i, finding_id in enumerate(finding_ids)
    ]


# The seeded history: what every read-only test looks at.


@dataclass(frozen=True)
class Seeded:
    history: SyntheticHistory
    finding_ids: list[list[int]]
    outcomes: dict[int, Outcome]
    """Finding id → outcome by the documented rule, computed here from what was sent."""

    @property
    def teams(self) -> list[str]:
        return sorted({r.team for r in self.history.reviews})

    def team_findings(self, team: str) -> list[int]:
        return [
            finding_id
            for review, ids in zip(self.history.reviews, self.finding_ids, strict=True)
            if review.team == team
            for finding_id in ids
        ]

    def team_counts(self, team: str) -> dict[Outcome, int]:
        counts = dict.fromkeys(Outcome, 0)
        for finding_id in set(self.team_findings(team)):
            counts[self.outcomes.get(finding_id, Outcome.PENDING)] += 1
        return counts


SEED_REVIEWS = 90
SEED_FINDINGS_PER_REVIEW = 8


def _renamed(history: SyntheticHistory, suffix: str) -> SyntheticHistory:
    reviews = tuple(
        replace(
            review,
            team=f"{review.team}-{suffix}",
            repository_url=review.repository_url.replace("://", f"://{suffix}.", 1),
        )
        for review in history.reviews
    )
    feedback = tuple(replace(e, event_id=f"{suffix}-{e.event_id}") for e in history.feedback)
    return SyntheticHistory(history.rules, reviews, feedback)


async def _seed(system: System) -> Seeded:
    # The feedback happened over the last days; the findings are recorded now.
    history = _renamed(
        generate_history(
            seed=55,
            teams=2,
            repositories_per_team=2,
            rules=10,
            reviews=SEED_REVIEWS,
            findings_per_review=SEED_FINDINGS_PER_REVIEW,
            weeks=1,
            end=datetime.now(UTC) - timedelta(minutes=5),
        ),
        uuid.uuid4().hex[:8],
    )
    async with grpc.aio.insecure_channel(system.address("feedback")) as channel:
        stub: feedback_pb2_grpc.FeedbackServiceAsyncStub = feedback_pb2_grpc.FeedbackServiceStub(
            channel
        )
        ids = await load_reviews(
            stub, history.reviews, metadata=auth("ingest"), request_prefix="seed"
        )
        await load_feedback(stub, history.feedback, ids, metadata=auth("ingest"))
    per_finding: dict[int, list[tuple[FeedbackKind, datetime, int]]] = {}
    for position, e in enumerate(history.feedback):
        finding_id = ids[e.review_index][e.finding_index]
        per_finding.setdefault(finding_id, []).append(
            (FeedbackKind[e.kind.upper()], e.occurred_at, position)
        )
    outcomes = {finding_id: outcome_of(evs) for finding_id, evs in per_finding.items()}
    async with grpc.aio.insecure_channel(system.address("learning")) as channel:
        learning: learning_pb2_grpc.LearningServiceAsyncStub = (
            learning_pb2_grpc.LearningServiceStub(channel)
        )

        async def caught_up() -> bool:
            response = await learning.GetLearningMetrics(
                learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
                metadata=auth("reader"),
            )
            return response.backlog == 0 and bool(response.metrics)

        await eventually(caught_up, within=60, what="learning folds the seeded history")
        await learning.TuneConfidenceThresholds(
            learning_pb2.TuneConfidenceThresholdsRequest(request_id="seed-tune", reason="seed"),
            metadata=auth("operator"),
        )
    async with grpc.aio.insecure_channel(system.address("insights")) as channel:
        insights: insights_pb2_grpc.InsightsServiceAsyncStub = (
            insights_pb2_grpc.InsightsServiceStub(channel)
        )
        await insights.RefreshInsights(
            insights_pb2.RefreshInsightsRequest(request_id="seed-refresh"),
            metadata=auth("operator"),
        )
    return Seeded(history, ids, outcomes)


@pytest.fixture(scope="package")
def seeded(system: System) -> Seeded:
    return asyncio.run(_seed(system))
