"""System health (GetSystemHealth and GET /health/learning) from heartbeats and recent samples."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.control.domain.health import (
    HealthLimits,
    ReplicaSignals,
    ServiceWindow,
    SystemHealth,
    assess,
)
from services.control.domain.replicas import ReplicaView
from shared.gates.model import GateSnapshot


class HealthReplicas(Protocol):
    async def replicas(self, *, live_seconds: float, include_gone: bool) -> list[ReplicaView]: ...
    async def gate_version(self) -> int: ...


class HealthSignals(Protocol):
    async def service_windows(self, *, since: datetime) -> dict[str, ServiceWindow]: ...


class HealthUnit(Protocol):
    @property
    def replicas(self) -> HealthReplicas: ...
    @property
    def signals(self) -> HealthSignals: ...


class SystemHealthCheck:
    def __init__(
        self,
        *,
        reads: Callable[[], AbstractAsyncContextManager[HealthUnit]],
        snapshot: Callable[[], GateSnapshot | None],
        live_seconds: float,
        window: timedelta,
        limits: HealthLimits,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reads = reads
        self._snapshot = snapshot
        self._live_seconds = live_seconds
        self._window = window
        self._limits = limits
        self._clock = clock

    async def assess(self) -> tuple[SystemHealth, list[ReplicaView]]:
        now = self._clock()
        async with self._reads() as unit:
            version = await unit.replicas.gate_version()
            views = await unit.replicas.replicas(
                live_seconds=self._live_seconds, include_gone=False
            )
            windows = await unit.signals.service_windows(since=now - self._window)
        health = assess(
            replicas=[
                ReplicaSignals(r.replica_id, r.service, r.applied_version, r.gates_stale, r.signals)
                for r in views
            ],
            windows=windows,
            snapshot=self._snapshot(),
            gate_version=version,
            now=now,
            limits=self._limits,
        )
        return health, views
