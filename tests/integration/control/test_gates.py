"""Gates and the kill switch through the control service's RPCs, against the real database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import StartService, auth
from tests.integration.control.conftest import (
    REPO,
    ControlStub,
    evaluate,
    kill_switch,
    reason_of,
    set_gate,
    start_control,
    violations,
)

OTHER = "https://git.example.com/acme/web"
LEARNING = common_pb2.FEATURE_LEARNING
RANKING = common_pb2.FEATURE_RANKING


async def audit_rows(db_engine: AsyncEngine) -> list[Any]:
    async with db_engine.connect() as connection:
        return list(
            await connection.execute(
                text(
                    "SELECT actor, action, target, before, after, reason, request_id "
                    "FROM audit_events ORDER BY id"
                )
            )
        )


async def test_kill_switch_engages_and_releases(stub: ControlStub, db_engine: AsyncEngine) -> None:
    before = await stub.GetFeatureGates(
        control_pb2.GetFeatureGatesRequest(), metadata=auth("reader")
    )
    assert before.snapshot.version == 0
    assert not before.snapshot.kill_switch_engaged

    engaged = await kill_switch(stub, True, "incident 42")
    assert engaged.engaged
    assert engaged.version == 1
    snapshot = (
        await stub.GetFeatureGates(control_pb2.GetFeatureGatesRequest(), metadata=auth("reader"))
    ).snapshot
    assert snapshot.kill_switch_engaged
    assert snapshot.kill_switch_reason == "incident 42"
    assert snapshot.kill_switch_updated_by.startswith("operator:")
    assert snapshot.kill_switch_update_time.seconds > 0

    decision = await evaluate(stub, RANKING)
    assert not decision.enabled
    assert decision.decided_by == "kill_switch"
    assert "incident 42" in decision.reason
    assert decision.version == 1

    released = await kill_switch(stub, False, "resolved")
    assert released.version == 2
    decision = await evaluate(stub, RANKING)
    assert decision.enabled
    assert decision.decided_by == "default"

    rows = await audit_rows(db_engine)
    assert [(r.action, r.after["engaged"]) for r in rows] == [
        ("kill_switch.set", True),
        ("kill_switch.set", False),
    ]
    assert all(r.actor.startswith("operator:") for r in rows)
    assert rows[0].before["engaged"] is False
    assert rows[1].before == {"engaged": True, "reason": "incident 42", "updated_by": rows[0].actor}


async def test_a_repository_override_beats_the_global_gate(stub: ControlStub) -> None:
    await set_gate(stub, RANKING, False, reason="noisy ranking")
    for url in (REPO, OTHER):
        decision = await evaluate(stub, RANKING, url)
        assert (decision.enabled, decision.decided_by) == (False, "global_gate")
        assert "noisy ranking" in decision.reason

    await set_gate(stub, RANKING, True, REPO, reason="beta team")
    decision = await evaluate(stub, RANKING, REPO)
    assert (decision.enabled, decision.decided_by) == (True, "repository_gate")
    assert not (await evaluate(stub, RANKING, OTHER)).enabled

    # The master switch off: the repository's own ranking gate is more specific and still wins;
    # elsewhere learning decides for ranking.
    await set_gate(stub, LEARNING, False, reason="maintenance")
    assert (await evaluate(stub, RANKING, REPO)).enabled
    other = await evaluate(stub, RANKING, OTHER)
    assert (other.enabled, other.decided_by, other.decided_by_feature) == (
        False,
        "global_gate",
        LEARNING,
    )
    # A learning override includes the repository in learning, but ranking's global gate is off.
    await set_gate(stub, LEARNING, True, OTHER, reason="pilot")
    other = await evaluate(stub, RANKING, OTHER)
    assert (other.enabled, other.decided_by_feature) == (False, RANKING)
    assert (await evaluate(stub, LEARNING, OTHER)).decided_by == "repository_gate"

    cleared = await stub.ClearFeatureGate(
        control_pb2.ClearFeatureGateRequest(feature=RANKING, repository_url=REPO, reason="done"),
        metadata=auth("operator"),
    )
    assert cleared.cleared
    assert not (await evaluate(stub, RANKING, REPO)).enabled
    again = await stub.ClearFeatureGate(
        control_pb2.ClearFeatureGateRequest(feature=RANKING, repository_url=REPO, reason="done"),
        metadata=auth("operator"),
    )
    assert not again.cleared
    assert again.version == cleared.version

    # Nothing beats the kill switch.
    await set_gate(stub, RANKING, True, REPO, reason="beta team")
    await kill_switch(stub, True)
    decision = await evaluate(stub, RANKING, REPO)
    assert (decision.enabled, decision.decided_by) == (False, "kill_switch")


async def test_the_environment_hard_kill_beats_a_released_switch(
    start_service: StartService,
) -> None:
    service = await start_control(start_service, learning_enabled=False)
    stub = ControlStub(service.channel)
    await kill_switch(stub, False, "all clear")
    await set_gate(stub, RANKING, True, REPO)
    decision = await evaluate(stub, RANKING, REPO)
    assert (decision.enabled, decision.decided_by) == (False, "environment")
    assert "LEARNING_ENABLED=false" in decision.reason


def _wait(seconds: int) -> Duration:
    return Duration(seconds=seconds)


BAD_REQUESTS: list[tuple[str, Callable[[ControlStub], Any], str]] = [
    (
        "unspecified feature",
        lambda s: s.SetFeatureGate(
            control_pb2.SetFeatureGateRequest(enabled=False, reason="x"), metadata=auth("operator")
        ),
        "feature",
    ),
    (
        "unknown feature",
        lambda s: s.SetFeatureGate(
            control_pb2.SetFeatureGateRequest(feature=99, reason="x"),  # type: ignore[arg-type]
            metadata=auth("operator"),
        ),
        "feature",
    ),
    (
        "empty reason",
        lambda s: s.SetFeatureGate(
            control_pb2.SetFeatureGateRequest(feature=RANKING, reason="  "),
            metadata=auth("operator"),
        ),
        "reason",
    ),
    (
        "kill switch without a reason",
        lambda s: s.SetKillSwitch(
            control_pb2.SetKillSwitchRequest(engaged=True), metadata=auth("operator")
        ),
        "reason",
    ),
    (
        "wait too long",
        lambda s: s.SetKillSwitch(
            control_pb2.SetKillSwitchRequest(engaged=True, reason="x", wait_for_replicas=_wait(31)),
            metadata=auth("operator"),
        ),
        "wait_for_replicas",
    ),
    (
        "negative wait",
        lambda s: s.SetFeatureGate(
            control_pb2.SetFeatureGateRequest(
                feature=RANKING, reason="x", wait_for_replicas=_wait(-1)
            ),
            metadata=auth("operator"),
        ),
        "wait_for_replicas",
    ),
    (
        "padded repository url",
        lambda s: s.SetFeatureGate(
            control_pb2.SetFeatureGateRequest(feature=RANKING, reason="x", repository_url=" r "),
            metadata=auth("operator"),
        ),
        "repository_url",
    ),
    (
        "evaluate an unknown feature",
        lambda s: s.EvaluateFeature(
            control_pb2.EvaluateFeatureRequest(repository_url=REPO), metadata=auth("reader")
        ),
        "feature",
    ),
    (
        "clear without a reason",
        lambda s: s.ClearFeatureGate(
            control_pb2.ClearFeatureGateRequest(feature=RANKING), metadata=auth("operator")
        ),
        "reason",
    ),
]


@pytest.mark.parametrize(
    ("call", "field"), [(c, f) for _, c, f in BAD_REQUESTS], ids=[n for n, _, _ in BAD_REQUESTS]
)
async def test_bad_input_is_invalid_argument_with_field_violations(
    stub: ControlStub, db_engine: AsyncEngine, call: Callable[[ControlStub], Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(caught.value)
    assert await audit_rows(db_engine) == []


async def test_a_retried_mutation_is_applied_once(
    stub: ControlStub, db_engine: AsyncEngine
) -> None:
    first = await kill_switch(stub, True, "incident 7", request_id="ks-1")
    retries = await asyncio.gather(
        *(kill_switch(stub, True, "incident 7", request_id="ks-1") for _ in range(5))
    )
    assert {r.version for r in retries} == {first.version}
    assert len(await audit_rows(db_engine)) == 1

    # The same id with other content is an error, and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await kill_switch(stub, False, "incident 7", request_id="ks-1")
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "REQUEST_ID_REUSED"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_gate(stub, RANKING, False, request_id="ks-1")
    assert reason_of(caught.value) == "REQUEST_ID_REUSED"
    snapshot = (
        await stub.GetFeatureGates(control_pb2.GetFeatureGatesRequest(), metadata=auth("reader"))
    ).snapshot
    assert snapshot.kill_switch_engaged
    assert snapshot.version == first.version
    assert snapshot.gates == []

    # Concurrent first attempts of one new id: one applies, the others get its answer.
    answers = await asyncio.gather(
        *(set_gate(stub, RANKING, False, REPO, request_id="g-9") for _ in range(4))
    )
    assert len({a.version for a in answers}) == 1
    rows = await audit_rows(db_engine)
    assert [r.request_id for r in rows] == ["ks-1", "g-9"]
