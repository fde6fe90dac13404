"""A background task that runs a coroutine every few seconds until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("reviewlearn.periodic")


class Periodic:
    """Runs ``action`` every ``interval`` seconds; failures are logged and retried next time."""

    def __init__(
        self, name: str, action: Callable[[], Awaitable[None]], *, interval: float
    ) -> None:
        self._name = name
        self._action = action
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    def wake(self) -> None:
        """Runs the action now instead of at the next tick."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._action()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "%s failed; retrying in %.1fs", self._name, self._interval, exc_info=True
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
