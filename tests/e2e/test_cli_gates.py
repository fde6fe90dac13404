"""`reviewlearn kill-switch` and `reviewlearn gates` as an operator runs them, against running
services (the CLI is a separate process that only speaks gRPC)."""

from __future__ import annotations

import asyncio
import os
import sys

from reviewlearn.control.v1 import control_pb2

from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from tests.conftest import TOKENS_ENV, StartService, auth
from tests.integration.control.conftest import FAST, ControlStub, eventually, start_control


async def cli(*args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWLEARN_")}
    env |= {"REVIEWLEARN_TOKENS": TOKENS_ENV, "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.app",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_the_kill_switch_and_gates_commands(start_service: StartService) -> None:
    control = await start_control(start_service)
    await start_service(
        build_learning, LearningSettings, **{**FAST, "patterns_refresh_seconds": 3600}
    )
    stub = ControlStub(control.channel)

    async def two_replicas() -> bool:
        report = await stub.GetGatePropagation(
            control_pb2.GetGatePropagationRequest(), metadata=auth("reader")
        )
        return len(report.replicas) == 2

    await eventually(two_replicas, what="both replicas heartbeating")
    port = str(control.runtime.port)
    code, output = await cli("kill-switch", "on", "--reason", "drill 3", "--control-port", port)
    assert code == 0, output
    assert "ENGAGED" in output
    assert "learning" in output
    assert "control" in output
    assert "all 2 live replicas applied it" in output
    snapshot = (
        await stub.GetFeatureGates(control_pb2.GetFeatureGatesRequest(), metadata=auth("reader"))
    ).snapshot
    assert snapshot.kill_switch_engaged
    assert snapshot.kill_switch_reason == "drill 3"

    code, output = await cli("gates", "--control-port", port)
    assert code == 0, output
    assert "kill switch ENGAGED" in output
    assert "drill 3" in output
    for feature in ("learning", "ranking", "insights", "batch_jobs"):
        assert feature in output
    assert "rollout: not started" in output

    code, output = await cli("kill-switch", "off", "--reason", "drill over", "--control-port", port)
    assert code == 0, output
    assert "released" in output

    code, output = await cli("kill-switch", "on", "--reason", "  ", "--control-port", port)
    assert code == 2
    assert "--reason" in output
    code, output = await cli("gates", "--control-port", "1")
    assert code == 1
    assert "cannot reach the control service" in output
