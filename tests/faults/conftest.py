"""The fault suite's harness: a private PostgreSQL cluster and Redis per module (never the
machine's shared ones), the four services as processes, a feedback load whose clients retry with
the same event ids, and the figures every fault test reports.

Run with ``make faults``; the default suite leaves these out (marker ``faults``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shared.db import migrate
from tests.conftest import auth
from tests.integration.feedback.conftest import event, finding_input
from tests.integration.scratch_cluster import ScratchCluster
from tests.processes import RedisServer
from tests.system import System

# Small pools: four services (and the validation command) fit the private cluster easily.
SMALL_POOLS = {"REVIEWLEARN_DB_POOL_SIZE": "4", "REVIEWLEARN_DB_MAX_OVERFLOW": "4"}
RPC_TIMEOUT = 10.0


@dataclass
class Figure:
    """One fault's row: ``doubled`` counts reactions stored more than once (see ``STORED``)."""

    fault: str
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    doubled: int = 0
    recover_seconds: float | None = None
    errors: Counter[str] = field(default_factory=Counter)
    note: str = ""

    def line(self) -> str:
        recover = "-" if self.recover_seconds is None else f"{self.recover_seconds:.1f}"
        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items())) or "none"
        return (
            f"| {self.fault} | {self.sent} | {self.acknowledged} | {self.stored} | {self.lost} "
            f"| {self.doubled} | {recover} | {errors} | {self.note} |"
        )


FIGURES: list[Figure] = []
HEADER = (
    "| fault | events sent | acknowledged | stored | lost | doubled | seconds to recover "
    "| errors clients saw | note |\n|---|---|---|---|---|---|---|---|---|"
)


def report(figure: Figure) -> None:
    FIGURES.append(figure)
    print(f"\nFAULT FIGURE {figure.line()}")


@pytest.fixture(scope="session", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print(f"\n\nFault suite figures ({os.cpu_count()} cores, loopback only):\n{HEADER}")
        for figure in FIGURES:
            print(figure.line())


@pytest.fixture(scope="module")
def cluster() -> Iterator[ScratchCluster]:
    try:
        scratch = ScratchCluster(max_connections=200)
        scratch.start()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot run a private PostgreSQL cluster here: {exc}")
    asyncio.run(migrate.upgrade(scratch.url))
    yield scratch
    scratch.destroy()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.stop()


def start_system(
    cluster: ScratchCluster, logs: Path, redis: RedisServer | None, **env: str
) -> System:
    system = System(cluster.url, logs, redis.url if redis else None, {**SMALL_POOLS, **env})
    system.start()
    return system


@pytest.fixture(scope="module")
def system(
    cluster: ScratchCluster, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    running = start_system(cluster, tmp_path_factory.mktemp("fault-logs"), redis_server)
    yield running
    running.stop()


@dataclass
class Stubs:
    feedback: feedback_pb2_grpc.FeedbackServiceAsyncStub
    learning: learning_pb2_grpc.LearningServiceAsyncStub
    insights: insights_pb2_grpc.InsightsServiceAsyncStub
    channels: list[grpc.aio.Channel]

    @classmethod
    def of(cls, system: System) -> Stubs:
        channels = [grpc.aio.insecure_channel(system.address(n)) for n in system.services]
        by_name = dict(zip(system.services, channels, strict=True))
        return cls(
            feedback_pb2_grpc.FeedbackServiceStub(by_name["feedback"]),
            learning_pb2_grpc.LearningServiceStub(by_name["learning"]),
            insights_pb2_grpc.InsightsServiceStub(by_name["insights"]),
            channels,
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


@pytest.fixture
async def stubs(system: System) -> AsyncIterator[Stubs]:
    made = Stubs.of(system)
    yield made
    await made.close()


async def until(condition: object, limit_seconds: float = 90.0, what: str = "") -> None:
    """Waits (bounded) until a plain predicate holds; what a fault test waits for."""
    deadline = time.monotonic() + limit_seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what or "the load made no progress"
        await asyncio.sleep(0.05)


async def retried(call: object, errors: Counter[str], *, limit_seconds: float = 90.0) -> object:
    """Calls until it succeeds, counting the status codes of the failures in between."""
    deadline = time.monotonic() + limit_seconds
    while True:
        try:
            return await call()  # type: ignore[operator]
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def record_findings(
    stubs: Stubs, repository: str, team: str, count: int, errors: Counter[str]
) -> list[int]:
    ids: list[int] = []
    for start in range(0, count, 500):
        batch = [finding_input(i) for i in range(start, min(count, start + 500))]
        request = feedback_pb2.RecordFindingsRequest(
            request_id=f"{repository}-{start}",
            repository_url=repository,
            team=team,
            pull_request=1 + start // 500,
            head_commit="c0ffee",
            findings=batch,
        )
        response = await retried(
            lambda request=request: stubs.feedback.RecordFindings(  # type: ignore[misc]
                request, metadata=auth("ingest"), timeout=RPC_TIMEOUT
            ),
            errors,
        )
        ids += [f.finding_id for f in response.findings]  # type: ignore[attr-defined]
    return ids


@dataclass
class FeedbackLoad:
    """Clients sending one event per finding in small batches; a failed batch is re-sent with
    the very same events (same ids, same content) until it is acknowledged."""

    stubs: Stubs
    prefix: str
    finding_ids: list[int]
    clients: int = 3
    batch: int = 10
    sent: set[str] = field(default_factory=set)
    acknowledged: dict[str, int] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    item_errors: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    first_ack_after: dict[str, float] = field(default_factory=dict)
    _next: int = 0
    _when: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(minutes=1))

    def _take(self) -> list[feedback_pb2.FeedbackEvent]:
        start, self._next = self._next, min(len(self.finding_ids), self._next + self.batch)
        events = []
        for i in range(start, self._next):
            kind = common_pb2.FEEDBACK_KIND_APPLIED if i % 3 else common_pb2.FEEDBACK_KIND_REJECTED
            events.append(
                event(f"{self.prefix}-{i}", self.finding_ids[i], kind, occurred_at=self._when)
            )
        return events

    async def _client(self) -> None:
        while not self.stop.is_set():
            events = self._take()
            if not events:
                return
            self.sent.update(e.event_id for e in events)
            request = feedback_pb2.BatchRecordFeedbackRequest(events=events)
            response = await retried(
                lambda request=request: self.stubs.feedback.BatchRecordFeedback(  # type: ignore[misc]
                    request, metadata=auth("ingest"), timeout=RPC_TIMEOUT
                ),
                self.errors,
            )
            for result, sent in zip(response.results, events, strict=True):  # type: ignore[attr-defined]
                if result.feedback_id:
                    self.acknowledged[result.event_id] = result.feedback_id
                    if sent.kind == common_pb2.FEEDBACK_KIND_APPLIED:
                        self.applied.add(result.event_id)
                else:
                    self.item_errors[result.error.reason] += 1
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(self.clients)))


