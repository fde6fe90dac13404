"""``reviewlearn demo``: load a synthetic review history through the public RPCs and show what
the system learned from it. Talks to a running system (``reviewlearn up``) like any client."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Annotated

import grpc
import typer
from reviewlearn.feedback.v1 import feedback_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.client import Metadata, bearer_tokens, console
from services.cli.evaluate import print_evaluation
from services.cli.loader import finding_input, load_feedback, load_reviews
from services.cli.supervisor import DEFAULT_GRPC_PORTS
from services.cli.synthetic import SyntheticReview, generate_history, split_holdout
from shared.auth import Role

FOLD_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class DemoTarget:
    feedback_address: str
    learning_address: str
    ingest: Metadata
    reader: Metadata
    operator: Metadata


async def run_demo(target: DemoTarget, *, seed: int, reviews: int, console: Console) -> None:
    history = generate_history(seed=seed, reviews=reviews, findings_per_review=10)
    train, holdout = split_holdout(history, holdout_fraction=0.05, seed=seed)
    async with (
        grpc.aio.insecure_channel(target.feedback_address) as feedback_channel,
        grpc.aio.insecure_channel(target.learning_address) as learning_channel,
    ):
        feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_channel)
        learning = learning_pb2_grpc.LearningServiceStub(learning_channel)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            reviews_task = progress.add_task("recording reviews", total=len(train.reviews))
            ids = await load_reviews(
                feedback,
                train.reviews,
                metadata=target.ingest,
                request_prefix=f"demo-{seed}",
                progress=lambda n: progress.advance(reviews_task, n),
            )
            events_task = progress.add_task("recording feedback", total=len(train.feedback))
            await load_feedback(
                feedback,
                train.feedback,
                ids,
                metadata=target.ingest,
                progress=lambda n: progress.advance(events_task, n),
            )
        with console.status("letting learning fold the feedback ..."):
            await _wait_for_fold(learning, target.reader)
        with console.status("tuning confidence thresholds ..."):
            tune = await learning.TuneConfidenceThresholds(
                learning_pb2.TuneConfidenceThresholdsRequest(reason="reviewlearn demo"),
                metadata=target.operator,
            )
        console.print(
            f"\nlearned from {sum(len(r.findings) for r in train.reviews):,} findings and "
            f"{len(train.feedback):,} reactions; model {tune.model.version} "
            f"(validation AUC {tune.model.validation_auc:.3f}, calibration ECE "
            f"{tune.model.calibration.expected_calibration_error:.3f}), "
            f"{len(tune.changes)} threshold changes\n"
        )
        await _print_rules(learning, target.reader, console)
        await _print_thresholds(learning, target.reader, console)
        await _print_ranking(learning, target.reader, holdout.reviews[0], console)
        with console.status("replaying the history out of time ..."):
            evaluation = await learning.EvaluateModel(
                learning_pb2.EvaluateModelRequest(), metadata=target.operator
            )
        print_evaluation(evaluation, console)


async def _wait_for_fold(
    learning: learning_pb2_grpc.LearningServiceAsyncStub, reader: Metadata
) -> None:
    deadline = asyncio.get_running_loop().time() + FOLD_WAIT_SECONDS
    while True:
        response = await learning.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
            metadata=reader,
        )
        if response.backlog == 0 and response.metrics:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"learning has not folded the feedback after {FOLD_WAIT_SECONDS:.0f}s "
                f"(backlog {response.backlog}); is the learning service running?"
            )
        await asyncio.sleep(0.5)


def _interval(rate: object) -> str:
    value = rate.value  # type: ignore[attr-defined]
    low, high = rate.wilson95.lower, rate.wilson95.upper  # type: ignore[attr-defined]
    return f"{value:.0%} [{low:.0%}, {high:.0%}]"


async def _print_rules(
    learning: learning_pb2_grpc.LearningServiceAsyncStub, reader: Metadata, console: Console
) -> None:
    response = await learning.GetLearningMetrics(
        learning_pb2.GetLearningMetricsRequest(
            dimension=learning_pb2.DIMENSION_RULE, page_size=1000
        ),
        metadata=reader,
    )
    rules = [m for m in response.metrics if m.not_useful.trials >= 20]
    rules.sort(key=lambda m: m.not_useful.smoothed)
    table = Table(title="rules: most useful and noisiest (ignored = dismissed or rejected)")
    for column in ("rule", "shown", "acted on", "ignored (95% interval)", "smoothed ignored"):
        table.add_column(column)
    for metric in [*rules[:5], *rules[-5:]]:
        table.add_row(
            metric.key,
            str(metric.shown),
            str(metric.positive),
            _interval(metric.not_useful),
            f"{metric.not_useful.smoothed:.0%}",
        )
    console.print(table)


async def _print_thresholds(
    learning: learning_pb2_grpc.LearningServiceAsyncStub, reader: Metadata, console: Console
) -> None:
    response = await learning.GetConfidenceThresholds(
        learning_pb2.GetConfidenceThresholdsRequest(), metadata=reader
    )
    table = Table(
        title="thresholds on P(acted on) (target: under 10% of shown findings ignored; "
        "reported, never applied when unreachable)"
    )
    for column in ("category", "threshold", "source", "ignored upper bound", "findings"):
        table.add_column(column)
    for t in response.thresholds:
        threshold = "none" if math.isnan(t.threshold) else f"{t.threshold:.2f}"
        table.add_row(
            t.category,
            threshold,
            t.source,
            f"{t.not_useful_upper_bound:.0%}",
            str(t.sample_size),
        )
    console.print(table)


async def _print_ranking(
    learning: learning_pb2_grpc.LearningServiceAsyncStub,
    reader: Metadata,
    review: SyntheticReview,
    console: Console,
) -> None:
    response = await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url=review.repository_url,
            pull_request=review.pull_request,
            findings=[finding_input(f) for f in review.findings],
            options=learning_pb2.RankOptions(diversity=0.2),
        ),
        metadata=reader,
    )
    table = Table(title=f"a new review of {review.repository_url}: raw order vs learned ranking")
    for column in ("raw #", "rule", "raw conf.", "true usefulness", "learned", "score", "why"):
        table.add_column(column)
    for item in response.findings:
        finding = review.findings[item.ref.index]
        learned = "suppressed" if item.suppressed else f"#{item.rank}"
        why = item.suppression_detail if item.suppressed else item.explanation.summary
        if item.flagged:
            why = "FLAGGED: a critical security finding is never silently dropped; " + why
        table.add_row(
            str(item.ref.index + 1),
            finding.rule_id,
            f"{finding.confidence:.2f}",
            f"{finding.true_useful_probability:.2f}",
            learned,
            f"{item.score:.3f}",
            why,
        )
    console.print(table)
    console.print(f"model version {response.model_version}")


def demo_command(
    host: Annotated[str, typer.Option(help="Where `reviewlearn up` is listening.")] = "127.0.0.1",
    feedback_port: int = DEFAULT_GRPC_PORTS["feedback"],
    learning_port: int = DEFAULT_GRPC_PORTS["learning"],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic history.")] = 7,
    reviews: Annotated[int, typer.Option(help="Reviews in the synthetic history.")] = 600,
) -> None:
    bearer = bearer_tokens("the demo")
    target = DemoTarget(
        feedback_address=f"{host}:{feedback_port}",
        learning_address=f"{host}:{learning_port}",
        ingest=bearer(Role.INGEST),
        reader=bearer(Role.READER),
        operator=bearer(Role.OPERATOR),
    )
    try:
        asyncio.run(run_demo(target, seed=seed, reviews=reviews, console=Console()))
    except grpc.aio.AioRpcError as error:
        console.print(
            f"[red]{error.code().name}: {error.details()}[/red] — is `reviewlearn up` running "
            f"on {host}?"
        )
        raise typer.Exit(1) from error
