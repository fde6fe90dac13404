"""Fixtures of the control-plane tests: the control service and helpers to call it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from sqlalchemy.engine import make_url

from services.control.server import build_server as build_control
from services.control.settings import ControlSettings
from shared.rpc.runtime import ServiceRuntime
from tests.conftest import TOKENS_ENV, RunningService, StartService, auth
from tests.proxy import TcpProxy

ControlStub = control_pb2_grpc.ControlServiceStub
REPO = "https://git.example.com/acme/api"
FAST = {"gate_poll_seconds": 0.5, "heartbeat_seconds": 0.2, "heartbeat_sample_seconds": 0.5}


async def start_control(start_service: StartService, **overrides: object) -> RunningService:
    return await start_service(build_control, ControlSettings, **{**FAST, **overrides})


@pytest.fixture
async def control(start_service: StartService) -> RunningService:
    return await start_control(start_service)


@pytest.fixture
def stub(control: RunningService) -> ControlStub:
    return ControlStub(control.channel)


async def kill_switch(
    stub: ControlStub, engaged: bool, reason: str = "incident 42", **fields: object
) -> control_pb2.SetKillSwitchResponse:
    return await stub.SetKillSwitch(
        control_pb2.SetKillSwitchRequest(engaged=engaged, reason=reason, **fields),  # type: ignore[arg-type]
        metadata=auth("operator"),
    )


async def set_gate(
    stub: ControlStub,
    feature: common_pb2.Feature.ValueType,
    enabled: bool,
    repository_url: str = "",
    reason: str = "test",
    **fields: object,
) -> control_pb2.SetFeatureGateResponse:
    return await stub.SetFeatureGate(
        control_pb2.SetFeatureGateRequest(
            feature=feature,
            enabled=enabled,
            repository_url=repository_url,
            reason=reason,
            **fields,  # type: ignore[arg-type]
        ),
        metadata=auth("operator"),
    )


async def evaluate(
    stub: ControlStub, feature: common_pb2.Feature.ValueType, repository_url: str = REPO
) -> control_pb2.EvaluateFeatureResponse:
    return await stub.EvaluateFeature(
        control_pb2.EvaluateFeatureRequest(feature=feature, repository_url=repository_url),
        metadata=auth("reader"),
    )


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of an INVALID_ARGUMENT answer, by field."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


def reason_of(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    raise AssertionError("no ErrorInfo detail")


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} did not happen in {within}s"
        await asyncio.sleep(0.02)


@dataclass
class CutOffReplica:
    """A control replica whose only way to PostgreSQL is a proxy the test can cut."""

    runtime: ServiceRuntime
    stub: ControlStub
    proxy: TcpProxy


@contextlib.asynccontextmanager
async def control_behind_proxy(
    database_url: str, **overrides: object
) -> AsyncIterator[CutOffReplica]:
    url = make_url(database_url)
    proxy = TcpProxy(target_host=url.host or "127.0.0.1", target_port=url.port or 5432)
    await proxy.start()
    runtime = build_control(
        ControlSettings(
            database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
            tokens=TOKENS_ENV,
            grpc_port=0,
            metrics_port=0,
            **{**FAST, **overrides},  # type: ignore[arg-type]
        )
    )
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            yield CutOffReplica(runtime, ControlStub(channel), proxy)
    finally:
        await runtime.stop(grace=0)
        await proxy.cut()
