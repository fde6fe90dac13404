"""One huge ranking request must not stall the learning service (the probe's repro)."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2, health_pb2_grpc
from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from tests.conftest import StartService, auth
from tests.integration.learning.test_learning_service import start_learning


def crowded_window(n: int) -> list[common_pb2.FindingInput]:
    """10,000 findings in one file on lines 10-12 whose messages normalise alike."""
    return [
        common_pb2.FindingInput(
            client_finding_id=f"c{i}",
            rule_id=f"rule{i % 50}",
            category="style",
            severity=common_pb2.SEVERITY_LOW,
            confidence=0.5,
            file_path="src/app.py",
            line_start=10 + i % 3,
            line_end=12,
            title="t",
            message=f"msg {i}",
            code_context=f"x = {i}",
        )
        for i in range(n)
    ]


async def test_health_answers_while_a_crowded_request_is_ranked(
    start_service: StartService,
) -> None:
    service = await start_learning(start_service, ranking_threads=1)
    learning = learning_pb2_grpc.LearningServiceStub(service.channel)
    health = health_pb2_grpc.HealthStub(service.channel)
    request = learning_pb2.RankSuggestionsRequest(
        repository_url="https://git.example.com/a/b", findings=crowded_window(10_000)
    )
    ranking = asyncio.ensure_future(
        learning.RankSuggestions(request, metadata=auth("reader"), timeout=120)
    )
    answered_meanwhile = 0
    while not ranking.done():
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        if not ranking.done():
            answered_meanwhile += 1
        await asyncio.sleep(0.01)
    response = await ranking
    # The event loop kept serving while the ranking ran on its worker thread.
    assert answered_meanwhile >= 1
    assert len(response.findings) == 10_000
    shown = [f for f in response.findings if not f.suppressed]
    # Every finding is a near duplicate of the best one: one shown, the rest point at it.
    assert len(shown) == 1
    duplicates = [
        f
        for f in response.findings
        if f.suppression_reason == learning_pb2.SUPPRESSION_REASON_DUPLICATE
    ]
    assert len(duplicates) == 9_999
    assert {f.duplicate_of.index for f in duplicates} == {shown[0].ref.index}
