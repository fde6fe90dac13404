"""The Task 5.6 plan's performance targets, measured on the whole system, never asserted.

The four services run as real processes (``tests/system.py``: ``reviewlearn serve <service>``
on a freshly migrated database of their own and a private Redis), reached only through their
RPCs. Each measurement repeats a few times and prints p50/p95 beside the plan's target (plan
§1: end-to-end < 2 s, consistency checks < 500 ms, learning metrics update < 1 s, ranking 1,000
findings < 500 ms, insights generation < 1 s) and a same-run reference: the bare echo server
(tests/benchmarks/echo.py) answering the same requests, or for the SQL check a ``SELECT 1``
round trip on the same engine. The insights service runs with its cache off, so every report
is computed.

Asserted, every repetition: each call succeeds and what it answers reflects what was sent (the
learned counts, the ranking's size, the team's counts in insights, a clean integrity check).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import psutil
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.cli.integrity import run_checks
from shared.db import migrate
from tests.benchmarks.conftest import AUTH, CHANNEL_OPTIONS, ServerProcess, percentile
from tests.conftest import _create_database, _drop_database, auth
from tests.integration.feedback.conftest import event, finding_input
from tests.system import System, private_redis, running_system


def _knob(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


REPETITIONS = _knob("REVIEWLEARN_BENCH_PHASE5_REPETITIONS", 10)
RANK_CALLS = _knob("REVIEWLEARN_BENCH_PHASE5_RANK_CALLS", 20)
CLI_RUNS = _knob("REVIEWLEARN_BENCH_PHASE5_CLI_RUNS", 3)
FINDINGS_PER_REVIEW = 20
REACTED = 15  # of each review's findings; the rest stay pending
RANKED = 1_000
POLL_SECONDS = 0.01
WAIT_LIMIT_SECONDS = 30.0

KINDS = (
    common_pb2.FEEDBACK_KIND_APPLIED,
    common_pb2.FEEDBACK_KIND_REJECTED,
    common_pb2.FEEDBACK_KIND_DISMISSED,
)
TARGETS_MS = {
    "end-to-end": 2000.0,
    "consistency": 500.0,
    "learning update": 1000.0,
    "ranking": 500.0,
    "insights": 1000.0,
}


@pytest.fixture
def phase5_system(postgres_server_url: str, tmp_path: Path) -> Iterator[System]:
    """The four processes on a database of their own (the other benchmarks' data and clean-up
    stay out of it), with the insights cache off."""
    url = asyncio.run(_create_database(postgres_server_url))
    asyncio.run(migrate.upgrade(url))
    try:
        with (
            private_redis() as redis_url,
            running_system(
                url, tmp_path / "logs", redis_url=redis_url, REVIEWLEARN_CACHE_TTL_SECONDS="0"
            ) as system,
        ):
            yield system
    finally:
        asyncio.run(_drop_database(postgres_server_url, url))


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls ``check`` every 10 ms; fails (not a timing assertion: a hang) after 30 s."""
    deadline = time.perf_counter() + WAIT_LIMIT_SECONDS
    while not await check():
        assert time.perf_counter() < deadline, f"{what} did not happen in {WAIT_LIMIT_SECONDS}s"
        await asyncio.sleep(POLL_SECONDS)


def team_scope(team: str) -> common_pb2.Scope:
    return common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=team)


def repository_scope(url: str) -> common_pb2.Scope:
    return common_pb2.Scope(type=common_pb2.SCOPE_TYPE_REPOSITORY, id=url)


