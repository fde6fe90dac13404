"""A transaction left open elsewhere holds the fold watermark back: learning measures for how
long (``fold_horizon_held_seconds``), reports it in its heartbeat, and the control service's alert
signal carries it.

The test database lives on the machine's shared server, whose transaction horizon other sessions
move too: these tests assert only what a transaction of their own guarantees (the watermark
cannot pass it), and skip what someone else's long transaction would make unknowable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control.server import build_server as build_control
from services.control.settings import ControlSettings
from services.learning.instruments import LearningInstruments
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from services.learning.usecases.fold_feedback import Folder
from shared.db.engine import create_session_factory
from tests.conftest import StartService, auth

HOLD_SECONDS = 1.5
FAST = {"heartbeat_seconds": 0.2, "heartbeat_sample_seconds": 0.3}


@pytest.fixture
async def elsewhere(db_engine: AsyncEngine) -> AsyncIterator[tuple[AsyncConnection, int]]:
    """A transaction with a transaction id of its own, left open until the test commits it."""
    async with db_engine.connect() as connection:
        await connection.begin()
        held = int((await connection.execute(text("SELECT txid_current()"))).scalar_one())
        yield connection, held
        if connection.in_transaction():
            await connection.rollback()


async def xmax(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        query = text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        return int((await connection.execute(query)).scalar_one())


async def test_the_fold_measures_how_long_an_open_transaction_holds_its_watermark(
    db_engine: AsyncEngine, elsewhere: tuple[AsyncConnection, int]
) -> None:
    connection, held = elsewhere
    folder = Folder(sessions=create_session_factory(db_engine), instruments=LearningInstruments())
    opened = time.monotonic()
    await folder.fold()
    while time.monotonic() - opened < HOLD_SECONDS:
        result = await folder.fold()
        assert result.counts.horizon <= held  # it cannot pass the open transaction
        await asyncio.sleep(0.1)
    during = folder.horizon_held_seconds()
    assert during >= HOLD_SECONDS - 0.1
    seen_while_held = await xmax(db_engine)

    await connection.commit()
    committed = time.monotonic()
    deadline = committed + 20
    while (await folder.fold()).counts.horizon < seen_while_held:
        if time.monotonic() > deadline:
            pytest.skip("another transaction on the shared server holds the horizon back")
        await asyncio.sleep(0.1)
    # Caught up with everything the held folds saw: what remains is younger than the commit.
    assert folder.horizon_held_seconds() <= time.monotonic() - committed + 0.1
    assert folder.horizon_held_seconds() < during


async def test_the_heartbeat_carries_it_into_the_alert_signal(
    start_service: StartService, elsewhere: tuple[AsyncConnection, int]
) -> None:
    await start_service(build_learning, LearningSettings, fold_poll_seconds=0.1, **FAST)
    control = await start_service(
        build_control, ControlSettings, alert_evaluation_seconds=3600.0, **FAST
    )
    stub = control_pb2_grpc.ControlServiceStub(control.channel)

    async def signal() -> control_pb2.SignalValue:
        evaluated = await stub.EvaluateAlerts(
            control_pb2.EvaluateAlertsRequest(), metadata=auth("operator")
        )
        return next(s for s in evaluated.signals if s.name == "fold_horizon_held_seconds")

    deadline = time.monotonic() + 20
    while not ((value := await signal()).known and value.value >= HOLD_SECONDS):
        assert time.monotonic() < deadline, f"the held time never reached the signal: {value}"
        await asyncio.sleep(0.2)
