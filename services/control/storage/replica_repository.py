"""SQL reads of the replicas' heartbeats; liveness is judged by the database's clock."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.control.domain.replicas import ReplicaView
from shared.db.models import GateState, ReplicaHeartbeat, ReplicaSample


class ReplicaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def gate_version(self) -> int:
        return int((await self._session.execute(select(GateState.version))).scalar_one())

    async def replicas(self, *, live_seconds: float, include_gone: bool) -> list[ReplicaView]:
        h = ReplicaHeartbeat
        live = and_(
            h.stopped_at.is_(None),
            h.heartbeat_at > func.now() - func.make_interval(0, 0, 0, 0, 0, 0, live_seconds),
        )
        query = select(h, live.label("live")).order_by(h.service, h.replica_id)
        if not include_gone:
            query = query.where(live)
        rows = await self._session.execute(query)
        return [
            ReplicaView(
                replica_id=row.ReplicaHeartbeat.replica_id,
                service=row.ReplicaHeartbeat.service,
                applied_version=row.ReplicaHeartbeat.applied_gate_version,
                heartbeat_at=row.ReplicaHeartbeat.heartbeat_at,
                started_at=row.ReplicaHeartbeat.started_at,
                live=bool(row.live),
                gates_stale=row.ReplicaHeartbeat.gates_stale,
                hard_kill=row.ReplicaHeartbeat.hard_kill,
                rpc_count=row.ReplicaHeartbeat.rpc_count,
                error_count=row.ReplicaHeartbeat.error_count,
                latency_p95_ms=row.ReplicaHeartbeat.latency_p95_ms,
                pool_in_use=row.ReplicaHeartbeat.pool_in_use,
                pool_capacity=row.ReplicaHeartbeat.pool_capacity,
                rss_bytes=row.ReplicaHeartbeat.rss_bytes,
                signals=row.ReplicaHeartbeat.signals or {},
                memory_limit_bytes=row.ReplicaHeartbeat.memory_limit_bytes,
            )
            for row in rows
        ]

    async def prune(self, *, older_than: timedelta) -> int:
        """Deletes samples and heartbeats of replicas gone for longer than ``older_than``."""
        cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than.total_seconds())
        samples = await self._session.execute(
            delete(ReplicaSample).where(ReplicaSample.recorded_at < cutoff)
        )
        gone = await self._session.execute(
            delete(ReplicaHeartbeat).where(ReplicaHeartbeat.heartbeat_at < cutoff)
        )
        return int(samples.rowcount or 0) + int(gone.rowcount or 0)  # type: ignore[attr-defined]