class Stubs:
    def __init__(self, system: System) -> None:
        self._channels = {
            name: grpc.aio.insecure_channel(system.address(name), options=CHANNEL_OPTIONS)
            for name in system.services
        }
        self.feedback: feedback_pb2_grpc.FeedbackServiceAsyncStub = (
            feedback_pb2_grpc.FeedbackServiceStub(self._channels["feedback"])  # type: ignore[assignment]
        )
        self.learning: learning_pb2_grpc.LearningServiceAsyncStub = (
            learning_pb2_grpc.LearningServiceStub(self._channels["learning"])  # type: ignore[assignment]
        )
        self.insights: insights_pb2_grpc.InsightsServiceAsyncStub = (
            insights_pb2_grpc.InsightsServiceStub(self._channels["insights"])  # type: ignore[assignment]
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def reacted(self, repository: str, reactions: int) -> bool:
        """Learning has folded ``reactions`` reactions of the repository, nothing left over."""
        try:
            response = await self.learning.GetLearningMetrics(
                learning_pb2.GetLearningMetricsRequest(
                    scope=repository_scope(repository), dimension=learning_pb2.DIMENSION_ALL
                ),
                metadata=auth("reader"),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:  # not folded at all yet
                return False
            raise
        if response.backlog or not response.metrics:
            return False
        metric = response.metrics[0]
        return metric.positive + metric.negative + metric.dismissed >= reactions


class Review:
    """One repetition's review: its own team and repository, so nothing is shared."""

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.team = f"team-{self.suffix}"
        self.repository = f"https://git.example.com/{self.suffix}/api"

    def record_request(self, pull_request: int) -> feedback_pb2.RecordFindingsRequest:
        return feedback_pb2.RecordFindingsRequest(
            repository_url=self.repository,
            team=self.team,
            pull_request=pull_request,
            head_commit="c0ffee",
            findings=[finding_input(i) for i in range(FINDINGS_PER_REVIEW)],
        )

    def feedback_request(self, finding_ids: list[int]) -> feedback_pb2.BatchRecordFeedbackRequest:
        moment = datetime.now(UTC) - timedelta(minutes=1)
        return feedback_pb2.BatchRecordFeedbackRequest(
            events=[
                event(f"{self.suffix}-{i}", finding_id, KINDS[i % 3], occurred_at=moment)
                for i, finding_id in enumerate(finding_ids[:REACTED])
            ]
        )

    def rank_request(self, findings: int) -> learning_pb2.RankSuggestionsRequest:
        return learning_pb2.RankSuggestionsRequest(
            repository_url=self.repository,
            pull_request=2,
            findings=[finding_input(i) for i in range(findings)],
        )


def elapsed(started: float) -> float:
    return time.perf_counter() - started


async def end_to_end(stubs: Stubs, review: Review) -> tuple[float, float, float]:
    """(end-to-end, learning metrics update, insights refresh + report) seconds of one review."""
    started = time.perf_counter()
    recorded = await stubs.feedback.RecordFindings(
        review.record_request(1), metadata=auth("ingest")
    )
    ids = [f.finding_id for f in recorded.findings]
    stored = await stubs.feedback.BatchRecordFeedback(
        review.feedback_request(ids), metadata=auth("ingest")
    )
    acknowledged = time.perf_counter()
    assert stored.stored_count == REACTED
    await until(lambda: stubs.reacted(review.repository, REACTED), "learning folds the feedback")
    learned = elapsed(acknowledged)
    ranked = await stubs.learning.RankSuggestions(
        review.rank_request(FINDINGS_PER_REVIEW), metadata=auth("reader")
    )
    assert ranked.learning_applied
    assert len(ranked.findings) == FINDINGS_PER_REVIEW
    insights_started = time.perf_counter()

    async def counted() -> bool:
        await stubs.insights.RefreshInsights(
            insights_pb2.RefreshInsightsRequest(
                request_id=uuid.uuid4().hex, parts=["rollups"], scopes=[team_scope(review.team)]
            ),
            metadata=auth("operator"),
        )
        team = await stubs.insights.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=team_scope(review.team)),
            metadata=auth("reader"),
        )
        m = team.metrics
        return m.findings == FINDINGS_PER_REVIEW and m.positive + m.negative == REACTED * 2 // 3

    await until(counted, "insights count the review's feedback")
    return elapsed(started), learned, elapsed(insights_started)


