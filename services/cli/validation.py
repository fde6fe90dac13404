"""``reviewlearn validate integrity|metrics|contracts``: the three checks an operator runs
before a rollout. Each exits 0 when all is well, 1 on a failure (and says what to do next),
75 (EX_TEMPFAIL) when it could not check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from services.cli.client import bearer_tokens, console
from services.cli.contracts import check_contracts
from services.cli.database import database_url
from services.cli.integrity import check_integrity
from services.cli.supervisor import DEFAULT_GRPC_PORTS
from shared.auth import Role
from shared.db.engine import create_engine
from shared.settings import ServiceSettings


class Check(StrEnum):
    INTEGRITY = "integrity"
    METRICS = "metrics"
    CONTRACTS = "contracts"


def validate_metrics(database_url: str, *, repair: bool) -> int:
    """The learning counts, then the insights rollups, each by its own service's entry point
    (the CLI never imports a service); the worse exit code wins (1 over 75 over 0). The insights
    check runs meanwhile with its output held back, so the two reports do not interleave."""
    env = {**os.environ, "REVIEWLEARN_DATABASE_URL": database_url}

    def command(service: str) -> list[str]:
        return [sys.executable, "-m", f"services.{service}.validate", *(["--repair"] * repair)]

    insights = subprocess.Popen(
        command("insights"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    codes = [subprocess.run(command("learning"), env=env, check=False).returncode]
    output, _ = insights.communicate()
    sys.stdout.write(output)
    sys.stdout.flush()
    codes.append(insights.returncode)
    return 1 if 1 in codes else max(codes)


def validate_integrity(database_url: str, console: Console) -> int:
    async def run() -> int:
        engine = create_engine(ServiceSettings(database_url=database_url))
        try:
            return await check_integrity(engine, console)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def validate_contracts(
    targets: Sequence[str], operator: tuple[tuple[str, str], ...], console: Console
) -> int:
    return check_contracts(targets, operator, console)


def validate_command(
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
    if check not in set(Check):
        console.print(f"[red]unknown check {check!r}; choose one of {', '.join(Check)}[/red]")
        raise typer.Exit(2)
    if check == Check.CONTRACTS:
        targets = target or [f"127.0.0.1:{port}" for port in DEFAULT_GRPC_PORTS.values()]
        operator = bearer_tokens("`reviewlearn validate contracts`")(Role.OPERATOR)
        raise typer.Exit(validate_contracts(targets, operator, Console()))
    url, embedded = database_url()
    try:
        if check == Check.INTEGRITY:
            code = validate_integrity(url, Console())
        else:
            code = validate_metrics(url, repair=repair)
    finally:
        if embedded is not None:
            embedded.stop()
    raise typer.Exit(code)
