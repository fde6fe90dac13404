"""The audit log of every mutation, and system health from what replicas record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from services.insights.server import build_server as build_insights
from services.insights.settings import InsightsSettings
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from tests.conftest import StartService, auth
from tests.integration.control.conftest import (
    FAST,
    REPO,
    ControlStub,
    eventually,
    kill_switch,
    set_gate,
    start_control,
    violations,
)

RANKING = common_pb2.FEATURE_RANKING


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def audit(stub: ControlStub, **filters: object) -> list[control_pb2.AuditEvent]:
    events: list[control_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await stub.ListAuditEvents(
            control_pb2.ListAuditEventsRequest(page_size=2, page_token=token, **filters),  # type: ignore[arg-type]
            metadata=auth("reader"),
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


async def test_every_mutation_is_audited_with_the_caller(stub: ControlStub) -> None:
    started = datetime.now(UTC) - timedelta(seconds=5)
    await set_gate(stub, RANKING, False, REPO, reason="noisy here", request_id="a-1")
    await set_gate(stub, common_pb2.FEATURE_LEARNING, True, reason="explicitly on")
    await stub.ClearFeatureGate(
        control_pb2.ClearFeatureGateRequest(feature=RANKING, repository_url=REPO, reason="fixed"),
        metadata=auth("operator"),
    )
    await kill_switch(stub, True, "incident 9")
    await stub.AdvanceRollout(
        control_pb2.AdvanceRolloutRequest(reason="start", force=True), metadata=auth("operator")
    )
    await stub.RollbackRollout(
        control_pb2.RollbackRolloutRequest(to_phase=0, reason="hold"), metadata=auth("operator")
    )

    events = await audit(stub)
    assert [e.action for e in events] == [
        "rollout.rollback",
        "rollout.advance",
        "kill_switch.set",
        "gate.clear",
        "gate.set",
        "gate.set",
    ]
    assert len({e.audit_id for e in events}) == 6
    assert all(e.actor.startswith("operator:") and e.reason for e in events)
    first = events[-1]
    assert (first.target, first.request_id, first.repository_url) == (
        f"ranking@{REPO}",
        "a-1",
        REPO,
    )
    assert first.before_json == ""
    assert json.loads(first.after_json)["enabled"] is False
    cleared = events[3]
    assert json.loads(cleared.before_json)["reason"] == "noisy here"
    assert cleared.after_json == ""
    assert json.loads(events[0].before_json) == {"phase": 1, "percentage": 10}

    assert [e.action for e in await audit(stub, feature=RANKING)] == ["gate.clear", "gate.set"]
    assert len(await audit(stub, repository_url=REPO)) == 2
    assert [e.reason for e in await audit(stub, action="kill_switch.set")] == ["incident 9"]
    assert len(await audit(stub, start_time=_stamp(started))) == 6
    assert await audit(stub, start_time=_stamp(datetime.now(UTC) + timedelta(minutes=1))) == []
    assert await audit(stub, end_time=_stamp(started)) == []


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (control_pb2.ListAuditEventsRequest(action="nope"), "action"),
        (control_pb2.ListAuditEventsRequest(feature=42), "feature"),  # type: ignore[arg-type]
        (
            control_pb2.ListAuditEventsRequest(
                start_time=Timestamp(seconds=2_000_000_000), end_time=Timestamp(seconds=1)
            ),
            "end_time",
        ),
        (control_pb2.ListAuditEventsRequest(page_size=-1), "page_size"),
        (control_pb2.ListAuditEventsRequest(page_token="garbage"), "page_token"),
    ],
)
async def test_bad_audit_queries_are_invalid_argument(
    stub: ControlStub, request_message: control_pb2.ListAuditEventsRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListAuditEvents(request_message, metadata=auth("reader"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(caught.value)


async def test_system_health_from_heartbeats_and_the_same_document_over_http(
    start_service: StartService,
) -> None:
    control = await start_control(start_service)
    await start_service(build_feedback, FeedbackSettings, **FAST)
    await start_service(
        build_learning, LearningSettings, **{**FAST, "patterns_refresh_seconds": 3600}
    )
    stub = ControlStub(control.channel)

    async def health() -> control_pb2.GetSystemHealthResponse:
        return await stub.GetSystemHealth(
            control_pb2.GetSystemHealthRequest(), metadata=auth("reader")
        )

    async def learning_reported() -> bool:
        report = await health()
        return report.replicas_seen == 3 and report.HasField("last_learning_update")

    await eventually(learning_reported, what="three replicas with their signals")
    report = await health()
    components = {c.name: c for c in report.components}
    assert components["feedback_collector"].status == control_pb2.HEALTH_STATUS_HEALTHY
    assert components["ranking_engine"].status == control_pb2.HEALTH_STATUS_HEALTHY
    # Nothing was ever tuned, so the thresholds are stale: degraded, and it says why.
    assert components["learning_engine"].status == control_pb2.HEALTH_STATUS_DEGRADED
    assert "stale" in components["learning_engine"].detail
    assert report.confidence_threshold_stale
    assert components["insights_engine"].status == control_pb2.HEALTH_STATUS_UNHEALTHY
    assert components["insights_engine"].detail == "no live replica"
    assert report.status == control_pb2.HEALTH_STATUS_UNHEALTHY
    assert report.feedback_backlog == 0
    assert report.gates_converged
    assert not report.cache_hit_rate_known

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{control.runtime.metrics_port}"
    ) as http:
        answer = await http.get("/health/learning")
        assert answer.status_code == 503  # unhealthy: no insights replica
        document = answer.json()
        assert document["components"]["insights_engine"] == "unhealthy"
        assert document["components"]["learning_engine"] == "degraded"
        assert document["metrics"]["replicas_seen"] == 3
        assert document["metrics"]["confidence_threshold_stale"] is True

        await start_service(build_insights, InsightsSettings, **FAST)

        async def insights_up() -> bool:
            return (await http.get("/health/learning")).status_code == 200

        await eventually(insights_up, what="the insights replica heartbeating")

    await kill_switch(stub, True, "incident 5")
    report = await health()
    components = {c.name: c for c in report.components}
    assert report.kill_switch_engaged
    assert components["ranking_engine"].status == control_pb2.HEALTH_STATUS_DEGRADED
    assert "kill_switch" in components["ranking_engine"].detail
    assert components["insights_engine"].status == control_pb2.HEALTH_STATUS_DEGRADED
