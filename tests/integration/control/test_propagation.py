"""Every replica applies gate changes — pushed, or polled when the push is lost — confirms them
in its heartbeat, and keeps its last snapshot when the database goes away."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from shared.errors import Unavailable
from shared.gates import Feature, GateClient
from tests.conftest import StartService, auth
from tests.integration.control.conftest import (
    FAST,
    REPO,
    ControlStub,
    control_behind_proxy,
    evaluate,
    eventually,
    kill_switch,
    set_gate,
    start_control,
)

RANKING = common_pb2.FEATURE_RANKING


async def propagation(
    stub: ControlStub, include_gone: bool = False
) -> control_pb2.GetGatePropagationResponse:
    return await stub.GetGatePropagation(
        control_pb2.GetGatePropagationRequest(include_gone=include_gone), metadata=auth("reader")
    )


async def test_watch_delivers_a_snapshot_then_each_change(stub: ControlStub) -> None:
    stream = stub.WatchFeatureGates(
        control_pb2.WatchFeatureGatesRequest(replica_id="test-watcher"), metadata=auth("reader")
    )
    try:
        first = await asyncio.wait_for(stream.read(), 10)
        assert first.snapshot.version == 0
        assert not first.snapshot.kill_switch_engaged
        await kill_switch(stub, True, "watch me")
        second = await asyncio.wait_for(stream.read(), 10)
        assert second.snapshot.version == 1
        assert second.snapshot.kill_switch_engaged
        assert second.snapshot.kill_switch_reason == "watch me"
        await set_gate(stub, RANKING, False, REPO, reason="one repository")
        third = await asyncio.wait_for(stream.read(), 10)
        assert third.snapshot.version == 2
        assert [(g.repository_url, g.enabled) for g in third.snapshot.gates] == [(REPO, False)]
    finally:
        stream.cancel()


async def test_the_kill_switch_waits_until_every_live_replica_applied_it(
    start_service: StartService,
) -> None:
    control = await start_control(start_service)
    await start_service(build_feedback, FeedbackSettings, **FAST)
    learning = await start_service(build_learning, LearningSettings, **FAST)
    stub = ControlStub(control.channel)

    async def three_live() -> bool:
        return {r.service for r in (await propagation(stub)).replicas} == {
            "control",
            "feedback",
            "learning",
        }

    await eventually(three_live, what="three replicas heartbeating")
    response = await kill_switch(stub, True, "drill", wait_for_replicas=Duration(seconds=10))
    assert response.propagation.converged
    assert response.propagation.version == response.version
    assert not response.propagation.pending
    assert {r.service for r in response.propagation.applied} == {"control", "feedback", "learning"}
    assert all(r.applied_version >= response.version for r in response.propagation.applied)

    report = await propagation(stub)
    assert report.current_version == response.version
    assert report.converged
    assert all(r.live and not r.gates_stale for r in report.replicas)

    # A stopped replica is gone at once: it says so in its last heartbeat.
    await learning.runtime.stop(grace=0)
    assert {r.service for r in (await propagation(stub)).replicas} == {"control", "feedback"}
    gone = [r for r in (await propagation(stub, include_gone=True)).replicas if not r.live]
    assert [r.service for r in gone] == ["learning"]


async def test_a_replica_that_misses_the_notification_catches_up_by_polling(
    start_service: StartService,
) -> None:
    control = await start_control(start_service)
    # This replica listens on a Redis that is not there, so no push reaches it.
    deaf = await start_control(
        start_service, redis_url="redis://127.0.0.1:1/0", gate_poll_seconds=0.3
    )
    stub, deaf_stub = ControlStub(control.channel), ControlStub(deaf.channel)
    assert (await evaluate(deaf_stub, RANKING)).enabled

    await kill_switch(stub, True, "missed push")

    async def caught_up() -> bool:
        return (await evaluate(deaf_stub, RANKING)).decided_by == "kill_switch"

    await eventually(caught_up, what="the deaf replica catching up")
    assert deaf.runtime.gates.status()["push_connected"] is False


async def test_a_replica_whose_database_drops_keeps_its_snapshot_and_says_stale(
    start_service: StartService, database_url: str, db_engine: AsyncEngine
) -> None:
    control = await start_control(start_service)
    stub = ControlStub(control.channel)
    async with control_behind_proxy(database_url) as cut_off:
        replica, proxy = cut_off.stub, cut_off.proxy
        await kill_switch(stub, True, "before the outage")

        async def applied() -> bool:
            return (await evaluate(replica, RANKING)).decided_by == "kill_switch"

        await eventually(applied, what="the replica applying the kill switch")

        await proxy.cut()
        await kill_switch(stub, False, "released during the outage")

        async def stale() -> bool:
            return bool((await cut_off.runtime.health_report())["gates"]["stale"])

        await eventually(stale, what="the replica reporting stale gates")
        report = await cut_off.runtime.health_report()
        assert report["components"]["gates"] == "unhealthy"
        assert "stale" in report["problems"]["gates"]
        # No flip to defaults: the last snapshot stays in force.
        decision = await evaluate(replica, RANKING)
        assert (decision.enabled, decision.decided_by) == (False, "kill_switch")
        assert decision.version == 1

        await proxy.restore()

        async def recovered() -> bool:
            return (await evaluate(replica, RANKING)).enabled

        await eventually(recovered, within=20, what="the replica catching up after the outage")

        async def fresh() -> bool:
            return not (await cut_off.runtime.health_report())["gates"]["stale"]

        await eventually(fresh, what="the replica fresh again")
    async with db_engine.connect() as connection:
        stale_rows = await connection.scalar(
            text("SELECT count(*) FROM replica_heartbeats WHERE service = 'control'")
        )
    assert stale_rows == 2


async def _applies_by_push(start_service: StartService, **push: object) -> None:
    """With a ten-minute poll only a notification can deliver the change in time."""
    control = await start_control(start_service, **push)
    replica = await start_control(start_service, gate_poll_seconds=600, **push)
    replica_stub = ControlStub(replica.channel)

    async def listening() -> bool:
        return bool(replica.runtime.gates.status()["push_connected"])

    await eventually(listening, what="the replica subscribing")
    await kill_switch(ControlStub(control.channel), True, "pushed")

    async def applied() -> bool:
        return (await evaluate(replica_stub, RANKING)).decided_by == "kill_switch"

    await eventually(applied, within=10, what="the pushed change")


async def test_a_change_reaches_replicas_by_postgres_notify(start_service: StartService) -> None:
    await _applies_by_push(start_service)


@pytest.mark.redis
async def test_a_change_reaches_replicas_by_redis_pub_sub(
    start_service: StartService, redis_url: str
) -> None:
    await _applies_by_push(start_service, redis_url=redis_url)


async def test_require_answers_unavailable_naming_the_switch(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    stub = ControlStub((await start_control(start_service)).channel)
    client = GateClient(engine=db_engine, hard_kill=False)
    await client.refresh()
    assert client.require(Feature.INSIGHTS).enabled
    await set_gate(stub, common_pb2.FEATURE_INSIGHTS, False, reason="insights rebuild")
    await client.refresh()
    with pytest.raises(Unavailable) as caught:
        client.require(Feature.INSIGHTS)
    assert caught.value.reason == "FEATURE_DISABLED"
    assert "insights rebuild" in caught.value.message
    assert caught.value.metadata["decided_by"] == "global_gate"
    # Before any snapshot could be read, the answer is off, never a guessed default.
    assert not GateClient(engine=db_engine, hard_kill=False).evaluate(Feature.RANKING).enabled
