"""Insights speed on a year of feedback: GetInsightsReport uncached and cached, the dashboard.

1,000,000 feedback events over 50 teams (2 repositories each) and a year are written straight
into the feedback tables with ``INSERT … SELECT generate_series`` (minutes faster than the
RPCs; the fold reads rows by transaction id, so it takes them as if the feedback service had
written them), then folded into the rollups in process. The insights service then runs as
``python -m services.insights`` in its own process, first with its cache off (every report is
computed from the rollups), then with it on; the dashboard page is fetched over HTTP and its
server time read from the Server-Timing header. The echo server (tests/benchmarks/echo.py)
answers a report of the same shape in the same run: the gRPC ceiling.

Speed is printed next to the issue's targets, never asserted. Asserted: every call succeeds,
the rollups equal a rebuild, and every report counts the team's findings.
"""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from typing import TYPE_CHECKING

import grpc.aio
import httpx
import psutil
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.insights.instruments import InsightsInstruments
from services.insights.storage.insights_repository import OUTCOME_COUNTS
from services.insights.storage.rollup_repository import RollupRepository
from services.insights.storage.transactions import rolled_back, transaction
from services.insights.usecases.fold_rollups import RollupFolder
from shared.db.engine import create_session_factory
from tests.benchmarks.conftest import (
    AUTH,
    CHANNEL_OPTIONS,
    OPERATOR_AUTH,
    ServerProcess,
    insights_server,
    percentile,
)

if TYPE_CHECKING:
    from reviewlearn.insights.v1.insights_pb2_grpc import InsightsServiceAsyncStub as Stub


def _knob(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


TEAMS = 50
REPOSITORIES = 100
EVENTS = _knob("REVIEWLEARN_BENCH_INSIGHTS_EVENTS", 1_000_000)
FINDINGS = EVENTS * 7 // 10
FINDINGS_PER_REVIEW = 7
RULES = 60
CATEGORIES = ("security", "performance", "correctness", "style", "maintainability", "docs")
UNCACHED_CALLS = _knob("REVIEWLEARN_BENCH_INSIGHTS_UNCACHED_CALLS", 150)
CACHED_CALLS = _knob("REVIEWLEARN_BENCH_INSIGHTS_CACHED_CALLS", 1_000)
PAGE_CALLS = _knob("REVIEWLEARN_BENCH_INSIGHTS_PAGE_CALLS", 200)
KINDS = "ARRAY[1, 1, 2, 6, 3, 3, 4, 7, 5, 5]"

TARGET_UNCACHED_P95_MS = 100.0
TARGET_CACHED_P95_MS = 5.0
TARGET_PAGE_P95_MS = 150.0

POPULATE = [
    "SELECT setseed(0.42)",
    f"INSERT INTO teams (id, name) SELECT t, 'team-' || t FROM generate_series(1, {TEAMS}) t",
    f"""INSERT INTO repositories (id, url, team_id)
    SELECT r, 'https://git.example.com/bench/repo-' || r, (r - 1) % {TEAMS} + 1
    FROM generate_series(1, {REPOSITORIES}) r""",
    f"""INSERT INTO reviews (id, repository_id, pull_request, head_commit, created_at)
    SELECT v, (v - 1) % {REPOSITORIES} + 1, (v - 1) / {REPOSITORIES} + 1, md5(v::text),
        now() - random() * interval '365 days'
    FROM generate_series(1, {FINDINGS // FINDINGS_PER_REVIEW + 1}) v""",
    # A finding's review, repository and team follow from its id; rule r of 60 drawn skewed
    # (a few loud rules), its category and severity fixed by r; posted with its review.
    f"""INSERT INTO findings (id, review_id, repository_id, team_id, pull_request,
        client_finding_id, rule_id, category, severity, confidence, file_path, line_start,
        line_end, title, message, fingerprint, pattern_key, created_at)
    SELECT f.id, f.review_id, rv.repository_id, (rv.repository_id - 1) % {TEAMS} + 1,
        rv.pull_request, 'bench-' || f.id, 'rule-' || f.rule,
        (ARRAY[{", ".join(f"'{c}'" for c in CATEGORIES)}])[f.rule % {len(CATEGORIES)} + 1],
        f.rule % 5 + 1, 0.5, 'src/m.py', 1, 1, 't', 'm', md5(f.id::text), 'p', rv.created_at
    FROM (
        SELECT i AS id, (i - 1) / {FINDINGS_PER_REVIEW} + 1 AS review_id,
            floor({RULES} * random() ^ 2)::int AS rule
        FROM generate_series(1, {FINDINGS}) i
    ) f JOIN reviews rv ON rv.id = f.review_id""",
    # Events land on random findings (a quarter get none, some several), minutes to days later.
    f"""INSERT INTO suggestion_feedback
        (id, event_id, finding_id, repository_id, kind, actor_id, occurred_at)
    SELECT e.id, 'bench-' || e.id, f.id, f.repository_id,
        ({KINDS})[1 + floor(random() * 10)::int], 'dev-' || e.id % 97,
        f.created_at + (random() ^ 3) * interval '3 days'
    FROM (SELECT g AS id, 1 + floor(random() * {FINDINGS})::bigint AS finding_id
          FROM generate_series(1, {EVENTS}) g) e
    JOIN findings f ON f.id = e.finding_id""",
    *[
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
        for table in ("teams", "repositories", "reviews", "findings", "suggestion_feedback")
    ],
]


YEAR_AGO = date.today() - timedelta(days=365)
LABELS = {
    "uncached": "GetInsightsReport, cache off",
    "cached": "GetInsightsReport, cached",
    "page": "GET /dashboard (client)",
    "page server": "GET /dashboard (server time)",
}


def report_request(team: int) -> insights_pb2.GetInsightsReportRequest:
    return insights_pb2.GetInsightsReportRequest(
        scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=f"team-{team}")
    )


