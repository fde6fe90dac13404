"""Migrations 0009 and 0010 seed the plan's rules exactly as the catalogue (and the Prometheus
export) defines them, and a downgrade removes them."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from services.control.domain.alert_catalogue import DEFAULT_RULES
from services.control.storage.alert_repository import AlertRepository
from shared.db import migrate
from tests.conftest import _create_database, _drop_database


@pytest.fixture
async def scratch_database(postgres_server_url: str) -> AsyncIterator[str]:
    url = await _create_database(postgres_server_url)
    yield url
    await _drop_database(postgres_server_url, url)


async def test_the_migration_seeds_the_catalogue(scratch_database: str) -> None:
    await migrate.upgrade(scratch_database)
    engine = create_async_engine(scratch_database)
    try:
        async with AsyncSession(engine) as session:
            seeded = {rule.name: rule for rule in await AlertRepository(session).rules()}
        assert seeded == {rule.name: rule for rule in DEFAULT_RULES}
        await migrate.downgrade(scratch_database, "0009")
        async with AsyncSession(engine) as session:
            left = {rule.name for rule in await AlertRepository(session).rules()}
        assert left == {rule.name for rule in DEFAULT_RULES} - {"ReviewlearnFoldHorizonHeld"}
        alerting = importlib.import_module("shared.db.migrations.versions.0009_alerting")
        await migrate.downgrade(scratch_database, str(alerting.down_revision))
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT count(*) FROM alert_rules")) == 0
    finally:
        await engine.dispose()
