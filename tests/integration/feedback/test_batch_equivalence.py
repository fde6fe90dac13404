"""The batch path through COPY stores the same rows and answers the same per-item results as the
path it replaced (one ``INSERT … SELECT unnest(…)`` and a second look-up of the re-sent events),
and so does the same statement reading a small batch from arrays (group commits of unary calls).

The expected answers below were recorded from the old path (commit 94a2b49) on this very batch
before the new one was written; the test pins them, so any change in what a mixed batch stores or
answers shows here. Not timed: speed is in tests/benchmarks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback import repository
from shared.db.models import Feedback
from tests.conftest import auth
from tests.integration.feedback.conftest import event, record_review

Stub = feedback_pb2_grpc.FeedbackServiceStub

APPLIED = common_pb2.FEEDBACK_KIND_APPLIED
REJECTED = common_pb2.FEEDBACK_KIND_REJECTED
DISMISSED = common_pb2.FEEDBACK_KIND_DISMISSED
EARLIER = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
MOMENT = datetime(2026, 12, 1, 9, 30, 0, 654321, tzinfo=UTC)


def _mixed_batch(ids: list[int]) -> list[feedback_pb2.FeedbackEvent]:
    bad_actor = event("bad-actor", ids[0], occurred_at=MOMENT)
    bad_actor.actor_id = "  "
    bad_time = event("bad-time", ids[0], occurred_at=MOMENT)
    bad_time.occurred_at.nanos = 1_000_000_000
    bad_kind_and_comment = event("bad-two", ids[1], kind=77, occurred_at=MOMENT, comment="a\x00b")
    return [
        event("new-0", ids[0], occurred_at=MOMENT, comment="looks right"),
        event("seen", ids[0], occurred_at=EARLIER),  # duplicate of an earlier call
        event("seen-other", ids[0], REJECTED, occurred_at=EARLIER),  # conflict with an earlier call
        event("lost", 999_999, occurred_at=MOMENT),  # unknown finding
        bad_kind_and_comment,  # two bad fields at once
        event("new-5", ids[1], DISMISSED, occurred_at=MOMENT),
        event("new-0", ids[0], occurred_at=MOMENT, comment="looks right"),  # in-batch duplicate
        event("new-5", ids[2], DISMISSED, occurred_at=MOMENT),  # in-batch conflict
        bad_actor,
        bad_time,
        event("bad-actor", ids[2], occurred_at=MOMENT),  # the id of an invalid item, now valid
        event("  padded  ", ids[2], REJECTED, occurred_at=MOMENT),  # stored trimmed
    ]


# (index, event_id, duplicate, row the feedback_id names (by event id), error code, reason,
#  message, field violations)
EXPECTED_RESULTS: list[tuple[Any, ...]] = [
    (0, "new-0", False, "new-0", 0, "", "", []),
    (1, "seen", True, "seen", 0, "", "", []),
    (
        2,
        "seen-other",
        False,
        None,
        6,
        "EVENT_ID_CONFLICT",
        "event_id 'seen-other' was already recorded with different content; "
        "use a new event_id for a new event",
        [],
    ),
    (
        3,
        "lost",
        False,
        None,
        5,
        "FINDING_NOT_FOUND",
        "finding 999999 does not exist",
        [("finding_id", "no finding 999999")],
    ),
    (
        4,
        "bad-two",
        False,
        None,
        3,
        "INVALID_EVENT",
        "events[4].kind: must be one of FEEDBACK_KIND_APPLIED … FEEDBACK_KIND_NOT_HELPFUL; "
        "events[4].comment: contains a NUL byte",
        [
            ("events[4].kind", "must be one of FEEDBACK_KIND_APPLIED … FEEDBACK_KIND_NOT_HELPFUL"),
            ("events[4].comment", "contains a NUL byte"),
        ],
    ),
    (5, "new-5", False, "new-5", 0, "", "", []),
    (6, "new-0", True, "new-0", 0, "", "", []),
    (
        7,
        "new-5",
        False,
        None,
        6,
        "EVENT_ID_CONFLICT",
        "event_id 'new-5' was already recorded with different content; "
        "use a new event_id for a new event",
        [],
    ),
    (
        8,
        "bad-actor",
        False,
        None,
        3,
        "INVALID_EVENT",
        "events[8].actor_id: is required",
        [("events[8].actor_id", "is required")],
    ),
    (
        9,
        "bad-time",
        False,
        None,
        3,
        "INVALID_EVENT",
        "events[9].occurred_at.nanos: must be within 0 … 999,999,999, got 1,000,000,000; "
        "events[9].occurred_at: is before 2000-01-01",
        [
            ("events[9].occurred_at.nanos", "must be within 0 … 999,999,999, got 1,000,000,000"),
            ("events[9].occurred_at", "is before 2000-01-01"),
        ],
    ),
    (10, "bad-actor", False, "bad-actor", 0, "", "", []),
    (11, "padded", False, "padded", 0, "", "", []),
]

# (event_id, finding (index into the review), kind, actor, comment, occurred_at), by feedback id.
EXPECTED_ROWS: list[tuple[Any, ...]] = [
    ("seen", 0, APPLIED, "dev-1", "", EARLIER),
    ("seen-other", 0, APPLIED, "dev-1", "", EARLIER),
    ("new-0", 0, APPLIED, "dev-1", "looks right", MOMENT),
    ("new-5", 1, DISMISSED, "dev-1", "", MOMENT),
    ("bad-actor", 2, APPLIED, "dev-1", "", MOMENT),
    ("padded", 2, REJECTED, "dev-1", "", MOMENT),
]


@pytest.fixture(params=["copy", "arrays"])
def storage_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs through COPY and through arrays (whatever the batch's size)."""
    limit = 0 if request.param == "copy" else 10_000
    monkeypatch.setattr(repository, "ARRAYS_AT_MOST", limit)
    return str(request.param)


