"""The HTTP side port: ``/metrics`` for Prometheus, ``/healthz`` as JSON, and any routes a service
adds (the insights dashboard).

Served by prometheus_client's threading WSGI server rather than an async web framework: the
side port handles a scrape every few seconds, and importing aiohttp alone cost a third of a
service's cold start. The health report is async (it queries the database), so the request
thread hands it to the service's event loop and waits for the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger("reviewlearn.health")

HealthReport = Callable[[], Coroutine[Any, Any, dict[str, Any]]]
HEALTH_TIMEOUT_SECONDS = 5.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
ROUTE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


HttpRoute = Callable[[Mapping[str, list[str]]], Coroutine[Any, Any, HttpResponse]]
"""An extra GET route: called on the service's event loop with the parsed query string."""

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log; access logs are not kept."""


class SidePort:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        health_report: HealthReport,
        routes: Mapping[str, HttpRoute] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._health_report = health_report
        self._routes = dict(routes or {})
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metrics_app = make_wsgi_app(REGISTRY)
        self.bound_port = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = make_server(
            self._host, self._port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.bound_port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="side-port", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        if self._server is not None:
            server = self._server
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            self._server = None

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return self._healthz(start_response)
        route = self._routes.get(path)
        if route is not None:
            return self._route(route, environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        known = ", ".join(["/metrics", "/healthz", *self._routes])
        return [f"not found: try {known}\n".encode()]

    def _route(
        self, route: HttpRoute, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        assert self._loop is not None
        started = time.perf_counter()
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        try:
            response = asyncio.run_coroutine_threadsafe(route(query), self._loop).result(
                timeout=ROUTE_TIMEOUT_SECONDS
            )
        except Exception as exc:
            response = HttpResponse(
                500, f"internal error: {exc.__class__.__name__}\n".encode(), "text/plain"
            )
        # Server time (W3C Server-Timing): what the page cost here, without the network.
        timing = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Server-Timing", timing),
            *response.headers,
        ]
        start_response(f"{response.status} {_REASONS.get(response.status, 'Status')}", headers)
        return [response.body]

    def _healthz(self, start_response: StartResponse) -> Iterable[bytes]:
        assert self._loop is not None
        report: dict[str, Any]
        try:
            report = asyncio.run_coroutine_threadsafe(self._health_report(), self._loop).result(
                timeout=HEALTH_TIMEOUT_SECONDS
            )
        except Exception as exc:  # a hung or failing check is itself the answer
            log.warning("health report failed: %s: %s", exc.__class__.__name__, exc)
            problem = "timed out" if isinstance(exc, TimeoutError) else "failed (see the log)"
            report = {"status": "unhealthy", "error": f"health report {problem}"}
        status = "503 Service Unavailable" if report.get("status") == "unhealthy" else "200 OK"
        body = json.dumps(report, default=str).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [body]