@dataclass
class Readers:
    """Ranking and insights reads alongside the load; records what each answered."""

    stubs: Stubs
    repository: str
    team: str
    errors: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        findings = [finding_input(i) for i in range(20)]
        while not self.stop.is_set():
            calls = [
                self.stubs.learning.RankSuggestions(
                    learning_pb2.RankSuggestionsRequest(
                        repository_url=self.repository, findings=findings
                    ),
                    metadata=auth("reader"),
                    timeout=RPC_TIMEOUT,
                ),
                self.stubs.insights.GetTeamMetrics(
                    insights_pb2.GetTeamMetricsRequest(
                        scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=self.team)
                    ),
                    metadata=auth("reader"),
                    timeout=RPC_TIMEOUT,
                ),
            ]
            for call in calls:
                try:
                    await call
                    self.answered += 1
                except grpc.aio.AioRpcError as exc:
                    self.errors[exc.code().name] += 1
            await asyncio.sleep(0.05)


# The reactions of one repository as stored. A reaction stored twice is a second row with the
# same content (finding, kind, actor, comment, time), whatever its event id: the retried
# batches re-send identical events, so it would count a retry stored anew if idempotency broke
# — by event id or otherwise.
STORED = text(
    """
    SELECT array_agg(f.event_id) AS event_ids,
           count(*) - count(DISTINCT (f.finding_id, f.kind, f.actor_id, f.comment, f.occurred_at))
               AS doubled
    FROM suggestion_feedback f
    JOIN repositories r ON r.id = f.repository_id
    WHERE r.url = :repository
    """
)


async def account(
    figure: Figure,
    system: System,
    repository: str,
    *,
    sent: set[str],
    acknowledged: set[str],
) -> set[str]:
    """Fills the figure's sent, acknowledged, stored, lost and doubled from the database;
    returns the stored event ids."""
    engine = create_async_engine(system.database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(STORED, {"repository": repository})).one()
    finally:
        await engine.dispose()
    stored = list(row.event_ids or [])
    figure.sent, figure.acknowledged, figure.stored = len(sent), len(acknowledged), len(stored)
    figure.lost = len(acknowledged - set(stored))
    figure.doubled = int(row.doubled)
    return set(stored)


async def folded(stubs: Stubs, repository: str, events: int) -> learning_pb2.LearningMetric:
    """Waits until learning has folded ``events`` reactions of the repository."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = await stubs.learning.GetLearningMetrics(
                learning_pb2.GetLearningMetricsRequest(
                    scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_REPOSITORY, id=repository),
                    dimension=learning_pb2.DIMENSION_ALL,
                ),
                metadata=auth("reader"),
                timeout=RPC_TIMEOUT,
            )
            metric = response.metrics[0] if response.metrics else None
            if metric is not None and metric.positive + metric.negative >= events:
                return metric
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                raise
        assert time.monotonic() < deadline, f"learning never folded {events} events"
        await asyncio.sleep(0.2)


async def health_status(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return -1
    return int(response.status)


@dataclass
class HealthWatch:
    """Polls every service's grpc.health.v1 status and keeps each one's sequence of changes."""

    system: System
    seen: dict[str, list[int]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            for name, service in self.system.services.items():
                status = await health_status(service.address)
                changes = self.seen.setdefault(name, [])
                if not changes or changes[-1] != status:
                    changes.append(status)
            await asyncio.sleep(0.1)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
