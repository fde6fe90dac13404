"""The feedback service end to end: real PostgreSQL, a real gRPC server and a real stub."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.models import Feedback, Finding, FindingDeletion
from tests.conftest import StartService, auth
from tests.integration.feedback.conftest import event, finding_input, record_review, timestamp
from tests.integration.test_runtime import status_details

Stub = feedback_pb2_grpc.FeedbackServiceStub


async def count(engine: AsyncEngine, model: type, *where: object) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(select(func.count()).select_from(model).where(*where))
            ).scalar_one()
        )


def violations_of(error: grpc.aio.AioRpcError) -> dict[str, str]:
    from google.rpc import error_details_pb2

    for detail in status_details(error).details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return {v.field: v.description for v in bad_request.field_violations}
    return {}


# ------------------------------------------------------------------------------------ findings


async def test_record_findings_returns_ids_and_fingerprints_in_order(stub: Stub) -> None:
    response = await record_review(stub, findings=4)
    assert [f.client_finding_id for f in response.findings] == [f"bot-{i}" for i in range(4)]
    assert len({f.finding_id for f in response.findings}) == 4
    assert all(len(f.fingerprint) == 32 for f in response.findings)
    assert not response.replayed


async def test_record_findings_is_idempotent_on_request_id(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    first = await record_review(stub, request_id="push-1")
    again = await record_review(stub, request_id="push-1")
    assert again.replayed
    assert again.review_id == first.review_id
    assert [f.finding_id for f in again.findings] == [f.finding_id for f in first.findings]
    assert await count(db_engine, Finding) == 3


async def test_client_finding_ids_are_idempotent_across_requests(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    first = await record_review(stub, findings=2)
    second = await record_review(stub, findings=3)  # bot-0 and bot-1 again, plus bot-2
    assert [f.already_recorded for f in second.findings] == [True, True, False]
    assert second.findings[0].finding_id == first.findings[0].finding_id
    assert await count(db_engine, Finding) == 3


async def test_fingerprint_survives_a_push_that_shifts_lines(stub: Stub) -> None:
    first = await stub.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url="https://git.example.com/acme/api",
            team="platform",
            pull_request=9,
            head_commit="c1",
            findings=[finding_input(0, client_finding_id="a")],
        ),
        metadata=auth("ingest"),
    )
    shifted = await stub.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url="https://git.example.com/acme/api",
            pull_request=9,
            head_commit="c2",
            findings=[finding_input(0, client_finding_id="b", line_start=40, line_end=42)],
        ),
        metadata=auth("ingest"),
    )
    assert shifted.findings[0].fingerprint == first.findings[0].fingerprint
    assert shifted.findings[0].finding_id != first.findings[0].finding_id


async def test_a_new_repository_needs_a_team_and_keeps_it(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await record_review(stub, team="")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "team" in violations_of(caught.value)
    await record_review(stub, team="platform")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await record_review(stub, team="other-team", start=10)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"confidence": 1.5}, "findings[0].confidence"),
        ({"confidence": float("nan")}, "findings[0].confidence"),
        ({"severity": 42}, "findings[0].severity"),
        ({"rule_id": ""}, "findings[0].rule_id"),
        ({"message": "nul\x00byte"}, "findings[0].message"),
        ({"message": "x" * 20_001}, "findings[0].message"),
        ({"category": "Security"}, "findings[0].category"),
        ({"line_start": 10, "line_end": 5}, "findings[0].line_end"),
    ],
)
async def test_bad_findings_are_rejected_with_field_violations(
    stub: Stub, db_engine: AsyncEngine, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFindings(
            feedback_pb2.RecordFindingsRequest(
                repository_url="https://git.example.com/acme/api",
                team="platform",
                pull_request=1,
                head_commit="c",
                findings=[finding_input(0, **overrides)],
            ),
            metadata=auth("ingest"),
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations_of(caught.value)
    assert await count(db_engine, Finding) == 0  # never a partial row


# ------------------------------------------------------------------------------------ feedback


async def test_the_same_event_sent_100_times_is_stored_once(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    finding_id = (await record_review(stub)).findings[0].finding_id
    once = event("evt-1", finding_id)
    responses = [
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=once), metadata=auth("ingest")
        )
        for _ in range(100)
    ]
    assert not responses[0].duplicate
    assert all(r.duplicate for r in responses[1:])
    # Every answer tells when the event was first recorded.
    assert {r.record_time.ToDatetime() for r in responses} == {
        responses[0].record_time.ToDatetime()
    }
    assert responses[0].record_time.seconds > 0
    assert {r.feedback_id for r in responses} == {responses[0].feedback_id}
    assert await count(db_engine, Feedback) == 1


async def test_same_event_id_with_other_content_is_already_exists(stub: Stub) -> None:
    finding_id = (await record_review(stub)).findings[0].finding_id
    moment = datetime.now(UTC) - timedelta(hours=1)
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=event("evt-1", finding_id, occurred_at=moment)),
        metadata=auth("ingest"),
    )
    changed = event("evt-1", finding_id, common_pb2.FEEDBACK_KIND_REJECTED, occurred_at=moment)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=changed), metadata=auth("ingest")
        )
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_feedback_on_an_unknown_finding_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=event("evt-x", 424242)),
            metadata=auth("ingest"),
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: setattr(e, "kind", 99), "event.kind"),
        (lambda e: e.ClearField("occurred_at"), "event.occurred_at"),
        (
            lambda e: e.occurred_at.CopyFrom(timestamp(datetime.now(UTC) + timedelta(days=2))),
            "event.occurred_at",
        ),
        (lambda e: setattr(e, "actor_id", ""), "event.actor_id"),
        (lambda e: setattr(e, "comment", "a\x00b"), "event.comment"),
        # Out-of-range nanos would shift the moment by seconds instead of being refused.
        (lambda e: setattr(e.occurred_at, "nanos", 1_000_000_000), "event.occurred_at.nanos"),
        (lambda e: setattr(e.occurred_at, "nanos", -1), "event.occurred_at.nanos"),
    ],
)
async def test_bad_events_are_invalid_argument(stub: Stub, mutate: object, field: str) -> None:
    finding_id = (await record_review(stub)).findings[0].finding_id
    bad = event("evt-bad", finding_id)
    mutate(bad)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=bad), metadata=auth("ingest")
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations_of(caught.value)


async def test_a_batch_reports_each_item_and_stores_the_good_ones(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    ids = [f.finding_id for f in (await record_review(stub)).findings]
    moment = datetime.now(UTC) - timedelta(minutes=5)
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=event("seen", ids[0], occurred_at=moment)),
        metadata=auth("ingest"),
    )
    events = [
        event("b-0", ids[0]),
        event("seen", ids[0], occurred_at=moment),  # duplicate of an earlier call
        event("b-2", 999_999),  # unknown finding
        event("b-3", ids[1], kind=77),  # invalid kind
        event("seen", ids[1], occurred_at=moment),  # conflict: same id, other finding
        event("b-5", ids[2], common_pb2.FEEDBACK_KIND_DISMISSED),
    ]
    response = await stub.BatchRecordFeedback(
        feedback_pb2.BatchRecordFeedbackRequest(events=events), metadata=auth("ingest")
    )
    assert [r.index for r in response.results] == list(range(6))
    codes = [r.error.code if r.HasField("error") else 0 for r in response.results]
    assert codes == [0, 0, 5, 3, 6, 0]
    assert response.results[1].duplicate
    assert (response.stored_count, response.duplicate_count, response.failed_count) == (2, 1, 3)
    assert await count(db_engine, Feedback) == 3


async def test_an_oversized_or_empty_batch_is_rejected_whole(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchRecordFeedback(
            feedback_pb2.BatchRecordFeedbackRequest(), metadata=auth("ingest")
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    too_many = [event(f"e{i}", 1) for i in range(10_001)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchRecordFeedback(
            feedback_pb2.BatchRecordFeedbackRequest(events=too_many), metadata=auth("ingest")
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_stream_feedback_stores_a_firehose(stub: Stub, db_engine: AsyncEngine) -> None:
    ids = [f.finding_id for f in (await record_review(stub, findings=5)).findings]

    async def requests():  # type: ignore[no-untyped-def]
        for i in range(2500):
            yield feedback_pb2.StreamFeedbackRequest(event=event(f"s-{i}", ids[i % 5]))
        yield feedback_pb2.StreamFeedbackRequest(event=event("s-bad", 123_456))

    response = await stub.StreamFeedback(requests(), metadata=auth("ingest"))
    assert response.received_count == 2501
    assert response.stored_count == 2500
    assert response.failed_count == 1
    assert response.errors[0].index == 2500
    assert await count(db_engine, Feedback) == 2500


async def test_fifty_concurrent_writers_on_one_finding_give_exact_counts(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    finding_id = (await record_review(stub)).findings[0].finding_id

    async def writer(w: int) -> None:
        events = [event(f"w{w}-{i}", finding_id) for i in range(10)]
        # every writer also re-sends its first event: still one row each
        for sent in [*events, events[0]]:
            await stub.RecordFeedback(
                feedback_pb2.RecordFeedbackRequest(event=sent), metadata=auth("ingest")
            )

    await asyncio.gather(*(writer(w) for w in range(50)))
    assert await count(db_engine, Feedback, Feedback.finding_id == finding_id) == 500


async def test_feedback_is_still_recorded_with_learning_disabled(
    stub: Stub, start_service: StartService, db_engine: AsyncEngine
) -> None:
    # The kill switch is the learning service's (the feedback service has no such flag): with
    # learning off, ranking passes through, yet feedback is stored and still learned from.
    from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

    from services.learning.server import build_server as build_learning
    from services.learning.settings import LearningSettings

    learning = learning_pb2_grpc.LearningServiceStub(
        (
            await start_service(
                build_learning, LearningSettings, learning_enabled=False, fold_poll_seconds=0.2
            )
        ).channel
    )
    finding_id = (await record_review(stub)).findings[0].finding_id
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=event("off-1", finding_id)),
        metadata=auth("ingest"),
    )
    assert await count(db_engine, Feedback) == 1
    ranked = await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url="https://git.example.com/acme/api", finding_ids=[finding_id]
        ),
        metadata=auth("reader"),
    )
    assert not ranked.learning_applied
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        metrics = await learning.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
            metadata=auth("reader"),
        )
        if metrics.metrics and metrics.metrics[0].positive + metrics.metrics[0].negative == 1:
            break
        assert asyncio.get_running_loop().time() < deadline, "learning never folded it"
        await asyncio.sleep(0.1)


async def until_an_insert_waits(connection: AsyncConnection, select: str) -> int:
    """Polls until a feedback INSERT of another backend waits on a lock (10 s at most) and
    returns ``select`` over those backends (``count(*)``, or a function of their pids)."""
    for _ in range(500):
        # A fresh statistics snapshot each time: pg_stat_activity is frozen per transaction.
        await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        found = (
            await connection.execute(
                text(
                    f"SELECT {select} FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
                    "AND query LIKE '%INSERT INTO suggestion_feedback%'"
                )
            )
        ).scalar_one()
        if found:
            return int(found)
        await asyncio.sleep(0.02)
    return 0


async def test_a_killed_connection_mid_batch_leaves_no_half_written_batch(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    ids = [f.finding_id for f in (await record_review(stub, findings=5)).findings]
    events = [event(f"k-{i}", ids[i % 5]) for i in range(5000)]
    async with db_engine.connect() as blocker:
        # Hold a lock that makes the batch's INSERT wait, then kill the waiting backend.
        await blocker.execute(text("BEGIN"))
        await blocker.execute(text("LOCK TABLE suggestion_feedback IN SHARE MODE"))
        call = asyncio.ensure_future(
            stub.BatchRecordFeedback(
                feedback_pb2.BatchRecordFeedbackRequest(events=events), metadata=auth("ingest")
            )
        )
        killed = await until_an_insert_waits(blocker, "count(pg_terminate_backend(pid))")
        assert killed == 1
        await blocker.execute(text("COMMIT"))
    try:
        stored: int | grpc.StatusCode = (await call).stored_count
    except grpc.aio.AioRpcError as error:
        stored = error.code()
    if stored == grpc.StatusCode.UNAVAILABLE:  # the retry gave up: then nothing is stored
        assert await count(db_engine, Feedback) == 0
    else:  # the retry stored the whole batch, exactly once
        assert stored == 5000
        assert await count(db_engine, Feedback) == 5000


@pytest.mark.parametrize("size", [3, 200], ids=["arrays", "copy"])
async def test_event_ids_another_writer_commits_mid_batch_are_told_duplicate_or_conflict(
    stub: Stub, db_engine: AsyncEngine, size: int
) -> None:
    """The batch's statement waits on rows another transaction inserted and has not committed;
    once it commits, those ids are neither stored by the batch nor in its snapshot: the rows
    read after the statement tell the resend (duplicate, the writer's id) from the conflict."""
    finding_id = (await record_review(stub)).findings[0].finding_id
    moment = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    events = [event(f"mid-{i}", finding_id, occurred_at=moment) for i in range(size)]
    insert = text(
        "INSERT INTO suggestion_feedback (event_id, finding_id, repository_id, kind, actor_id, "
        "occurred_at) SELECT :event_id, id, repository_id, :kind, 'dev-1', :moment "
        "FROM findings WHERE id = :finding_id RETURNING id"
    )
    async with db_engine.connect() as writer:
        await writer.execute(text("BEGIN"))
        same = (
            await writer.execute(
                insert,
                {"event_id": "mid-0", "kind": 1, "moment": moment, "finding_id": finding_id},
            )
        ).scalar_one()
        await writer.execute(  # mid-1 with another kind: a conflict
            insert, {"event_id": "mid-1", "kind": 3, "moment": moment, "finding_id": finding_id}
        )
        call = asyncio.ensure_future(
            stub.BatchRecordFeedback(
                feedback_pb2.BatchRecordFeedbackRequest(events=events), metadata=auth("ingest")
            )
        )
        waiting = await until_an_insert_waits(writer, "count(*)")
        assert waiting == 1, "the batch never waited on the uncommitted rows"
        await writer.execute(text("COMMIT"))
    response = await call
    assert (response.stored_count, response.duplicate_count, response.failed_count) == (
        size - 2,
        1,
        1,
    )
    first, second = response.results[0], response.results[1]
    assert (first.duplicate, first.feedback_id) == (True, same)
    assert second.error.reason == "EVENT_ID_CONFLICT"
    assert "already recorded with different content" in second.error.message
    assert all(r.feedback_id and not r.duplicate for r in response.results[2:])
    assert await count(db_engine, Feedback) == size


# ------------------------------------------------------------------------------------ reads


async def test_get_finding_applies_the_outcome_rule(stub: Stub) -> None:
    finding_id = (await record_review(stub)).findings[0].finding_id
    base = datetime.now(UTC) - timedelta(hours=3)

    async def outcome() -> int:
        got = await stub.GetFinding(
            feedback_pb2.GetFindingRequest(finding_id=finding_id), metadata=auth("reader")
        )
        return got.finding.outcome

    assert await outcome() == common_pb2.OUTCOME_PENDING
    dismissed = event("o-1", finding_id, common_pb2.FEEDBACK_KIND_DISMISSED, occurred_at=base)
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=dismissed), metadata=auth("ingest")
    )
    assert await outcome() == common_pb2.OUTCOME_DISMISSED
    applied = event(
        "o-2", finding_id, common_pb2.FEEDBACK_KIND_APPLIED, occurred_at=base + timedelta(hours=1)
    )
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=applied), metadata=auth("ingest")
    )
    assert await outcome() == common_pb2.OUTCOME_POSITIVE
    # A later dismissal does not undo a decisive reaction.
    late_dismiss = event(
        "o-3", finding_id, common_pb2.FEEDBACK_KIND_DISMISSED, occurred_at=base + timedelta(hours=2)
    )
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=late_dismiss), metadata=auth("ingest")
    )
    assert await outcome() == common_pb2.OUTCOME_POSITIVE
    # A later decisive reaction wins, even if it arrives with an earlier id order.
    rejected = event(
        "o-4",
        finding_id,
        common_pb2.FEEDBACK_KIND_REJECTED,
        occurred_at=base + timedelta(hours=1, minutes=30),
    )
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=rejected), metadata=auth("ingest")
    )
    assert await outcome() == common_pb2.OUTCOME_NEGATIVE


