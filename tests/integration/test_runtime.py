"""The shared gRPC runtime against real servers: health, reflection, auth, errors, telemetry."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc

from services.control.server import build_server as build_control
from services.control.settings import ControlSettings
from shared.errors import FieldViolation, InvalidArgument, NotFound
from shared.finding_input import Limits
from shared.http_side import HealthReport
from shared.rpc.server import RpcHost, ServiceBinding, answer_unimplemented
from shared.settings import ServiceSettings
from shared.telemetry import current_trace_id
from tests.conftest import TOKENS_ENV, StartService, auth

INSIGHTS = insights_pb2.DESCRIPTOR.services_by_name["InsightsService"]
CONTROL = control_pb2.DESCRIPTOR.services_by_name["ControlService"]


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status in the trailers")


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for detail in status_details(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo detail")


async def test_health_serves_every_service_name(start_service: StartService) -> None:
    service = await start_service(build_control, ControlSettings)
    stub = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "reviewlearn.control.v1.ControlService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_services_without_a_token(start_service: StartService) -> None:
    service = await start_service(build_control, ControlSettings)
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    names: list[str] = []
    async for response in stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    ):
        names = [s.name for s in response.list_services_response.service]
    assert "reviewlearn.control.v1.ControlService" in names
    assert "grpc.health.v1.Health" in names


async def test_missing_and_unknown_tokens_are_unauthenticated(start_service: StartService) -> None:
    service = await start_service(build_control, ControlSettings)
    stub = control_pb2_grpc.ControlServiceStub(service.channel)
    for metadata in (
        (),
        (("authorization", "Bearer not-a-token"),),
        (("authorization", "Basic x"),),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetFeatureGates(control_pb2.GetFeatureGatesRequest(), metadata=metadata)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert error_info(caught.value).reason == "TOKEN_INVALID"


async def test_reader_calling_an_operator_rpc_is_permission_denied(
    start_service: StartService,
) -> None:
    service = await start_service(build_control, ControlSettings)
    stub = control_pb2_grpc.ControlServiceStub(service.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SetKillSwitch(
            control_pb2.SetKillSwitchRequest(engaged=True), metadata=auth("reader")
        )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    info = error_info(caught.value)
    assert info.reason == "ROLE_FORBIDDEN"
    assert info.metadata["required_role"] == "operator"
    # The ingest role may not read either: roles are not a ladder.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetFeatureGates(control_pb2.GetFeatureGatesRequest(), metadata=auth("ingest"))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


class PendingControl(control_pb2_grpc.ControlServiceServicer):
    """A servicer with no RPC of its own: every one answers through answer_unimplemented."""


answer_unimplemented(PendingControl, CONTROL, pending="a test")


async def test_rpcs_of_later_issues_answer_unimplemented_not_unknown() -> None:
    # Every control RPC is implemented now: a servicer that defines none stands in for the
    # service whose issue has not landed.
    servicer = PendingControl()  # type: ignore[abstract]
    host = RpcHost(
        settings=ServiceSettings(service_name="pending", tokens=TOKENS_ENV),
        bindings=[
            ServiceBinding(
                CONTROL,
                lambda server: control_pb2_grpc.add_ControlServiceServicer_to_server(
                    servicer, server
                ),
            )
        ],
        tokens=ServiceSettings(tokens=TOKENS_ENV).token_registry(),
        health_report=_healthy,
    )
    await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = control_pb2_grpc.ControlServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListAlertRules(
                    control_pb2.ListAlertRulesRequest(), metadata=auth("operator")
                )
            assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
            assert error_info(caught.value).reason == "NOT_YET_IMPLEMENTED"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.WatchFeatureGates(
                    control_pb2.WatchFeatureGatesRequest(), metadata=auth("reader")
                ):
                    pass
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert error_info(caught.value).reason == "NOT_YET_IMPLEMENTED"
    finally:
        await host.stop(grace=0)


class ProbeInsights(insights_pb2_grpc.InsightsServiceServicer):
    """A servicer that exercises the runtime: slow calls, typed errors, crashes."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.trace_ids: list[str] = []

    async def GetTeamMetrics(self, request: Any, context: Any) -> Any:
        self.trace_ids.append(current_trace_id())
        self.started.set()
        await asyncio.sleep(0.5)
        return insights_pb2.GetTeamMetricsResponse(from_cache=True)

    async def GetTrends(self, request: Any, context: Any) -> Any:
        raise InvalidArgument([FieldViolation("weeks", "must be between 1 and 104")])

    async def GetLearningPaths(self, request: Any, context: Any) -> Any:
        raise NotFound("no team 'x'", reason="TEAM_NOT_FOUND", metadata={"team": "x"})

    async def GetRoi(self, request: Any, context: Any) -> Any:
        raise RuntimeError("a bug")


