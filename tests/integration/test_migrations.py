"""Alembic migrations: upgrade and downgrade both work, and the models match the migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import migrate
from shared.db.models import Base
from tests.conftest import _create_database, _drop_database


@pytest.fixture
async def scratch_database(postgres_server_url: str) -> AsyncIterator[str]:
    url = await _create_database(postgres_server_url)
    yield url
    await _drop_database(postgres_server_url, url)


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(scratch_database: str) -> None:
    await migrate.upgrade(scratch_database)
    tables = await _tables(scratch_database)
    assert set(Base.metadata.tables) <= tables
    await migrate.downgrade(scratch_database, "base")
    assert await _tables(scratch_database) == {"alembic_version"}
    await migrate.upgrade(scratch_database)
    assert set(Base.metadata.tables) <= await _tables(scratch_database)
    engine = create_async_engine(scratch_database)
    try:
        async with engine.connect() as connection:
            kill = await connection.scalar(text("SELECT kill_switch_engaged FROM gate_state"))
            assert kill is False
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_async_engine(database_url)

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == [], f"models differ from migrations (write a migration): {differences}"