async def _rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return list(
            await connection.execute(
                select(
                    Feedback.id,
                    Feedback.event_id,
                    Feedback.finding_id,
                    Feedback.repository_id,
                    Feedback.kind,
                    Feedback.actor_id,
                    Feedback.comment,
                    Feedback.occurred_at,
                    Feedback.recorded_at,
                ).order_by(Feedback.id)
            )
        )


@pytest.mark.usefixtures("storage_path")
async def test_a_mixed_batch_stores_and_answers_exactly_as_before(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    review = await record_review(stub)
    ids = [f.finding_id for f in review.findings]
    for earlier in (event("seen", ids[0], occurred_at=EARLIER), event("seen-other", ids[0])):
        earlier.occurred_at.FromDatetime(EARLIER)
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=earlier), metadata=auth("ingest")
        )

    response = await stub.BatchRecordFeedback(
        feedback_pb2.BatchRecordFeedbackRequest(events=_mixed_batch(ids)), metadata=auth("ingest")
    )

    rows = await _rows(db_engine)
    event_of_row = {row.id: row.event_id for row in rows}
    recorded_at_of_row = {row.id: row.recorded_at for row in rows}
    results = [
        (
            r.index,
            r.event_id,
            r.duplicate,
            event_of_row.get(r.feedback_id) if r.feedback_id else None,
            r.error.code,
            r.error.reason,
            r.error.message,
            [(v.field, v.description) for v in r.error.field_violations],
        )
        for r in response.results
    ]
    assert results == EXPECTED_RESULTS
    assert (response.stored_count, response.duplicate_count, response.failed_count) == (4, 2, 6)
    repository_id = rows[0].repository_id
    assert [
        (row.event_id, ids.index(row.finding_id), row.kind, row.actor_id, row.comment,
         row.occurred_at)
        for row in rows
    ] == EXPECTED_ROWS  # fmt: skip
    assert {row.repository_id for row in rows} == {repository_id}
    # The rows of one batch are written in the batch's order, in one transaction.
    batch_rows = rows[2:]
    assert len({row.recorded_at for row in batch_rows}) == 1
    assert [row.id for row in batch_rows] == sorted(row.id for row in batch_rows)
    assert all(
        recorded_at_of_row[r.feedback_id] is not None for r in response.results if r.feedback_id
    )


