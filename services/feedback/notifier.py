"""Tells listeners that feedback was written: after commit, coalesced, off the request path.

A notification is only a wake-up call (the learning fold also polls), so it carries counts, not
data, and many writes within ``interval`` seconds share one NOTIFY (or Redis PUBLISH). Sending it
outside the writing transaction keeps PostgreSQL's notify lock out of every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from shared.redis_namespace import NamespacedRedis

log = logging.getLogger("reviewlearn.feedback.notifier")

Send = Callable[[str], Awaitable[None]]
CHANNEL = "reviewlearn_feedback"
"""The NOTIFY / PUBLISH channel the learning service listens on."""


def postgres_sender(engine: AsyncEngine) -> Send:
    async def send(payload: str) -> None:
        async with engine.connect() as connection:
            await connection.execute(select(func.pg_notify(CHANNEL, payload)))
            await connection.commit()

    return send


def redis_sender(redis: NamespacedRedis) -> Send:
    async def send(payload: str) -> None:
        await redis.publish(CHANNEL, payload)

    return send


class ChangeNotifier:
    def __init__(self, send: Send, *, interval: float = 0.05) -> None:
        self._send = send
        self._interval = interval
        self._pending: Counter[str] = Counter()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def changed(self, **counts: int) -> None:
        """Records committed changes (e.g. ``events=3``); cheap and never blocks."""
        self._pending.update({key: value for key, value in counts.items() if value})
        if self._pending:
            self._dirty.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feedback-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush()  # what was committed last still gets announced

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await self._flush()
            await asyncio.sleep(self._interval)

    async def _flush(self) -> None:
        self._dirty.clear()
        if not self._pending:
            return
        payload, self._pending = dict(self._pending), Counter()
        try:
            await self._send(json.dumps(payload))
        except Exception as exc:  # the fold's poll catches up; losing a hint loses nothing
            log.warning("could not send a change notification: %s", exc)
