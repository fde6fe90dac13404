"""``reviewlearn loadtest``: drive a running system with the traffic of a review bot, its
developers and their dashboards, at a target rate, and report what it sustained.

The mix (by share of requests): RankSuggestions 40% (the bot, before it posts), RecordFindings
15% (a review of 10 findings), BatchRecordFeedback 15% (up to 50 reactions to findings recorded
earlier in the run), insights reads 15% (GetTeamMetrics / GetTrends of a team), gate evaluations
15% (EvaluateFeature, what every replica of the bot asks). The findings and reactions come from
the synthetic history (:mod:`services.cli.synthetic`), so their statistics are realistic.

Requests are sent *open loop*: on a fixed schedule at ``rate`` per second whatever the answers
take, up to ``max_in_flight`` outstanding; when that cap is reached the schedule slips and the
report says by how much. Latency is measured from the moment a request was due, so a slow
system cannot hide behind a slow client (coordinated omission). The run ends when ``findings``
have been recorded or ``duration`` seconds have passed, whichever is first.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import grpc
import numpy as np
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from services.cli.client import Metadata, bearer_tokens
from services.cli.loader import feedback_event, finding_input, review_request
from services.cli.supervisor import DEFAULT_GRPC_PORTS
from services.cli.synthetic import SyntheticFeedback, SyntheticReview, generate_history
from shared.auth import Role

TARGET_RATE = 1000.0
TARGET_P95_MS = 200.0
"""The plan's target: p95 < 200 ms at 1,000 requests per second."""
FINDINGS_PER_REVIEW = 10
FEEDBACK_BATCH = 50
MIX: tuple[tuple[str, float], ...] = (
    ("RankSuggestions", 0.40),
    ("RecordFindings", 0.15),
    ("BatchRecordFeedback", 0.15),
    ("insights", 0.15),
    ("EvaluateFeature", 0.15),
)
FEATURES = (
    common_pb2.FEATURE_LEARNING,
    common_pb2.FEATURE_RANKING,
    common_pb2.FEATURE_SUPPRESSION,
    common_pb2.FEATURE_INSIGHTS,
)


@dataclass(frozen=True)
class LoadTarget:
    addresses: dict[str, str]
    """Service name → host:port."""
    ingest: Metadata
    reader: Metadata


@dataclass
class RpcStats:
    latencies_ms: list[float] = field(default_factory=list)
    """From the moment the request was due (includes waiting for a free slot)."""
    service_ms: list[float] = field(default_factory=list)
    """From the moment it was sent: what the system took."""
    codes: Counter[str] = field(default_factory=Counter)
    first_error: dict[str, str] = field(default_factory=dict)
    """The details of the first answer with each failing code (what to look up first)."""


@dataclass
class LoadReport:
    """What the run sustained; :meth:`as_dict` is its machine-readable form."""

    target_rate: float
    seconds: float
    requests: int
    findings_recorded: int
    events_recorded: int
    slipped_ms_max: float
    cores: int
    load_average: float
    """The machine's 1-minute load average when the run started (others' work competes)."""
    reference_rate: float
    """Bare grpc.health.v1 Check calls per second from this client to the same servers, right
    after the run: what this machine, client and gRPC stack sustain with no work behind them."""
    rpcs: dict[str, RpcStats]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for stats in self.rpcs.values():
            total.update({c: n for c, n in stats.codes.items() if c != "OK"})
        return total

    def percentile(self, rpc: str | None, q: float, *, service: bool = False) -> float:
        """Latency percentile from when requests were due (``service``: from when sent)."""
        chosen = list(self.rpcs.values()) if rpc is None else [self.rpcs[rpc]]
        values = [v for s in chosen for v in (s.service_ms if service else s.latencies_ms)]
        return float(np.percentile(values, q)) if values else float("nan")

    @property
    def target_held(self) -> bool:
        """p95 of every request under 200 ms while at least 1,000 requests/s were served,
        without errors."""
        return (
            self.throughput >= TARGET_RATE
            and self.percentile(None, 95) < TARGET_P95_MS
            and not self.errors
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "target_rate": self.target_rate,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "throughput": round(self.throughput, 1),
            "findings_recorded": self.findings_recorded,
            "events_recorded": self.events_recorded,
            "cores": self.cores,
            "load_average": round(self.load_average, 2),
            "reference_rate": round(self.reference_rate, 1),
            "p95_ms": round(self.percentile(None, 95), 2),
            "errors": dict(self.errors),
            "target_held": self.target_held,
            "rpcs": {
                name: {
                    "count": len(s.latencies_ms),
                    "p50_ms": round(self.percentile(name, 50), 2),
                    "p95_ms": round(self.percentile(name, 95), 2),
                    "p99_ms": round(self.percentile(name, 99), 2),
                    "service_p50_ms": round(self.percentile(name, 50, service=True), 2),
                    "service_p95_ms": round(self.percentile(name, 95, service=True), 2),
                    "service_p99_ms": round(self.percentile(name, 99, service=True), 2),
                    "codes": dict(s.codes),
                    "first_error": dict(s.first_error),
                }
                for name, s in sorted(self.rpcs.items())
            },
        }


