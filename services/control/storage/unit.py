"""One transaction's repositories, as the use cases' ``*Unit`` protocols describe them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.control.storage.alert_repository import AlertRepository
from services.control.storage.alert_signal_repository import AlertSignalRepository
from services.control.storage.audit_repository import AuditRepository
from services.control.storage.gate_repository import GateRepository
from services.control.storage.replica_repository import ReplicaRepository
from services.control.storage.rollout_repository import RolloutRepository
from services.control.storage.signal_repository import SignalRepository
from shared.idempotency import RequestLedger


class ControlUnit:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.gates = GateRepository(session)
        self.audit = AuditRepository(session)
        self.replicas = ReplicaRepository(session)
        self.rollout = RolloutRepository(session)
        self.signals = SignalRepository(session)
        self.requests = RequestLedger(session)
        self.alerts = AlertRepository(session)
        self.alert_signals = AlertSignalRepository(session)


def transactions(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[], AbstractAsyncContextManager[ControlUnit]]:
    @asynccontextmanager
    async def begin() -> AsyncIterator[ControlUnit]:
        async with sessions.begin() as session:
            yield ControlUnit(session)

    return begin


def replica_reads(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[], AbstractAsyncContextManager[ReplicaRepository]]:
    @asynccontextmanager
    async def begin() -> AsyncIterator[ReplicaRepository]:
        async with sessions.begin() as session:
            yield ReplicaRepository(session)

    return begin
