"""Opens the transaction of a use case and hands it the repository on it.

Use cases take these factories (not sessions), so they depend only on their repository
Protocol; the transaction commits when the block ends, or rolls back on an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

R = TypeVar("R")


def transaction(
    sessions: async_sessionmaker[AsyncSession], repository: Callable[[AsyncSession], R]
) -> Callable[[], AbstractAsyncContextManager[R]]:
    @asynccontextmanager
    async def open_transaction() -> AsyncIterator[R]:
        async with sessions.begin() as session:
            yield repository(session)

    return open_transaction


def rolled_back(
    sessions: async_sessionmaker[AsyncSession], repository: Callable[[AsyncSession], R]
) -> Callable[[], AbstractAsyncContextManager[R]]:
    """A REPEATABLE READ transaction (one snapshot throughout) that is always rolled back."""

    @asynccontextmanager
    async def open_transaction() -> AsyncIterator[R]:
        async with sessions() as session:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                yield repository(session)
            finally:
                await session.rollback()

    return open_transaction