async def _healthy() -> dict[str, Any]:
    return {"status": "healthy"}


async def start_probe(health_report: HealthReport = _healthy) -> tuple[RpcHost, ProbeInsights]:
    probe = ProbeInsights()
    host = RpcHost(
        settings=ServiceSettings(
            service_name="probe",
            tokens=TOKENS_ENV,
            grpc_port=0,
            metrics_port=0,
            grace_period_seconds=5.0,
        ),
        bindings=[
            ServiceBinding(
                INSIGHTS,
                lambda server: insights_pb2_grpc.add_InsightsServiceServicer_to_server(
                    probe, server
                ),
            )
        ],
        tokens=ServiceSettings(tokens=TOKENS_ENV).token_registry(),
        health_report=health_report,
    )
    await host.start()
    return host, probe


async def test_typed_errors_map_to_codes_with_details() -> None:
    host, _ = await start_probe()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = insights_pb2_grpc.InsightsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetTrends(insights_pb2.GetTrendsRequest(), metadata=auth("reader"))
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            bad_request = error_details_pb2.BadRequest()
            assert any(d.Unpack(bad_request) for d in status_details(caught.value).details)
            assert [(v.field, v.description) for v in bad_request.field_violations] == [
                ("weeks", "must be between 1 and 104")
            ]

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetLearningPaths(
                    insights_pb2.GetLearningPathsRequest(), metadata=auth("reader")
                )
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
            assert error_info(caught.value).metadata["team"] == "x"

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetRoi(insights_pb2.GetRoiRequest(), metadata=auth("reader"))
            assert caught.value.code() is grpc.StatusCode.INTERNAL
            assert "a bug" not in (caught.value.details() or "")  # internals stay in the log
    finally:
        await host.stop(grace=0)


async def test_shutdown_flips_health_then_drains_in_flight_calls() -> None:
    host, probe = await start_probe()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        stub = insights_pb2_grpc.InsightsServiceStub(channel)
        in_flight = asyncio.ensure_future(
            stub.GetTeamMetrics(insights_pb2.GetTeamMetricsRequest(), metadata=auth("reader"))
        )
        await probe.started.wait()
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.ensure_future(host.stop())
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        response = await in_flight  # finished within the grace period, not cancelled
        assert response.from_cache is True
        await stopping


async def test_side_port_serves_prometheus_metrics_and_health() -> None:
    host, _ = await start_probe()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = insights_pb2_grpc.InsightsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetTrends(insights_pb2.GetTrendsRequest(), metadata=auth("reader"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.metrics_port}") as http:
            metrics_text = (await http.get("/metrics")).text
            healthz = await http.get("/healthz")
        families = {family.name: family for family in text_string_to_metric_families(metrics_text)}
        assert "api_response_time_seconds" in families
        samples = [
            s
            for s in families["api_error_rate"].samples
            if s.labels.get("rpc_method") == "/reviewlearn.insights.v1.InsightsService/GetTrends"
        ]
        # The registry is the process's: other tests' calls of GetTrends are counted there too.
        assert any(s.labels["grpc_code"] == "INVALID_ARGUMENT" for s in samples)
        assert healthz.status_code == 200
        assert healthz.json() == {"status": "healthy"}
    finally:
        await host.stop(grace=0)


async def test_healthz_is_503_when_the_database_is_down(start_service: StartService) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    service = await start_service(build_control, ControlSettings)
    assert (await service.runtime.health_report())["status"] == "healthy"
    dead = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    runtime = build_control(
        ControlSettings(tokens=TOKENS_ENV, grpc_port=0, metrics_port=0), engine=dead
    )
    await runtime.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.metrics_port}") as http:
            response = await http.get("/healthz")
        assert response.status_code == 503
        assert response.json()["components"]["database"] == "unhealthy"
    finally:
        await runtime.stop(grace=0)
        await dead.dispose()


