"""``reviewlearn up``: the whole system on one machine — the database (embedded unless one is
configured), its migrations and the four services, until Ctrl-C or until a service exits."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli.client import console
from services.cli.database import database_url
from services.cli.embedded import load_or_create_page_token_key, load_or_create_tokens, state_dir
from services.cli.supervisor import DEFAULT_GRPC_PORTS, DEFAULT_METRICS_PORTS, SERVICES, Supervisor
from shared.auth import Role, TokenRegistry
from shared.db import migrate as migrations


def up_command(
    host: Annotated[str, typer.Option(help="Interface the services bind to.")] = "127.0.0.1",
    feedback_port: int = DEFAULT_GRPC_PORTS["feedback"],
    learning_port: int = DEFAULT_GRPC_PORTS["learning"],
    insights_port: int = DEFAULT_GRPC_PORTS["insights"],
    control_port: int = DEFAULT_GRPC_PORTS["control"],
    metrics_base_port: Annotated[
        int, typer.Option(help="Side ports are this and the next three.")
    ] = DEFAULT_METRICS_PORTS["feedback"],
) -> None:
    grpc_ports = dict(
        zip(SERVICES, (feedback_port, learning_port, insights_port, control_port), strict=True)
    )
    metrics_ports = {name: metrics_base_port + i for i, name in enumerate(SERVICES)}
    exit_code = asyncio.run(_up(host, grpc_ports, metrics_ports))
    raise typer.Exit(exit_code)


async def _up(host: str, grpc_ports: dict[str, int], metrics_ports: dict[str, int]) -> int:
    url, embedded = database_url()
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
    by_role = {role: token for role in Role if (token := tokens.token_of(role)) is not None}
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
