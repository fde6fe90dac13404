"""AIP-155 request ids: a retried call gets its first answer; a reused id with other content is an
error, never a replay.

Every request that carries a ``request_id`` is recorded in ``idempotency_records`` with who sent it
(the caller's token identity, so two clients' ids never collide), which RPC, and a digest of its
content. Within the RPC's one transaction::

    ledger = RequestLedger(session)
    first = await ledger.claim(request)      # None: this call is the first, do the work
    if first is not None:
        return replay(first)                 # the stored answer of an identical earlier call
    ...                                      # the work
    await ledger.answer(request, encoded)    # stored with the work, or rolled back with it

``claim`` inserts the record before the work: a concurrent call with the same id waits on the
row until the first commits (and then replays) or rolls back (and then does the work itself).
The same id with another digest, or from another RPC, raises AlreadyExists ``REQUEST_ID_REUSED``.
``find`` reads the stored answer as ``claim`` would, recording nothing (for a call that records
its id only with its answer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import IdempotencyRecord
from shared.errors import AlreadyExists

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class IdempotentRequest:
    """One call that carries a request id, as the ledger keys and checks it."""

    service: str
    method: str
    caller: str
    """The caller's identity (``Principal.token_id``): ids are scoped by it."""
    request_id: str
    digest: str
    """``request_digest`` of everything in the request except the id itself."""


def request_digest(content: Any) -> str:
    """SHA-256 of a canonical JSON form of ``content`` (dataclasses, mappings, sequences,
    scalars, enums, datetimes): equal content, equal digest, whatever the field order."""
    canonical = json.dumps(_plain(content), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)  # exact, and NaN / inf survive JSON
    return value


class RequestLedger:
    """The idempotency records, read and written in the caller's transaction (never commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, request: IdempotentRequest) -> bytes | None:
        """None if this call is the first with its id; else the first call's stored answer."""
        claimed = await self._session.execute(
            pg_insert(IdempotencyRecord)
            .values(
                service=request.service,
                caller=request.caller,
                request_id=request.request_id,
                method=request.method,
                request_digest=request.digest,
                response=b"",
            )
            .on_conflict_do_nothing()
            .returning(IdempotencyRecord.request_id)
        )
        if claimed.scalar_one_or_none() is not None:
            return None
        first = (
            await self._session.execute(select(IdempotencyRecord).where(*_key(request)))
        ).scalar_one()
        return _replayable(first, request)

    async def find(self, request: IdempotentRequest) -> bytes | None:
        """The stored answer of an earlier call with this id, as ``claim`` gives it, but
        recording nothing: None when no call used the id (or its transaction has not
        committed). For a call that records its id only with its answer, once the work is done
        (``RunJobs``: the work runs for minutes in transactions of its own)."""
        found = (
            await self._session.execute(select(IdempotencyRecord).where(*_key(request)))
        ).scalar_one_or_none()
        return None if found is None else _replayable(found, request)

    async def answer(self, request: IdempotentRequest, response: bytes) -> None:
        """Stores the answer a retry of ``request`` will get."""
        await self._session.execute(
            update(IdempotencyRecord).where(*_key(request)).values(response=response)
        )


def _key(request: IdempotentRequest) -> tuple[ColumnElement[bool], ...]:
    """The record of ``request``'s id (ids are scoped by service and caller)."""
    return (
        IdempotencyRecord.service == request.service,
        IdempotencyRecord.caller == request.caller,
        IdempotencyRecord.request_id == request.request_id,
    )


def _replayable(first: IdempotencyRecord, request: IdempotentRequest) -> bytes:
    """The first call's answer, or REQUEST_ID_REUSED when ``request`` is not that call."""
    if first.method != request.method or first.request_digest != request.digest:
        what = "a different request" if first.method == request.method else first.method
        raise AlreadyExists(
            f"request_id {request.request_id!r} was already used for {what}; "
            "use a new request_id for a new request",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request.request_id, "first_method": first.method},
        )
    return bytes(first.response)
