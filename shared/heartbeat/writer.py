"""Writes this replica's heartbeat every few seconds, a sample every sample interval, and — at
once — an acknowledgement when a new gate version is applied.

The control service learns which replicas exist, which gate version each applied (confirmed
propagation), and what they measured, only from these rows. A heartbeat failure is logged and
retried on the next beat; it never affects serving.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import ReplicaHeartbeat, ReplicaSample, RolloutExposure
from shared.gates.client import GateClient
from shared.heartbeat.stats import RpcStats
from shared.periodic import Periodic

log = logging.getLogger("reviewlearn.heartbeat")

Signals = Callable[[], Awaitable[dict[str, Any]]]


def default_replica_id(service: str) -> str:
    """Host (the pod name in Kubernetes), pid and a random suffix: unique even for several
    runtimes in one process (tests) and across restarts of a container with the same pid."""
    return f"{service}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def resident_memory_bytes() -> int:
    """Current RSS from /proc (Linux); elsewhere the peak, which is what the OS reports."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * 1024


def memory_limit_bytes() -> int | None:
    """The container's memory limit (cgroup v2, then v1); None when unlimited or unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                raw = limit.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # v1 reports "no limit" as a huge number
            return int(raw)
        return None
    return None


def _pool_use(engine: AsyncEngine) -> tuple[int, int]:
    pool = engine.sync_engine.pool
    checked_out = int(getattr(pool, "checkedout", lambda: 0)())
    size = int(getattr(pool, "size", lambda: 0)())
    overflow = max(int(getattr(pool, "_max_overflow", 0)), 0)
    return checked_out, size + overflow


class HeartbeatWriter:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        service: str,
        replica_id: str,
        gates: GateClient,
        stats: RpcStats,
        interval: float,
        sample_interval: float,
        signals: Signals | None = None,
    ) -> None:
        self.replica_id = replica_id
        self._engine = engine
        self._service = service
        self._gates = gates
        self._stats = stats
        self._sample_interval = sample_interval
        self._signals = signals
        self._started_at = datetime.now(UTC)
        self._last_sample = time.monotonic()
        self._latest_signals: dict[str, Any] = {}
        self._latency: tuple[float | None, float | None, float | None] = (None, None, None)
        self._memory_limit = memory_limit_bytes()
        self._beats = Periodic("heartbeat", self._beat, interval=interval)
        gates.on_applied(lambda _snapshot: self._beats.wake())

    async def start(self) -> None:
        self._started_at = datetime.now(UTC)
        self._last_sample = time.monotonic()
        await self._beats.start()

    async def stop(self) -> None:
        await self._beats.stop()
        try:
            await self._write(stopped=True)
        except Exception as exc:
            log.warning("could not record the replica's stop: %s", exc)

    async def beat(self) -> None:
        """One heartbeat now (tests, and the apply acknowledgement)."""
        await self._write(stopped=False)

    async def _beat(self) -> None:
        await self._write(stopped=False)

    async def _write(self, *, stopped: bool) -> None:
        now = time.monotonic()
        sample: dict[str, Any] | None = None
        in_use, capacity = _pool_use(self._engine)
        rss = resident_memory_bytes()
        if stopped or now - self._last_sample >= self._sample_interval:
            window_seconds = now - self._last_sample
            window = self._stats.take()
            self._last_sample = now
            if self._signals is not None:
                try:
                    self._latest_signals = await self._signals()
                except Exception as exc:
                    log.warning("health metrics for the heartbeat failed: %s", exc)
                    self._latest_signals = {"error": exc.__class__.__name__}
            self._latency = (
                window.quantile_ms(0.5),
                window.quantile_ms(0.95),
                window.quantile_ms(0.99),
            )
            sample = {
                "replica_id": self.replica_id,
                "service": self._service,
                "window_seconds": window_seconds,
                "rpc_count": window.rpc_count,
                "error_count": window.error_count,
                "latency_buckets": window.latency_buckets,
                "pool_in_use": in_use,
                "pool_capacity": capacity,
                "rss_bytes": rss,
                "memory_limit_bytes": self._memory_limit,
                "applied_gate_version": self._gates.applied_version,
                "signals": self._latest_signals,
            }
        gates = self._gates
        values: dict[str, Any] = {
            "service": self._service,
            "applied_gate_version": gates.applied_version,
            "started_at": self._started_at,
            "heartbeat_at": func.now(),
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "gates_stale": gates.stale,
            "gates_refreshed_at": gates.refreshed_at,
            "hard_kill": gates.hard_kill,
            "stopped_at": func.now() if stopped else None,
            "rpc_count": self._stats.total_rpcs,
            "error_count": self._stats.total_errors,
            "latency_p50_ms": self._latency[0],
            "latency_p95_ms": self._latency[1],
            "latency_p99_ms": self._latency[2],
            "pool_in_use": in_use,
            "pool_capacity": capacity,
            "rss_bytes": rss,
            "memory_limit_bytes": self._memory_limit,
            "signals": self._latest_signals,
        }
        exposures = gates.take_exposures()
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    pg_insert(ReplicaHeartbeat)
                    .values(replica_id=self.replica_id, **values)
                    .on_conflict_do_update(index_elements=["replica_id"], set_=values)
                )
                if sample is not None:
                    await connection.execute(pg_insert(ReplicaSample).values(**sample))
                if exposures:
                    await connection.execute(
                        pg_insert(RolloutExposure)
                        .values(
                            [
                                {"repository_url": url, "first_phase": phase}
                                for url, phase in dict(exposures).items()
                            ]
                        )
                        .on_conflict_do_nothing(index_elements=["repository_url"])
                    )
        except BaseException:
            gates.return_exposures(exposures)
            raise
