"""Runs the four services as child processes and stops them all together.

Children get ``PR_SET_PDEATHSIG`` so that even a SIGKILL of the supervisor leaves no orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("feedback", "learning", "insights", "control")
DEFAULT_GRPC_PORTS = {"feedback": 50051, "learning": 50052, "insights": 50053, "control": 50054}
DEFAULT_METRICS_PORTS = {"feedback": 9101, "learning": 9102, "insights": 9103, "control": 9104}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def spawn_service(name: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """``python -m services.<name>`` as a child that dies with this process."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"services.{name}", env=env, preexec_fn=_die_with_parent
    )


async def first_to_exit(
    processes: Sequence[asyncio.subprocess.Process],
) -> asyncio.subprocess.Process:
    waits = {asyncio.ensure_future(process.wait()): process for process in processes}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[next(iter(done))]


async def stop_processes(
    processes: Sequence[asyncio.subprocess.Process], grace_seconds: float
) -> None:
    """SIGTERM to all at once (each drains in parallel), then SIGKILL to any still running
    after the grace."""
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    waits = [asyncio.ensure_future(process.wait()) for process in processes]
    if waits:
        # One deadline for all: waiting for each in turn would give N hung children N graces.
        await asyncio.wait(waits, timeout=grace_seconds)
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await asyncio.gather(*waits)


@dataclass
class ChildService:
    name: str
    grpc_port: int
    metrics_port: int
    process: asyncio.subprocess.Process
    ready_seconds: float = 0.0


@dataclass
class Supervisor:
    """Starts children with a shared environment; stops them with SIGTERM, then SIGKILL."""

    env: Mapping[str, str]
    host: str = "127.0.0.1"
    grace_seconds: float = 15.0
    children: list[ChildService] = field(default_factory=list)

    async def start(self, grpc_ports: Mapping[str, int], metrics_ports: Mapping[str, int]) -> None:
        for name in SERVICES:
            env = {
                **os.environ,
                **self.env,
                f"REVIEWLEARN_{name.upper()}_GRPC_PORT": str(grpc_ports[name]),
                f"REVIEWLEARN_{name.upper()}_METRICS_PORT": str(metrics_ports[name]),
            }
            process = await spawn_service(name, env)
            self.children.append(ChildService(name, grpc_ports[name], metrics_ports[name], process))

    async def wait_until_serving(self, limit_seconds: float = 60.0) -> None:
        """Polls grpc.health.v1 until every service is SERVING; fails fast if a child exits."""
        started = time.monotonic()
        pending = list(self.children)
        while pending:
            for child in list(pending):
                if child.process.returncode is not None:
                    raise RuntimeError(
                        f"the {child.name} service exited with code {child.process.returncode} "
                        "before it was ready; its log is above"
                    )
                if await _is_serving(self.host, child.grpc_port):
                    child.ready_seconds = time.monotonic() - started
                    pending.remove(child)
            if time.monotonic() - started > limit_seconds:
                names = ", ".join(c.name for c in pending)
                raise TimeoutError(f"not serving after {limit_seconds:.0f}s: {names}")
            await asyncio.sleep(0.1)

    async def wait_for_exit(self) -> ChildService:
        """Returns the first child that exits."""
        exited = await first_to_exit([child.process for child in self.children])
        return next(child for child in self.children if child.process is exited)

    async def stop(self) -> None:
        await stop_processes([child.process for child in self.children], self.grace_seconds)


async def _is_serving(host: str, port: int) -> bool:
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=0.5
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
