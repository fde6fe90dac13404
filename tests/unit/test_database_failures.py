"""Which database failures are unavailability (UNAVAILABLE, retried by safe writes)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from shared.db.failures import is_retryable, is_unavailable, sqlstate


def _wrapped(error: Exception) -> sa_exc.DBAPIError:
    """As SQLAlchemy raises it: a DBAPIError whose ``orig`` is the driver's error."""
    return sa_exc.DBAPIError("SELECT 1", None, error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),  # 57P03
        asyncpg.exceptions.AdminShutdownError("terminating connection"),  # 57P01
        asyncpg.exceptions.CrashShutdownError("crash"),  # 57P02
        asyncpg.exceptions.TooManyConnectionsError("too many connections"),  # 53300
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),  # 08003
        asyncpg.exceptions.ConnectionFailureError("failed"),  # 08006
        asyncpg.exceptions.ConnectionRejectionError("rejected"),  # 08004
        asyncpg.exceptions.ProtocolViolationError("protocol"),  # 08P01
        asyncpg.exceptions.OutOfMemoryError("out of memory"),  # 53200
        asyncpg.exceptions.InterfaceError("connection is closed"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        OSError(113, "No route to host"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_class_failures_are_unavailable_bare_or_wrapped(error: Exception) -> None:
    assert is_unavailable(error)
    assert is_unavailable(_wrapped(error))
    assert is_retryable(_wrapped(error))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),  # 23505
        asyncpg.exceptions.QueryCanceledError("statement timeout"),  # 57014: DATABASE_TIMEOUT
        asyncpg.exceptions.UndefinedTableError("no such table"),  # 42P01: a bug
        asyncpg.exceptions.SerializationError("could not serialize"),  # 40001
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_failures_are_not_unavailable(error: Exception) -> None:
    assert not is_unavailable(error)
    assert not is_unavailable(_wrapped(error))


def test_concurrency_failures_are_retried_but_not_unavailable() -> None:
    for error in (
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
    ):
        assert is_retryable(_wrapped(error))
        assert not is_unavailable(_wrapped(error))
    assert sqlstate(_wrapped(asyncpg.exceptions.DeadlockDetectedError("x"))) == "40P01"


def test_a_connection_sqlalchemy_invalidated_is_unavailable() -> None:
    error = sa_exc.DBAPIError("SELECT 1", None, ValueError("x"), connection_invalidated=True)
    assert is_unavailable(error)


def test_a_pool_timeout_is_unavailable() -> None:
    assert is_unavailable(sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"))


def test_a_bug_raised_while_handling_a_lost_connection_is_still_a_bug() -> None:
    bug = KeyError("oops")
    bug.__context__ = ConnectionResetError()  # what ``raise`` inside an ``except`` leaves
    assert not is_unavailable(bug)
