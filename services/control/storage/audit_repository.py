"""SQL of the audit log, which also keeps the answers of idempotent mutations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.control.usecases.audit import AuditQuery, AuditRecord
from services.control.usecases.gates import AuditEntry
from shared.db.models import AuditEvent
from shared.gates.store import FEATURE_CODES, FEATURE_OF_CODE


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(self, entry: AuditEntry) -> None:
        self._session.add(
            AuditEvent(
                actor=entry.actor,
                action=entry.action,
                target=entry.target,
                before=dict(entry.before) if entry.before is not None else None,
                after=dict(entry.after) if entry.after is not None else None,
                reason=entry.reason,
                request_id=entry.request_id,
                feature=FEATURE_CODES[entry.feature] if entry.feature is not None else None,
                repository_url=entry.repository_url,
            )
        )
        await self._session.flush()

    async def events(
        self, query: AuditQuery, *, before_id: int | None, limit: int
    ) -> list[AuditRecord]:
        """Newest first, keyset-paged by id."""
        statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if query.action:
            statement = statement.where(AuditEvent.action == query.action)
        if query.feature is not None:
            statement = statement.where(AuditEvent.feature == FEATURE_CODES[query.feature])
        if query.repository_url:
            statement = statement.where(AuditEvent.repository_url == query.repository_url)
        if query.start is not None:
            statement = statement.where(AuditEvent.created_at >= query.start)
        if query.end is not None:
            statement = statement.where(AuditEvent.created_at < query.end)
        if before_id is not None:
            statement = statement.where(AuditEvent.id < before_id)
        return [
            AuditRecord(
                audit_id=row.id,
                actor=row.actor,
                action=row.action,
                target=row.target,
                before=row.before,
                after=row.after,
                reason=row.reason,
                created_at=row.created_at,
                request_id=row.request_id,
                feature=FEATURE_OF_CODE.get(row.feature) if row.feature is not None else None,
                repository_url=row.repository_url,
            )
            for row in (await self._session.execute(statement)).scalars()
        ]
