"""Replicas as their heartbeats describe them, and whether a gate version has reached them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class ReplicaView:
    replica_id: str
    service: str
    applied_version: int
    heartbeat_at: datetime
    started_at: datetime
    live: bool
    """Heartbeat within the liveness window and not stopped (judged by the database's clock)."""
    gates_stale: bool = False
    hard_kill: bool = False
    rpc_count: int = 0
    error_count: int = 0
    latency_p95_ms: float | None = None
    pool_in_use: int = 0
    pool_capacity: int = 0
    rss_bytes: int = 0
    signals: Mapping[str, Any] = field(default_factory=dict)
    memory_limit_bytes: int | None = None


@dataclass(frozen=True)
class Propagation:
    version: int
    applied: tuple[ReplicaView, ...]
    pending: tuple[ReplicaView, ...]
    waited: timedelta = timedelta(0)

    @property
    def converged(self) -> bool:
        return not self.pending


def propagation_of(
    version: int, replicas: Sequence[ReplicaView], waited: timedelta = timedelta(0)
) -> Propagation:
    """Which live replicas applied ``version`` (or a later one) and which have not."""
    live = [r for r in replicas if r.live]
    return Propagation(
        version=version,
        applied=tuple(r for r in live if r.applied_version >= version),
        pending=tuple(r for r in live if r.applied_version < version),
        waited=waited,
    )