async def test_the_caller_trace_context_is_continued_by_the_server() -> None:
    host, probe = await start_probe()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = insights_pb2_grpc.InsightsServiceStub(channel)
            await stub.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(),
                metadata=(*auth("reader"), ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")),
            )
            await stub.GetTeamMetrics(insights_pb2.GetTeamMetricsRequest(), metadata=auth("reader"))
    finally:
        await host.stop(grace=0)
    # W3C context from the metadata: the same trace; without one, a fresh trace per call.
    assert probe.trace_ids[0] == trace_id
    assert probe.trace_ids[1] not in ("", trace_id)


async def test_grpc_health_follows_the_database() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    dead = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    runtime = build_control(
        ControlSettings(tokens=TOKENS_ENV, grpc_port=0, metrics_port=0, health_check_seconds=0.1),
        engine=dead,
    )
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            status = health_pb2.HealthCheckResponse.SERVING
            for _ in range(50):
                status = (await stub.Check(health_pb2.HealthCheckRequest(service=""))).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            named = await stub.Check(
                health_pb2.HealthCheckRequest(service="reviewlearn.control.v1.ControlService")
            )
            assert named.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await runtime.stop(grace=0)
        await dead.dispose()


def _raw_call(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


async def test_callers_are_authenticated_before_their_message_is_decoded() -> None:
    host, _ = await start_probe()
    garbage = b"\xff\xff\xff\xff" * 1000  # not a GetTrendsRequest
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            call = _raw_call(channel, "/reviewlearn.insights.v1.InsightsService/GetTrends")
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer nope"),), grpc.StatusCode.UNAUTHENTICATED),
                (auth("ingest"), grpc.StatusCode.PERMISSION_DENIED),  # insights needs reader
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(garbage, metadata=metadata)
                assert caught.value.code() is code, caught.value.details()
                assert "GetTrendsRequest" not in (caught.value.details() or "")
            # An authorised caller does get its message decoded, and told it is not valid.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(garbage, metadata=auth("reader"))
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(caught.value).reason == "UNDECODABLE_REQUEST"
    finally:
        await host.stop(grace=0)


async def test_two_authorization_headers_are_unauthenticated() -> None:
    host, _ = await start_probe()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = insights_pb2_grpc.InsightsServiceStub(channel)
            for metadata in (
                (*auth("reader"), ("authorization", "Bearer not-a-token")),
                (("authorization", "Bearer not-a-token"), *auth("reader")),
                (*auth("reader"), *auth("operator")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetTeamMetrics(
                        insights_pb2.GetTeamMetricsRequest(), metadata=metadata
                    )
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
                assert error_info(caught.value).reason == "TOKEN_INVALID"
            response = await stub.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(), metadata=auth("reader")
            )
            assert response.from_cache is True
    finally:
        await host.stop(grace=0)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_answers_v1_and_v1alpha(version: str) -> None:
    host, _ = await start_probe()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            # v1 and v1alpha messages are the same on the wire, so one pair of classes does.
            info = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="reviewlearn.insights.v1.InsightsService"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol=f"grpc.reflection.{version}.ServerReflection"
                ),
            ]
            responses = [response async for response in info(iter(requests))]
    finally:
        await host.stop(grace=0)
    names = {s.name for s in responses[0].list_services_response.service}
    assert {
        "reviewlearn.insights.v1.InsightsService",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    for response in responses[1:]:
        assert response.WhichOneof("message_response") == "file_descriptor_response"
        assert response.file_descriptor_response.file_descriptor_proto


def test_the_default_message_size_fits_the_largest_legitimate_request_with_margin() -> None:
    """10,000 findings of ~2 KiB (the sizing in ServiceSettings.max_message_bytes) fit 1.5×."""
    finding = common_pb2.FindingInput(
        client_finding_id="b" * 40,
        rule_id="r" * 60,
        category="security",
        severity=common_pb2.SEVERITY_HIGH,
        confidence=0.5,
        file_path="p" * 200,
        line_start=100,
        line_end=120,
        title="t" * 150,
        message="m" * 600,
        suggested_fix="s" * 400,
        code_context="c" * 500,
    )
    largest = feedback_pb2.RecordFindingsRequest(
        request_id="x" * 40,
        repository_url="u" * 80,
        team="t" * 20,
        pull_request=1,
        head_commit="h" * 40,
        findings=[finding] * Limits().max_findings_per_request,
    )
    default = ServiceSettings().max_message_bytes
    assert largest.ByteSize() * 1.5 <= default < 64 * 1024 * 1024
