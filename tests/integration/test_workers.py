"""``reviewlearn serve feedback --workers 2``: two processes on one port, one scrape, one stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc

from services.cli.workers import merge_scrapes
from tests.conftest import TOKENS_ENV, auth, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def _serving(address: str, process: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        assert process.returncode is None, "the workers exited before serving"
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(0.1)
    raise AssertionError("not serving after a minute")


async def test_two_workers_share_the_port_the_scrape_and_the_shutdown(database_url: str) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("REVIEWLEARN_")
    } | {
        "REVIEWLEARN_DATABASE_URL": database_url,
        "REVIEWLEARN_TOKENS": TOKENS_ENV,
        "REVIEWLEARN_FEEDBACK_GRPC_PORT": str(port),
        "REVIEWLEARN_FEEDBACK_METRICS_PORT": str(metrics_port),
        "REVIEWLEARN_GRACE_PERIOD_SECONDS": "1",
        "REVIEWLEARN_LOG_LEVEL": "WARNING",
        "REVIEWLEARN_REPLICA_ID": "pod-a",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.app", "serve", "feedback", "--workers", "2",
        cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        await _serving(address, process)
        # Let both workers come up (the first one serving is enough for the probe above).
        for _ in range(300):
            status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/healthz")
            if status == 200:
                break
            await asyncio.sleep(0.2)
        health = json.loads(body)
        assert status == 200, health
        assert health["status"] == "healthy"
        assert [w["worker"] for w in health["workers"]] == [0, 1]
        assert [w["replica_id"] for w in health["workers"]] == ["pod-a-w0", "pod-a-w1"]

        # New connections are spread over the workers by the kernel: forty channels (each its
        # own connection) reach both with near certainty (a miss has odds of 2 in 10^12).
        for _ in range(40):
            async with grpc.aio.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ListFeedback(
                        feedback_pb2.ListFeedbackRequest(finding_id=1), metadata=auth("reader")
                    )
                assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        calls: dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == "api_request_rate_total" and "ListFeedback" in str(sample.labels):
                    worker = sample.labels["worker"]
                    calls[worker] = calls.get(worker, 0.0) + sample.value
        assert set(calls) == {"0", "1"}, calls
        assert sum(calls.values()) == 40
        pids = [child.pid for child in psutil.Process(process.pid).children()]
        assert len(pids) == 2
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)
    # A graceful stop: every worker drained and exited, and so did the supervisor.
    assert code == 0
    assert not [pid for pid in pids if psutil.pid_exists(pid)]


def test_scrapes_merge_into_one_family_per_metric_with_a_worker_label() -> None:
    scrape = (
        "# HELP calls_total Calls\n# TYPE calls_total counter\n"
        'calls_total{method="a"} 3.0\n'
        "# HELP depth Depth\n# TYPE depth gauge\ndepth 2.0\n"
    )
    merged = merge_scrapes({0: scrape, 1: scrape.replace("3.0", "5.0")}).decode()
    assert merged.count("# TYPE calls_total counter") == 1
    assert 'calls_total{method="a",worker="0"} 3.0' in merged
    assert 'calls_total{method="a",worker="1"} 5.0' in merged
    assert 'depth{worker="1"} 2.0' in merged
