"""The ``reviewlearn`` command: ``up``, ``serve``, ``migrate``, ``demo``, ``evaluate``,
``validate``, ``kill-switch``, ``gates``, ``jobs``, ``alerts``, ``loadtest``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from services.cli.alerts import alerts_app
from services.cli.embedded import (
    EmbeddedPostgres,
    load_or_create_page_token_key,
    load_or_create_tokens,
    state_dir,
)
from services.cli.jobs import jobs_app
from services.cli.loadtest import loadtest_command
from services.cli.supervisor import (
    DEFAULT_GRPC_PORTS,
    DEFAULT_METRICS_PORTS,
    SERVICES,
    Supervisor,
)
from services.cli.workers import run_workers, worker_settings
from shared.auth import Role, TokenRegistry, parse_tokens
from shared.db import migrate as migrations

if TYPE_CHECKING:
    from services.cli.gates import ControlTarget

app = typer.Typer(
    help="reviewlearn: make an automated code reviewer learn from developer feedback.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(jobs_app, name="jobs")
console = Console(stderr=True)
app.add_typer(alerts_app, name="alerts")


def _database_url() -> tuple[str, EmbeddedPostgres | None]:
    """The configured database, or the embedded one started now."""
    configured = os.environ.get("REVIEWLEARN_DATABASE_URL", "").strip()
    if configured:
        return _async_url(configured), None
    embedded = EmbeddedPostgres(state_dir() / "pgdata")
    console.print(
        f"REVIEWLEARN_DATABASE_URL is not set: using the embedded PostgreSQL in {embedded.data_dir}"
    )
    with console.status("starting the embedded PostgreSQL ..."):
        url = embedded.start()
    return url, embedded


def _async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Interface the services bind to.")] = "127.0.0.1",
    feedback_port: int = DEFAULT_GRPC_PORTS["feedback"],
    learning_port: int = DEFAULT_GRPC_PORTS["learning"],
    insights_port: int = DEFAULT_GRPC_PORTS["insights"],
    control_port: int = DEFAULT_GRPC_PORTS["control"],
    metrics_base_port: Annotated[
        int, typer.Option(help="Side ports are this and the next three.")
    ] = DEFAULT_METRICS_PORTS["feedback"],
) -> None:
    """Start the whole system: database (embedded unless configured), migrations, 4 services."""
    grpc_ports = dict(
        zip(SERVICES, (feedback_port, learning_port, insights_port, control_port), strict=True)
    )
    metrics_ports = {name: metrics_base_port + i for i, name in enumerate(SERVICES)}
    exit_code = asyncio.run(_up(host, grpc_ports, metrics_ports))
    raise typer.Exit(exit_code)


async def _up(host: str, grpc_ports: dict[str, int], metrics_ports: dict[str, int]) -> int:
    url, embedded = _database_url()
    supervisor: Supervisor | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with console.status("applying migrations ..."):
            await migrations.upgrade(url)
        tokens, created = load_or_create_tokens(state_dir())
        supervisor = Supervisor(
            env={
                "REVIEWLEARN_DATABASE_URL": url,
                "REVIEWLEARN_TOKENS": tokens.as_env(),
                "REVIEWLEARN_PAGE_TOKEN_KEY": load_or_create_page_token_key(state_dir()),
                "REVIEWLEARN_HOST": host,
                # The embedded default runs the batch jobs itself (Kubernetes: CronJobs).
                "REVIEWLEARN_JOB_SCHEDULER_ENABLED": os.environ.get(
                    "REVIEWLEARN_JOB_SCHEDULER_ENABLED", "true"
                ),
                "REVIEWLEARN_INSIGHTS_ADDRESS": f"{host}:{grpc_ports['insights']}",
            }
        )
        await supervisor.start(grpc_ports, metrics_ports)
        with console.status("waiting for the services to report SERVING ..."):
            await supervisor.wait_until_serving()
        _print_ready(host, supervisor, tokens, created, embedded is not None)
        exited = asyncio.ensure_future(supervisor.wait_for_exit())
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if exited in done:
            child = exited.result()
            console.print(f"[red]the {child.name} service exited; stopping everything[/red]")
            return 1
        stopped.cancel()
        exited.cancel()
        console.print("stopping ...")
        return 0
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    finally:
        if supervisor is not None:
            await supervisor.stop()
        if embedded is not None:
            embedded.stop()
        console.print("stopped.")


def _print_ready(
    host: str, supervisor: Supervisor, tokens: TokenRegistry, created: bool, embedded: bool
) -> None:
    table = Table(title="reviewlearn is up", show_lines=False)
    for column in ("service", "gRPC", "metrics / health", "ready in"):
        table.add_column(column)
    for child in supervisor.children:
        table.add_row(
            child.name,
            f"{host}:{child.grpc_port}",
            f"http://{host}:{child.metrics_port}/metrics  /healthz",
            f"{child.ready_seconds:.1f}s",
        )
    out = Console()
    out.print(table)
    out.print(
        "database: "
        + (f"embedded PostgreSQL in {state_dir() / 'pgdata'}" if embedded else "configured")
    )
    by_role = {role: token for token, role in _token_items(tokens)}
    where = (
        f"generated and saved in {state_dir() / 'tokens'}" if created else "from your configuration"
    )
    out.print(f"tokens ({where}):")
    for role in Role:
        if role in by_role:
            out.print(f"  {role.value:<9} {by_role[role]}")
    operator = by_role.get(Role.OPERATOR, "<operator token>")
    reader = by_role.get(Role.READER, operator)
    feedback_port = supervisor.children[0].grpc_port
    learning_port = supervisor.children[1].grpc_port
    out.print("\ntry:")
    out.print(f"  grpcurl -plaintext {host}:{feedback_port} list", soft_wrap=True)
    out.print(
        f"  grpcurl -plaintext -H 'authorization: Bearer {reader}' "
        f'-d \'{{"dimension": "DIMENSION_CATEGORY"}}\' {host}:{learning_port} '
        "reviewlearn.learning.v1.LearningService/GetLearningMetrics",
        soft_wrap=True,
    )
    insights = next((c for c in supervisor.children if c.name == "insights"), None)
    if insights is not None:
        out.print(f"  http://{host}:{insights.metrics_port}/dashboard   # the team dashboard")
    out.print("  reviewlearn demo        # load a synthetic history and see what is learned")
    out.print("\nCtrl-C stops everything.")


def _token_items(tokens: TokenRegistry) -> list[tuple[str, Role]]:
    items = []
    for entry in tokens.as_env().split(","):
        role, _, token = entry.partition("=")
        items.append((token, Role(role)))
    return items


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")],
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes sharing the port (default REVIEWLEARN_WORKERS)."
        ),
    ] = None,
) -> None:
    """Run one service in the foreground (for containers); configured by REVIEWLEARN_* vars."""
    if service not in SERVICES:
        console.print(
            f"[red]unknown service {service!r}; choose one of {', '.join(SERVICES)}[/red]"
        )
        raise typer.Exit(2)
    settings = worker_settings(service)
    count = workers or settings.workers
    if count > 1:
        raise typer.Exit(asyncio.run(run_workers(service, settings, count)))
    # exec, so the service is PID 1's direct child and receives SIGTERM itself.
    os.execv(sys.executable, [sys.executable, "-m", f"services.{service}"])


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Where `reviewlearn up` is listening.")] = "127.0.0.1",
    feedback_port: int = DEFAULT_GRPC_PORTS["feedback"],
    learning_port: int = DEFAULT_GRPC_PORTS["learning"],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic history.")] = 7,
    reviews: Annotated[int, typer.Option(help="Reviews in the synthetic history.")] = 600,
) -> None:
    """Load a synthetic review history into the running system and show what it learned."""
    from services.cli.demo import DemoTarget, run_demo

    bearer = _bearer_tokens("the demo")

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


def _bearer_tokens(who: str) -> Callable[[Role], tuple[tuple[str, str], ...]]:
    """Call metadata per role from REVIEWLEARN_TOKENS or the tokens `reviewlearn up` saved;
    the operator token stands in for a missing role."""
    spec = os.environ.get("REVIEWLEARN_TOKENS", "").strip()
    token_file = state_dir() / "tokens"
    if not spec and token_file.exists():
        spec = token_file.read_text().strip()
    if not spec:
        console.print(
            "[red]no tokens: start the system with `make run` (or `reviewlearn up`) first, "
            "or set REVIEWLEARN_TOKENS[/red]"
        )
        raise typer.Exit(2)
    by_role = {role: token for token, role in _token_items(parse_tokens(spec))}
    operator = by_role.get(Role.OPERATOR)
    if operator is None:
        console.print(f"[red]{who} needs an operator token in REVIEWLEARN_TOKENS[/red]")
        raise typer.Exit(2)

    def bearer(role: Role) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {by_role.get(role, operator)}"),)

    return bearer


def _control_target(host: str, port: int, who: str) -> ControlTarget:
    from services.cli.gates import ControlTarget  # gRPC stubs only for these commands

    bearer = _bearer_tokens(who)
    return ControlTarget(
        address=f"{host}:{port}", reader=bearer(Role.READER), operator=bearer(Role.OPERATOR)
    )


def _rpc_failed(error: grpc.aio.AioRpcError, address: str) -> typer.Exit:
    if error.code() is grpc.StatusCode.UNAVAILABLE:
        console.print(
            f"[red]cannot reach the control service at {address}: {error.details()}[/red] — "
            "is `reviewlearn up` running? (--host / --control-port)"
        )
    else:
        console.print(f"[red]{error.code().name}: {error.details()}[/red]")
    return typer.Exit(1)


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


@app.command("kill-switch")
def kill_switch(
    state: Annotated[Switch, typer.Argument(help="on turns all learning off; off releases it.")],
    reason: Annotated[str, typer.Option(help="Why (required; kept in the audit log).")],
    host: Annotated[str, typer.Option(help="Where the control service listens.")] = "127.0.0.1",
    control_port: int = DEFAULT_GRPC_PORTS["control"],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for every replica to apply it (max 30).")
    ] = 5.0,
) -> None:
    """Engage (on) or release (off) the kill switch, and show which replicas applied it."""
    from services.cli.gates import set_kill_switch

    if not reason.strip():
        console.print("[red]--reason must say why (it is kept in the audit log)[/red]")
        raise typer.Exit(2)
    target = _control_target(host, control_port, "the kill switch")
    try:
        code = asyncio.run(
            set_kill_switch(
                target,
                engaged=state is Switch.ON,
                reason=reason,
                wait_seconds=min(max(wait, 0.0), 30.0),
                console=Console(),
            )
        )
    except grpc.aio.AioRpcError as error:
        raise _rpc_failed(error, target.address) from error
    raise typer.Exit(code)


@app.command()
def gates(
    host: Annotated[str, typer.Option(help="Where the control service listens.")] = "127.0.0.1",
    control_port: int = DEFAULT_GRPC_PORTS["control"],
) -> None:
    """Show the kill switch, every feature gate and override, the rollout, and the replicas."""
    from services.cli.gates import show_gates

    target = _control_target(host, control_port, "`reviewlearn gates`")
    try:
        asyncio.run(show_gates(target, console=Console()))
    except grpc.aio.AioRpcError as error:
        raise _rpc_failed(error, target.address) from error


@app.command()
def evaluate(
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
    """Replay the history out of time: the learned model against raw confidence and a per-rule
    rate (AUC, precision@k, calibration, what hiding would hide)."""
    from services.cli.evaluate import evaluate_request, run_evaluate

    operator = _bearer_tokens("`reviewlearn evaluate`")(Role.OPERATOR)
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
        console.print(f"[red]{error.code().name}: {error.details()}[/red]")
        raise typer.Exit(1) from error


@app.command()
def validate(
    check: Annotated[
        str, typer.Argument(help="integrity | metrics (learned counts and insights) | contracts")
    ] = "metrics",
    repair: Annotated[
        bool, typer.Option(help="metrics: rebuild what differs from the feedback log.")
    ] = False,
    target: Annotated[
        list[str] | None, typer.Option(help="contracts: host:port of a service (repeatable).")
    ] = None,
) -> None:
    """Check the system: integrity (orphans, keys, counts vs log, watermarks), metrics (every
    learned and insights number vs a recompute), contracts (every RPC through reflection)."""
    from services.cli.validation import (
        Check,
        validate_contracts,
        validate_integrity,
        validate_metrics,
    )

    if check not in set(Check):
        console.print(f"[red]unknown check {check!r}; choose one of {', '.join(Check)}[/red]")
        raise typer.Exit(2)
    if check == Check.CONTRACTS:
        targets = target or [f"127.0.0.1:{port}" for port in DEFAULT_GRPC_PORTS.values()]
        operator = _bearer_tokens("`reviewlearn validate contracts`")(Role.OPERATOR)
        raise typer.Exit(validate_contracts(targets, operator, Console()))
    url, embedded = _database_url()
    try:
        if check == Check.INTEGRITY:
            code = validate_integrity(url, Console())
        else:
            code = validate_metrics(url, repair=repair)
    finally:
        if embedded is not None:
            embedded.stop()
    raise typer.Exit(code)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision for upgrade.")] = "head",
    downgrade_to: Annotated[
        str | None, typer.Option("--downgrade", help="Revert to this revision instead.")
    ] = None,
) -> None:
    """Apply the database migrations (or revert them with --downgrade)."""
    url, embedded = _database_url()
    try:
        if downgrade_to is not None:
            asyncio.run(migrations.downgrade(url, downgrade_to))
            console.print(f"downgraded to {downgrade_to}")
        else:
            asyncio.run(migrations.upgrade(url, revision))
            console.print(f"upgraded to {revision}")
    finally:
        if embedded is not None:
            embedded.stop()


app.command("loadtest")(loadtest_command)


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        app()


if __name__ == "__main__":
    main()