class _Workload:
    """The next request of each kind, from the synthetic history."""

    def __init__(self, *, findings: int, seed: int) -> None:
        reviews = max(1, -(-findings // FINDINGS_PER_REVIEW))
        self.history = generate_history(
            seed=seed, reviews=reviews, findings_per_review=FINDINGS_PER_REVIEW
        )
        self.run = uuid.uuid4().hex[:8]
        self.next_review = 0
        self.feedback_by_review: dict[int, list[SyntheticFeedback]] = defaultdict(list)
        for event in self.history.feedback:
            self.feedback_by_review[event.review_index].append(event)
        self.ready_events: deque[feedback_pb2.FeedbackEvent] = deque()
        self.teams = sorted({r.team for r in self.history.reviews})
        self.repositories = sorted({r.repository_url for r in self.history.reviews})
        self.counter = 0

    def take_review(self) -> tuple[int, SyntheticReview] | None:
        if self.next_review >= len(self.history.reviews):
            return None
        index = self.next_review
        self.next_review += 1
        return index, self.history.reviews[index]

    def recorded(self, index: int, finding_ids: list[int]) -> None:
        """The reactions to a recorded review become sendable."""
        for event in self.feedback_by_review.pop(index, []):
            if event.finding_index >= len(finding_ids):
                continue
            message = feedback_event(event, finding_ids[event.finding_index])
            message.event_id = f"loadtest-{self.run}-{event.event_id}"
            self.ready_events.append(message)

    def take_events(self) -> list[feedback_pb2.FeedbackEvent]:
        batch: list[feedback_pb2.FeedbackEvent] = []
        while self.ready_events and len(batch) < FEEDBACK_BATCH:
            batch.append(self.ready_events.popleft())
        return batch

    def pick(self) -> int:
        self.counter += 1
        return self.counter


async def run_loadtest(
    target: LoadTarget,
    *,
    findings: int,
    rate: float,
    duration: float,
    console: Console,
    seed: int = 11,
    max_in_flight: int = 64,
) -> LoadReport:
    load_average = os.getloadavg()[0]
    workload = _Workload(findings=findings, seed=seed)
    channels = {name: grpc.aio.insecure_channel(addr) for name, addr in target.addresses.items()}
    try:
        feedback = feedback_pb2_grpc.FeedbackServiceStub(channels["feedback"])
        learning = learning_pb2_grpc.LearningServiceStub(channels["learning"])
        insights = insights_pb2_grpc.InsightsServiceStub(channels["insights"])
        control = control_pb2_grpc.ControlServiceStub(channels["control"])
        stats: dict[str, RpcStats] = defaultdict(RpcStats)
        recorded = [0, 0]  # findings, events

        # Warm-up, not measured: the first review of each repository creates it and its team.
        with console.status("recording the first review of every repository ..."):
            first: dict[str, int] = {}
            for index, review in enumerate(workload.history.reviews):
                first.setdefault(review.repository_url, index)
            for index in sorted(first.values()):
                response = await feedback.RecordFindings(
                    review_request(
                        workload.history.reviews[index], f"loadtest-{workload.run}-{index}"
                    ),
                    metadata=target.ingest,
                )
                recorded[0] += len(response.findings)
                workload.recorded(index, [f.finding_id for f in response.findings])
            warm = set(first.values())

        def record_findings() -> tuple[str, Awaitable[object]] | None:
            while True:
                taken = workload.take_review()
                if taken is None:
                    return None
                index, review = taken
                if index not in warm:
                    break

            async def call() -> object:
                response = await feedback.RecordFindings(
                    review_request(review, f"loadtest-{workload.run}-{index}"),
                    metadata=target.ingest,
                )
                recorded[0] += len(response.findings)
                workload.recorded(index, [f.finding_id for f in response.findings])
                return response

            return "RecordFindings", call()

        def record_feedback() -> tuple[str, Awaitable[object]] | None:
            batch = workload.take_events()
            if not batch:
                return None

            async def call() -> object:
                response = await feedback.BatchRecordFeedback(
                    feedback_pb2.BatchRecordFeedbackRequest(events=batch), metadata=target.ingest
                )
                recorded[1] += response.stored_count + response.duplicate_count
                return response

            return "BatchRecordFeedback", call()

        def rank() -> tuple[str, Awaitable[object]]:
            reviews = workload.history.reviews
            review = reviews[workload.pick() % len(reviews)]
            return "RankSuggestions", learning.RankSuggestions(
                learning_pb2.RankSuggestionsRequest(
                    repository_url=review.repository_url,
                    pull_request=review.pull_request,
                    findings=[finding_input(f) for f in review.findings],
                ),
                metadata=target.reader,
            )

        def read_insights() -> tuple[str, Awaitable[object]]:
            n = workload.pick()
            scope = common_pb2.Scope(
                type=common_pb2.SCOPE_TYPE_TEAM, id=workload.teams[n % len(workload.teams)]
            )
            if n % 3:
                return "GetTeamMetrics", insights.GetTeamMetrics(
                    insights_pb2.GetTeamMetricsRequest(scope=scope), metadata=target.reader
                )
            return "GetTrends", insights.GetTrends(
                insights_pb2.GetTrendsRequest(scope=scope), metadata=target.reader
            )

        def evaluate_gate() -> tuple[str, Awaitable[object]]:
            n = workload.pick()
            return "EvaluateFeature", control.EvaluateFeature(
                control_pb2.EvaluateFeatureRequest(
                    feature=FEATURES[n % len(FEATURES)],
                    repository_url=workload.repositories[n % len(workload.repositories)],
                ),
                metadata=target.reader,
            )

        makers: dict[str, Callable[[], tuple[str, Awaitable[object]] | None]] = {
            "RankSuggestions": rank,
            "RecordFindings": record_findings,
            "BatchRecordFeedback": record_feedback,
            "insights": read_insights,
            "EvaluateFeature": evaluate_gate,
        }
        kinds = [name for name, _ in MIX]
        shares = np.array([share for _, share in MIX])
        choices = np.random.default_rng(seed).choice(len(kinds), size=1_000_000, p=shares)

        in_flight: set[asyncio.Task[None]] = set()
        gate = asyncio.Semaphore(max_in_flight)
        slipped = 0.0

        async def measured(name: str, call: Awaitable[object], due: float) -> None:
            sent_at = time.perf_counter()
            try:
                await call
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
                stats[name].first_error.setdefault(code, error.details() or "")
            finally:
                gate.release()
            done = time.perf_counter()
            stats[name].latencies_ms.append((done - due) * 1000)
            stats[name].service_ms.append((done - sent_at) * 1000)
            stats[name].codes[code] += 1

        total = len(workload.history.reviews) * FINDINGS_PER_REVIEW
        started = time.perf_counter()
        sent = 0
        with Progress(
            TextColumn("[bold]load[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.0f} req/s  {task.fields[errors]} errors"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("findings recorded", total=total, rate=0.0, errors=0)
            while True:
                now = time.perf_counter()
                elapsed = now - started
                if recorded[0] >= findings or elapsed >= duration:
                    break
                due = started + sent / rate
                if due > now:
                    await asyncio.sleep(min(due - now, 0.05))
                    continue
                await gate.acquire()
                slipped = max(slipped, time.perf_counter() - due)
                kind = kinds[int(choices[sent % len(choices)])]
                made = makers[kind]() or rank()
                sent += 1
                t = asyncio.ensure_future(measured(made[0], made[1], due))
                in_flight.add(t)
                t.add_done_callback(in_flight.discard)
                if sent % 50 == 0:
                    progress.update(
                        task,
                        completed=recorded[0],
                        rate=sent / max(elapsed, 1e-9),
                        errors=sum(
                            n for s in stats.values() for c, n in s.codes.items() if c != "OK"
                        ),
                    )
            if in_flight:
                await asyncio.wait(in_flight)
            seconds = time.perf_counter() - started
            progress.update(task, completed=recorded[0], rate=sent / seconds)
        with console.status("measuring the reference: bare health checks ..."):
            reference_rate = await _reference_rate(channels["learning"], max_in_flight)
        return LoadReport(
            target_rate=rate,
            seconds=seconds,
            requests=sum(len(s.latencies_ms) for s in stats.values()),
            findings_recorded=recorded[0],
            events_recorded=recorded[1],
            slipped_ms_max=slipped * 1000,
            cores=os.cpu_count() or 1,
            load_average=load_average,
            reference_rate=reference_rate,
            rpcs=dict(stats),
        )
    finally:
        for channel in channels.values():
            await channel.close(None)


REFERENCE_SECONDS = 2.0


async def _reference_rate(channel: grpc.aio.Channel, concurrency: int) -> float:
    """Closed loop, ``concurrency`` callers, for REFERENCE_SECONDS: health checks per second."""
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()
    done = 0
    deadline = time.perf_counter() + REFERENCE_SECONDS

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await stub.Check(request, timeout=5)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def print_report(report: LoadReport, console: Console) -> None:
    table = Table(
        title=(
            f"{report.requests:,} requests in {report.seconds:.1f}s = "
            f"{report.throughput:,.0f} req/s (target {report.target_rate:,.0f})"
        )
    )
    columns = ("rpc", "count", "p50 ms", "p95 ms", "p99 ms", "p95 from due", "errors")
    for column in columns:
        table.add_column(column, justify="right" if column != "rpc" else "left")
    for name, s in sorted(report.rpcs.items()):
        errors = ", ".join(f"{c} {n}" for c, n in s.codes.items() if c != "OK") or "0"
        table.add_row(name, f"{len(s.latencies_ms):,}", *_latencies(report, name), errors)
    table.add_row(
        "[bold]all[/bold]",
        f"{report.requests:,}",
        *_latencies(report, None),
        str(sum(report.errors.values())),
    )
    console.print(table)
    console.print(
        "p50/p95/p99: from sending to the answer; p95 from due: from when the schedule wanted "
        "the request sent (includes waiting for one of the client's slots)"
    )
    console.print(
        f"recorded {report.findings_recorded:,} findings and {report.events_recorded:,} "
        f"feedback events; the schedule slipped by up to {report.slipped_ms_max:,.0f} ms"
    )
    errors = ", ".join(f"{code}: {n:,}" for code, n in report.errors.most_common()) or "none"
    console.print(f"errors by status code: {errors}")
    for name, s in sorted(report.rpcs.items()):
        for code, details in s.first_error.items():
            console.print(f"  first {code} of {name}: {details[:200]}")
    verdict = "[green]HELD[/green]" if report.target_held else "[red]NOT HELD[/red]"
    console.print(
        f"plan target p95 < {TARGET_P95_MS:.0f} ms at {TARGET_RATE:,.0f} req/s: {verdict} "
        f"(p95 {report.percentile(None, 95):.1f} ms at {report.throughput:,.0f} req/s, "
        f"on {report.cores} cores shared by the services, their database and this client; "
        f"load average {report.load_average:.1f} at the start)"
    )
    ratio = report.throughput / report.reference_rate if report.reference_rate else float("nan")
    console.print(
        f"reference, same run: bare health checks at {report.reference_rate:,.0f} req/s from "
        f"this client to the learning server; the mix ran at {ratio:.2f}x that"
    )


def _latencies(report: LoadReport, rpc: str | None) -> tuple[str, str, str, str]:
    return (
        f"{report.percentile(rpc, 50, service=True):.1f}",
        f"{report.percentile(rpc, 95, service=True):.1f}",
        f"{report.percentile(rpc, 99, service=True):.1f}",
        f"{report.percentile(rpc, 95):.1f}",
    )


def loadtest_command(
    findings: Annotated[int, typer.Option(help="Stop once this many findings are recorded.")] = (
        10_000
    ),
    rate: Annotated[float, typer.Option(help="Target requests per second (all RPCs).")] = (
        TARGET_RATE
    ),
    duration: Annotated[float, typer.Option(help="Stop after this many seconds at most.")] = 300.0,
    target: Annotated[
        list[str] | None,
        typer.Option(help="service=host:port (repeatable); default ports on 127.0.0.1."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Most requests outstanding at once (the client's slots).")
    ] = 64,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
) -> None:
    addresses = {name: f"127.0.0.1:{port}" for name, port in DEFAULT_GRPC_PORTS.items()}
    for entry in target or []:
        name, _, address = entry.partition("=")
        if name not in addresses or not address:
            Console(stderr=True).print(
                f"[red]--target {entry!r}: expected service=host:port with service one of "
                f"{', '.join(addresses)}[/red]"
            )
            raise typer.Exit(2)
        addresses[name] = address
    if findings < 1 or rate <= 0 or duration <= 0 or concurrency < 1:
        Console(stderr=True).print(
            "[red]--findings, --rate, --duration and --concurrency must be positive[/red]"
        )
        raise typer.Exit(2)
    bearer = bearer_tokens("the load test")
    out = Console()
    try:
        report = asyncio.run(
            run_loadtest(
                LoadTarget(addresses, ingest=bearer(Role.INGEST), reader=bearer(Role.READER)),
                findings=findings,
                rate=rate,
                duration=duration,
                console=out,
                max_in_flight=concurrency,
            )
        )
    except grpc.aio.AioRpcError as error:
        Console(stderr=True).print(
            f"[red]{error.code().name}: {error.details()}[/red] — is the system running "
            "(`reviewlearn up`) and are the --target addresses right?"
        )
        raise typer.Exit(1) from error
    print_report(report, out)
    if json_out is not None:
        json_out.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    # Errors fail the run; a missed latency target on a small machine is reported, not failed.
    raise typer.Exit(1 if report.errors else 0)
