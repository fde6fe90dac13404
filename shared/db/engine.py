"""The one place that builds the async engine and the session factory (nothing connects here)."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import Pool

from shared.settings import ServiceSettings

_QUERY_START = "reviewlearn_query_start"


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    """An asyncpg engine with the pool sized from settings and database telemetry attached."""
    engine = create_async_engine(
        settings.require_database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=1800,
        connect_args={
            "server_settings": {
                "application_name": f"reviewlearn-{settings.service_name}",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            }
        },
    )
    instrument_engine(engine, service=settings.service_name)
    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers convert ORM rows to protobuf after the commit.
    return async_sessionmaker(engine, expire_on_commit=False)


def instrument_engine(engine: AsyncEngine, *, service: str) -> None:
    """Records query_duration, query_count, connection_pool_utilization, transaction rollbacks."""
    meter = metrics.get_meter("reviewlearn.db")
    query_duration = meter.create_histogram(
        "query_duration", unit="s", description="Duration of SQL statements"
    )
    query_count = meter.create_counter("query_count", description="SQL statements executed")
    rollbacks = meter.create_counter(
        "transaction_rollback_rate", description="Transactions rolled back"
    )
    sync_engine = engine.sync_engine
    pool = sync_engine.pool
    attributes = {"service": service}

    def observe_pool(_options: metrics.CallbackOptions) -> list[metrics.Observation]:
        capacity = _pool_capacity(pool)
        checked_out = getattr(pool, "checkedout", lambda: 0)()
        return [metrics.Observation(checked_out / capacity if capacity else 0.0, attributes)]

    meter.create_observable_gauge(
        "connection_pool_utilization",
        callbacks=[observe_pool],
        description="Checked-out connections / pool capacity",
    )

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(conn: Connection, *_args: Any) -> None:
        conn.info.setdefault(_QUERY_START, []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        started = conn.info[_QUERY_START].pop()
        verb = statement.lstrip().split(" ", 1)[0].upper()[:12]
        labels = {**attributes, "statement": verb}
        query_duration.record(time.perf_counter() - started, labels)
        query_count.add(1, labels)

    @event.listens_for(sync_engine, "handle_error")
    def _on_error(context: Any) -> None:
        stack = context.connection.info.get(_QUERY_START) if context.connection else None
        if stack:
            stack.pop()

    @event.listens_for(sync_engine, "rollback")
    def _rollback(_conn: Connection) -> None:
        rollbacks.add(1, attributes)


def _pool_capacity(pool: Pool) -> int:
    size = getattr(pool, "size", lambda: 0)()
    overflow = getattr(pool, "_max_overflow", 0)
    return int(size) + max(int(overflow), 0)
