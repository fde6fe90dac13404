"""``reviewlearn serve <service> --workers N``: N processes of one service behind one port.

One Python process serves one core (the GIL), so a pod with more CPU runs several workers: each
is ``python -m services.<name>`` with its own event loop, database pool and background tasks,
binding the same gRPC port with SO_REUSEPORT (the kernel spreads new connections over them).
This process only supervises:

- it starts the workers (each dies with it, ``PR_SET_PDEATHSIG``), and stops them all — SIGTERM,
  which each worker answers with its own graceful drain, then SIGKILL after the grace — when it
  is told to stop or when any worker exits (the pod restarts whole, as after a crash);
- worker ``i`` serves its side port at ``metrics_port + 1 + i``; this process serves
  ``metrics_port`` itself: ``/metrics`` is every worker's scrape merged, each sample labelled
  ``worker="i"`` (one scrape shows all workers), and ``/healthz`` is healthy when every worker is,
  with each worker's report inside.

gRPC health needs nothing here: whichever worker a probe reaches answers for itself, and all of
them turn NOT_SERVING on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import typer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from rich.console import Console

from services.cli.supervisor import (
    DEFAULT_GRPC_PORTS,
    DEFAULT_METRICS_PORTS,
    SERVICES,
    first_to_exit,
    spawn_service,
    stop_processes,
)
from shared.settings import ServiceSettings, port_field

log = logging.getLogger("reviewlearn.workers")

SCRAPE_TIMEOUT_SECONDS = 3.0
# Beyond the workers' own drain (REVIEWLEARN_GRACE_PERIOD_SECONDS): their shutdown after it.
STOP_MARGIN_SECONDS = 5.0


def worker_settings(service: str) -> ServiceSettings:
    """This service's host, ports, workers and grace, read as the service itself reads them."""

    class Ports(ServiceSettings):
        grpc_port: int = port_field(service, DEFAULT_GRPC_PORTS[service], "GRPC")
        metrics_port: int = port_field(service, DEFAULT_METRICS_PORTS[service], "METRICS")

    return Ports()


@dataclass
class Worker:
    index: int
    metrics_port: int
    process: asyncio.subprocess.Process


@dataclass
class WorkerPool:
    """Starts, watches and stops the workers of one service."""

    service: str
    settings: ServiceSettings
    workers: int
    pool: list[Worker] = field(default_factory=list)

    def worker_environment(self, index: int) -> dict[str, str]:
        env = {
            **os.environ,
            "REVIEWLEARN_WORKER_INDEX": str(index),
            f"REVIEWLEARN_{self.service.upper()}_GRPC_PORT": str(self.settings.grpc_port),
            f"REVIEWLEARN_{self.service.upper()}_METRICS_PORT": str(
                self.settings.metrics_port + 1 + index
            ),
        }
        # A replica id given to the pod (its name) would be the same in every worker, and the
        # control plane counts replicas by heartbeat: each worker gets its own.
        if self.settings.replica_id:
            env["REVIEWLEARN_REPLICA_ID"] = f"{self.settings.replica_id}-w{index}"
        return env

    async def start(self) -> None:
        for index in range(self.workers):
            process = await spawn_service(self.service, self.worker_environment(index))
            self.pool.append(Worker(index, self.settings.metrics_port + 1 + index, process))

    async def wait_for_exit(self) -> Worker:
        exited = await first_to_exit([worker.process for worker in self.pool])
        return next(worker for worker in self.pool if worker.process is exited)

    async def stop(self) -> None:
        await stop_processes(
            [worker.process for worker in self.pool],
            self.settings.grace_period_seconds + STOP_MARGIN_SECONDS,
        )


# ------------------------------------------------------------------------- the side port


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


