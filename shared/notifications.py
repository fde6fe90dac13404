"""Wake-up calls between services: PostgreSQL NOTIFY, or Redis pub/sub when Redis is configured.

A notification never carries data that matters for correctness, only a hint that something
changed: every listener also polls, so a lost message only delays it. The feedback service
announces feedback writes on ``FEEDBACK_CHANNEL``; other services listen with ``ChannelListener``
and may announce their own changes with ``ChannelPublisher``.

(The feedback service keeps its own coalescing sender, services/feedback/notifier.py.) On Redis,
channels are in the deployment's namespace (``shared.redis_namespace``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.redis_namespace import NamespacedRedis, RedisTarget

log = logging.getLogger("reviewlearn.notifications")

FEEDBACK_CHANNEL = "reviewlearn_feedback"
"""Where the feedback service announces committed feedback (services/feedback/notifier.py)."""
RECONNECT_SECONDS = 2.0

OnNotify = Callable[[str, str], None]
"""Called with (channel, payload); must be cheap and never block."""


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class ChannelListener:
    """Listens on some channels until stopped, reconnecting after a lost connection.

    After every (re)connection it calls ``on_notify(channel, "{}")`` for each channel, so the
    consumer catches up with whatever happened while it was not listening.
    """

    def __init__(
        self,
        *,
        database_url: str,
        redis: RedisTarget | None,
        channels: Sequence[str],
        on_notify: OnNotify,
        name: str = "channel-listener",
    ) -> None:
        self._database_url = database_url
        self._redis = redis
        self._channels = list(channels)
        self._on_notify = on_notify
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                if self._redis is not None:
                    await self._listen_redis(self._redis)
                else:
                    await self._listen_postgres()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s lost its connection (%s); reconnecting", self._name, exc)
            self.connected.clear()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _caught_up(self) -> None:
        self.connected.set()
        for channel in self._channels:
            self._on_notify(channel, "{}")

    async def _listen_postgres(self) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(self._database_url))
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(_: object) -> None:
            if not closed.done():
                closed.set_result(None)

        connection.add_termination_listener(on_close)
        try:
            for channel in self._channels:
                await connection.add_listener(
                    channel, lambda _c, _pid, name, payload: self._on_notify(name, str(payload))
                )
            self._caught_up()
            await closed
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    async def _listen_redis(self, target: RedisTarget) -> None:
        redis = target.connect()
        try:
            async with redis.subscribe(*self._channels) as messages:
                self._caught_up()
                async for channel, payload in messages:
                    self._on_notify(channel, payload)
        finally:
            await redis.aclose()


class ChannelPublisher:
    """Sends a notification after the change it announces has committed."""

    def __init__(self, *, engine: AsyncEngine, redis: NamespacedRedis | None) -> None:
        self._engine = engine
        self._redis = redis

    async def publish(self, channel: str, payload: str) -> None:
        """Best effort: a lost notification only delays listeners until they poll."""
        try:
            if self._redis is not None:
                await self._redis.publish(channel, payload)
                return
            async with self._engine.connect() as connection:
                await connection.execute(select(func.pg_notify(channel, payload)))
                await connection.commit()
        except Exception as exc:
            log.warning("could not publish on %s: %s", channel, exc)
