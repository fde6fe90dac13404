"""Test fixtures: a real PostgreSQL per run, real gRPC servers on port 0, Redis when available.

Database: ``REVIEWLEARN_TEST_DATABASE_URL`` (any database on the server; a fresh one is created
next to it) or, when unset, an embedded PostgreSQL from the pgserver wheel in a temp dir. Each run
gets its own freshly migrated database, dropped at the end; each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.db import migrate
from shared.db.engine import instrument_engine
from shared.db.models import Base
from shared.rpc.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from shared.telemetry import setup_telemetry
from tests.processes import free_port as free_port  # re-exported: many tests import it here
from tests.processes import private_redis

TOKENS = {
    "ingest": "test-ingest-token",
    "reader": "test-reader-token",
    "operator": "test-operator-token",
}
TOKENS_ENV = ",".join(f"{role}={token}" for role, token in TOKENS.items())

S = TypeVar("S", bound=ServiceSettings)


def auth(role: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the test token of a role."""
    return (("authorization", f"Bearer {TOKENS[role]}"),)


@pytest.fixture(scope="session", autouse=True)
def _telemetry() -> Iterator[None]:
    telemetry = setup_telemetry(service_name="tests", log_json=False, log_level="WARNING")
    yield
    telemetry.shutdown()


async def _create_database(server_url: str) -> str:
    name = f"reviewlearn_test_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def _drop_database(server_url: str, test_url: str) -> None:
    name = make_url(test_url).database
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL of some database on the test server (used to create and drop test databases)."""
    configured = os.environ.get("REVIEWLEARN_TEST_DATABASE_URL", "").strip()
    if configured:
        yield ServiceSettings(database_url=configured).require_database_url()
        return
    from services.cli.embedded import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix="rl-test-pg-"))
    embedded = EmbeddedPostgres(data_dir)
    url = embedded.start()
    yield url
    embedded.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A freshly migrated database for this test run."""
    url = asyncio.run(_create_database(postgres_server_url))
    asyncio.run(migrate.upgrade(url))
    yield url
    asyncio.run(_drop_database(postgres_server_url, url))


_KEPT_TABLES = {"alembic_version", "gate_state", "fold_state"}


async def reset_tables(engine: AsyncEngine) -> None:
    tables = ", ".join(
        f'"{table.name}"' for table in Base.metadata.sorted_tables if table.name not in _KEPT_TABLES
    )
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await connection.execute(
            text(
                "UPDATE gate_state SET version = 0, kill_switch_engaged = false, reason = '', "
                "updated_by = '', kill_switch_changed_at = NULL"
            )
        )
        await connection.execute(
            text(
                "UPDATE fold_state SET watermark = 0, findings_folded = 0, events_folded = 0, "
                "seen_through = 0, in_progress = '{}'"
            )
        )


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database; every table is emptied after the test."""
    engine = create_async_engine(database_url, pool_size=20, max_overflow=40)
    instrument_engine(engine, service="tests")
    yield engine
    # A fresh pool for the clean-up: a test may have terminated or broken pooled connections.
    await engine.dispose()
    await reset_tables(engine)
    await engine.dispose()


@dataclass
class RunningService:
    runtime: ServiceRuntime
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.runtime.port}"


StartService = Callable[..., Awaitable[RunningService]]


@pytest.fixture
async def start_service(db_engine: AsyncEngine, database_url: str) -> AsyncIterator[StartService]:
    """Starts a service with the same build function its ``__main__`` uses, on port 0."""
    started: list[RunningService] = []

    async def start(
        build: Callable[..., ServiceRuntime], settings_type: type[S], **overrides: Any
    ) -> RunningService:
        values: dict[str, Any] = {
            "database_url": database_url,
            "tokens": TOKENS_ENV,
            "host": "127.0.0.1",
            "grpc_port": 0,
            "metrics_port": 0,
            "grace_period_seconds": 1.0,
        }
        values.update(overrides)
        settings = settings_type(**values)
        runtime = build(settings, engine=db_engine)
        await runtime.start()
        service = RunningService(runtime, grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}"))
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        await service.channel.close()
        await service.runtime.stop(grace=0)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REVIEWLEARN_TEST_REDIS_URL``, or a throwaway local redis-server; skips otherwise."""
    configured = os.environ.get("REVIEWLEARN_TEST_REDIS_URL", "").strip()
    if configured:
        yield configured
        return
    with private_redis() as url:
        if url is None:
            pytest.skip("no Redis: set REVIEWLEARN_TEST_REDIS_URL or put redis-server on PATH")
        yield url
