"""Reading the audit log: newest first, filtered by action, feature, repository and time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.gates.model import Feature


@dataclass(frozen=True)
class AuditRecord:
    audit_id: int
    actor: str
    action: str
    target: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str
    created_at: datetime
    request_id: str | None
    feature: Feature | None
    repository_url: str


@dataclass(frozen=True)
class AuditQuery:
    action: str | None = None
    feature: Feature | None = None
    repository_url: str | None = None
    start: datetime | None = None
    end: datetime | None = None


class AuditReader(Protocol):
    async def events(
        self, query: AuditQuery, *, before_id: int | None, limit: int
    ) -> list[AuditRecord]: ...


class AuditUnit(Protocol):
    @property
    def audit(self) -> AuditReader: ...


class AuditLog:
    def __init__(self, *, reads: Callable[[], AbstractAsyncContextManager[AuditUnit]]) -> None:
        self._reads = reads

    async def page(
        self, query: AuditQuery, *, before_id: int | None, limit: int
    ) -> list[AuditRecord]:
        async with self._reads() as unit:
            return await unit.audit.events(query, before_id=before_id, limit=limit)
