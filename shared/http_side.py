"""The HTTP side port: ``/metrics`` for Prometheus and ``/healthz`` as JSON."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

HealthReport = Callable[[], Awaitable[dict[str, Any]]]


class SidePort:
    """A small aiohttp server; its report callback decides the /healthz status code."""

    def __init__(self, *, host: str, port: int, health_report: HealthReport) -> None:
        self._host = host
        self._port = port
        self._health_report = health_report
        self._runner: web.AppRunner | None = None
        self.bound_port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        report = await self._health_report()
        status = 503 if report.get("status") == "unhealthy" else 200
        return web.Response(
            text=json.dumps(report, default=str), status=status, content_type="application/json"
        )
