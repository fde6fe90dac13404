"""Which database failures mean "the database is unavailable right now" — the one place that says.

The error interceptor answers these with UNAVAILABLE (``DATABASE_UNAVAILABLE``), and the retries
of safe (idempotent) writes retry them. A failure counts as unavailability when:

- its SQLSTATE is in class 08 (connection exception: rejected, failed, lost, protocol error),
  57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now ("the database system is
  starting up / shutting down / in recovery"), 57P05 idle session timeout, or class 53
  (insufficient resources: 53300 too many connections, out of memory, disk full);
- or the driver or the OS failed before PostgreSQL could answer: a refused, reset or timed-out
  socket, a closed asyncpg connection, SQLAlchemy's pool timing out, or a connection SQLAlchemy
  found dead and invalidated.

asyncpg raises its own exceptions while connecting and SQLAlchemy wraps them (or not) depending
on where the failure happened, so the cause chain is searched, not just the outermost type.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from sqlalchemy import exc as sa_exc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

# 57014 (query_canceled) is a statement timeout, answered separately; 57P04 (database_dropped)
# will not heal by retrying.
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05"})
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53"})
# Worth retrying a whole idempotent transaction for, though not an outage.
CONCURRENCY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock

_DRIVER_DOWN = (
    OSError,  # refused, reset, unreachable, timed out (TimeoutError is an OSError)
    asyncpg.exceptions.InterfaceError,  # "connection is closed", "connection was closed"
    sa_exc.TimeoutError,  # QueuePool limit reached: no connection within pool_timeout
)


def causes(exc: BaseException, depth: int = 6) -> list[BaseException]:
    """The exception and what it wraps (SQLAlchemy's ``orig``, then ``raise … from`` causes).

    Implicit ``__context__`` is not followed: a bug raised while handling a lost connection is
    still a bug."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < depth and seen not in chain:
        chain.append(seen)
        seen = getattr(seen, "orig", None) or seen.__cause__
    return chain


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a database error, looked up through the driver's wrappers; "" if none."""
    for link in causes(exc):
        code = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return ""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot serve now (and may again soon)."""
    chain = causes(exc)
    if any(isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated for link in chain):
        return True
    state = sqlstate(exc)
    if state:  # PostgreSQL answered: its code decides
        return state in UNAVAILABLE_SQLSTATES or state[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return any(isinstance(link, _DRIVER_DOWN) for link in chain)


def is_retryable(exc: BaseException) -> bool:
    """Whether an idempotent transaction that failed with ``exc`` may simply run again."""
    return is_unavailable(exc) or sqlstate(exc) in CONCURRENCY_SQLSTATES


def write_retries(
    *, also: Callable[[BaseException], bool] | None = None, attempts: int = 4
) -> AsyncRetrying:
    """The retry policy of a safe (idempotent) write transaction: ``async for attempt in …``.

    Four attempts within about a second ride out a dropped connection or a restart's first
    refusals; a longer outage is answered UNAVAILABLE and the client's own backoff takes over.
    ``also`` adds failures the caller knows to be harmless to rerun.
    """

    def retry(exc: BaseException) -> bool:
        return is_retryable(exc) or (also is not None and also(exc))

    return AsyncRetrying(
        retry=retry_if_exception(retry),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.05, max=0.5),
        reraise=True,
    )
