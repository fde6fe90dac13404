"""``reviewlearn evaluate``: ask the learning service to replay its history out of time and show
whether learning earns its keep next to the raw confidence and a plain per-rule rate."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Annotated

import grpc
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from rich.console import Console
from rich.table import Table

from services.cli.client import Metadata, bearer_tokens, rpc_failed
from services.cli.supervisor import DEFAULT_GRPC_PORTS
from shared.auth import Role

METHOD_NAMES = {
    "learned": "learned model",
    "raw_confidence": "raw confidence",
    "rule_rate": "per-rule rate",
}


def evaluate_request(
    *,
    cut: datetime | None,
    holdout: float,
    k: int,
    repository: str | None,
    team: str | None,
) -> learning_pb2.EvaluateModelRequest:
    request = learning_pb2.EvaluateModelRequest(holdout_fraction=holdout, k=k)
    if cut is not None:
        stamp = Timestamp()
        stamp.FromDatetime(cut)
        request.cut_time.CopyFrom(stamp)
    if repository:
        request.scope.CopyFrom(
            common_pb2.Scope(type=common_pb2.SCOPE_TYPE_REPOSITORY, id=repository)
        )
    elif team:
        request.scope.CopyFrom(common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=team))
    return request


async def run_evaluate(
    address: str,
    operator: Metadata,
    request: learning_pb2.EvaluateModelRequest,
    console: Console,
) -> learning_pb2.EvaluateModelResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = learning_pb2_grpc.LearningServiceStub(channel)
        with console.status("fitting at the cut and scoring what came after ..."):
            response: learning_pb2.EvaluateModelResponse = await stub.EvaluateModel(
                request, metadata=operator
            )
    print_evaluation(response, console)
    return response


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def print_evaluation(response: learning_pb2.EvaluateModelResponse, console: Console) -> None:
    cut = response.cut_time.ToDatetime().isoformat(timespec="minutes")
    console.print(
        f"\nout-of-time evaluation: fitted on {response.train_findings:,} findings first seen "
        f"before {cut}Z (with the reactions known then), scored on the {response.test_findings:,}"
        f" after it ({response.test_acted_on:,} acted on, {response.test_reviews:,} reviews)"
    )
    table = Table(title="does learning earn its keep? (hiding: the default cost-weighted rule)")
    for column in (
        "ordering",
        "AUC",
        f"precision@{response.k} per review",
        "ECE",
        "hidden",
        "acted-on hidden",
        "ignored hidden",
    ):
        table.add_column(column)
    for m in response.methods:
        table.add_row(
            METHOD_NAMES.get(m.method, m.method),
            f"{m.auc:.3f}",
            f"{m.precision_at_k:.3f}",
            f"{m.expected_calibration_error:.3f}",
            _share(m.hidden_share),
            _share(m.acted_on_hidden_share),
            _share(m.ignored_hidden_share),
        )
    console.print(table)
    model = response.model
    decay = f"{model.half_life_days:.0f} days" if model.half_life_days else "none"
    console.print(
        f"model at the cut: recency half-life {decay} (chosen out of time), calibration ECE "
        f"{model.calibration.raw_expected_calibration_error:.3f} raw → "
        f"{model.calibration.expected_calibration_error:.3f} calibrated on "
        f"{model.calibration.samples:,} held-out findings"
    )


def evaluate_command(
    host: Annotated[str, typer.Option(help="Where the learning service listens.")] = "127.0.0.1",
    learning_port: int = DEFAULT_GRPC_PORTS["learning"],
    cut: Annotated[
        datetime | None,
        typer.Option(
            help="Findings first seen before this (UTC) are the past; default: the cut "
            "that leaves --holdout of them after it."
        ),
    ] = None,
    holdout: Annotated[float, typer.Option(help="Share of findings after the cut.")] = 0.2,
    k: Annotated[int, typer.Option(help="precision@k per review.")] = 5,
    repository: Annotated[str | None, typer.Option(help="Score only this repository.")] = None,
    team: Annotated[str | None, typer.Option(help="Score only this team.")] = None,
) -> None:
    operator = bearer_tokens("`reviewlearn evaluate`")(Role.OPERATOR)
    request = evaluate_request(
        cut=cut.replace(tzinfo=UTC) if cut is not None and cut.tzinfo is None else cut,
        holdout=holdout,
        k=k,
        repository=repository,
        team=team,
    )
    try:
        asyncio.run(run_evaluate(f"{host}:{learning_port}", operator, request, Console()))
    except grpc.aio.AioRpcError as error:
        raise rpc_failed(error, f"{host}:{learning_port}", service="learning") from error
