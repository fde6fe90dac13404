"""A whole system as an operator runs it: ``reviewlearn up`` on free ports, against a database of
its own on the test PostgreSQL server (so the per-test table resets of other tests never touch
it), with the test tokens. For the commands that drive a running system (validate contracts,
loadtest) and the API reference's grpcurl examples."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TOKENS_ENV, _create_database, _drop_database, free_port

SERVICES = ("feedback", "learning", "insights", "control")
READY_SECONDS = 120
START_ATTEMPTS = 3


@dataclass(frozen=True)
class LiveSystem:
    database_url: str
    grpc_ports: dict[str, int]
    metrics_ports: dict[str, int]
    state_dir: Path
    log: Path

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.grpc_ports[service]}"

    def cli_env(self) -> dict[str, str]:
        """The environment a CLI command against this system runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWLEARN_")}
        env.update(
            REVIEWLEARN_DATABASE_URL=self.database_url,
            REVIEWLEARN_TOKENS=TOKENS_ENV,
            REVIEWLEARN_STATE_DIR=str(self.state_dir),
        )
        return env


@pytest.fixture(scope="session")
def live_system(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveSystem]:
    """One system for the whole run, shared by the modules that only add to it."""
    with running_system(postgres_server_url, tmp_path_factory) as system:
        yield system


@pytest.fixture(scope="module")
def fresh_live_system(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveSystem]:
    """A system of the module's own, starting from empty tables (ids start at 1)."""
    with running_system(postgres_server_url, tmp_path_factory) as system:
        yield system


@contextmanager
def running_system(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveSystem]:
    database_url = asyncio.run(_create_database(postgres_server_url))
    try:
        # Ports are chosen free but can be taken before the services bind them (other test
        # runs share the machine): a start that lost that race is retried on new ports.
        for attempt in range(START_ATTEMPTS):
            root = tmp_path_factory.mktemp("live-system")
            system, process = _start(database_url, root)
            if process is not None:
                break
            if attempt == START_ATTEMPTS - 1:
                raise AssertionError(f"reviewlearn up did not start: {system.log.read_text()}")
        assert process is not None
        try:
            yield system
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        asyncio.run(_drop_database(postgres_server_url, database_url))


def _consecutive_free_ports(count: int) -> int:
    """A port whose next ``count - 1`` are free too (``up`` takes one metrics base port)."""
    while True:
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


def _start(database_url: str, root: Path) -> tuple[LiveSystem, subprocess.Popen[bytes] | None]:
    """Starts ``reviewlearn up``; the process once it is ready, None when a port was taken."""
    metrics_base = _consecutive_free_ports(len(SERVICES))
    system = LiveSystem(
        database_url=database_url,
        grpc_ports={name: free_port() for name in SERVICES},
        metrics_ports={name: metrics_base + i for i, name in enumerate(SERVICES)},
        state_dir=root / "state",
        log=root / "up.log",
    )
    command = [sys.executable, "-m", "services.cli.app", "up", "--metrics-base-port"]
    command.append(str(metrics_base))
    for name, port in system.grpc_ports.items():
        command += [f"--{name}-port", str(port)]
    env = system.cli_env()
    env.pop("LEARNING_ENABLED", None)
    # Small pools: the test server's 100 connections are shared with the rest of the suite.
    env.update(REVIEWLEARN_DB_POOL_SIZE="3", REVIEWLEARN_DB_MAX_OVERFLOW="3")
    env["REVIEWLEARN_GRACE_PERIOD_SECONDS"] = "1"  # nothing to drain when the tests are done
    # The scheduler would run every job family shortly after start and write while the tests
    # compare the database before and after a check.
    env.update(REVIEWLEARN_JOB_SCHEDULER_ENABLED="false")
    # A file, not a pipe: the services inherit it and would block once a pipe's buffer filled.
    with system.log.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_SECONDS
    while "Ctrl-C stops everything" not in system.log.read_text():
        if process.poll() is not None:
            output = system.log.read_text()
            assert "Address already in use" in output or "cannot bind" in output, output
            return system, None
        assert time.monotonic() < deadline, system.log.read_text()
        time.sleep(0.2)
    return system, process
