"""The HTTP side port: ``/metrics`` for Prometheus and ``/healthz`` as JSON.

Served by prometheus_client's threading WSGI server rather than an async web framework: the
side port handles a scrape every few seconds, and importing aiohttp alone cost a third of a
service's cold start. The health report is async (it queries the database), so the request
thread hands it to the service's event loop and waits for the answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

HealthReport = Callable[[], Coroutine[Any, Any, dict[str, Any]]]
HEALTH_TIMEOUT_SECONDS = 5.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


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
        routes: Mapping[str, HealthReport] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._health_report = health_report
        # Further JSON documents by path (the control service's /health/learning).
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
        if path in self._routes:
            return self._healthz(start_response, self._routes[path])
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    def _healthz(
        self, start_response: StartResponse, build: HealthReport | None = None
    ) -> Iterable[bytes]:
        assert self._loop is not None
        report: dict[str, Any]
        try:
            report = asyncio.run_coroutine_threadsafe(
                (build or self._health_report)(), self._loop
            ).result(timeout=HEALTH_TIMEOUT_SECONDS)
        except Exception as exc:  # a hung or failing check is itself the answer
            report = {"status": "unhealthy", "error": f"{exc.__class__.__name__}: {exc}"}
        status = "503 Service Unavailable" if report.get("status") == "unhealthy" else "200 OK"
        body = json.dumps(report, default=str).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [body]
