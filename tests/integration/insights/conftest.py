"""Fixtures of the insights tests: the service (same build function as production), its stub,
and a generated feedback log written into the feedback tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.insights.server import build_server
from services.insights.settings import InsightsSettings
from tests.conftest import RunningService, StartService, auth
from tests.integration.insights.history import (
    GeneratedLog,
    advance_sequences,
    generate,
    write_events,
    write_findings,
    write_scaffold,
)

if TYPE_CHECKING:
    from reviewlearn.insights.v1.insights_pb2_grpc import InsightsServiceAsyncStub as Stub
else:
    Stub = insights_pb2_grpc.InsightsServiceStub

NOW = datetime.now(UTC)


async def start_insights(start_service: StartService, **overrides: Any) -> RunningService:
    # The fold runs when asked (RefreshInsights "rollups") or woken; no poll races the tests.
    values: dict[str, Any] = {"rollup_poll_seconds": 3600.0, "paths_refresh_seconds": 3600.0}
    values.update(overrides)
    return await start_service(build_server, InsightsSettings, **values)


def stub_of(service: RunningService) -> Stub:
    return insights_pb2_grpc.InsightsServiceStub(service.channel)  # type: ignore[return-value]


def team(name: str) -> common_pb2.Scope:
    return common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=name)


def repository(url: str) -> common_pb2.Scope:
    return common_pb2.Scope(type=common_pb2.SCOPE_TYPE_REPOSITORY, id=url)


async def fold(stub: Stub) -> insights_pb2.RefreshInsightsResponse:
    return await stub.RefreshInsights(
        insights_pb2.RefreshInsightsRequest(parts=["rollups"]), metadata=auth("operator")
    )


async def load(engine: AsyncEngine, log: GeneratedLog) -> None:
    async with engine.begin() as connection:
        await write_scaffold(connection, log)
        await write_findings(connection, log.findings)
        await write_events(connection, log.events)
    await advance_sequences(engine)


@pytest.fixture
async def generated(db_engine: AsyncEngine) -> GeneratedLog:
    log = generate(seed=42, teams=3, reviews=400, days=100, now=NOW)
    await load(db_engine, log)
    return log
