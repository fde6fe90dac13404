"""Learning service speed: ranking through gRPC, the incremental fold and a full recompute.

* RankSuggestions end to end: the learning service in its own process (``python -m
  services.learning``, real PostgreSQL) with learned state for 100 rules, ranking 1,000 and
  10,000 inline findings per request, one request at a time (latency, not throughput), beside
  the echo ceiling (tests/benchmarks/echo.py) answering the same requests in the same run.
* ``Folder.fold()`` of 100,000 new feedback events over an existing database, in process: the
  fold is set-based SQL, so what is measured is PostgreSQL running the fold's statements.
* ``Folder.recompute()`` over 1,000,000 events, on that same database (a recompute always
  replaces existing counts, so it is measured on a database that has them).

Speed is only printed, next to the issue's targets, never asserted: the machine is shared and
noisy. Correctness is asserted: every ranking returns each finding exactly once; the fold's
counts equal a recompute's, and both equal the outcome rule evaluated independently in SQL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc.aio
import psutil
import pytest
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.cli.loader import finding_input
from services.cli.synthetic import CATEGORIES, SyntheticHistory, generate_history
from services.learning.instruments import LearningInstruments
from services.learning.usecases.fold_feedback import Folder, FoldResult
from shared.db.engine import create_session_factory
from shared.db.models import LearningMetric
from shared.fingerprint import finding_fingerprint, pattern_key
from shared.notifications import FEEDBACK_CHANNEL, asyncpg_dsn
from shared.outcome import OUTCOME_OF_KIND, FeedbackKind, Outcome
from tests.benchmarks.conftest import (
    AUTH,
    CHANNEL_OPTIONS,
    OPERATOR_AUTH,
    ServerProcess,
    percentile,
)

if TYPE_CHECKING:  # the async stub class exists only in the generated type stubs
    from reviewlearn.learning.v1.learning_pb2_grpc import LearningServiceAsyncStub as LearningStub


def _knob(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# --- RankSuggestions. The learned state: a synthetic history of 100 rules (its defaults: 3 teams,
# 3 repositories each), 10 findings per review, ~90% of them with feedback.
SEED = 7
RULES = 100
HISTORY_REVIEWS = _knob("REVIEWLEARN_BENCH_RANK_HISTORY_REVIEWS", 3_000)
# Requests are cut from a second history of the same bot (same seed, so the same 100 rules) on
# one repository of the first, so every ranking hits learned repository, team and rule state.
# Distinct requests rotate, so calls do not all answer the very same findings.
POOL_REVIEWS = _knob("REVIEWLEARN_BENCH_RANK_POOL_REVIEWS", 5_000)
SMALL_REQUEST = 1_000
LARGE_REQUEST = 10_000
SMALL_CALLS = _knob("REVIEWLEARN_BENCH_RANK_CALLS", 200)
LARGE_CALLS = _knob("REVIEWLEARN_BENCH_RANK_LARGE_CALLS", 40)
# Warm-up fills the model cache, the prepared-statement caches, the message/simhash LRU caches
# and PostgreSQL's buffers before anything is measured.
SMALL_WARMUP = 20
LARGE_WARMUP = 4
FOLD_WAIT_SECONDS = 300.0

# --- The fold and the recompute: the "existing database" has FINDINGS findings and
# RECOMPUTE_EVENTS - FOLD_EVENTS events, folded; then FOLD_NEW_FINDINGS findings and FOLD_EVENTS
# events arrive (each new finding gets one of them, the rest land on random old findings) and
# are folded; then everything (RECOMPUTE_EVENTS events) is recomputed.
FINDINGS = _knob("REVIEWLEARN_BENCH_FINDINGS", 300_000)
FOLD_EVENTS = _knob("REVIEWLEARN_BENCH_FOLD_EVENTS", 100_000)
FOLD_NEW_FINDINGS = min(_knob("REVIEWLEARN_BENCH_FOLD_NEW_FINDINGS", 20_000), FOLD_EVENTS)
RECOMPUTE_EVENTS = max(_knob("REVIEWLEARN_BENCH_RECOMPUTE_EVENTS", 1_000_000), FOLD_EVENTS)
TEAMS = 3
REPOSITORIES = 9
FINDINGS_PER_REVIEW = 10

# The targets; reported against, never asserted.
TARGET_SMALL_P50_MS = 20.0
TARGET_LARGE_P50_MS = 200.0
TARGET_FOLD_SECONDS = 2.0
TARGET_RECOMPUTE_SECONDS = 10.0


def _met(value: float, target: float) -> str:
    return "yes" if value <= target else "[bold red]no[/]"


# ============================================================================ RankSuggestions


@dataclass(frozen=True)
class LoadedHistory:
    findings: int
    events: int
    repository_ids: dict[str, int]
    seconds: float


async def load_history_sql(database_url: str, history: SyntheticHistory) -> LoadedHistory:
    """Writes the history straight into the feedback tables with COPY, in one transaction.

    What the feedback service would store (same fingerprints and pattern keys, the feedback's
    repository denormalised), minus a minute of RPCs; ``tx_id`` takes its default, so the fold
    picks the rows up as if the service had written them. The events keep the history's order,
    so their ids grow with ``occurred_at`` as when the loader sends them.
    """
    started = time.perf_counter()
    teams: dict[str, int] = {}
    repositories: dict[str, tuple[int, int]] = {}
    reviews: list[tuple[Any, ...]] = []
    findings: list[tuple[Any, ...]] = []
    finding_ids: list[list[int]] = []
    for review_id, review in enumerate(history.reviews, start=1):
        team_id = teams.setdefault(review.team, len(teams) + 1)
        repository_id, _ = repositories.setdefault(
            review.repository_url, (len(repositories) + 1, team_id)
        )
        reviews.append(
            (review_id, repository_id, review.pull_request, review.head_commit, review.created_at)
        )
        ids: list[int] = []
        for finding in review.findings:
            finding_id = len(findings) + 1
            ids.append(finding_id)
            findings.append(
                (
                    finding_id,
                    review_id,
                    repository_id,
                    team_id,
                    review.pull_request,
                    finding.client_finding_id,
                    finding.rule_id,
                    finding.category,
                    finding.severity,
                    finding.confidence,
                    finding.file_path,
                    finding.line_start,
                    finding.line_end,
                    finding.title,
                    finding.message,
                    finding.code_context,
                    finding_fingerprint(
                        rule_id=finding.rule_id,
                        file_path=finding.file_path,
                        message=finding.message,
                        code_context=finding.code_context,
                    ),
                    pattern_key(rule_id=finding.rule_id, message=finding.message),
                    review.created_at,
                )
            )
        finding_ids.append(ids)
    events = [
        (
            position,
            feedback.event_id,
            finding_ids[feedback.review_index][feedback.finding_index],
            reviews[feedback.review_index][1],
            int(FeedbackKind[feedback.kind.upper()]),
            feedback.actor_id,
            feedback.occurred_at,
        )
        for position, feedback in enumerate(history.feedback, start=1)
    ]

    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        # One transaction: the service's fold runs meanwhile and must see all of it or nothing.
        async with connection.transaction():
            await connection.copy_records_to_table(
                "teams", records=[(i, name) for name, i in teams.items()], columns=["id", "name"]
            )
            await connection.copy_records_to_table(
                "repositories",
                records=[(i, url, team) for url, (i, team) in repositories.items()],
                columns=["id", "url", "team_id"],
            )
            await connection.copy_records_to_table(
                "reviews",
                records=reviews,
                columns=["id", "repository_id", "pull_request", "head_commit", "created_at"],
            )
            await connection.copy_records_to_table(
                "findings",
                records=findings,
                columns=[
                    "id", "review_id", "repository_id", "team_id", "pull_request",
                    "client_finding_id", "rule_id", "category", "severity", "confidence",
                    "file_path", "line_start", "line_end", "title", "message", "code_context",
                    "fingerprint", "pattern_key", "created_at",
                ],
            )  # fmt: skip
            await connection.copy_records_to_table(
                "suggestion_feedback",
                records=events,
                columns=[
                    "id", "event_id", "finding_id", "repository_id", "kind", "actor_id",
                    "occurred_at",
                ],
            )  # fmt: skip
            await _advance_sequences(connection)
        # Statistics as autovacuum would have them on a database that grew to this size.
        await connection.execute("ANALYZE")
        # What the feedback service sends after a write: wakes the fold now, not at its poll.
        await connection.execute(f"NOTIFY {FEEDBACK_CHANNEL}, '{{}}'")
    finally:
        await connection.close()
    return LoadedHistory(
        findings=len(findings),
        events=len(events),
        repository_ids={url: i for url, (i, _) in repositories.items()},
        seconds=time.perf_counter() - started,
    )


async def _advance_sequences(connection: asyncpg.Connection) -> None:
    # Rows went in with explicit ids; the serial sequences must not hand those out again.
    for table in ("teams", "repositories", "reviews", "findings", "suggestion_feedback"):
        await connection.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
        )


async def wait_for_fold(stub: LearningStub, findings: int) -> float:
    """Seconds until every finding is counted and no feedback waits to be folded."""
    started = time.perf_counter()
    request = learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL)
    while True:
        response = await stub.GetLearningMetrics(request, metadata=AUTH)
        shown = response.metrics[0].shown if response.metrics else 0
        if response.backlog == 0 and shown == findings:
            return time.perf_counter() - started
        if time.perf_counter() - started > FOLD_WAIT_SECONDS:
            raise TimeoutError(
                f"fold not done after {FOLD_WAIT_SECONDS:.0f} s: backlog {response.backlog}, "
                f"{shown} of {findings} findings counted"
            )
        await asyncio.sleep(0.2)


@dataclass
class RankRun:
    latencies: list[float] = field(default_factory=list)
    """Per call, in seconds, sorted once the run ends."""
    server_cpu_seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    """Suppression reasons of the last answer (the ranking did real work)."""
    client_codec_ms: float = 0.0
    """What this process spends encoding one request and decoding its answer (in every call)."""
    codec_floor_ms: float = 0.0
    """The framework's own floor of the shape: decoding the request and encoding this answer,
    the protobuf work any server of this RPC does (median of five, in this process)."""
    answer_bytes: int = 0

    def ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000

    @property
    def cpu_ms_per_call(self) -> float:
        return self.server_cpu_seconds / len(self.latencies) * 1000


def check_ranking(
    request: learning_pb2.RankSuggestionsRequest,
    response: learning_pb2.RankSuggestionsResponse,
) -> None:
    # Every finding comes back exactly once, whatever its rank or suppression.
    assert sorted(item.ref.index for item in response.findings) == list(
        range(len(request.findings))
    )
    assert response.learning_applied, response.not_applied_reason


async def measure_ranking(
    server: ServerProcess,
    stub: LearningStub,
    requests: Sequence[learning_pb2.RankSuggestionsRequest],
    *,
    warmup: int,
    calls: int,
) -> RankRun:
    """One request in flight at a time: the latency a reviewer bot waits for, unqueued."""
    for number in range(warmup):
        check_ranking(
            requests[number % len(requests)],
            await stub.RankSuggestions(requests[number % len(requests)], metadata=AUTH),
        )
    run = RankRun()
    cpu_before = server.cpu_seconds()
    response = learning_pb2.RankSuggestionsResponse()
    for number in range(warmup, warmup + calls):
        request = requests[number % len(requests)]
        started = time.perf_counter()
        response = await stub.RankSuggestions(request, metadata=AUTH)
        run.latencies.append(time.perf_counter() - started)
        check_ranking(request, response)
    run.server_cpu_seconds = server.cpu_seconds() - cpu_before
    run.latencies.sort()
    # Part of every latency above is the client's own protobuf work; shown apart, it tells how
    # much of the echo's floor is the load generator rather than the server.
    answer = response.SerializeToString()
    started = time.perf_counter()
    asked = request.SerializeToString()
    learning_pb2.RankSuggestionsResponse.FromString(answer)
    run.client_codec_ms = (time.perf_counter() - started) * 1000
    floors = []
    for _ in range(5):
        started = time.perf_counter()
        learning_pb2.RankSuggestionsRequest.FromString(asked)
        response.SerializeToString()
        floors.append(time.perf_counter() - started)
    run.codec_floor_ms = sorted(floors)[2] * 1000
    run.answer_bytes = len(answer)
    run.reasons = Counter(
        learning_pb2.SuppressionReason.Name(item.suppression_reason).removeprefix(
            "SUPPRESSION_REASON_"
        )
        for item in response.findings
        if item.suppressed
    )
    return run


def ranking_requests(
    history: SyntheticHistory, loaded: LoadedHistory
) -> tuple[list[learning_pb2.RankSuggestionsRequest], list[learning_pb2.RankSuggestionsRequest]]:
    """Distinct 1,000- and 10,000-finding requests on one repository of the loaded history."""
    pool = generate_history(
        seed=SEED,
        teams=1,
        repositories_per_team=1,
        rules=RULES,
        reviews=POOL_REVIEWS,
        findings_per_review=FINDINGS_PER_REVIEW,
    )
    assert [r.rule_id for r in pool.rules] == [r.rule_id for r in history.rules]
    repository_url = pool.reviews[0].repository_url
    assert repository_url in loaded.repository_ids
    # A pull request with history, so the "dismissed earlier on this PR" lookup does real work.
    pull_request = max(
        r.pull_request for r in history.reviews if r.repository_url == repository_url
    )
    inputs = [finding_input(f) for review in pool.reviews for f in review.findings]

    def cut(size: int) -> list[learning_pb2.RankSuggestionsRequest]:
        return [
            learning_pb2.RankSuggestionsRequest(
                repository_url=repository_url,
                pull_request=pull_request,
                findings=inputs[start : start + size],
            )
            for start in range(0, len(inputs) - size + 1, size)
        ]

    small, large = cut(SMALL_REQUEST), cut(LARGE_REQUEST)
    assert large, "REVIEWLEARN_BENCH_RANK_POOL_REVIEWS is too small for a 10,000-finding request"
    return small, large


CROWDED = -LARGE_REQUEST
"""Key of the worst-case run: LARGE_REQUEST findings on lines 10-12 of one file, messages that
normalise alike (near-duplicate grouping's worst case, formerly quadratic)."""
CROWDED_CALLS = _knob("REVIEWLEARN_BENCH_RANK_CROWDED_CALLS", 5)


def crowded_request(repository_url: str, size: int) -> learning_pb2.RankSuggestionsRequest:
    from reviewlearn.common.v1 import common_pb2

    return learning_pb2.RankSuggestionsRequest(
        repository_url=repository_url,
        findings=[
            common_pb2.FindingInput(
                client_finding_id=f"c{i}",
                rule_id=f"rule{i % 50}",
                category="style",
                severity=common_pb2.SEVERITY_LOW,
                confidence=0.5,
                file_path="src/app.py",
                line_start=10 + i % 3,
                line_end=12,
                title="t",
                message=f"msg {i}",
                code_context=f"x = {i}",
            )
            for i in range(size)
        ],
    )


def _lean(
    requests: Sequence[learning_pb2.RankSuggestionsRequest],
) -> list[learning_pb2.RankSuggestionsRequest]:
    """The same requests asking for the lean answer (RankOptions.explain=false)."""
    lean = []
    for request in requests:
        copy = learning_pb2.RankSuggestionsRequest()
        copy.CopyFrom(request)
        copy.options.explain = False
        lean.append(copy)
    return lean


def report_ranking(
    runs: dict[tuple[str, str], RankRun],
    targets: dict[str, float],
    setup: dict[str, str],
    console: Console,
) -> None:
    table = Table(
        title="RankSuggestions through gRPC beside the bare echo server and the codec floor of "
        "the same shape, same run (ratio = service/echo)"
    )
    for column in ("findings/request", "metric", "service", "echo", "ratio", "target", "met"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for label in dict.fromkeys(key for key, _ in runs):
        service, echo = runs[(label, "service")], runs[(label, "echo")]
        target = targets.get(label)
        floor = service.codec_floor_ms
        rows: list[tuple[str, float, float, str]] = [
            (f"p{round(fraction * 100)} ms", service.ms(fraction), echo.ms(fraction), "")
            for fraction in (0.50, 0.90, 0.99)
        ]
        if target is not None:
            # The goal: the target, or 1.5 × the codec floor where the floor alone exceeds it.
            goal = max(target, 1.5 * floor)
            rows[0] = (rows[0][0], rows[0][1], rows[0][2], f"≤ {goal:,.0f}")
        rows.append(("codec floor ms", floor, echo.codec_floor_ms, ""))
        rows.append(("p50 / codec floor", service.ms(0.5) / floor, echo.ms(0.5) / floor, ""))
        rows.append(("server CPU ms/call", service.cpu_ms_per_call, echo.cpu_ms_per_call, ""))
        rows.append(("client codec ms/call", service.client_codec_ms, echo.client_codec_ms, ""))
        rows.append(("answer MB", service.answer_bytes / 1e6, echo.answer_bytes / 1e6, ""))
        for position, (name, mine, ceiling, goal_text) in enumerate(rows):
            met = ""
            if goal_text:
                met = _met(mine, float(goal_text.removeprefix("≤ ").replace(",", "")))
            table.add_row(
                f"{label} ×{len(service.latencies)}" if position == 0 else "",
                name,
                f"{mine:,.1f}",
                f"{ceiling:,.1f}",
                f"{mine / ceiling:.1f}×" if ceiling else "-",
                goal_text,
                met,
            )
    console.print(table)
    for label in dict.fromkeys(key for key, _ in runs):
        reasons = runs[(label, "service")].reasons
        shown = ", ".join(f"{name.lower()} {count:,}" for name, count in reasons.most_common())
        console.print(f"  {label} answer suppressed: {shown or 'nothing'}")
    for name, value in setup.items():
        console.print(f"  {name}: {value}")
    console.print(
        f"{psutil.cpu_count()} CPUs; one request in flight at a time; the load generator, both "
        "servers and PostgreSQL share the machine. 'lean' asks RankOptions.explain=false (the "
        "echo then answers without explanations too). Speed is reported, never asserted."
    )


@pytest.mark.benchmark
@pytest.mark.usefixtures("long_benchmark")
async def test_rank_suggestions_against_the_grpc_ceiling(
    db_engine: AsyncEngine,
    database_url: str,
    learning_server: ServerProcess,
    echo_server: ServerProcess,
) -> None:
    console = Console(width=120)  # wide enough for the tables when output is captured
    console.print(
        f"\nlearning service pid {learning_server.pid} on {learning_server.address}, "
        f"echo pid {echo_server.pid} on {echo_server.address}"
    )
    started = time.perf_counter()
    history = generate_history(
        seed=SEED, rules=RULES, reviews=HISTORY_REVIEWS, findings_per_review=FINDINGS_PER_REVIEW
    )
    generated = time.perf_counter() - started
    loaded = await load_history_sql(database_url, history)

    async with (
        grpc.aio.insecure_channel(learning_server.address, options=CHANNEL_OPTIONS) as channel,
        grpc.aio.insecure_channel(echo_server.address, options=CHANNEL_OPTIONS) as echo_channel,
    ):
        stub = learning_pb2_grpc.LearningServiceStub(channel)
        folded = await wait_for_fold(stub, loaded.findings)
        started = time.perf_counter()
        tune = await stub.TuneConfidenceThresholds(
            learning_pb2.TuneConfidenceThresholdsRequest(
                request_id="bench-tune", reason="benchmark"
            ),
            metadata=OPERATOR_AUTH,
        )
        tuned = time.perf_counter() - started
        assert tune.applied
        assert tune.model.samples > 0  # the ranking below uses the learned model
        thresholds = await stub.GetConfidenceThresholds(
            learning_pb2.GetConfidenceThresholdsRequest(), metadata=AUTH
        )
        assert thresholds.thresholds
        assert not thresholds.stale

        small, large = ranking_requests(history, loaded)
        targets = {
            "service": (learning_server, stub),
            "echo": (echo_server, learning_pb2_grpc.LearningServiceStub(echo_channel)),
        }
        runs: dict[tuple[str, str], RankRun] = {}
        for label, requests, warmup, calls in (
            (f"{SMALL_REQUEST:,}", small, SMALL_WARMUP, SMALL_CALLS),
            (f"{SMALL_REQUEST:,} lean", _lean(small), SMALL_WARMUP, SMALL_CALLS),
            (f"{LARGE_REQUEST:,}", large, LARGE_WARMUP, LARGE_CALLS),
            (f"{LARGE_REQUEST:,} lean", _lean(large), LARGE_WARMUP, LARGE_CALLS),
        ):
            for name, (server, target_stub) in targets.items():
                console.print(f"ranking {label} findings per request → {name} …")
                runs[(label, name)] = await measure_ranking(
                    server, target_stub, requests, warmup=warmup, calls=calls
                )
        # The worst case the probe found: every finding in one crowded window of one file.
        crowded = [crowded_request(small[0].repository_url, LARGE_REQUEST)]
        for name, (server, target_stub) in targets.items():
            console.print(f"ranking one crowded window of {LARGE_REQUEST:,} → {name} …")
            runs[(f"{LARGE_REQUEST:,} crowded", name)] = await measure_ranking(
                server, target_stub, crowded, warmup=1, calls=CROWDED_CALLS
            )

    setup = {
        "learned state": (
            f"{len(history.rules)} rules, {loaded.findings:,} findings, {loaded.events:,} events, "
            f"{len(loaded.repository_ids)} repositories (generated in {generated:.1f} s, "
            f"loaded with COPY in {loaded.seconds:.1f} s)"
        ),
        "service fold of it": f"{folded:.1f} s until counted (includes the model refresh)",
        "TuneConfidenceThresholds": (
            f"{tuned * 1000:,.0f} ms, model {tune.model.version} on {tune.model.samples:,} "
            "outcomes, "
            f"{len(thresholds.thresholds)} global thresholds"
        ),
        "requests": (
            f"{len(small)} distinct of {SMALL_REQUEST:,} and {len(large)} of {LARGE_REQUEST:,} "
            "inline findings (rotated), echo answers one ranked finding with an explanation "
            "per input"
        ),
    }
    goals = {
        f"{SMALL_REQUEST:,}": TARGET_SMALL_P50_MS,
        f"{SMALL_REQUEST:,} lean": TARGET_SMALL_P50_MS,
        f"{LARGE_REQUEST:,}": TARGET_LARGE_P50_MS,
        f"{LARGE_REQUEST:,} lean": TARGET_LARGE_P50_MS,
    }
    report_ranking(runs, goals, setup, console)


# ======================================================================= fold and recompute

_KIND_CHOICES = "ARRAY[1, 1, 2, 6, 3, 3, 4, 7, 5, 5]"
"""Feedback kinds drawn uniformly from this: 40% positive, 40% negative, 20% dismissed."""


def _populate_findings(first: int, count: int) -> list[str]:
    """SQL adding findings ``first`` … ``first + count - 1`` (and their reviews).

    Ten findings per review, reviews round robin over the repositories, rule ``r`` of 100 drawn
    skewed (``100·u²``, as real bots have a few loud rules) and its category and severity fixed
    by ``r``. Everything is a function of the finding id, so the events below can compute a
    finding's repository without a join. Sizes are our own integers, formatted into the SQL.
    """
    last = first + count - 1
    categories = ", ".join(f"'{c}'" for c in CATEGORIES)
    per_review = FINDINGS_PER_REVIEW
    return [
        f"""
        INSERT INTO reviews (id, repository_id, pull_request, head_commit, created_at)
        SELECT v, (v - 1) % {REPOSITORIES} + 1, (v - 1) / {REPOSITORIES} + 1, md5(v::text),
            now() - random() * interval '90 days'
        FROM generate_series({(first - 1) // per_review + 1}, {(last - 1) // per_review + 1}) v
        ON CONFLICT (id) DO NOTHING
        """,
        f"""
        INSERT INTO findings (id, review_id, repository_id, team_id, pull_request,
            client_finding_id, rule_id, category, severity, confidence, file_path, line_start,
            line_end, title, message, fingerprint, pattern_key, created_at)
        SELECT f.id, f.review_id, f.repository_id, (f.repository_id - 1) % {TEAMS} + 1,
            f.pull_request, 'bench-' || f.id, 'BENCH' || lpad(f.rule::text, 3, '0'),
            (ARRAY[{categories}])[f.rule % {len(CATEGORIES)} + 1], f.rule % 5 + 1,
            round(random()::numeric, 4)::float8, 'src/module_' || (f.id % 300) || '.py',
            f.line, f.line + 3, 'Bench finding', 'Rule ' || f.rule || ' fired at ' || f.line,
            md5('fingerprint-' || f.id), left(md5('pattern-' || f.rule || '-' || f.id % 40), 16),
            now() - random() * interval '90 days'
        FROM (
            SELECT i AS id, (i - 1) / {per_review} + 1 AS review_id,
                (i - 1) / {per_review} % {REPOSITORIES} + 1 AS repository_id,
                (i - 1) / {per_review} / {REPOSITORIES} + 1 AS pull_request,
                floor(100 * random() ^ 2)::int AS rule, 1 + floor(random() * 900)::int AS line
            FROM generate_series({first}, {last}) i
        ) f
        """,
    ]


def _populate_events(
    *, first: int, count: int, direct_to: int, direct: int, lo: int, hi: int, recent: bool
) -> str:
    """SQL adding events ``first`` … ``first + count - 1``.

    The first ``direct`` events go one each to findings ``direct_to`` …, the rest to findings
    drawn uniformly from ``lo`` … ``hi``. ``recent`` events happened within the last hour, so
    they usually beat what was folded before (outcome changes); others over the last 90 days.
    """
    when = (
        "now() - random() * interval '1 hour'"
        if recent
        else "now() - interval '90 days' + random() * interval '89 days'"
    )
    return f"""
    INSERT INTO suggestion_feedback
        (id, event_id, finding_id, repository_id, kind, actor_id, occurred_at)
    SELECT e.id, 'bench-' || e.id, e.finding_id,
        (e.finding_id - 1) / {FINDINGS_PER_REVIEW} % {REPOSITORIES} + 1,
        ({_KIND_CHOICES})[1 + floor(random() * 10)::int], 'dev-' || e.id % 97, {when}
    FROM (
        SELECT g AS id,
            CASE WHEN g - {first} < {direct} THEN {direct_to} + (g - {first})
                 ELSE {lo} + floor(random() * {hi - lo + 1})::bigint END AS finding_id
        FROM generate_series({first}, {first + count - 1}) g
    ) e
    """


async def _run(connection: AsyncConnection, statements: Sequence[str]) -> None:
    for statement in statements:
        await connection.execute(text(statement))


_ADVANCE_SEQUENCES = [
    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
    for table in ("teams", "repositories", "reviews", "findings", "suggestion_feedback")
]


async def populate_base(engine: AsyncEngine, *, findings: int, events: int) -> float:
    started = time.perf_counter()
    async with engine.begin() as connection:
        await connection.execute(text("SELECT setseed(0.42)"))  # the same data every run
        await _run(
            connection,
            [
                f"INSERT INTO teams (id, name) SELECT t, 'bench-team-' || t "
                f"FROM generate_series(1, {TEAMS}) t",
                f"INSERT INTO repositories (id, url, team_id) "
                f"SELECT r, 'https://git.example.com/bench/repo-' || r, (r - 1) % {TEAMS} + 1 "
                f"FROM generate_series(1, {REPOSITORIES}) r",
                *_populate_findings(1, findings),
                _populate_events(
                    first=1, count=events, direct_to=1, direct=0, lo=1, hi=findings, recent=False
                ),
                *_ADVANCE_SEQUENCES,
            ],
        )
    # Statistics as autovacuum would have them on a database that grew to this size.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


async def populate_new(engine: AsyncEngine, *, old_findings: int, old_events: int) -> float:
    """New findings and events since the last fold; not analysed (they just arrived)."""
    started = time.perf_counter()
    async with engine.begin() as connection:
        await connection.execute(text("SELECT setseed(0.43)"))
        await _run(
            connection,
            [
                *(
                    _populate_findings(old_findings + 1, FOLD_NEW_FINDINGS)
                    if FOLD_NEW_FINDINGS
                    else []
                ),
                _populate_events(
                    first=old_events + 1,
                    count=FOLD_EVENTS,
                    direct_to=old_findings + 1,
                    direct=FOLD_NEW_FINDINGS,
                    lo=1,
                    hi=old_findings,
                    recent=True,
                ),
                *_ADVANCE_SEQUENCES,
            ],
        )
    return time.perf_counter() - started


# Which fold statement a cursor execution is: the first marker found in its SQL names it.
_STATEMENTS = (
    ("FOR UPDATE", "lock fold_state row"),
    ("pg_snapshot_xmin", "snapshot horizon"),
    ("finding_deletions", "latest deletion (deletion log)"),
    ("CREATE TEMP TABLE", "create fold_delta"),
    ("WITH new_findings", "FOLD_NEW_FINDINGS (new findings + winners → outcomes)"),
    ("WITH new_winners", "FOLD_NEW_EVENTS (new events → changed outcomes)"),
    ("WITH gone", "FOLD_DELETED_FINDINGS (orphan scan)"),
    ("INSERT INTO learning_metrics", "APPLY_DELTA (fold_delta → learning_metrics)"),
    ("FROM fold_delta", "DELTA_SIZE"),
    ("FROM suggestion_feedback WHERE tx_id", "COUNT_NEW_EVENTS"),
    ("DELETE FROM finding_outcomes", "reset: DELETE FROM finding_outcomes"),
    ("DELETE FROM learning_metrics", "reset: DELETE FROM learning_metrics"),
    ("watermark = 0", "reset: fold_state"),
    ("UPDATE fold_state", "ADVANCE watermark"),
)


@dataclass
class Timed:
    """A fold or recompute, with the time each of its statements took."""

    result: FoldResult | None = None
    statements: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        assert self.result is not None
        return self.result.seconds


@contextmanager
def statement_clock(engine: AsyncEngine) -> Iterator[Timed]:
    """Times every statement run on ``engine`` while the block runs, by fold statement name.

    Whatever the statements do not account for (BEGIN, COMMIT with its WAL flush and temp-table
    truncation, Python) shows as the remainder in the report.
    """
    timed = Timed()
    sync_engine = engine.sync_engine

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seconds = time.perf_counter() - conn.info["bench_started"].pop()
        flat = " ".join(statement.split())
        name = next((label for marker, label in _STATEMENTS if marker in flat), flat[:60])
        timed.statements[name] = timed.statements.get(name, 0.0) + seconds

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    try:
        yield timed
    finally:
        event.remove(sync_engine, "before_cursor_execute", before)
        event.remove(sync_engine, "after_cursor_execute", after)


async def metrics_snapshot(engine: AsyncEngine) -> dict[tuple[int, int, int, str], tuple[int, ...]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(LearningMetric))
        return {
            (r.scope_type, r.scope_id, r.dimension, r.key): (
                r.shown,
                r.positive,
                r.negative,
                r.dismissed,
            )
            for r in rows
            if (r.shown, r.positive, r.negative, r.dismissed) != (0, 0, 0, 0)
        }


def _kinds(outcome: Outcome) -> str:
    return ", ".join(str(int(k)) for k, o in OUTCOME_OF_KIND.items() if o is outcome)


# The outcome rule of shared.outcome evaluated over the raw log, without the fold's tables.
INDEPENDENT_TOTALS = f"""
WITH winners AS (
    SELECT DISTINCT ON (finding_id) finding_id, kind FROM suggestion_feedback
    ORDER BY finding_id, (kind <> {int(FeedbackKind.DISMISSED)}) DESC, occurred_at DESC, id DESC
)
SELECT (SELECT count(*) FROM findings),
    count(*) FILTER (WHERE kind IN ({_kinds(Outcome.POSITIVE)})),
    count(*) FILTER (WHERE kind IN ({_kinds(Outcome.NEGATIVE)})),
    count(*) FILTER (WHERE kind IN ({_kinds(Outcome.DISMISSED)}))
FROM winners
"""


def report_fold(runs: dict[str, Timed], sizes: dict[str, str], console: Console) -> None:
    table = Table(title="Learning fold and recompute (in process, SQL on the test PostgreSQL)")
    for column in ("run", "findings", "events", "metric deltas", "seconds", "target", "met"):
        table.add_column(column, justify="left" if column == "run" else "right")
    targets = {"fold of the new events": TARGET_FOLD_SECONDS, "recompute": TARGET_RECOMPUTE_SECONDS}
    for name, timed in runs.items():
        assert timed.result is not None
        counts = timed.result.counts
        target = targets.get(name)
        table.add_row(
            name,
            f"{counts.findings:,}",
            f"{counts.events:,}" if counts.watermark else "(all)",
            f"{counts.changes:,}",
            f"{timed.seconds:.2f}",
            f"≤ {target:.0f}" if target is not None else "",
            _met(timed.seconds, target) if target is not None else "",
        )
    console.print(table)

    breakdown = Table(title="Where the time went: seconds per statement")
    breakdown.add_column("statement")
    for name in runs:
        breakdown.add_column(name, justify="right")
    names = list(dict.fromkeys(n for timed in runs.values() for n in timed.statements))
    for name in names:
        breakdown.add_row(
            name,
            *(f"{t.statements[name]:.2f}" if name in t.statements else "" for t in runs.values()),
        )
    breakdown.add_row(
        "rest (BEGIN, COMMIT, Python)",
        *(f"{t.seconds - sum(t.statements.values()):.2f}" for t in runs.values()),
    )
    console.print(breakdown)
    for name, value in sizes.items():
        console.print(f"  {name}: {value}")
    console.print(
        f"{psutil.cpu_count()} CPUs. Speed is reported, never asserted; the fold and the "
        "recompute are asserted to agree with each other and with the outcome rule."
    )


@pytest.mark.benchmark
@pytest.mark.usefixtures("long_benchmark")
async def test_fold_and_recompute(db_engine: AsyncEngine) -> None:
    console = Console(width=120)  # wide enough for the tables when output is captured
    base_events = RECOMPUTE_EVENTS - FOLD_EVENTS
    console.print(
        f"\npopulating {FINDINGS:,} findings and {base_events:,} events (the existing database) …"
    )
    populated_base = await populate_base(db_engine, findings=FINDINGS, events=base_events)
    folder = Folder(sessions=create_session_factory(db_engine), instruments=LearningInstruments())
    runs: dict[str, Timed] = {}
    # The existing database is folded first (untargeted; a fresh Folder also scans for deleted
    # findings once, as every new learning process does).
    with statement_clock(db_engine) as first:
        first.result = await folder.fold()
    runs["first fold of the existing db"] = first

    console.print(
        f"adding {FOLD_NEW_FINDINGS:,} findings and {FOLD_EVENTS:,} events, then folding …"
    )
    populated_new = await populate_new(db_engine, old_findings=FINDINGS, old_events=base_events)
    with statement_clock(db_engine) as fold:
        fold.result = await folder.fold()
    runs["fold of the new events"] = fold
    # At least what arrived: rows another transaction on the server kept above the previous
    # watermark are seen again (idempotently), so the counts may be larger, never smaller.
    assert fold.result.counts.events >= FOLD_EVENTS
    assert fold.result.counts.findings >= FOLD_NEW_FINDINGS
    folded = await metrics_snapshot(db_engine)
    assert (await folder.fold()).counts.changes == 0  # nothing new: nothing changes

    console.print(f"recomputing over {RECOMPUTE_EVENTS:,} events …")
    with statement_clock(db_engine) as recompute:
        recompute.result = await folder.recompute()
    runs["recompute"] = recompute
    assert recompute.result.counts.findings == FINDINGS + FOLD_NEW_FINDINGS
    assert await metrics_snapshot(db_engine) == folded

    async with db_engine.connect() as connection:
        expected = tuple((await connection.execute(text(INDEPENDENT_TOTALS))).one())
    assert folded[(1, 0, 1, "*")] == expected

    report_fold(
        runs,
        {
            "existing database": (
                f"{FINDINGS:,} findings, {base_events:,} events, populated with "
                f"INSERT … generate_series in {populated_base:.1f} s (incl. ANALYZE)"
            ),
            "new since the last fold": (
                f"{FOLD_NEW_FINDINGS:,} findings with one event each + "
                f"{FOLD_EVENTS - FOLD_NEW_FINDINGS:,} events on old findings, populated in "
                f"{populated_new:.1f} s"
            ),
            "learning_metrics rows": f"{len(folded):,}",
        },
        console,
    )
