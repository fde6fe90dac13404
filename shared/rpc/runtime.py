"""What every service process runs: the engine, the gRPC host, the side port, background tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.failures import is_unavailable
from shared.gates.client import GateClient
from shared.heartbeat.stats import RpcStats
from shared.heartbeat.writer import HeartbeatWriter, default_replica_id
from shared.http_side import HttpRoute
from shared.periodic import Periodic
from shared.rpc.server import RpcHost, ServiceBinding
from shared.settings import ServiceSettings

log = logging.getLogger("reviewlearn.runtime")

HealthCheck = Callable[[], Awaitable[str | None]]
"""Returns None when healthy, else what is wrong."""


class BackgroundTask(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class ServiceRuntime:
    """Starts and stops one service in the right order; builds its health report."""

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        engine: AsyncEngine,
        bindings: Sequence[ServiceBinding],
        health_checks: Mapping[str, HealthCheck] | None = None,
        health_metrics: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        background: Sequence[BackgroundTask] = (),
        cleanups: Sequence[Callable[[], Awaitable[Any]]] = (),
        owns_engine: bool = True,
        gates: GateClient | None = None,
        http_routes: Mapping[str, HttpRoute] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        # Every service applies the gates (and reports the version it applied), even one that
        # never asks them: the control plane confirms propagation over all replicas.
        self.gates = gates or GateClient.from_settings(settings, engine=engine)
        self.rpc_stats = RpcStats()
        self._checks: dict[str, HealthCheck] = {
            "database": self._database_check,
            "gates": self._gates_check,
        }
        self._checks.update(health_checks or {})
        self._health_metrics = health_metrics
        self._background = list(background)
        self._cleanups = list(cleanups)
        self._owns_engine = owns_engine
        self.host = RpcHost(
            settings=settings,
            bindings=bindings,
            tokens=settings.token_registry(),
            health_report=self.health_report,
            rpc_stats=self.rpc_stats,
            http_routes=http_routes,
        )
        self.heartbeat = HeartbeatWriter(
            engine=engine,
            service=settings.service_name,
            replica_id=settings.replica_id or default_replica_id(settings.service_name),
            gates=self.gates,
            stats=self.rpc_stats,
            interval=settings.heartbeat_seconds,
            sample_interval=settings.heartbeat_sample_seconds,
            signals=health_metrics,
        )
        self._started_at = 0.0
        # grpc.health.v1 follows the database: NOT_SERVING while it is unreachable, so that
        # load balancers and Kubernetes' gRPC probes send no traffic to a replica that can only
        # answer UNAVAILABLE.
        self._database_watch = Periodic(
            "health-database", self.refresh_health, interval=settings.health_check_seconds
        )
        self._database_ok = True

    @property
    def port(self) -> int:
        return self.host.port

    @property
    def metrics_port(self) -> int:
        return self.host.metrics_port

    async def start(self) -> None:
        self._started_at = time.monotonic()
        await self.gates.start()
        for task in self._background:
            await task.start()
        await self.host.start()
        await self._database_watch.start()
        await self.heartbeat.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._database_watch.stop()
        await self.host.stop(grace)
        await self.heartbeat.stop()
        for task in reversed(self._background):
            await task.stop()
        await self.gates.stop()
        for cleanup in self._cleanups:
            await cleanup()
        if self._owns_engine:
            await self.engine.dispose()

    async def health_report(self) -> dict[str, Any]:
        components: dict[str, str] = {}
        problems: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                problem = await asyncio.wait_for(check(), timeout=2.0)
            except Exception as exc:
                # The exception names hosts and ports: it goes to the log, never to /healthz,
                # which anyone who can reach the side port may read.
                log.warning("health check %s failed: %s: %s", name, exc.__class__.__name__, exc)
                problem = "timed out" if isinstance(exc, TimeoutError) else "failed (see the log)"
            components[name] = "healthy" if problem is None else "unhealthy"
            if problem is not None:
                problems[name] = problem
        report: dict[str, Any] = {
            "status": "unhealthy"
            if "database" in problems
            else ("degraded" if problems else "healthy"),
            "service": self.settings.service_name,
            "components": components,
            "uptime_seconds": round(time.monotonic() - self._started_at, 1),
            "learning_enabled": self.settings.learning_enabled,
            "replica_id": self.heartbeat.replica_id,
            "gates": self.gates.status(),
        }
        if problems:
            report["problems"] = problems
        if self._health_metrics is not None and "database" not in problems:
            try:
                report["metrics"] = await self._health_metrics()
            except Exception as exc:
                report["metrics_error"] = str(exc)
        return report

    async def refresh_health(self) -> None:
        """Checks the database now and sets gRPC health to match (the periodic watch calls it)."""
        try:
            async with asyncio.timeout(2.0):
                await self._database_check()
            healthy = True
        except Exception as exc:
            healthy = False
            if self._database_ok:
                log.warning("database unreachable, health NOT_SERVING: %s", exc)
        if healthy != self._database_ok:
            self._database_ok = healthy
            await self.host.set_serving(healthy)
            if healthy:
                log.info("database reachable again, health SERVING")

    async def _gates_check(self) -> str | None:
        if not self.gates.stale:
            return None
        status = self.gates.status()
        problem = f"stale: serving gate version {status['version']}"
        if "refreshed_at" in status:
            problem += f" last confirmed {status['refreshed_at']}"
        return problem + (f" ({status['error']})" if "error" in status else "")

    async def _database_check(self) -> str | None:
        try:
            await self._select_one()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # After a database restart the pool still holds connections to the old server; the
            # failure invalidated them, so a second try judges the database, not the pool.
            await self._select_one()
        return None

    async def _select_one(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            await connection.commit()  # not a rollback: transaction_rollback_rate stays honest
