"""With Redis configured, feedback announces writes over pub/sub and learning folds on them."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from shared.redis_namespace import default_prefix
from tests.conftest import StartService, auth
from tests.integration.feedback.conftest import event, finding_input

pytestmark = pytest.mark.redis


async def test_a_redis_notification_wakes_the_fold(
    start_service: StartService, redis_url: str, database_url: str
) -> None:
    # The poll is ten minutes: only a notification can make this fold happen in time.
    learning_service = await start_service(
        build_learning, LearningSettings, redis_url=redis_url, fold_poll_seconds=600
    )
    feedback_service = await start_service(build_feedback, FeedbackSettings, redis_url=redis_url)
    learning = learning_pb2_grpc.LearningServiceStub(learning_service.channel)
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)

    redis = Redis.from_url(redis_url)
    async with redis.pubsub() as pubsub:
        # In this deployment's namespace: the prefix derived from the database's name.
        await pubsub.subscribe(f"{default_prefix(database_url)}reviewlearn_feedback")
        await asyncio.sleep(0.5)  # the learning service's subscription is in place too
        recorded = await feedback.RecordFindings(
            feedback_pb2.RecordFindingsRequest(
                repository_url="https://git.example.com/acme/redis",
                team="platform",
                pull_request=1,
                head_commit="c",
                findings=[finding_input(0)],
            ),
            metadata=auth("ingest"),
        )
        await feedback.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=event("r-1", recorded.findings[0].finding_id)),
            metadata=auth("ingest"),
        )
        # The feedback service published on Redis (a real message, seen by a second subscriber).
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                break
        assert message is not None
        assert b"findings" in message["data"] or b"events" in message["data"]
    await redis.aclose()

    deadline = asyncio.get_running_loop().time() + 15
    while True:
        metrics = await learning.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
            metadata=auth("reader"),
        )
        if metrics.metrics and metrics.metrics[0].positive == 1:
            break
        assert asyncio.get_running_loop().time() < deadline, "no fold after the Redis notification"
        await asyncio.sleep(0.1)
