"""Benchmark fixtures: the servers under test, each in its own process.

The load generator (this pytest process) and the server must not share an interpreter: on a
small machine one event loop would then serve both sides, and the numbers would measure their
contention instead of the server. So the feedback and learning services and the echo ceiling run
as subprocesses, started the way production starts them and stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import math
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_TOKEN = "bench-token"
AUTH = (("authorization", f"Bearer {BENCH_TOKEN}"),)
BENCH_OPERATOR_TOKEN = "bench-operator-token"
OPERATOR_AUTH = (("authorization", f"Bearer {BENCH_OPERATOR_TOKEN}"),)
# What the services accept (shared.settings.max_message_bytes); a client of a 10,000-finding
# ranking needs it too, the answer is larger than gRPC's default 4 MiB.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
LONG_BENCHMARK_DUMP_SECONDS = 900
BENCH_WORKERS = 2


@dataclass(frozen=True)
class ServerProcess:
    name: str
    pid: int
    address: str

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far (all its threads, and its worker
        processes when it runs several)."""
        process = psutil.Process(self.pid)
        total = 0.0
        for member in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = member.cpu_times()
                total += times.user + times.system
        return total


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the value that ``fraction`` of the (sorted) values did not exceed."""
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return sorted_values[rank - 1]


@pytest.fixture
def long_benchmark() -> None:
    """For a benchmark that legitimately runs for minutes: the stack dump comes later.

    pytest's ``faulthandler_timeout`` (two minutes) dumps every thread's stack when a test runs
    longer, which a benchmark on a large database does without hanging. Re-arming the dump
    replaces pytest's timer (faulthandler keeps one); pytest cancels it after the test as usual.
    """
    faulthandler.dump_traceback_later(LONG_BENCHMARK_DUMP_SECONDS, file=sys.stderr)


def _clean_environment() -> dict[str, str]:
    # A developer's own REVIEWLEARN_* settings (a Redis URL, debug logging, other ports) would
    # change what is measured; the benchmark sets every knob it depends on itself.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("REVIEWLEARN_") and key != "LEARNING_ENABLED"
    }


async def _wait_until_serving(name: str, address: str, process: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_SECONDS
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.returncode is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode} before serving "
                    "(its output is above)"
                )
            with contextlib.suppress(grpc.aio.AioRpcError):
                response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if loop.time() > deadline:
                raise TimeoutError(f"{name} is not SERVING on {address} after a minute")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def server_process(
    name: str, args: list[str], *, port: int, env: Mapping[str, str]
) -> AsyncIterator[ServerProcess]:
    """Runs ``python <args>`` from the repository root until the block ends, then stops it.

    The server's output goes to this process's own (logs at WARNING, so it is quiet unless
    something is wrong, and then it is right there in the benchmark's output).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO_ROOT, env=dict(env)
    )
    try:
        address = f"127.0.0.1:{port}"
        await _wait_until_serving(name, address, process)
        yield ServerProcess(name=name, pid=process.pid, address=address)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.fixture
async def feedback_server(database_url: str) -> AsyncIterator[ServerProcess]:
    """``python -m services.feedback`` on the test database, exactly as deployed."""
    port = free_port()
    env = _clean_environment() | {
        "REVIEWLEARN_DATABASE_URL": database_url,
        "REVIEWLEARN_TOKENS": f"ingest={BENCH_TOKEN}",
        "REVIEWLEARN_FEEDBACK_GRPC_PORT": str(port),
        "REVIEWLEARN_FEEDBACK_METRICS_PORT": str(free_port()),
        "REVIEWLEARN_LOG_LEVEL": "WARNING",
        "REVIEWLEARN_GRACE_PERIOD_SECONDS": "1",
    }
    async with server_process("feedback", ["-m", "services.feedback"], port=port, env=env) as s:
        yield s


