"""Two deployments on different databases sharing one Redis database stay apart: neither reads
the other's insights cache entries nor wakes on the other's notifications.

Each deployment's Redis target comes from its settings exactly as the services build theirs
(``RedisTarget.of``), and every part below is the one the services run: the insights cache's
Redis layer, the feedback service's sender, the insights publisher, the shared listener (which
the learning fold, the insights invalidation and the gate client all listen with).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback.notifier import redis_sender
from services.insights.cache import INVALIDATION_CHANNEL, RedisLayer
from shared.notifications import FEEDBACK_CHANNEL, ChannelListener, ChannelPublisher
from shared.redis_namespace import DEFAULT_PREFIX, NamespacedRedis, RedisTarget
from shared.settings import ServiceSettings

pytestmark = pytest.mark.redis


def settings_of(database_url: str, redis_url: str, **extra: str) -> ServiceSettings:
    return ServiceSettings(database_url=database_url, redis_url=redis_url, **extra)


@pytest.fixture
def targets(database_url: str, redis_url: str) -> tuple[RedisTarget, RedisTarget]:
    """Deployment A on the test database, B on another database of the same server (a name of
    this run's own: what an earlier or a parallel run cached under a fixed one is still there)."""
    other = make_url(database_url).set(database=f"reviewlearn_other_{uuid.uuid4().hex[:12]}")
    a = RedisTarget.of(settings_of(database_url, redis_url))
    b = RedisTarget.of(settings_of(other.render_as_string(hide_password=False), redis_url))
    assert a is not None
    assert b is not None
    return a, b


@pytest.fixture
async def clients(
    targets: tuple[RedisTarget, RedisTarget],
) -> AsyncIterator[tuple[NamespacedRedis, NamespacedRedis]]:
    a, b = targets[0].connect(), targets[1].connect()
    yield a, b
    await a.aclose()
    await b.aclose()


def test_the_prefix_comes_from_the_database_unless_set(database_url: str, redis_url: str) -> None:
    name = make_url(database_url).database
    assert RedisTarget.of(settings_of(database_url, redis_url)) == RedisTarget(
        redis_url, f"reviewlearn:{name}:"
    )
    explicit = RedisTarget.of(settings_of(database_url, redis_url, redis_prefix="staging:"))
    assert explicit == RedisTarget(redis_url, "staging:")
    assert RedisTarget.of(ServiceSettings(redis_url=redis_url)) == RedisTarget(
        redis_url, DEFAULT_PREFIX
    )
    assert RedisTarget.of(ServiceSettings(database_url=database_url)) is None


async def test_cache_entries_are_not_shared(
    clients: tuple[NamespacedRedis, NamespacedRedis],
) -> None:
    a, b = clients
    layer_a = RedisLayer(a, timeout=2.0, retry_seconds=1.0)
    layer_b = RedisLayer(b, timeout=2.0, retry_seconds=1.0)
    # The same table and key (team 1, version 1) in both: what insights would write for each.
    key = "team:1:v1:{}"
    await layer_a.put("cached_metrics", key, b"deployment A", 60)
    assert await layer_b.get("cached_metrics", key) is None
    await layer_b.put("cached_metrics", key, b"deployment B", 60)
    assert await layer_a.get("cached_metrics", key) == b"deployment A"
    assert await layer_b.get("cached_metrics", key) == b"deployment B"


class Heard:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def __call__(self, channel: str, payload: str) -> None:
        if payload != "{}":  # the catch-up call after every (re)connection
            self.messages.append((channel, payload))
            self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.messages) < count:
                self.changed.clear()
                await self.changed.wait()


async def test_notifications_are_not_shared(
    database_url: str,
    db_engine: AsyncEngine,
    targets: tuple[RedisTarget, RedisTarget],
    clients: tuple[NamespacedRedis, NamespacedRedis],
) -> None:
    heard = (Heard(), Heard())
    listeners = [
        ChannelListener(
            database_url=database_url,
            redis=target,
            channels=[FEEDBACK_CHANNEL, INVALIDATION_CHANNEL],
            on_notify=on_notify,
        )
        for target, on_notify in zip(targets, heard, strict=True)
    ]
    for listener in listeners:
        await listener.start()
    try:
        async with asyncio.timeout(10):
            for listener in listeners:
                await listener.connected.wait()
        a, b = clients
        # A's feedback service and A's insights publish first, then B's. Redis delivers in
        # publish order, so had B's listener been subscribed to A's channels it would have
        # heard A's messages before its own.
        await redis_sender(a)('{"events": 1}')
        await ChannelPublisher(engine=db_engine, redis=a).publish(INVALIDATION_CHANNEL, "A")
        await redis_sender(b)('{"events": 2}')
        await ChannelPublisher(engine=db_engine, redis=b).publish(INVALIDATION_CHANNEL, "B")
        await heard[0].until(2)
        await heard[1].until(2)
        assert heard[0].messages == [
            (FEEDBACK_CHANNEL, '{"events": 1}'),
            (INVALIDATION_CHANNEL, "A"),
        ]
        assert heard[1].messages == [
            (FEEDBACK_CHANNEL, '{"events": 2}'),
            (INVALIDATION_CHANNEL, "B"),
        ]
    finally:
        for listener in listeners:
            await listener.stop()