@pytest.mark.usefixtures("storage_path")
async def test_single_events_answer_exactly_as_before(stub: Stub, db_engine: AsyncEngine) -> None:
    """RecordFeedback (group commit) on the same cases: stored, duplicate, conflict, unknown."""
    ids = [f.finding_id for f in (await record_review(stub)).findings]
    first = await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=event("one", ids[0], occurred_at=MOMENT)),
        metadata=auth("ingest"),
    )
    again = await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=event("one", ids[0], occurred_at=MOMENT)),
        metadata=auth("ingest"),
    )
    assert first.feedback_id > 0
    assert not first.duplicate
    assert (again.feedback_id, again.duplicate, again.record_time) == (
        first.feedback_id,
        True,
        first.record_time,
    )
    rows = await _rows(db_engine)
    assert [(row.id, row.event_id, row.finding_id, row.comment) for row in rows] == [
        (first.feedback_id, "one", ids[0], "")
    ]
    assert first.record_time.ToDatetime(tzinfo=UTC) == rows[0].recorded_at


@pytest.mark.parametrize("size", [5, 200], ids=["arrays", "copy"])
async def test_a_batch_of_distinct_event_ids_answers_as_the_statement_for_any_batch(
    stub: Stub, db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A batch whose event ids all differ is stored by a cheaper statement (no choice among
    repeats, no join back); it must answer and store exactly what the statement for any batch
    does: new, duplicate and conflicting (with an earlier call) and unknown-finding events."""
    ids = [f.finding_id for f in (await record_review(stub, findings=2)).findings]
    judged: list[bool] = []

    def judging(events: Any) -> bool:
        judged.append(repository_distinct(events))
        return judged[-1]

    repository_distinct = repository.distinct_event_ids
    answers: dict[str, Any] = {}
    for way in ("any", "distinct"):
        monkeypatch.setattr(
            repository, "distinct_event_ids", judging if way == "distinct" else lambda _: False
        )
        await stub.BatchRecordFeedback(
            feedback_pb2.BatchRecordFeedbackRequest(
                events=[
                    event(f"{way}-seen", ids[0], occurred_at=EARLIER),
                    event(f"{way}-other", ids[0], occurred_at=EARLIER),
                ]
            ),
            metadata=auth("ingest"),
        )
        batch = [
            event(f"{way}-seen", ids[0], occurred_at=EARLIER),
            event(f"{way}-other", ids[0], REJECTED, occurred_at=EARLIER),
            event(f"{way}-lost", 999_999, occurred_at=MOMENT),
            *(event(f"{way}-new-{i}", ids[i % 2], occurred_at=MOMENT) for i in range(size - 3)),
        ]
        response = await stub.BatchRecordFeedback(
            feedback_pb2.BatchRecordFeedbackRequest(events=batch), metadata=auth("ingest")
        )
        async with db_engine.connect() as connection:
            rows = await connection.execute(select(Feedback.id, Feedback.event_id))
            holder: dict[int, str] = dict(rows.all())
        answers[way] = (
            (response.stored_count, response.duplicate_count, response.failed_count),
            [
                (
                    r.index,
                    r.event_id.removeprefix(way),
                    r.duplicate,
                    holder.get(r.feedback_id, "").removeprefix(way),
                    r.error.code,
                    r.error.reason,
                    r.error.message.replace(way, ""),
                )
                for r in response.results
            ],
        )
    assert judged == [True, True], "the distinct batches did not take the cheaper statement"
    assert answers["distinct"] == answers["any"]
    assert answers["any"][0] == (size - 3, 1, 2)
