"""``reviewlearn jobs run hourly|daily|weekly`` and ``reviewlearn jobs list``: the batch jobs
for people and for Kubernetes CronJobs.

``jobs run`` calls ``LearningService.RunJobs`` like any client and exits 1 when a job failed or
was partial (so the Kubernetes Job is marked failed), 0 when every job succeeded, was skipped
or had already run successfully in this slot, and 2 for a usage or connection problem.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from rich.console import Console
from rich.table import Table

from services.cli.client import Metadata, bearer_tokens, rpc_failed
from services.cli.supervisor import DEFAULT_GRPC_PORTS
from shared.auth import Role

# Its help is with the other commands' in services.cli.app.
jobs_app = typer.Typer(no_args_is_help=True)

FAILED_STATUSES = (learning_pb2.JOB_STATUS_FAILED, learning_pb2.JOB_STATUS_PARTIAL)
STATUS_STYLE = {
    learning_pb2.JOB_STATUS_SUCCEEDED: "green",
    learning_pb2.JOB_STATUS_FAILED: "red",
    learning_pb2.JOB_STATUS_PARTIAL: "yellow",
    learning_pb2.JOB_STATUS_SKIPPED: "cyan",
    learning_pb2.JOB_STATUS_RUNNING: "blue",
}


class FrequencyName(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"


class StatusName(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    PARTIAL = "partial"


def _operator(who: str) -> Metadata:
    return bearer_tokens(who)(Role.OPERATOR)


def _status(run: learning_pb2.JobRun) -> str:
    name = learning_pb2.JobStatus.Name(run.status).removeprefix("JOB_STATUS_").lower()
    style = STATUS_STYLE.get(run.status, "white")
    return f"[{style}]{name}[/{style}]"


def _changes(run: learning_pb2.JobRun) -> str:
    """The summary's numbers that are not zero (what changed), compactly."""
    summary = MessageToDict(run.summary)
    shown = {
        # Struct numbers are doubles: counts read better without ".0".
        key: int(value) if isinstance(value, float) and value.is_integer() else value
        for key, value in summary.items()
        if key != "checks" and value not in (0, 0.0, False, None, [], "")
    }
    return json.dumps(shown, separators=(", ", "=")).strip("{}").replace('"', "") or "nothing"


def _runs_table(title: str, runs: list[learning_pb2.JobRun]) -> Table:
    table = Table(title=title)
    for column in (
        "job",
        "slot",
        "status",
        "attempts",
        "seconds",
        "repositories",
        "changes",
        "why",
    ):
        table.add_column(column, overflow="fold")
    for run in runs:
        repositories = ""
        if run.repositories_done or run.repositories_failed:
            repositories = f"{len(run.repositories_done)} done"
            if run.repositories_failed:
                repositories += f", [red]{len(run.repositories_failed)} failed[/red]"
        why = run.error or run.reason
        for failure in run.repositories_failed[:3]:
            why += f"\n{failure.repository_url}: {failure.reason}"
        status = _status(run) + (" (already ran)" if run.already_ran else "")
        table.add_row(
            run.job_name,
            run.scheduled_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
            status,
            str(run.attempts),
            f"{run.duration_seconds:.1f}",
            repositories,
            _changes(run),
            why,
        )
    return table


async def _run_jobs(
    address: str, operator: Metadata, request: learning_pb2.RunJobsRequest, console: Console
) -> list[learning_pb2.JobRun]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = learning_pb2_grpc.LearningServiceStub(channel)
        with console.status("running the jobs (each up to 3 attempts) ..."):
            response = await stub.RunJobs(request, metadata=operator, timeout=3 * 3600)
    return list(response.runs)


@jobs_app.command("run")
def run(
    frequency: Annotated[FrequencyName, typer.Argument(help="The job family to run.")],
    repo: Annotated[
        list[str] | None, typer.Option(help="Only this repository (URL); repeat for more.")
    ] = None,
    job: Annotated[
        list[str] | None, typer.Option(help="Only this job of the family; repeat for more.")
    ] = None,
    at: Annotated[
        datetime | None,
        typer.Option(
            help="Run the slot (hour, day or week) containing this UTC time instead of now's; "
            "each slot runs once."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Where the learning service listens.")] = "127.0.0.1",
    learning_port: int = DEFAULT_GRPC_PORTS["learning"],
) -> None:
    """Run the hourly, daily or weekly jobs for the current slot (once per slot).

    Exits 1 when any job failed or was partial."""
    console = Console()
    address = f"{host}:{learning_port}"
    request = learning_pb2.RunJobsRequest(
        request_id=f"cli-{uuid.uuid4()}",
        frequency=common_pb2.JobFrequency.Value(f"JOB_FREQUENCY_{frequency.name}"),
        job_names=job or [],
        repository_urls=repo or [],
    )
    if at is not None:
        request.scheduled_time.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    try:
        runs = asyncio.run(
            _run_jobs(address, _operator("`reviewlearn jobs run`"), request, console)
        )
    except grpc.aio.AioRpcError as error:
        raise rpc_failed(error, address, service="learning", exit_code=2) from error
    console.print(_runs_table(f"{frequency.value} jobs", runs))
    failed = [r.job_name for r in runs if r.status in FAILED_STATUSES]
    if failed:
        console.print(
            f"[red]{len(failed)} job(s) did not fully succeed: {', '.join(failed)}[/red] — "
            "failed repositories are retried on the next run; see `reviewlearn jobs list`"
        )
        raise typer.Exit(1)


async def _list_runs(
    address: str, operator: Metadata, request: learning_pb2.ListJobRunsRequest
) -> list[learning_pb2.JobRun]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = learning_pb2_grpc.LearningServiceStub(channel)
        response = await stub.ListJobRuns(request, metadata=operator, timeout=30)
    return list(response.runs)


@jobs_app.command("list")
def list_runs(
    job: Annotated[str, typer.Option(help="Only this job.")] = "",
    status: Annotated[StatusName | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many of the latest runs.")] = 30,
    host: Annotated[str, typer.Option(help="Where the learning service listens.")] = "127.0.0.1",
    learning_port: int = DEFAULT_GRPC_PORTS["learning"],
) -> None:
    """Show the latest job runs, newest first."""
    console = Console()
    address = f"{host}:{learning_port}"
    wanted = learning_pb2.JOB_STATUS_UNSPECIFIED
    if status is not None:
        wanted = learning_pb2.JobStatus.Value(f"JOB_STATUS_{status.name}")
    request = learning_pb2.ListJobRunsRequest(
        job_name=job, status=wanted, page_size=max(1, min(limit, 1000))
    )
    try:
        runs = asyncio.run(_list_runs(address, _operator("`reviewlearn jobs list`"), request))
    except grpc.aio.AioRpcError as error:
        raise rpc_failed(error, address, service="learning", exit_code=2) from error
    console.print(_runs_table("job runs (newest first)", runs))
