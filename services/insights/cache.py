"""The two-layer insights cache: layer 1 in process (TTL), layer 2 Redis or the cached_* tables.

Entries are keyed by the team's *version* (insight_team_versions), which the fold bumps in the
same transaction as the rollups it changes. So an entry computed before a fold is never read
after it: nothing has to be deleted, stale entries simply stop being asked for and expire. A
replica learns a new version at once from the fold (its own) or the invalidation message (other
replicas'), and at the latest after ``staleness_seconds`` from its poll of the versions table:
that is the bound on how stale an answer can be.

Layer 2 is an optimisation only: when Redis fails, the cache answers "miss" (the caller computes
the answer from the rollups) and skips Redis for ``retry_seconds`` instead of paying its timeout
on every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from cachetools import TTLCache
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.insights.domain.scopes import ResolvedScope
from services.insights.instruments import InsightsInstruments

if TYPE_CHECKING:
    from shared.redis_namespace import NamespacedRedis

log = logging.getLogger("reviewlearn.insights.cache")

INVALIDATION_CHANNEL = "reviewlearn_insights"
"""Where a replica that folded announces the teams' new versions."""
TABLES = ("cached_metrics", "cached_paths", "cached_trends")


class TeamVersions:
    """The latest version this replica knows of every team (versions only ever grow)."""

    def __init__(self) -> None:
        self._versions: dict[int, int] = {}

    def get(self, team_id: int) -> int:
        return self._versions.get(team_id, 0)

    def update(self, versions: Mapping[int, int]) -> list[int]:
        """Takes in newer versions; returns the teams that moved."""
        moved = []
        for team, version in versions.items():
            if version > self._versions.get(team, 0):
                self._versions[team] = version
                moved.append(team)
        return moved

    @staticmethod
    def message(versions: Mapping[int, int]) -> str:
        return json.dumps({"versions": {str(t): v for t, v in versions.items()}})

    @staticmethod
    def parse(payload: str) -> dict[int, int]:
        try:
            data = json.loads(payload)
            return {int(t): int(v) for t, v in dict(data.get("versions", {})).items()}
        except (ValueError, TypeError, AttributeError):
            return {}


class SecondLayer(Protocol):
    name: str

    async def get(self, table: str, key: str) -> bytes | None: ...
    async def put(self, table: str, key: str, payload: bytes, ttl_seconds: float) -> None: ...


class RedisLayer:
    name = "redis"

    def __init__(self, redis: NamespacedRedis, *, timeout: float, retry_seconds: float) -> None:
        self._redis = redis
        self._timeout = timeout
        self._retry_seconds = retry_seconds
        self._down_until = 0.0

    async def _call(self, action: Callable[[], Awaitable[object]]) -> object:
        if time.monotonic() < self._down_until:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                return await action()
        except Exception as exc:  # Redis is an optimisation: never an error for the caller
            if self._down_until == 0.0 or time.monotonic() >= self._down_until:
                log.warning(
                    "Redis cache unavailable (%s); answering uncached for %.0fs",
                    exc or exc.__class__.__name__,
                    self._retry_seconds,
                )
            self._down_until = time.monotonic() + self._retry_seconds
            return None

    async def get(self, table: str, key: str) -> bytes | None:
        value = await self._call(lambda: self._redis.get(f"{table}:{key}"))
        return value if isinstance(value, bytes) else None

    async def put(self, table: str, key: str, payload: bytes, ttl_seconds: float) -> None:
        await self._call(
            lambda: self._redis.set(
                f"{table}:{key}", payload, ttl_ms=max(1, int(ttl_seconds * 1000))
            )
        )


class TableLayer:
    """The cached_* tables: shared by replicas when there is no Redis."""

    name = "table"

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, table: str, key: str) -> bytes | None:
        async with self._sessions.begin() as session:
            value = await session.scalar(
                text(f"SELECT payload FROM {table} WHERE cache_key = :key AND expires_at > now()"),
                {"key": key},
            )
        return bytes(value) if value is not None else None

    async def put(self, table: str, key: str, payload: bytes, ttl_seconds: float) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                text(
                    f"INSERT INTO {table} (cache_key, payload, cached_at, expires_at) "
                    "VALUES (:key, :payload, now(), :expires) ON CONFLICT (cache_key) DO UPDATE "
                    "SET payload = EXCLUDED.payload, cached_at = now(), "
                    "expires_at = EXCLUDED.expires_at"
                ),
                {
                    "key": key,
                    "payload": payload,
                    "expires": datetime.now(UTC) + timedelta(seconds=ttl_seconds),
                },
            )

    async def sweep(self) -> int:
        """Deletes expired rows (entries of old versions expire like any other)."""
        removed = 0
        async with self._sessions.begin() as session:
            for table in TABLES:
                result = await session.execute(
                    text(f"DELETE FROM {table} WHERE expires_at <= now()")
                )
                removed += int(getattr(result, "rowcount", 0) or 0)
        return removed


class InsightsCache:
    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int,
        second: SecondLayer | None,
        versions: TeamVersions,
        instruments: InsightsInstruments,
    ) -> None:
        self._ttl = ttl_seconds
        self._first: TTLCache[str, bytes] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_seconds) if ttl_seconds > 0 else None
        )
        self._second = second if ttl_seconds > 0 else None
        self.versions = versions
        self._instruments = instruments

    @property
    def enabled(self) -> bool:
        return self._first is not None

    def key(self, kind: str, scope: ResolvedScope, params: str) -> str:
        return f"{kind}:{scope.cache_part()}:v{self.versions.get(scope.team_id)}:{params}"

    async def get(self, table: str, key: str) -> bytes | None:
        if self._first is None:
            return None
        value = self._first.get(key)
        if value is not None:
            self._instruments.cache_result("l1")
            return value
        if self._second is not None:
            value = await self._second.get(table, key)
            if value is not None:
                self._first[key] = value
                self._instruments.cache_result("l2")
                return value
        self._instruments.cache_result("miss")
        return None

    async def put(self, table: str, key: str, payload: bytes) -> None:
        if self._first is None:
            return
        self._first[key] = payload
        if self._second is not None:
            await self._second.put(table, key, payload, self._ttl)
