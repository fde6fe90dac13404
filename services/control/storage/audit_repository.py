"""SQL of the audit log, which also keeps the answers of idempotent mutations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.control.domain.changes import StoredAnswer
from services.control.usecases.gates import AuditEntry
from shared.db.models import AuditEvent
from shared.gates.store import FEATURE_CODES


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def stored_answer(self, actor: str, request_id: str) -> StoredAnswer | None:
        row = (
            await self._session.execute(
                select(AuditEvent.action, AuditEvent.request_digest, AuditEvent.response).where(
                    AuditEvent.actor == actor, AuditEvent.request_id == request_id
                )
            )
        ).first()
        if row is None:
            return None
        return StoredAnswer(
            action=row.action,
            digest=row.request_digest or "",
            response=json.loads(row.response) if row.response else {},
        )

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
                request_digest=entry.request_digest if entry.request_id else None,
                response=json.dumps(entry.response).encode() if entry.request_id else None,
                feature=FEATURE_CODES[entry.feature] if entry.feature is not None else None,
                repository_url=entry.repository_url,
            )
        )
        await self._session.flush()

    async def events(
        self,
        *,
        action: str | None,
        feature_code: int | None,
        repository_url: str | None,
        start: datetime | None,
        end: datetime | None,
        before_id: int | None,
        limit: int,
    ) -> Sequence[AuditEvent]:
        """Newest first, keyset-paged by id."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if action:
            query = query.where(AuditEvent.action == action)
        if feature_code is not None:
            query = query.where(AuditEvent.feature == feature_code)
        if repository_url is not None:
            query = query.where(AuditEvent.repository_url == repository_url)
        if start is not None:
            query = query.where(AuditEvent.created_at >= start)
        if end is not None:
            query = query.where(AuditEvent.created_at < end)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        return (await self._session.execute(query)).scalars().all()
