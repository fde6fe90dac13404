"""Wakes the fold when the feedback service reports a write (PostgreSQL NOTIFY or Redis pub/sub).

Notifications only make folding prompt; correctness never depends on them: the fold also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger("reviewlearn.learning.listener")

CHANNEL = "reviewlearn_feedback"  # the feedback service's NOTIFY / PUBLISH channel
RECONNECT_SECONDS = 2.0


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class FeedbackListener:
    def __init__(
        self, *, database_url: str, redis_url: str | None, on_notify: Callable[[str], None]
    ) -> None:
        self._database_url = database_url
        self._redis_url = redis_url
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feedback-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                if self._redis_url:
                    await self._listen_redis(self._redis_url)
                else:
                    await self._listen_postgres()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notification listener lost its connection (%s); reconnecting", exc)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen_postgres(self) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(self._database_url))
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(_: object) -> None:
            if not closed.done():
                closed.set_result(None)

        connection.add_termination_listener(on_close)
        try:
            await connection.add_listener(CHANNEL, lambda *args: self._on_notify(str(args[-1])))
            self._on_notify("{}")  # catch up with whatever happened while not listening
            await closed
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    async def _listen_redis(self, url: str) -> None:
        from redis.asyncio import Redis  # only when configured: the client costs startup time

        redis = Redis.from_url(url)
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(CHANNEL)
                self._on_notify("{}")
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message.get("data", b"")
                        self._on_notify(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            await redis.aclose()