async def test_unknown_finding_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetFinding(
            feedback_pb2.GetFindingRequest(finding_id=31337), metadata=auth("reader")
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_list_feedback_pages_newest_first(stub: Stub) -> None:
    ids = [f.finding_id for f in (await record_review(stub)).findings]
    for i in range(25):
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=event(f"l-{i}", ids[i % 3])),
            metadata=auth("ingest"),
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListFeedback(
            feedback_pb2.ListFeedbackRequest(
                repository_url="https://git.example.com/acme/api", page_size=10, page_token=token
            ),
            metadata=auth("reader"),
        )
        seen += [r.event.event_id for r in page.feedback]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"l-{i}" for i in reversed(range(25))]
    by_finding = await stub.ListFeedback(
        feedback_pb2.ListFeedbackRequest(finding_id=ids[0]), metadata=auth("reader")
    )
    assert {r.event.finding_id for r in by_finding.feedback} == {ids[0]}
    assert len(by_finding.feedback) == 9
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListFeedback(
            feedback_pb2.ListFeedbackRequest(finding_id=ids[0], page_token=token or "garbage"),
            metadata=auth("reader"),
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListFeedback(feedback_pb2.ListFeedbackRequest(), metadata=auth("reader"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------------------------ delete


async def test_delete_finding_cascades_and_is_audited(stub: Stub, db_engine: AsyncEngine) -> None:
    ids = [f.finding_id for f in (await record_review(stub)).findings]
    for i in range(4):
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=event(f"d-{i}", ids[0])),
            metadata=auth("ingest"),
        )
    await stub.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=event("keep", ids[1])), metadata=auth("ingest")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteFinding(
            feedback_pb2.DeleteFindingRequest(finding_id=ids[0], reason="test"),
            metadata=auth("reader"),
        )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteFinding(
            feedback_pb2.DeleteFindingRequest(finding_id=ids[0]), metadata=auth("operator")
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # a reason is required
    response = await stub.DeleteFinding(
        feedback_pb2.DeleteFindingRequest(finding_id=ids[0], reason="leaked secret in message"),
        metadata=auth("operator"),
    )
    assert response.deleted_feedback_count == 4
    assert await count(db_engine, Feedback) == 1
    assert await count(db_engine, Finding, Finding.id == ids[0]) == 0
    async with db_engine.connect() as connection:
        audit = (await connection.execute(select(FindingDeletion))).one()
    assert audit.reason == "leaked secret in message"
    assert audit.actor.startswith("operator:")
    assert audit.snapshot["rule_id"] == "rule-0"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteFinding(
            feedback_pb2.DeleteFindingRequest(finding_id=ids[0], reason="again"),
            metadata=auth("operator"),
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_non_utf8_strings_are_invalid_argument_not_internal(feedback_service) -> None:  # type: ignore[no-untyped-def]
    # field 1 (event), nested field 1 (event_id) holding the bytes ff fe: not UTF-8.
    raw = bytes([0x0A, 0x04, 0x0A, 0x02, 0xFF, 0xFE])
    call = feedback_service.channel.unary_unary(
        "/reviewlearn.feedback.v1.FeedbackService/RecordFeedback",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(raw, metadata=auth("ingest"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_backlog_counts_unfolded_feedback(stub: Stub, feedback_service) -> None:  # type: ignore[no-untyped-def]
    finding_id = (await record_review(stub)).findings[0].finding_id
    for i in range(3):
        await stub.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=event(f"bl-{i}", finding_id)),
            metadata=auth("ingest"),
        )
    report = await feedback_service.runtime.health_report()
    # Measured by a periodic task; ask directly for the current number as well.
    from services.feedback.repository import FeedbackRepository
    from shared.db.engine import create_session_factory

    async with create_session_factory(feedback_service.runtime.engine).begin() as session:
        assert await FeedbackRepository(session).backlog() == 3
    assert "feedback_queue_size" in report["metrics"]
