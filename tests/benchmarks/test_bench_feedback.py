"""Feedback ingestion speed end to end through gRPC, beside a bare grpc.aio ceiling.

Two loads run against the real feedback service (its own process, real PostgreSQL) and against
the echo server (tests/benchmarks/echo.py), one after the other in the same run:

* BatchRecordFeedback, 1,000 events per call, a few concurrent callers: events/s.
* RecordFeedback, 32 concurrent callers: rpc/s, p50 and p99 latency.

Speed is only printed, never asserted: the machine is shared and noisy. What is asserted is
correctness: every call succeeded and every event sent to the service is stored exactly once.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc.aio
import psutil
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import Feedback
from tests.benchmarks.conftest import AUTH, ServerProcess


def _knob(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# The sizes, overridable for a longer run on a quieter machine.
FINDINGS = 1_000
BATCH_SIZE = 1_000
BATCH_CALLERS = _knob("REVIEWLEARN_BENCH_BATCH_CALLERS", 6)
BATCHES = _knob("REVIEWLEARN_BENCH_BATCHES", 150)
UNARY_CALLERS = 32
UNARY_CALLS = _knob("REVIEWLEARN_BENCH_UNARY_CALLS", 4_000)
# Warm-up fills connection pools, prepared-statement caches and PostgreSQL's buffers first.
WARMUP_BATCHES = 2 * BATCH_CALLERS
WARMUP_UNARY_CALLS = 10 * UNARY_CALLERS

# The targets of the plan; reported against, never asserted.
TARGET_BATCH_EVENTS_PER_SECOND = 50_000
TARGET_UNARY_RPC_PER_SECOND = 1_000
TARGET_UNARY_P99_MS = 50.0

KINDS = [kind for kind in common_pb2.FeedbackKind.values() if kind]

Request = TypeVar("Request")
Response = TypeVar("Response")
Stub = feedback_pb2_grpc.FeedbackServiceStub


@dataclass(frozen=True)
class CpuClock:
    """CPU seconds used so far by the server, by this load generator and by the whole machine."""

    server: float
    load_generator: float
    machine: float

    @classmethod
    def read(cls, server: ServerProcess) -> CpuClock:
        own = psutil.Process().cpu_times()
        machine = psutil.cpu_times()
        busy = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
        return cls(server.cpu_seconds(), own.user + own.system, busy)


@dataclass(frozen=True)
class LoadResult:
    calls: int
    events: int
    seconds: float
    latencies: Sequence[float]
    """Per call, in seconds, sorted."""
    cpu: CpuClock
    """CPU seconds used during the run, as cores busy once divided by ``seconds``."""

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        """Nearest-rank percentile: the latency that ``fraction`` of the calls did not exceed."""
        rank = max(math.ceil(fraction * len(self.latencies)), 1)
        return self.latencies[rank - 1] * 1000


async def run_load(
    server: ServerProcess,
    call: Callable[[Request], Awaitable[Response]],
    requests: Sequence[Request],
    *,
    callers: int,
    events_per_call: int,
    check: Callable[[Request, Response], None],
) -> LoadResult:
    """Sends every request once, from ``callers`` concurrent callers, as fast as answers come."""
    pending = iter(requests)  # shared: each caller takes the next request when it is free
    latencies: list[float] = []

    async def caller() -> None:
        for request in pending:
            started = time.perf_counter()
            response = await call(request)
            latencies.append(time.perf_counter() - started)
            check(request, response)

    before = CpuClock.read(server)
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    seconds = time.perf_counter() - started
    after = CpuClock.read(server)
    return LoadResult(
        calls=len(requests),
        events=len(requests) * events_per_call,
        seconds=seconds,
        latencies=sorted(latencies),
        cpu=CpuClock(
            after.server - before.server,
            after.load_generator - before.load_generator,
            after.machine - before.machine,
        ),
    )


async def warmed_up_load(
    server: ServerProcess,
    call: Callable[[Request], Awaitable[Response]],
    requests: Sequence[Request],
    *,
    warmup: int,
    callers: int,
    events_per_call: int,
    check: Callable[[Request, Response], None],
) -> LoadResult:
    """Runs the first ``warmup`` requests unmeasured, then measures the rest."""

    async def load(part: Sequence[Request]) -> LoadResult:
        return await run_load(
            server, call, part, callers=callers, events_per_call=events_per_call, check=check
        )

    await load(requests[:warmup])
    return await load(requests[warmup:])


# --------------------------------------------------------------------------------- requests


def _occurred_at() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    return stamp


async def record_findings(stub: Stub, count: int) -> list[int]:
    response = await stub.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url="https://git.example.com/bench/api",
            team="bench",
            pull_request=1,
            head_commit="0123456789abcdef",
            findings=[
                common_pb2.FindingInput(
                    client_finding_id=f"bench-{index}",
                    rule_id=f"rule-{index % 20}",
                    category="style",
                    severity=common_pb2.SEVERITY_MEDIUM,
                    confidence=0.7,
                    file_path=f"src/module_{index % 50}.py",
                    line_start=index + 1,
                    message=f"Variable `x{index}` is assigned but never used",
                    code_context=f"x{index} = compute()",
                )
                for index in range(count)
            ],
        ),
        metadata=AUTH,
    )
    return [finding.finding_id for finding in response.findings]


def feedback_events(
    prefix: str, count: int, finding_ids: Sequence[int]
) -> list[feedback_pb2.FeedbackEvent]:
    """Distinct events spread over every finding and every kind, as a real review history is."""
    occurred_at = _occurred_at()
    return [
        feedback_pb2.FeedbackEvent(
            event_id=f"{prefix}-{number:09d}",
            finding_id=finding_ids[number % len(finding_ids)],
            kind=KINDS[number % len(KINDS)],
            actor_id=f"dev-{number % 97}",
            comment="" if number % 10 else "not an issue in this module",
            occurred_at=occurred_at,
        )
        for number in range(count)
    ]


def check_batch(
    request: feedback_pb2.BatchRecordFeedbackRequest,
    response: feedback_pb2.BatchRecordFeedbackResponse,
) -> None:
    assert response.stored_count == len(request.events), response.failed_count


def check_unary(
    request: feedback_pb2.RecordFeedbackRequest, response: feedback_pb2.RecordFeedbackResponse
) -> None:
    assert response.feedback_id > 0
    assert not response.duplicate


def batch_call(
    stub: Stub,
) -> Callable[
    [feedback_pb2.BatchRecordFeedbackRequest], Awaitable[feedback_pb2.BatchRecordFeedbackResponse]
]:
    def call(
        request: feedback_pb2.BatchRecordFeedbackRequest,
    ) -> Awaitable[feedback_pb2.BatchRecordFeedbackResponse]:
        return stub.BatchRecordFeedback(request, metadata=AUTH)

    return call


def unary_call(
    stub: Stub,
) -> Callable[[feedback_pb2.RecordFeedbackRequest], Awaitable[feedback_pb2.RecordFeedbackResponse]]:
    def call(
        request: feedback_pb2.RecordFeedbackRequest,
    ) -> Awaitable[feedback_pb2.RecordFeedbackResponse]:
        return stub.RecordFeedback(request, metadata=AUTH)

    return call


async def stored_events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        count = await connection.execute(select(func.count()).select_from(Feedback))
        return int(count.scalar_one())


# ------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Metric:
    load: str
    name: str
    value: Callable[[LoadResult], float]
    decimals: int
    target: float | None = None
    higher_is_better: bool = True

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:,.0f}"

    def met_text(self, value: float) -> str:
        if self.target is None:
            return ""
        met = value >= self.target if self.higher_is_better else value <= self.target
        return "yes" if met else "[bold red]no[/]"


def report(batch: dict[str, LoadResult], unary: dict[str, LoadResult], console: Console) -> None:
    metrics = [
        (batch, Metric(f"batch {BATCH_SIZE}×{BATCH_CALLERS}", "events/s",
                       lambda r: r.events_per_second, 0, TARGET_BATCH_EVENTS_PER_SECOND)),
        (batch, Metric("", "p50 ms/call", lambda r: r.percentile_ms(0.50), 1)),
        (batch, Metric("", "p99 ms/call", lambda r: r.percentile_ms(0.99), 1)),
        (unary, Metric(f"unary ×{UNARY_CALLERS}", "rpc/s",
                       lambda r: r.calls_per_second, 0, TARGET_UNARY_RPC_PER_SECOND)),
        (unary, Metric("", "p50 ms", lambda r: r.percentile_ms(0.50), 1)),
        (unary, Metric("", "p99 ms", lambda r: r.percentile_ms(0.99), 1,
                       TARGET_UNARY_P99_MS, higher_is_better=False)),
    ]  # fmt: skip
    table = Table(title="Feedback ingestion vs a bare grpc.aio server (ratio = service/echo)")
    for column in ("load", "metric", "service", "echo", "ratio", "target", "met"):
        table.add_column(column, justify="left" if column in ("load", "metric") else "right")
    for results, metric in metrics:
        service, echo = metric.value(results["service"]), metric.value(results["echo"])
        table.add_row(
            metric.load,
            metric.name,
            f"{service:,.{metric.decimals}f}",
            f"{echo:,.{metric.decimals}f}",
            f"{service / echo:.2f}×" if echo else "-",
            metric.target_text(),
            metric.met_text(service),
        )
    console.print(table)

    # Where the cores went: on a small machine the load generator and PostgreSQL compete with
    # the server, so a low number can mean "server saturated" or "machine saturated".
    cpu = Table(title="CPU during each measured run (cores busy; server µs per event)")
    for column in ("run", "seconds", "server", "load gen", "rest", "server µs/event"):
        cpu.add_column(column, justify="left" if column == "run" else "right")
    for load, runs in (("batch", batch), ("unary", unary)):
        for server, result in runs.items():
            used = result.cpu
            rest = max(used.machine - used.server - used.load_generator, 0.0)
            cpu.add_row(
                f"{load} → {server}",
                f"{result.seconds:.1f}",
                *(f"{value / result.seconds:.2f}" for value in (used.server, used.load_generator)),
                f"{rest / result.seconds:.2f}",
                f"{used.server / result.events * 1e6:,.0f}",
            )
    console.print(cpu)
    console.print(
        f"{psutil.cpu_count()} CPUs; 'rest' is PostgreSQL and anything else running. "
        "Speed is reported, never asserted."
    )


# ---------------------------------------------------------------------------------- benchmark


@pytest.mark.benchmark
async def test_feedback_ingestion_against_the_grpc_ceiling(
    db_engine: AsyncEngine, feedback_server: ServerProcess, echo_server: ServerProcess
) -> None:
    console = Console()
    console.print(
        f"\nfeedback service pid {feedback_server.pid} on {feedback_server.address}, "
        f"echo pid {echo_server.pid} on {echo_server.address}"
    )
    async with (
        grpc.aio.insecure_channel(feedback_server.address) as service_channel,
        grpc.aio.insecure_channel(echo_server.address) as echo_channel,
    ):
        targets = {
            "echo": (echo_server, Stub(echo_channel)),
            "service": (feedback_server, Stub(service_channel)),
        }
        finding_ids = await record_findings(targets["service"][1], FINDINGS)

        # Built before any timing: the load generator should spend its CPU on gRPC, not here.
        events = feedback_events("batch", (WARMUP_BATCHES + BATCHES) * BATCH_SIZE, finding_ids)
        batches = [
            feedback_pb2.BatchRecordFeedbackRequest(events=events[start : start + BATCH_SIZE])
            for start in range(0, len(events), BATCH_SIZE)
        ]
        singles = [
            feedback_pb2.RecordFeedbackRequest(event=event)
            for event in feedback_events("unary", WARMUP_UNARY_CALLS + UNARY_CALLS, finding_ids)
        ]

        batch: dict[str, LoadResult] = {}
        for name, (server, stub) in targets.items():
            console.print(f"batch load → {name} …")
            batch[name] = await warmed_up_load(
                server,
                batch_call(stub),
                batches,
                warmup=WARMUP_BATCHES,
                callers=BATCH_CALLERS,
                events_per_call=BATCH_SIZE,
                check=check_batch,
            )
        assert await stored_events(db_engine) == len(events)

        unary: dict[str, LoadResult] = {}
        for name, (server, stub) in targets.items():
            console.print(f"unary load → {name} …")
            unary[name] = await warmed_up_load(
                server,
                unary_call(stub),
                singles,
                warmup=WARMUP_UNARY_CALLS,
                callers=UNARY_CALLERS,
                events_per_call=1,
                check=check_unary,
            )
        assert await stored_events(db_engine) == len(events) + len(singles)

    report(batch, unary, console)