class MergedScrape(Collector):
    """The workers' metric families merged, every sample labelled with its worker."""

    def __init__(self, scrapes: Mapping[int, str]) -> None:
        self._scrapes = scrapes

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, text in sorted(self._scrapes.items()):
            for family in text_string_to_metric_families(text):
                target = merged.get(family.name)
                if target is None:
                    target = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = target
                for sample in family.samples:
                    target.add_sample(
                        sample.name,
                        {**sample.labels, "worker": str(index)},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
        yield from merged.values()


def merge_scrapes(scrapes: Mapping[int, str]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedScrape(scrapes))
    return generate_latest(registry)


class AggregatePort:
    """``/metrics`` and ``/healthz`` of all workers on the service's own side port."""

    def __init__(self, *, host: str, port: int, workers: Iterable[Worker]) -> None:
        self._host = host
        self._port = port
        self._workers = list(workers)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._fetcher = ThreadPoolExecutor(max_workers=max(len(self._workers), 1))

    def _gather(self, path: str) -> dict[int, tuple[int, bytes] | None]:
        def one(worker: Worker) -> tuple[int, bytes] | None:
            try:
                return _fetch(f"http://{self._host}:{worker.metrics_port}{path}")
            except OSError as exc:
                log.warning("worker %d side port: %s", worker.index, exc)
                return None

        answers = self._fetcher.map(one, self._workers)
        return {worker.index: answer for worker, answer in zip(self._workers, answers, strict=True)}

    def _metrics(self) -> tuple[str, bytes, str]:
        scrapes = {
            index: answer[1].decode()
            for index, answer in self._gather("/metrics").items()
            if answer is not None and answer[0] == 200
        }
        return "200 OK", merge_scrapes(scrapes), CONTENT_TYPE_LATEST

    def _healthz(self) -> tuple[str, bytes, str]:
        reports: list[dict[str, Any]] = []
        healthy = True
        for index, answer in sorted(self._gather("/healthz").items()):
            if answer is None:
                healthy = False
                reports.append({"worker": index, "status": "unreachable"})
                continue
            status, body = answer
            healthy = healthy and status == 200
            try:
                report = json.loads(body)
            except ValueError:
                report = {"status": "unreadable"}
            reports.append({"worker": index, **report})
        statuses = {report.get("status") for report in reports}
        overall = "healthy" if statuses == {"healthy"} else ("unhealthy" if not healthy else
                                                             "degraded")  # fmt: skip
        body = json.dumps({"status": overall, "workers": reports}, indent=2).encode()
        return ("200 OK" if healthy else "503 Service Unavailable"), body, "application/json"

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            status, body, content_type = self._metrics()
        elif path == "/healthz":
            status, body, content_type = self._healthz()
        else:
            status, body, content_type = "404 Not Found", b"not found\n", "text/plain"
        start_response(status, [("Content-Type", content_type)])
        return [body]

    def start(self) -> None:
        self._server = make_server(
            self._host, self._port, self._app, ThreadingWSGIServer, handler_class=_Quiet
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="workers-side-port", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._fetcher.shutdown(wait=False, cancel_futures=True)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


# ---------------------------------------------------------------------------------- main


async def run_workers(service: str, settings: ServiceSettings, workers: int) -> int:
    """Runs the workers until SIGTERM/SIGINT or until one exits; the exit code to return."""
    if settings.grpc_port == 0:
        raise SystemExit("workers share one gRPC port: set a fixed port, not 0")
    pool = WorkerPool(service, settings, workers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await pool.start()
    side = AggregatePort(host=settings.host, port=settings.metrics_port, workers=pool.pool)
    side.start()
    log.info(
        "workers started",
        extra={"fields": {"service": service, "workers": workers, "port": settings.grpc_port}},
    )
    exited = asyncio.ensure_future(pool.wait_for_exit())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if exited.done():
            worker = exited.result()
            code = worker.process.returncode or 1
            log.error("worker %d exited with code %s; stopping the others", worker.index, code)
    finally:
        for task in (exited, stopping):
            task.cancel()
        await pool.stop()
        side.stop()
    return code


def serve_command(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")],
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes sharing the port (default REVIEWLEARN_WORKERS)."
        ),
    ] = None,
) -> None:
    if service not in SERVICES:
        Console(stderr=True).print(
            f"[red]unknown service {service!r}; choose one of {', '.join(SERVICES)}[/red]"
        )
        raise typer.Exit(2)
    settings = worker_settings(service)
    count = workers or settings.workers
    if count > 1:
        raise typer.Exit(asyncio.run(run_workers(service, settings, count)))
    # exec, so the service is PID 1's direct child and receives SIGTERM itself.
    os.execv(sys.executable, [sys.executable, "-m", f"services.{service}"])
