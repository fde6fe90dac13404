"""Feedback ingestion speed end to end through gRPC, beside its references in the same run.

Two loads run, one server after the other, against the real feedback service (its own process,
real PostgreSQL) with one worker and with two (``reviewlearn serve feedback --workers 2``), the
echo server (tests/benchmarks/echo.py: gRPC alone) and, for batches, the naive COPY reference
(tests/benchmarks/copy_reference.py: gRPC, COPY and one INSERT … SELECT, nothing else):

* BatchRecordFeedback, 1,000 events per call, a few concurrent callers: events/s.
* RecordFeedback, 32 concurrent callers: rpc/s, p50 and p99 latency.

Speed is only printed, never asserted: the machine is shared and noisy. What is asserted is
correctness: every call succeeded and every event sent to the service is stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.benchmarks.conftest import AUTH, BENCH_WORKERS, ServerProcess


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


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×" if reference else "-"


def _met(met: bool) -> str:
    return "yes" if met else "[bold red]no[/]"


def report(batch: dict[str, LoadResult], unary: dict[str, LoadResult], console: Console) -> None:
    """Every figure beside its references measured in the same run, with the ratios."""
    reference = batch["copy reference"].events_per_second
    table = Table(
        title=f"BatchRecordFeedback, {BATCH_SIZE:,} events × {BATCH_CALLERS} callers "
        "(ratios to the bare echo server and to the naive COPY reference, same run)"
    )
    for column in ("server", "events/s", "p50 ms", "p99 ms", "× echo", "× COPY ref", "goal"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for name, result in batch.items():
        rate = result.events_per_second
        goal = ""
        if name.startswith("service"):
            goal = (
                f"≥ 0.75× ref: {_met(rate >= 0.75 * reference)}; "
                f"≥ {TARGET_BATCH_EVENTS_PER_SECOND:,}: "
                f"{_met(rate >= TARGET_BATCH_EVENTS_PER_SECOND)}"
            )
        table.add_row(
            name,
            f"{rate:,.0f}",
            f"{result.percentile_ms(0.50):,.1f}",
            f"{result.percentile_ms(0.99):,.1f}",
            _ratio(rate, batch["echo"].events_per_second),
            _ratio(rate, reference),
            goal,
        )
    console.print(table)

    table = Table(
        title=f"RecordFeedback, {UNARY_CALLERS} callers (ratio to the bare echo server, same run)"
    )
    for column in ("server", "rpc/s", "p50 ms", "p99 ms", "× echo rpc/s", "goal"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for name, result in unary.items():
        rate, p99 = result.calls_per_second, result.percentile_ms(0.99)
        goal = ""
        if name.startswith("service"):
            goal = (
                f"≥ {TARGET_UNARY_RPC_PER_SECOND:,} rpc/s: "
                f"{_met(rate >= TARGET_UNARY_RPC_PER_SECOND)}; "
                f"p99 ≤ {TARGET_UNARY_P99_MS:.0f} ms: {_met(p99 <= TARGET_UNARY_P99_MS)}"
            )
        table.add_row(
            name,
            f"{rate:,.0f}",
            f"{result.percentile_ms(0.50):,.1f}",
            f"{p99:,.1f}",
            _ratio(rate, unary["echo"].calls_per_second),
            goal,
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
        f"{psutil.cpu_count()} CPUs; 'rest' is PostgreSQL and anything else running; the COPY "
        "reference's PostgreSQL work is in its 'rest' too. Speed is reported, never asserted."
    )


# ---------------------------------------------------------------------------------- benchmark


@pytest.mark.benchmark
async def test_feedback_ingestion_against_the_grpc_ceiling(
    db_engine: AsyncEngine,
    feedback_server: ServerProcess,
    feedback_workers_server: ServerProcess,
    echo_server: ServerProcess,
    copy_reference_server: ServerProcess,
) -> None:
    console = Console(width=140)
    single, workers = "service, 1 worker", f"service, {BENCH_WORKERS} workers"
    servers = {
        "echo": echo_server,
        "copy reference": copy_reference_server,
        single: feedback_server,
        workers: feedback_workers_server,
    }
    for name, server in servers.items():
        console.print(f"\n{name}: pid {server.pid} on {server.address}", end="")
    console.print()
    async with contextlib.AsyncExitStack() as stack:
        stubs = {
            name: Stub(await stack.enter_async_context(grpc.aio.insecure_channel(server.address)))
            for name, server in servers.items()
        }
        finding_ids = await record_findings(stubs[single], FINDINGS)

        # Built before any timing: the load generator should spend its CPU on gRPC, not here.
        # Each server that stores gets events of its own, so each stores every one it is sent.
        batches: dict[str, list[feedback_pb2.BatchRecordFeedbackRequest]] = {}
        for number, name in enumerate(servers):
            events = feedback_events(
                f"batch{number}", (WARMUP_BATCHES + BATCHES) * BATCH_SIZE, finding_ids
            )
            batches[name] = [
                feedback_pb2.BatchRecordFeedbackRequest(events=events[start : start + BATCH_SIZE])
                for start in range(0, len(events), BATCH_SIZE)
            ]
        storing = [name for name in servers if name != "echo"]
        batch: dict[str, LoadResult] = {}
        for name, server in servers.items():
            console.print(f"batch load → {name} …")
            batch[name] = await warmed_up_load(
                server,
                batch_call(stubs[name]),
                batches[name],
                warmup=WARMUP_BATCHES,
                callers=BATCH_CALLERS,
                events_per_call=BATCH_SIZE,
                check=check_batch,
            )
        stored = len(storing) * (WARMUP_BATCHES + BATCHES) * BATCH_SIZE
        assert await stored_events(db_engine) == stored

        unary: dict[str, LoadResult] = {}
        for number, name in enumerate(n for n in servers if n != "copy reference"):
            singles = [
                feedback_pb2.RecordFeedbackRequest(event=event)
                for event in feedback_events(
                    f"unary{number}", WARMUP_UNARY_CALLS + UNARY_CALLS, finding_ids
                )
            ]
            console.print(f"unary load → {name} …")
            unary[name] = await warmed_up_load(
                servers[name],
                unary_call(stubs[name]),
                singles,
                warmup=WARMUP_UNARY_CALLS,
                callers=UNARY_CALLERS,
                events_per_call=1,
                check=check_unary,
            )
        stored += 2 * (WARMUP_UNARY_CALLS + UNARY_CALLS)
        assert await stored_events(db_engine) == stored

    report(batch, unary, console)
