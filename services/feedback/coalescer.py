"""Group commit for single feedback events: concurrent RecordFeedback calls share a transaction.

A call that arrives while no flush is running is flushed at once (no added latency when idle);
calls that arrive while flushes are running wait for the next one and go together. So under load
one transaction and one WAL flush serve many calls, which is what makes unary ingestion fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_items: int = 1000,
        max_concurrent_flushes: int = 4,
    ) -> None:
        self._flush = flush
        self._max_items = max_items
        self._max_flushes = max_concurrent_flushes
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running = 0
        self._tasks: set[asyncio.Future[None]] = set()  # the loop keeps only weak references

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self._max_flushes:
            self._running += 1
            # call_soon lets the calls that arrive in the same loop tick join this flush.
            asyncio.get_running_loop().call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_items]
                del self._pending[: self._max_items]
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:  # every caller of the batch gets the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._running -= 1
