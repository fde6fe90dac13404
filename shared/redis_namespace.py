"""Every Redis key and pub/sub channel of one deployment, under one prefix.

Two deployments (production and staging, or two test systems) may share one Redis database; were
their keys and channels bare, one would read the other's insights cache entries (same team ids,
other data) and wake on the other's notifications. So every service reaches Redis only through
:class:`RedisTarget` (``connect``, ``subscribe``): the client it returns puts
``REVIEWLEARN_REDIS_PREFIX`` in front of every key and channel it is given, and takes it off the
channels it reports. The default prefix is ``reviewlearn:<database name>:`` — a deployment is its
database, so every replica of every service agrees on it without configuration. Set the prefix
when two deployments use databases of the same name on different PostgreSQL servers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_PREFIX = "reviewlearn:"
"""The prefix when no database is configured (nothing to tell deployments apart by)."""


class RedisSettings(Protocol):
    """The fields of ``shared.settings.ServiceSettings`` this module reads."""

    redis_url: str | None
    redis_prefix: str | None
    database_url: str | None


def default_prefix(database_url: str | None) -> str:
    database = make_url(database_url).database if database_url else None
    return f"{DEFAULT_PREFIX}{database}:" if database else DEFAULT_PREFIX


@dataclass(frozen=True)
class RedisTarget:
    """Where this deployment's Redis is, and its namespace there."""

    url: str
    prefix: str

    @classmethod
    def of(cls, settings: RedisSettings) -> RedisTarget | None:
        """None when Redis is not configured (PostgreSQL NOTIFY and the cache tables instead)."""
        if not settings.redis_url:
            return None
        prefix = settings.redis_prefix or default_prefix(settings.database_url)
        return cls(settings.redis_url, prefix)

    def connect(self, **options: Any) -> NamespacedRedis:
        """A client (connecting lazily); ``options`` go to ``redis.asyncio.Redis.from_url``."""
        from redis.asyncio import Redis  # only when configured: the client costs startup time

        return NamespacedRedis(Redis.from_url(self.url, **options), self.prefix)


class NamespacedRedis:
    """The Redis operations the services use, each in the deployment's namespace."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self.prefix = prefix

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self.prefix + key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, *, ttl_ms: int) -> None:
        await self._redis.set(self.prefix + key, value, px=ttl_ms)

    async def publish(self, channel: str, payload: str) -> None:
        await self._redis.publish(self.prefix + channel, payload)

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        """Subscribed to ``channels`` on entry; yields the (channel, payload) messages, with the
        channel named as the caller named it."""
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(*(self.prefix + channel for channel in channels))

            async def messages() -> AsyncIterator[tuple[str, str]]:
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    channel, data = message.get("channel", b""), message.get("data", b"")
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    yield (
                        name.removeprefix(self.prefix),
                        data.decode() if isinstance(data, bytes) else str(data),
                    )

            yield messages()

    async def aclose(self) -> None:
        await self._redis.aclose()