async def insights_generation(stubs: Stubs, team: str) -> float:
    """RefreshInsights of every part for one team, then its report (cache off)."""
    started = time.perf_counter()
    await stubs.insights.RefreshInsights(
        insights_pb2.RefreshInsightsRequest(request_id=uuid.uuid4().hex, scopes=[team_scope(team)]),
        metadata=auth("operator"),
    )
    report = await stubs.insights.GetInsightsReport(
        insights_pb2.GetInsightsReportRequest(scope=team_scope(team)), metadata=auth("reader")
    )
    seconds = elapsed(started)
    assert not report.from_cache
    assert report.metrics.metrics.findings == FINDINGS_PER_REVIEW
    return seconds


async def timed(call: Callable[[], Awaitable[object]], times: int) -> list[float]:
    latencies = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        latencies.append(elapsed(started))
    return sorted(latencies)


def cli_integrity(database_url: str) -> float:
    """``reviewlearn validate integrity`` as an operator runs it: a fresh interpreter."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("REVIEWLEARN_")
    } | {"REVIEWLEARN_DATABASE_URL": database_url}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.app", "validate", "integrity"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    seconds = elapsed(started)
    assert done.returncode == 0, done.stdout + done.stderr
    return seconds


def ms(values: list[float], fraction: float) -> float:
    return percentile(sorted(values), fraction) * 1000


@pytest.mark.benchmark
async def test_plan_targets_on_the_running_system(
    phase5_system: System, echo_server: ServerProcess
) -> None:
    system = phase5_system
    stubs = Stubs(system)
    echo_channel = grpc.aio.insecure_channel(echo_server.address, options=CHANNEL_OPTIONS)
    echo_feedback: feedback_pb2_grpc.FeedbackServiceAsyncStub = (
        feedback_pb2_grpc.FeedbackServiceStub(echo_channel)  # type: ignore[assignment]
    )
    echo_learning: learning_pb2_grpc.LearningServiceAsyncStub = (
        learning_pb2_grpc.LearningServiceStub(echo_channel)  # type: ignore[assignment]
    )
    echo_insights: insights_pb2_grpc.InsightsServiceAsyncStub = (
        insights_pb2_grpc.InsightsServiceStub(echo_channel)  # type: ignore[assignment]
    )
    engine = create_async_engine(system.database_url, pool_size=2)
    runs: dict[str, list[float]] = {name: [] for name in TARGETS_MS}
    references: dict[str, list[float]] = {name: [] for name in TARGETS_MS}
    try:
        await end_to_end(stubs, Review())  # warm-up: imports, prepared statements, first fold
        reviews = []
        for _ in range(REPETITIONS):
            review = Review()
            reviews.append(review)
            whole, learned, _ = await end_to_end(stubs, review)
            runs["end-to-end"].append(whole)
            runs["learning update"].append(learned)

        # Insights generation for each repetition's team (every part persisted, then the report).
        await insights_generation(stubs, reviews[0].team)
        for review in reviews:
            runs["insights"].append(await insights_generation(stubs, review.team))

        # Ranking 1,000 inline findings in a repository learning has state for.
        rank = reviews[-1].rank_request(RANKED)

        async def rank_once() -> None:
            answer = await stubs.learning.RankSuggestions(rank, metadata=auth("reader"))
            assert answer.learning_applied
            assert len(answer.findings) == RANKED

        await timed(rank_once, 3)
        runs["ranking"] = await timed(rank_once, RANK_CALLS)

        # The consistency check itself (the SQL of `reviewlearn validate integrity`, one
        # snapshot), in this process on a warm pool; the CLI's whole run printed below it.
        async def check_once() -> None:
            failed = [r for r in await run_checks(engine) if r.offending]
            assert not failed, [(r.check.name, r.offending) for r in failed]

        async def select_one() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        await check_once()
        runs["consistency"] = await timed(check_once, REPETITIONS)
        checks = len(await run_checks(engine))
        references["consistency"] = await timed(select_one, 50)
        cli_seconds = []
        for _ in range(CLI_RUNS):
            cli_seconds.append(await asyncio.to_thread(cli_integrity, system.database_url))

        # The references: the echo server answering the same requests in the same run.
        feedback = reviews[-1].feedback_request(list(range(1, REACTED + 1)))
        small_rank = reviews[-1].rank_request(FINDINGS_PER_REVIEW)
        report = insights_pb2.GetInsightsReportRequest(scope=team_scope(reviews[-1].team))

        async def echo_chain() -> None:
            await echo_feedback.BatchRecordFeedback(feedback, metadata=AUTH)
            await echo_learning.RankSuggestions(small_rank, metadata=AUTH)
            await echo_insights.GetInsightsReport(report, metadata=AUTH)

        await timed(echo_chain, 5)
        references["end-to-end"] = await timed(echo_chain, 50)
        references["learning update"] = await timed(
            lambda: echo_feedback.BatchRecordFeedback(feedback, metadata=AUTH), 50
        )
        references["ranking"] = await timed(
            lambda: echo_learning.RankSuggestions(rank, metadata=AUTH), RANK_CALLS
        )
        references["insights"] = await timed(
            lambda: echo_insights.GetInsightsReport(report, metadata=AUTH), 50
        )
    finally:
        await engine.dispose()
        await echo_channel.close()
        await stubs.close()

    labels = {
        "end-to-end": (
            "end-to-end: RecordFindings → BatchRecordFeedback → GetLearningMetrics reflects "
            "→ RankSuggestions → RefreshInsights + GetTeamMetrics reflect",
            "echo: BatchRecordFeedback + RankSuggestions + GetInsightsReport",
        ),
        "consistency": (
            f"consistency check: `validate integrity` SQL ({checks} checks, one snapshot), "
            "in process",
            "SELECT 1 on the same pool",
        ),
        "learning update": (
            "learning metrics update: BatchRecordFeedback acknowledged → GetLearningMetrics "
            "reflects",
            "echo: BatchRecordFeedback",
        ),
        "ranking": (f"RankSuggestions, {RANKED:,} inline findings", "echo: same request"),
        "insights": (
            "insights generation: RefreshInsights (all parts, one team) + GetInsightsReport, "
            "cache off",
            "echo: GetInsightsReport",
        ),
    }
    table = Table(title="Task 5.6 plan targets on the running system (ratio = p50 / reference p50)")
    for column in ("what", "reps", "p50 ms", "p95 ms", "target", "met (p95)", "reference",
                   "ref p50 ms", "ratio"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("what", "reference") else "right")
    for name, target in TARGETS_MS.items():
        values, reference = runs[name], references[name]
        p50, p95, ref = ms(values, 0.5), ms(values, 0.95), ms(reference, 0.5)
        what, against = labels[name]
        table.add_row(
            what, str(len(values)), f"{p50:.1f}", f"{p95:.1f}", f"< {target:.0f}",
            "yes" if p95 < target else "[bold red]no[/]", against, f"{ref:.2f}",
            f"{p50 / ref:.0f}×" if ref else "-",
        )  # fmt: skip
    console = Console(width=160)
    console.print(table)
    console.print(
        f"  `reviewlearn validate integrity` as a command (a fresh interpreter, imports and "
        f"connection included, not the check alone): p50 {ms(cli_seconds, 0.5):.0f} ms over "
        f"{len(cli_seconds)} runs\n"
        f"  each repetition: a review of {FINDINGS_PER_REVIEW} findings in a repository and team "
        f"of its own, {REACTED} reactions; learning polled every {POLL_SECONDS * 1000:.0f} ms "
        "(fold poll 0.5 s, woken by NOTIFY); insights cache off\n"
        f"  {psutil.cpu_count()} CPUs shared by this process, the four services, the echo server, "
        "PostgreSQL and Redis; speed is reported, never asserted."
    )
