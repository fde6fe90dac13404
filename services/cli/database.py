"""The database a command works on (the configured one, or the embedded default), and
``reviewlearn migrate``."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from services.cli.client import console
from services.cli.embedded import EmbeddedPostgres, state_dir


def database_url() -> tuple[str, EmbeddedPostgres | None]:
    """The configured database, or the embedded one started now (the caller stops it)."""
    configured = os.environ.get("REVIEWLEARN_DATABASE_URL", "").strip()
    if configured:
        return async_url(configured), None
    embedded = EmbeddedPostgres(state_dir() / "pgdata")
    console.print(
        f"REVIEWLEARN_DATABASE_URL is not set: using the embedded PostgreSQL in {embedded.data_dir}"
    )
    with console.status("starting the embedded PostgreSQL ..."):
        url = embedded.start()
    return url, embedded


def async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


def migrate_command(
    revision: Annotated[str, typer.Option(help="Target revision for upgrade.")] = "head",
    downgrade_to: Annotated[
        str | None, typer.Option("--downgrade", help="Revert to this revision instead.")
    ] = None,
) -> None:
    # Here, not at the top: Alembic and SQLAlchemy take most of a second to import, which
    # `reviewlearn migrate --help` need not wait for.
    from shared.db import migrate as migrations

    url, embedded = database_url()
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
