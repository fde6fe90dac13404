"""One transaction, one repository: what the use cases are handed instead of a session.

A use case asks for ``async with transaction() as store:`` and gets the repository it declared
as a Protocol, bound to a fresh transaction that commits when the block ends (rolls back on an
error). Tests hand in an in-memory fake with the same shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

R = TypeVar("R")

Transaction = Callable[[], AbstractAsyncContextManager[R]]


def transactional(
    sessions: async_sessionmaker[AsyncSession], repository: Callable[[AsyncSession], R]
) -> Callable[[], AbstractAsyncContextManager[R]]:
    @asynccontextmanager
    async def transaction() -> AsyncIterator[R]:
        async with sessions.begin() as session:
            yield repository(session)

    return transaction
