"""Redis down and back under load: every answer stays correct, then the cache's second layer and
pub/sub (gate announcements) work again without a restart of any service."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2

from tests.conftest import auth
from tests.faults.conftest import (
    RPC_TIMEOUT,
    FeedbackLoad,
    Figure,
    Stubs,
    account,
    folded,
    record_findings,
    report,
    start_system,
    until,
)
from tests.integration.feedback.conftest import event, finding_input
from tests.integration.scratch_cluster import ScratchCluster
from tests.processes import RedisServer
from tests.system import System

pytestmark = pytest.mark.faults

DOWN_SECONDS = 3.0


@pytest.fixture(scope="module")
def system(
    cluster: ScratchCluster, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    # No gate polling: after the outage only Redis pub/sub can bring a gate change. The cache
    # retries Redis a second after a failure instead of ten.
    running = start_system(
        cluster,
        tmp_path_factory.mktemp("redis-fault-logs"),
        redis_server,
        REVIEWLEARN_GATE_POLL_SECONDS="3600",
        REVIEWLEARN_REDIS_RETRY_SECONDS="1",
    )
    yield running
    running.stop()


def _scope(team: str) -> common_pb2.Scope:
    return common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=team)


async def _team_counts(stubs: Stubs, team: str, days: int = 30) -> tuple[int, int, int]:
    start = Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(days=days))
    response = await stubs.insights.GetTeamMetrics(
        insights_pb2.GetTeamMetricsRequest(scope=_scope(team), start_time=start),
        metadata=auth("reader"),
        timeout=RPC_TIMEOUT,
    )
    metrics = response.metrics
    return int(metrics.positive), int(metrics.negative), int(metrics.pending)


async def test_redis_down_and_back_answers_stay_correct_and_caches_and_pub_sub_recover(
    system: System, redis_server: RedisServer, stubs: Stubs
) -> None:
    suffix = uuid.uuid4().hex[:8]
    figure = Figure(f"Redis down and back under load ({DOWN_SECONDS:.0f} s)")
    # Team A's numbers are fixed before the outage; team B takes the load through it.
    repository_a, team_a = f"https://git.example.com/ra-{suffix}/api", f"ra-{suffix}"
    repository_b, team_b = f"https://git.example.com/rb-{suffix}/api", f"rb-{suffix}"
    ids_a = await record_findings(stubs, repository_a, team_a, 50, figure.errors)
    await stubs.feedback.BatchRecordFeedback(
        feedback_pb2.BatchRecordFeedbackRequest(
            events=[event(f"ra-{suffix}-{i}", ids_a[i]) for i in range(25)]
            + [
                event(f"ra-{suffix}-{i}", ids_a[i], common_pb2.FEEDBACK_KIND_REJECTED)
                for i in range(25, 35)
            ]
        ),
        metadata=auth("ingest"),
    )
    await folded(stubs, repository_a, 35)
    await stubs.insights.RefreshInsights(
        insights_pb2.RefreshInsightsRequest(request_id=suffix, parts=["rollups"]),
        metadata=auth("operator"),
    )
    expected = (25, 10, 15)
    assert await _team_counts(stubs, team_a) == expected
    redis = Redis.from_url(redis_server.url)
    try:
        assert await redis.dbsize() > 0  # the second cache layer is in use
        ids_b = await record_findings(stubs, repository_b, team_b, 1000, figure.errors)
        load = FeedbackLoad(stubs, f"rb-{suffix}", ids_b, clients=2)
        wrong: list[object] = []
        answered = 0
        reading = asyncio.Event()

        async def read() -> None:
            nonlocal answered
            findings = [finding_input(i) for i in range(10)]
            while not reading.is_set():
                try:
                    counts = await _team_counts(stubs, team_a)
                    if counts != expected:
                        wrong.append(counts)
                    ranked = await stubs.learning.RankSuggestions(
                        learning_pb2.RankSuggestionsRequest(
                            repository_url=repository_a, findings=findings
                        ),
                        metadata=auth("reader"),
                        timeout=RPC_TIMEOUT,
                    )
                    if not ranked.learning_applied or len(ranked.findings) != 10:
                        wrong.append(ranked.not_applied_reason)
                    answered += 2
                except grpc.aio.AioRpcError as exc:
                    figure.errors[exc.code().name] += 1
                await asyncio.sleep(0.05)

        running = [asyncio.ensure_future(load.run()), asyncio.ensure_future(read())]
        await until(lambda: len(load.acknowledged) >= 100)
        answered_before = answered
        redis_server.stop()
        await asyncio.sleep(DOWN_SECONDS)
        answered_while_down = answered - answered_before
        redis_server.start()
        back = time.monotonic()
        await redis.aclose()  # its connection died with the server
        redis = Redis.from_url(redis_server.url)

        # Pub/sub: with polling off, a gate change reaches every replica only through Redis.
        async with grpc.aio.insecure_channel(system.address("control")) as channel:
            control: control_pb2_grpc.ControlServiceAsyncStub = control_pb2_grpc.ControlServiceStub(
                channel
            )
            converged = False
            attempts = 0
            while not converged and time.monotonic() - back < 60:
                attempts += 1
                changed = await control.SetFeatureGate(
                    control_pb2.SetFeatureGateRequest(
                        feature=common_pb2.FEATURE_EXPLORATION,
                        repository_url=repository_b,
                        enabled=attempts % 2 == 0,
                        reason="fault suite",
                        wait_for_replicas=Duration(seconds=5),
                    ),
                    metadata=auth("operator"),
                )
                converged = changed.propagation.converged
            gates_back = time.monotonic() - back
        # The cache: new entries reach Redis again (it came back empty).
        cache_back = None
        for days in range(31, 90):
            assert await _team_counts(stubs, team_a, days) == expected
            if await redis.dbsize() > 0:
                cache_back = time.monotonic() - back
                break
            await asyncio.sleep(0.2)
        load.stop.set()
        reading.set()
        await asyncio.gather(*running)
    finally:
        await redis.aclose()

    acknowledged = set(load.acknowledged)
    await account(figure, system, repository_b, sent=load.sent, acknowledged=acknowledged)
    figure.errors.update(load.errors)
    metric = await folded(stubs, repository_b, len(acknowledged))
    figure.recover_seconds = max(gates_back, cache_back or float("nan"))
    figure.note = (
        f"{answered} answers ({answered_while_down} while Redis was down), "
        f"{len(wrong)} wrong; gates converged by pub/sub {gates_back:.1f} s after Redis was "
        f"back ({attempts} change(s)); cache writes to Redis again after "
        f"{'never' if cache_back is None else f'{cache_back:.1f} s'}"
    )
    report(figure)

    assert wrong == []
    assert answered_while_down > 0
    assert converged
    assert cache_back is not None
    assert figure.errors == Counter()
    assert figure.lost == figure.doubled == 0
    assert metric.positive == len(load.applied)
