"""``reviewlearn up`` as a new user runs it: embedded database, four services, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

SERVICES = ("feedback", "learning", "insights", "control")


async def _serving_and_listed(port: int, service: str) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(
                service=f"reviewlearn.{service}.v1.{service.title()}Service"
            )
        )
        names: list[str] = []
        async for response in reflection_pb2_grpc.ServerReflectionStub(
            channel
        ).ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
            names = [s.name for s in response.list_services_response.service]
    return (
        health.status == health_pb2.HealthCheckResponse.SERVING
        and f"reviewlearn.{service}.v1.{service.title()}Service" in names
    )


def test_up_starts_everything_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    grpc_ports = {name: free_port() for name in SERVICES}
    metrics_base = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("REVIEWLEARN_") and key != "LEARNING_ENABLED"
    }
    env["REVIEWLEARN_STATE_DIR"] = str(tmp_path / "state")
    command = [
        sys.executable,
        "-m",
        "services.cli.app",
        "up",
        "--metrics-base-port",
        str(metrics_base),
    ]
    for name, port in grpc_ports.items():
        command += [f"--{name}-port", str(port)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 90
        output = ""
        assert process.stdout is not None
        while "Ctrl-C stops everything" not in output:
            line = process.stdout.readline()
            assert line, f"reviewlearn up exited early: {output}"
            output += line
            assert time.monotonic() < deadline, output
        assert "grpcurl -plaintext" in output
        token_file = tmp_path / "state" / "tokens"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert "operator=" in token_file.read_text()
        key_file = tmp_path / "state" / "page-token-key"  # signs page tokens, kept like tokens
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert len(key_file.read_text().strip()) >= 40

        for name, port in grpc_ports.items():
            assert asyncio.run(_serving_and_listed(port, name)), name
        for offset in range(len(SERVICES)):
            response = httpx.get(f"http://127.0.0.1:{metrics_base + offset}/metrics", timeout=5)
            assert response.status_code == 200
            names = {f.name for f in text_string_to_metric_families(response.text)}
            assert "process_resident_memory_bytes" in names
            health = httpx.get(f"http://127.0.0.1:{metrics_base + offset}/healthz", timeout=5)
            assert health.json()["status"] == "healthy"

        descendants = psutil.Process(process.pid).children(recursive=True)
        assert len(descendants) >= 4
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        psutil.wait_procs(descendants, timeout=10)
        alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"left behind: {alive}"
        assert not (tmp_path / "state" / "pgdata" / "postmaster.pid").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
