"""Builds and runs the grpc.aio server every service uses: health, reflection, interceptors,
limits from settings, the HTTP side port, and a graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from reviewlearn.common.v1 import common_pb2

from shared.auth import Role, TokenRegistry
from shared.heartbeat.stats import RpcStats
from shared.http_side import HealthReport, HttpRoute, SidePort
from shared.rpc.interceptors import AuthInterceptor, ErrorInterceptor, TelemetryInterceptor
from shared.rpc.reflection import enable_reflection
from shared.settings import ServiceSettings

log = logging.getLogger("reviewlearn.server")


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """grpcio-health-checking's servicer, plus ``List`` (added to grpc.health.v1 later), which
    it leaves to the generated base: that raises NotImplementedError, an INTERNAL to callers."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for name, status in dict(self._server_status).items():
            response.statuses[name].status = status
        return response


_ROLE_OF_OPTION = {
    common_pb2.ROLE_INGEST: Role.INGEST,
    common_pb2.ROLE_READER: Role.READER,
    common_pb2.ROLE_OPERATOR: Role.OPERATOR,
}


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to mount: its descriptor (for reflection, health and roles) and registrar."""

    descriptor: ServiceDescriptor
    register: Callable[[grpc.aio.Server], None]


def method_roles(descriptors: Iterable[ServiceDescriptor]) -> dict[str, Role]:
    """``/pkg.Service/Method`` → the role its ``required_role`` option declares."""
    roles: dict[str, Role] = {}
    for service in descriptors:
        for method in service.methods:
            option = method.GetOptions().Extensions[common_pb2.required_role]
            if option in _ROLE_OF_OPTION:
                roles[f"/{service.full_name}/{method.name}"] = _ROLE_OF_OPTION[option]
    return roles


class RpcHost:
    """One service's gRPC server plus its side port."""

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        bindings: Sequence[ServiceBinding],
        tokens: TokenRegistry,
        health_report: HealthReport,
        rpc_stats: RpcStats | None = None,
        http_routes: Mapping[str, HttpRoute] | None = None,
    ) -> None:
        self._settings = settings
        self._rpc_stats = rpc_stats
        self._bindings = list(bindings)
        self._tokens = tokens
        self._health = HealthServicer()
        self._side = SidePort(
            host=settings.host,
            port=settings.metrics_port,
            health_report=health_report,
            routes=http_routes,
        )
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def metrics_port(self) -> int:
        return self._side.bound_port

    @property
    def service_names(self) -> list[str]:
        return [binding.descriptor.full_name for binding in self._bindings]

    async def start(self) -> None:
        settings = self._settings
        descriptors = [binding.descriptor for binding in self._bindings]
        roles = method_roles(descriptors)
        if self._rpc_stats is not None:
            self._rpc_stats.exclude_from_latency(
                [method for method, role in roles.items() if role is Role.OPERATOR]
            )
        server = grpc.aio.server(
            interceptors=[
                TelemetryInterceptor(service=settings.service_name, stats=self._rpc_stats),
                ErrorInterceptor(domain=f"{settings.service_name}.reviewlearn"),
                AuthInterceptor(tokens=self._tokens, method_roles=roles),
            ],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
                ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
                # Off unless this is one of several workers (reviewlearn serve --workers):
                # then the kernel spreads new connections over the workers sharing the port;
                # otherwise a second server on a port in use must fail, not share it.
                ("grpc.so_reuseport", 0 if settings.worker_index is None else 1),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        for binding in self._bindings:
            binding.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection([*self.service_names, health.SERVICE_NAME], server)
        self.port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
        if self.port == 0:
            raise SystemExit(f"cannot bind gRPC port {settings.host}:{settings.grpc_port}")
        await server.start()
        self._server = server
        await self._side.start()
        for name in ["", *self.service_names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={"fields": {"grpc_port": self.port, "metrics_port": self.metrics_port}},
        )

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self._health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Flips health to NOT_SERVING first, then drains in-flight RPCs within the grace."""
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self._settings.grace_period_seconds if grace is None else grace)
            self._server = None
        await self._side.stop()


class Startable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def run_until_signalled(
    app: Startable, on_started: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Starts the app, waits for SIGTERM or SIGINT, then stops it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    if on_started is not None:
        await on_started()
    freeze_startup_objects()
    await stop.wait()
    log.info("shutting down")
    await app.stop()


def freeze_startup_objects() -> None:
    """Moves what is alive once the server has started (modules, contracts, pools, caches:
    about 120,000 objects) out of the garbage collector's reach.

    A full collection walks every tracked object, and under load one of those walks stalled all
    calls in flight for 100-180 ms, most of RecordFeedback's p99; after the freeze a full
    collection walks only what came later and takes ~5 ms (tests/benchmarks/README.md). Nothing
    leaks: these objects live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


def answer_unimplemented(
    servicer: type[Any], descriptor: ServiceDescriptor, *, pending: str
) -> None:
    """Makes every RPC the servicer does not define answer UNIMPLEMENTED with a clear reason.

    For RPCs whose issue has not landed yet: a clear error, never a fake answer. The generated
    base class would raise a synchronous NotImplementedError, which grpc.aio turns into UNKNOWN.
    """
    from shared.errors import Unimplemented

    for method in descriptor.methods:
        if method.name in vars(servicer):
            continue

        def make(name: str, streaming: bool) -> Callable[..., Any]:
            # A fresh error per call: re-raising one instance would grow its traceback forever.
            def error() -> Unimplemented:
                return Unimplemented(
                    f"{descriptor.full_name}/{name} arrives with {pending}; not implemented yet",
                    reason="NOT_YET_IMPLEMENTED",
                )

            async def not_yet(self: Any, request: Any, context: Any) -> Any:
                raise error()

            async def not_yet_stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
                raise error()
                yield  # makes this an async generator, as a response stream must be

            return not_yet_stream if streaming else not_yet

        setattr(servicer, method.name, make(method.name, method.server_streaming))
