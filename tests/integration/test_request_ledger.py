"""RequestLedger.find against real PostgreSQL: the stored answer as claim gives it, in one
statement, recording nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db.models import IdempotencyRecord
from shared.errors import AlreadyExists
from shared.idempotency import IdempotentRequest, RequestLedger, request_digest

REQUEST = IdempotentRequest(
    service="learning",
    method="RunJobs",
    caller="operator-token",
    request_id="cron-2026-12-02T04",
    digest=request_digest({"frequency": 1}),
)


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements the engine sends while the block runs."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def records(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return int(
            (await session.execute(select(func.count(IdempotencyRecord.request_id)))).scalar_one()
        )


async def test_an_unknown_id_is_none_and_finding_it_records_nothing(db_engine: AsyncEngine) -> None:
    async with AsyncSession(db_engine) as session, session.begin():
        with statements(db_engine) as sent:
            assert await RequestLedger(session).find(REQUEST) is None
    assert len(sent) == 1
    assert await records(db_engine) == 0


async def test_an_answered_id_gives_its_answer_in_one_statement(db_engine: AsyncEngine) -> None:
    async with AsyncSession(db_engine) as session, session.begin():
        ledger = RequestLedger(session)
        assert await ledger.claim(REQUEST) is None
        await ledger.answer(REQUEST, b'{"run_ids": [7]}')
    async with AsyncSession(db_engine) as session, session.begin():
        with statements(db_engine) as sent:
            assert await RequestLedger(session).find(REQUEST) == b'{"run_ids": [7]}'
    assert len(sent) == 1
    # Another caller's id of the same text is another id.
    other_caller = replace(REQUEST, caller="another-token")
    async with AsyncSession(db_engine) as session, session.begin():
        assert await RequestLedger(session).find(other_caller) is None
    assert await records(db_engine) == 1


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("digest", request_digest({"frequency": 2}), "a different request"),
        ("method", "Tune", "RunJobs"),
    ],
)
async def test_the_id_of_another_request_is_request_id_reused_as_with_claim(
    db_engine: AsyncEngine, field: str, value: str, named: str
) -> None:
    async with AsyncSession(db_engine) as session, session.begin():
        ledger = RequestLedger(session)
        await ledger.claim(REQUEST)
        await ledger.answer(REQUEST, b"first")
    reused = replace(REQUEST, **{field: value})
    async with AsyncSession(db_engine) as session, session.begin():
        ledger = RequestLedger(session)
        with pytest.raises(AlreadyExists) as found:
            await ledger.find(reused)
        with pytest.raises(AlreadyExists) as claimed:
            await ledger.claim(reused)
    assert found.value.reason == claimed.value.reason == "REQUEST_ID_REUSED"
    assert named in found.value.message
    assert found.value.message == claimed.value.message
    assert await records(db_engine) == 1


async def test_an_id_claimed_by_a_transaction_not_yet_committed_is_not_found(
    db_engine: AsyncEngine,
) -> None:
    async with AsyncSession(db_engine) as first, first.begin():
        assert await RequestLedger(first).claim(REQUEST) is None
        async with AsyncSession(db_engine) as second, second.begin():
            assert await RequestLedger(second).find(REQUEST) is None  # does not wait
        await RequestLedger(first).answer(REQUEST, b"done")
    async with AsyncSession(db_engine) as session, session.begin():
        assert await RequestLedger(session).find(REQUEST) == b"done"
