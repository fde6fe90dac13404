"""Keeps the replica tables small: old samples and long-gone replicas are deleted."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Protocol


class ReplicaPruning(Protocol):
    async def prune(self, *, older_than: timedelta) -> int: ...


class RetentionUnit(Protocol):
    @property
    def replicas(self) -> ReplicaPruning: ...


class Retention:
    def __init__(
        self,
        *,
        transactions: Callable[[], AbstractAsyncContextManager[RetentionUnit]],
        keep: timedelta,
    ) -> None:
        self._transactions = transactions
        self._keep = keep

    async def prune(self) -> None:
        async with self._transactions() as unit:
            await unit.replicas.prune(older_than=self._keep)
