"""``reviewlearn jobs run`` / ``jobs list`` as a CronJob runs them: the exit code follows the
outcome (a failed job fails the Kubernetes Job)."""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from tests.conftest import TOKENS_ENV, StartService


async def cli(*args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWLEARN_")}
    env["REVIEWLEARN_TOKENS"] = TOKENS_ENV
    env["COLUMNS"] = "200"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.app",
        "jobs",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_jobs_run_exits_non_zero_when_a_job_failed_and_list_shows_the_history(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    learning = await start_service(
        build_learning,
        LearningSettings,
        insights_address="127.0.0.1:1",  # nothing listens: the insights job fails
        insights_timeout_seconds=2.0,
        job_retry_initial_seconds=0.01,
        job_retry_max_seconds=0.02,
        job_retry_jitter_seconds=0.0,
    )
    port = str(learning.runtime.port)
    code, output = await cli(
        "run", "hourly", "--job", "validate_data_integrity", "--learning-port", port
    )
    assert code == 0, output
    assert "validate_data_integrity" in output
    assert "succeeded" in output
    code, output = await cli("run", "hourly", "--job", "calculate_roi", "--learning-port", port)
    assert code == 1, output
    assert "failed" in output
    assert "calculate_roi" in output
    # Run again in the same hour: nothing runs, and the recorded failure still fails the Job.
    code, output = await cli("run", "hourly", "--job", "calculate_roi", "--learning-port", port)
    assert code == 1, output
    assert "already ran" in output
    code, output = await cli("list", "--learning-port", port)
    assert code == 0, output
    assert "calculate_roi" in output
    assert "validate_data_integrity" in output
    code, output = await cli("run", "hourly", "--learning-port", "1")
    assert code == 2
    assert "cannot reach the learning service" in output
