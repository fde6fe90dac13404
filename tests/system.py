"""The four services as real processes (``reviewlearn serve <service>``) on free ports.

What the cross-service and fault suites drive: each service is its own operating-system process
against a given PostgreSQL database (and Redis, when given), reached only through its public
RPCs, the way the bot, the CronJobs and grpcurl reach it. A service can be killed with SIGKILL
and started again on the same ports; its log goes to a file that a failure prints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cli.supervisor import SERVICES
from tests.conftest import TOKENS_ENV
from tests.processes import free_port, orphan_proof
from tests.processes import private_redis as private_redis  # with the system it runs beside

START_LIMIT_SECONDS = 90.0

# Quick background loops, so that what the tests wait for happens within a second or two.
FAST_LOOPS = {
    "REVIEWLEARN_FOLD_POLL_SECONDS": "0.5",
    "REVIEWLEARN_MODEL_REFRESH_SECONDS": "1",
    "REVIEWLEARN_PATTERNS_REFRESH_SECONDS": "3",
    "REVIEWLEARN_HEALTH_CHECK_SECONDS": "0.5",
    "REVIEWLEARN_GATE_POLL_SECONDS": "1",
    "REVIEWLEARN_HEARTBEAT_SECONDS": "0.5",
    # The insights fold runs when a test asks for it (RefreshInsights "rollups").
    "REVIEWLEARN_ROLLUP_POLL_SECONDS": "3600",
    "REVIEWLEARN_PATHS_REFRESH_SECONDS": "3600",
    "REVIEWLEARN_GRACE_PERIOD_SECONDS": "1",
    # A failing batch job retries at once instead of after 5 s, 10 s, ...
    "REVIEWLEARN_JOB_RETRY_INITIAL_SECONDS": "0.05",
    "REVIEWLEARN_JOB_RETRY_JITTER_SECONDS": "0",
    "REVIEWLEARN_LOG_LEVEL": "WARNING",
}


@dataclass
class ServiceProcess:
    name: str
    grpc_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class System:
    """Four service processes sharing one database, tokens and (optionally) Redis."""

    database_url: str
    log_dir: Path
    redis_url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            self.services[name] = ServiceProcess(
                name, free_port(), free_port(), self.log_dir / f"{name}.log"
            )

    def address(self, name: str) -> str:
        return self.services[name].address

    def start(self, *names: str) -> None:
        """Starts the named services (all when none is named) and waits until they serve."""
        chosen = names or SERVICES
        for name in chosen:
            self.spawn(name)
        for name in chosen:
            self.wait_serving(name)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook runs, in-flight work is lost as in a crash."""
        service = self.services[name]
        if service.running():
            assert service.process is not None
            service.process.send_signal(signal.SIGKILL)
            service.process.wait(timeout=30)

    def stop(self) -> None:
        for service in self.services.values():
            if service.running():
                assert service.process is not None
                with contextlib.suppress(ProcessLookupError):
                    service.process.send_signal(signal.SIGTERM)
        for service in self.services.values():
            if service.process is None:
                continue
            try:
                service.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()

    def wait_serving(self, name: str, limit_seconds: float = START_LIMIT_SECONDS) -> float:
        """Waits until grpc.health.v1 says SERVING; returns the seconds it took."""
        service = self.services[name]
        started = time.monotonic()
        while True:
            if not service.running():
                assert service.process is not None
                raise RuntimeError(
                    f"the {name} service exited with {service.process.returncode}:\n"
                    f"{self.log_tail(name)}"
                )
            if health(service.address) == health_pb2.HealthCheckResponse.SERVING:
                return time.monotonic() - started
            if time.monotonic() - started > limit_seconds:
                raise TimeoutError(f"{name} not serving after {limit_seconds:.0f}s")
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.services[name].log_path
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def spawn(self, name: str) -> None:
        """Starts a service's process without waiting for it. Call it from the thread that
        lives as long as the test session (never a worker thread): PR_SET_PDEATHSIG fires
        when the *thread* that forked the child ends."""
        service = self.services[name]
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("REVIEWLEARN_") and key != "LEARNING_ENABLED"
        }
        env.update(FAST_LOOPS)
        env.update(
            {
                "REVIEWLEARN_DATABASE_URL": self.database_url,
                "REVIEWLEARN_TOKENS": TOKENS_ENV,
                "REVIEWLEARN_HOST": "127.0.0.1",
                "REVIEWLEARN_LOG_JSON": "false",
                # Learning's insights jobs call this system's insights, not a default port.
                "REVIEWLEARN_INSIGHTS_ADDRESS": self.address("insights"),
                f"REVIEWLEARN_{service.name.upper()}_GRPC_PORT": str(service.grpc_port),
                f"REVIEWLEARN_{service.name.upper()}_METRICS_PORT": str(service.metrics_port),
            }
        )
        if self.redis_url:
            env["REVIEWLEARN_REDIS_URL"] = self.redis_url
        env.update(self.env)
        log = service.log_path.open("ab")
        service.process = subprocess.Popen(
            orphan_proof([sys.executable, "-m", "services.cli.app", "serve", service.name]),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        service.starts += 1


def fold_equals_recompute(system: System) -> subprocess.CompletedProcess[str]:
    """The learning service's own check (what ``reviewlearn validate`` runs): are the folded
    counts what a full recompute from the feedback log gives? Exit code 0 when they are."""
    return subprocess.run(
        [sys.executable, "-m", "services.learning.validate"],
        env={**os.environ, "REVIEWLEARN_DATABASE_URL": system.database_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def health(address: str, service: str = "") -> int:
    """The grpc.health.v1 status of a server, or -1 when it does not answer."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.RpcError:
            return -1
    return int(response.status)


@contextlib.contextmanager
def running_system(
    database_url: str, log_dir: Path, *, redis_url: str | None = None, **env: str
) -> Iterator[System]:
    system = System(database_url, log_dir, redis_url, env)
    try:
        system.start()
        yield system
    finally:
        system.stop()
