"""A background task that runs a coroutine every few seconds until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("reviewlearn.periodic")

STOP_GRACE_SECONDS = 10.0


class Periodic:
    """Runs ``action`` every ``interval`` seconds; failures are logged and retried next time.

    Stopping sets a flag and waits for the current run to finish instead of cancelling the
    task: in Python 3.11 a cancellation that races with ``asyncio.timeout``'s own expiry is
    swallowed, and the task would then wait forever. Cancellation is only the fallback.
    """

    def __init__(
        self,
        name: str,
        action: Callable[[], Awaitable[None]],
        *,
        interval: float,
        run_at_start: bool = True,
        first_run_in_start: bool = False,
    ) -> None:
        """``first_run_in_start`` makes ``start()`` wait for the first run, for state a service
        must hold before it answers (a failure is logged, and the next tick tries again)."""
        self._name = name
        self._run_at_start = run_at_start
        self._first_run_in_start = first_run_in_start
        self._action = action
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        run_at_start = self._run_at_start
        if self._first_run_in_start:
            await self._run_once()
            run_at_start = False
        self._task = asyncio.create_task(self._run(run_at_start), name=self._name)

    def wake(self) -> None:
        """Runs the action now instead of at the next tick."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self, run_at_start: bool) -> None:
        if not run_at_start:
            await self._sleep()
        while not self._stopping.is_set():
            await self._run_once()
            await self._sleep()

    async def _run_once(self) -> None:
        try:
            await self._action()
        except Exception:
            log.warning("%s failed; retrying in %.1fs", self._name, self._interval, exc_info=True)

    async def _sleep(self) -> None:
        """Until the next tick, a wake() or stop()."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._interval):
                await self._wake.wait()
        self._wake.clear()