@pytest.fixture
async def feedback_workers_server(database_url: str) -> AsyncIterator[ServerProcess]:
    """``reviewlearn serve feedback --workers 2``: two processes on one port, as deployed on a
    pod with a CPU limit of 2."""
    port = free_port()
    env = _clean_environment() | {
        "REVIEWLEARN_DATABASE_URL": database_url,
        "REVIEWLEARN_TOKENS": f"ingest={BENCH_TOKEN}",
        "REVIEWLEARN_FEEDBACK_GRPC_PORT": str(port),
        "REVIEWLEARN_FEEDBACK_METRICS_PORT": str(free_port()),
        "REVIEWLEARN_LOG_LEVEL": "WARNING",
        "REVIEWLEARN_GRACE_PERIOD_SECONDS": "1",
        # Half the default pool per worker: the pod holds what one worker would, and the
        # benchmark's servers together stay well within a shared PostgreSQL's connections.
        "REVIEWLEARN_DB_POOL_SIZE": "5",
        "REVIEWLEARN_DB_MAX_OVERFLOW": "5",
    }
    args = ["-m", "services.cli.app", "serve", "feedback", "--workers", str(BENCH_WORKERS)]
    async with server_process("feedback ×2", args, port=port, env=env) as s:
        yield s


@pytest.fixture
async def copy_reference_server(database_url: str) -> AsyncIterator[ServerProcess]:
    """The naive COPY reference (tests/benchmarks/copy_reference.py) on the test database."""
    port = free_port()
    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    args = ["-m", "tests.benchmarks.copy_reference", "--port", str(port), "--database-url", url]
    async with server_process("copy reference", args, port=port, env=_clean_environment()) as s:
        yield s


@pytest.fixture
async def learning_server(database_url: str) -> AsyncIterator[ServerProcess]:
    """``python -m services.learning`` on the test database, exactly as deployed.

    ``BENCH_TOKEN`` is a reader (ranking, metrics), ``BENCH_OPERATOR_TOKEN`` an operator (tuning).
    """
    port = free_port()
    env = _clean_environment() | {
        "REVIEWLEARN_DATABASE_URL": database_url,
        "REVIEWLEARN_TOKENS": f"reader={BENCH_TOKEN},operator={BENCH_OPERATOR_TOKEN}",
        "REVIEWLEARN_LEARNING_GRPC_PORT": str(port),
        "REVIEWLEARN_LEARNING_METRICS_PORT": str(free_port()),
        "REVIEWLEARN_LOG_LEVEL": "WARNING",
        "REVIEWLEARN_GRACE_PERIOD_SECONDS": "1",
    }
    async with server_process("learning", ["-m", "services.learning"], port=port, env=env) as s:
        yield s


@pytest.fixture
async def echo_server() -> AsyncIterator[ServerProcess]:
    """The bare grpc.aio ceiling (tests/benchmarks/echo.py)."""
    port = free_port()
    args = ["-m", "tests.benchmarks.echo", "--port", str(port)]
    async with server_process("echo", args, port=port, env=_clean_environment()) as s:
        yield s


@contextlib.asynccontextmanager
async def insights_server(
    database_url: str, **settings: str
) -> AsyncIterator[tuple[ServerProcess, int]]:
    """``python -m services.insights`` on the test database, exactly as deployed; yields the
    process and its HTTP side port (the dashboard). ``settings`` are extra REVIEWLEARN_* values
    (``cache_ttl_seconds="0"`` turns the cache off)."""
    port, http_port = free_port(), free_port()
    env = _clean_environment() | {
        "REVIEWLEARN_DATABASE_URL": database_url,
        "REVIEWLEARN_TOKENS": f"reader={BENCH_TOKEN},operator={BENCH_OPERATOR_TOKEN}",
        "REVIEWLEARN_INSIGHTS_GRPC_PORT": str(port),
        "REVIEWLEARN_INSIGHTS_METRICS_PORT": str(http_port),
        "REVIEWLEARN_LOG_LEVEL": "WARNING",
        "REVIEWLEARN_GRACE_PERIOD_SECONDS": "1",
    }
    env |= {f"REVIEWLEARN_{name.upper()}": value for name, value in settings.items()}
    async with server_process("insights", ["-m", "services.insights"], port=port, env=env) as s:
        yield s, http_port