async def measure(stub: Stub, calls: int, *, offset: int = 0) -> list[float]:
    """One call in flight at a time, rotating over the teams; seconds, sorted."""
    latencies = []
    for number in range(calls):
        request = report_request((number + offset) % TEAMS + 1)
        started = time.perf_counter()
        response = await stub.GetInsightsReport(request, metadata=AUTH)
        latencies.append(time.perf_counter() - started)
        assert response.metrics.metrics.findings > 0
    return sorted(latencies)


async def measure_page(http_port: int, calls: int) -> tuple[list[float], list[float]]:
    """(client latencies, server times from Server-Timing), seconds, sorted."""
    client, server = [], []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        for number in range(calls):
            started = time.perf_counter()
            page = await http.get("/dashboard", params={"team": f"team-{number % TEAMS + 1}"})
            client.append(time.perf_counter() - started)
            assert page.status_code == 200
            assert 'id="m-findings"' in page.text
            server.append(float(page.headers["server-timing"].split("dur=")[1]) / 1000)
    return sorted(client), sorted(server)


def ms(values: list[float], fraction: float) -> float:
    return percentile(values, fraction) * 1000


@pytest.mark.benchmark
@pytest.mark.usefixtures("long_benchmark")
async def test_insights_report_and_dashboard_on_a_year_of_feedback(
    db_engine: AsyncEngine, database_url: str, echo_server: ServerProcess
) -> None:
    console = Console(width=120)
    started = time.perf_counter()
    async with db_engine.begin() as connection:
        for statement in POPULATE:
            await connection.execute(text(statement))
    async with db_engine.connect() as connection:
        await connection.execute(text("ANALYZE"))
        events = await connection.scalar(text("SELECT count(*) FROM suggestion_feedback"))
    populated = time.perf_counter() - started
    assert events == EVENTS

    sessions = create_session_factory(db_engine)
    folder = RollupFolder(
        transaction=transaction(sessions, RollupRepository),
        rolled_back=rolled_back(sessions, RollupRepository),
        instruments=InsightsInstruments(),
        on_change=lambda _: None,
    )
    started = time.perf_counter()
    counts = await folder.fold()
    folded = time.perf_counter() - started
    assert counts.findings == FINDINGS
    # What autovacuum does to a table that grew this much: visibility map (index-only scans)
    # and statistics.
    raw = await db_engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        for table in ("insight_rollups", "insight_action_times", "insight_review_rollups",
                      "insight_global_rollups", "insight_finding_states"):  # fmt: skip
            await driver.execute(f"VACUUM ANALYZE {table}")
    finally:
        raw.close()
    async with db_engine.connect() as connection:
        rollup_rows = await connection.scalar(text("SELECT count(*) FROM insight_rollups"))
        # As the server runs it: a prepared statement, planned generically after five runs.
        await connection.execute(text("SET plan_cache_mode = force_generic_plan"))
        await connection.execute(
            text(
                "PREPARE team_aggregate AS "
                + OUTCOME_COUNTS.team.replace(":team", "$1")
                .replace(":first", "$2")
                .replace(":last", "$3")
            )
        )
        a_year = f"DATE '{date.today() - timedelta(days=365)}', DATE '{date.today()}'"
        plan = "\n".join(
            row[0]
            for row in await connection.execute(  # EXECUTE takes no bind parameters
                text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE team_aggregate(7, {a_year})")
            )
        )
        await connection.execute(text("DEALLOCATE team_aggregate"))
        await connection.execute(text("RESET plan_cache_mode"))
    started = time.perf_counter()
    assert await folder.validate() == []
    validated = time.perf_counter() - started

    runs: dict[str, list[float]] = {}
    async with (
        grpc.aio.insecure_channel(echo_server.address, options=CHANNEL_OPTIONS) as echo_channel,
    ):
        echo: Stub = insights_pb2_grpc.InsightsServiceStub(echo_channel)  # type: ignore[assignment]
        await measure(echo, 20)
        runs["echo"] = await measure(echo, CACHED_CALLS)
    uncached = insights_server(database_url, cache_ttl_seconds="0", rollup_poll_seconds="3600")
    async with (
        uncached as (server, _),
        grpc.aio.insecure_channel(server.address, options=CHANNEL_OPTIONS) as channel,
    ):
        stub: Stub = insights_pb2_grpc.InsightsServiceStub(channel)  # type: ignore[assignment]
        # What the background refresh and the batch jobs do: learning paths are persisted, so
        # a report reads them instead of computing them.
        refreshed = await stub.RefreshInsights(
            insights_pb2.RefreshInsightsRequest(parts=["learning_paths"]), metadata=OPERATOR_AUTH
        )
        assert refreshed.teams == TEAMS
        await measure(stub, 10)  # warm-up: imports, prepared statements, buffers
        cpu = server.cpu_seconds()
        runs["uncached"] = await measure(stub, UNCACHED_CALLS, offset=10)
        uncached_cpu_ms = (server.cpu_seconds() - cpu) / UNCACHED_CALLS * 1000
    cached = insights_server(database_url, rollup_poll_seconds="3600")
    async with (
        cached as (server, http_port),
        grpc.aio.insecure_channel(server.address, options=CHANNEL_OPTIONS) as channel,
    ):
        stub = insights_pb2_grpc.InsightsServiceStub(channel)  # type: ignore[assignment]
        await measure(stub, TEAMS)  # fills the cache: one report per team
        runs["cached"] = await measure(stub, CACHED_CALLS)
        await measure_page(http_port, TEAMS)  # the template compiles once
        runs["page"], runs["page server"] = await measure_page(http_port, PAGE_CALLS)

    table = Table(title="Insights on a year of feedback (one call in flight; ratio = vs echo)")
    for column in ("what", "calls", "p50 ms", "p95 ms", "p99 ms", "echo p95 ms", "ratio",
                   "target p95", "met"):  # fmt: skip
        table.add_column(column, justify="left" if column == "what" else "right")
    echo_p95 = ms(runs["echo"], 0.95)
    for name, target in (
        ("uncached", TARGET_UNCACHED_P95_MS),
        ("cached", TARGET_CACHED_P95_MS),
        ("page", None),
        ("page server", TARGET_PAGE_P95_MS),
    ):
        values = runs[name]
        p95 = ms(values, 0.95)
        table.add_row(
            LABELS[name],
            f"{len(values):,}", f"{ms(values, 0.5):.2f}", f"{p95:.2f}", f"{ms(values, 0.99):.2f}",
            f"{echo_p95:.2f}", f"{p95 / echo_p95:.1f}×",
            f"≤ {target:.0f}" if target else "", ("yes" if p95 <= target else "[bold red]no[/]")
            if target else "",
        )  # fmt: skip
    echo_runs = runs["echo"]
    table.add_row("echo GetInsightsReport", f"{len(echo_runs):,}", f"{ms(echo_runs, 0.5):.2f}",
                  f"{echo_p95:.2f}", f"{ms(echo_runs, 0.99):.2f}", "", "", "", "")  # fmt: skip
    console.print(table)
    console.print(
        f"  data: {EVENTS:,} events on {FINDINGS:,} findings, {TEAMS} teams, {REPOSITORIES} "
        f"repositories, one year (populated with INSERT … SELECT in {populated:.1f} s)\n"
        f"  first fold into the rollups: {folded:.1f} s → {rollup_rows:,} rollup rows; "
        f"validate (fold + rebuild, rolled back): {validated:.1f} s, no differences\n"
        f"  uncached report: {uncached_cpu_ms:.1f} ms of server CPU per call\n"
        f"  {psutil.cpu_count()} CPUs shared by the load generator, the servers and PostgreSQL; "
        "speed is reported, never asserted."
    )
    console.print("  EXPLAIN of the team aggregate (a year of one team; prepared, generic plan):")
    console.print("\n".join("    " + line for line in plan.splitlines()), markup=False)
