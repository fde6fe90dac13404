"""Listens on one notification channel — PostgreSQL LISTEN, or Redis SUBSCRIBE when a Redis URL
is configured — and reconnects for as long as it runs.

Notifications only make things prompt; whoever listens must also poll, because a notification
sent while the listener reconnects is gone. ``on_connected`` runs after every (re)connection so
the owner can catch up with what it missed. (``services/learning/listener.py`` predates this and
does the same for the feedback channel.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger("reviewlearn.listener")

RECONNECT_SECONDS = 1.0


class ChannelListener:
    def __init__(
        self,
        *,
        channel: str,
        postgres_dsn: str,
        redis_url: str | None,
        on_message: Callable[[str], None],
        on_connected: Callable[[], None] = lambda: None,
    ) -> None:
        self._channel = channel
        self._dsn = postgres_dsn
        self._redis_url = redis_url
        self._on_message = on_message
        self._on_connected = on_connected
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"listen-{self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

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
                log.info("%s notifications interrupted (%s); reconnecting", self._channel, exc)
            self.connected = False
            await asyncio.sleep(RECONNECT_SECONDS)

    def _connected(self) -> None:
        self.connected = True
        self._on_connected()

    async def _listen_postgres(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=5)
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(_: object) -> None:
            if not closed.done():
                closed.set_result(None)

        connection.add_termination_listener(on_close)
        try:
            await connection.add_listener(
                self._channel, lambda *args: self._on_message(str(args[-1]))
            )
            self._connected()
            await closed
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    async def _listen_redis(self, url: str) -> None:
        from redis.asyncio import Redis  # only when configured: the client costs startup time

        redis = Redis.from_url(url)
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(self._channel)
                self._connected()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message.get("data", b"")
                        self._on_message(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            await redis.aclose()
