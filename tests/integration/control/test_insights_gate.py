"""The insights service asks the same gate client: kill switch or the insights gate off → every
insights answer is UNAVAILABLE with the reason; back on → it answers again."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2

from tests.conftest import StartService, auth
from tests.integration.control.conftest import (
    FAST,
    ControlStub,
    kill_switch,
    set_gate,
    start_control,
)
from tests.integration.insights.conftest import start_insights, stub_of, team

WAIT = Duration(seconds=10)


async def _metrics_code(stub: object) -> tuple[grpc.StatusCode, str]:
    try:
        await stub.GetTeamMetrics(  # type: ignore[attr-defined]
            insights_pb2.GetTeamMetricsRequest(scope=team("platform")), metadata=auth("reader")
        )
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def test_insights_answer_unavailable_while_the_kill_switch_or_their_gate_is_off(
    start_service: StartService,
) -> None:
    control = ControlStub((await start_control(start_service)).channel)
    insights = stub_of(await start_insights(start_service, **FAST))
    assert (await _metrics_code(insights))[0] is not grpc.StatusCode.UNAVAILABLE

    await kill_switch(control, True, "incident 9", wait_for_replicas=WAIT)
    code, details = await _metrics_code(insights)
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "kill_switch" in details
    assert "incident 9" in details
    await kill_switch(control, False, "resolved", wait_for_replicas=WAIT)
    assert (await _metrics_code(insights))[0] is not grpc.StatusCode.UNAVAILABLE

    await set_gate(
        control, common_pb2.FEATURE_INSIGHTS, False, reason="rebuild", wait_for_replicas=WAIT
    )
    code, details = await _metrics_code(insights)
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "global_gate: insights is off (rebuild)" in details
    # Learning is not affected by the insights gate.
    await set_gate(
        control, common_pb2.FEATURE_INSIGHTS, True, reason="back", wait_for_replicas=WAIT
    )
    assert (await _metrics_code(insights))[0] is not grpc.StatusCode.UNAVAILABLE
