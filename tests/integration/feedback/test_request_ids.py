"""AIP-155 request ids on RecordFindings: a retry replays, a reused id with other content is
ALREADY_EXISTS / REQUEST_ID_REUSED and stores nothing, and ids are scoped by the caller."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback.domain import ReviewDraft
from services.feedback.server import build_server
from services.feedback.settings import FeedbackSettings
from shared.db.models import Finding, Review
from shared.finding_input import FindingDraft
from shared.idempotency import request_digest
from tests.conftest import TOKENS_ENV, StartService, auth
from tests.integration.feedback.conftest import finding_input, record_review
from tests.integration.test_runtime import error_info

Stub = feedback_pb2_grpc.FeedbackServiceStub
SECOND_INGEST = (("authorization", "Bearer second-ingest-token"),)


async def counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        reviews = (await connection.execute(select(func.count()).select_from(Review))).scalar()
        findings = (await connection.execute(select(func.count()).select_from(Finding))).scalar()
    return int(reviews or 0), int(findings or 0)


async def assert_reused(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS, caught.value.details()
    info = error_info(caught.value)
    assert info.reason == "REQUEST_ID_REUSED"
    assert info.metadata["request_id"] == "push-1"


async def test_a_reused_request_id_with_other_findings_is_refused(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    first = await record_review(stub, request_id="push-1", findings=2)
    before = await counts(db_engine)
    await assert_reused(record_review(stub, request_id="push-1", findings=2, start=10))
    await assert_reused(record_review(stub, request_id="push-1", findings=3))
    assert await counts(db_engine) == before  # nothing stored by the refused calls
    # The identical retry still replays the first answer.
    again = await record_review(stub, request_id="push-1", findings=2)
    assert again.replayed
    assert [f.finding_id for f in again.findings] == [f.finding_id for f in first.findings]


async def test_a_reused_request_id_never_hands_out_another_teams_findings(
    stub: Stub, db_engine: AsyncEngine
) -> None:
    await record_review(stub, request_id="push-1", findings=2)
    before = await counts(db_engine)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await record_review(
            stub,
            request_id="push-1",
            findings=2,
            repository="https://git.example.com/other/web",
            team="growth",
        )
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(caught.value).reason == "REQUEST_ID_REUSED"
    assert "finding" not in (caught.value.details() or "").replace("findings", "")
    assert await counts(db_engine) == before


async def test_request_ids_are_scoped_by_the_caller(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    service = await start_service(
        build_server, FeedbackSettings, tokens=f"{TOKENS_ENV},ingest=second-ingest-token"
    )
    stub = feedback_pb2_grpc.FeedbackServiceStub(service.channel)
    request = feedback_pb2.RecordFindingsRequest(
        request_id="push-1",
        repository_url="https://git.example.com/acme/api",
        team="platform",
        pull_request=7,
        head_commit="abc123",
        findings=[finding_input(0)],
    )
    other = feedback_pb2.RecordFindingsRequest()
    other.CopyFrom(request)
    other.repository_url = "https://git.example.com/other/web"
    other.team = "growth"
    mine = await stub.RecordFindings(request, metadata=auth("ingest"))
    theirs = await stub.RecordFindings(other, metadata=SECOND_INGEST)
    assert not mine.replayed
    assert not theirs.replayed
    assert mine.review_id != theirs.review_id
    assert await counts(db_engine) == (2, 2)
    # Each caller's retry replays its own answer.
    assert (await stub.RecordFindings(other, metadata=SECOND_INGEST)).review_id == theirs.review_id
    assert (await stub.RecordFindings(request, metadata=auth("ingest"))).review_id == mine.review_id


async def test_concurrent_retries_store_once(stub: Stub, db_engine: AsyncEngine) -> None:
    answers = await asyncio.gather(
        *(record_review(stub, request_id="push-1", findings=3) for _ in range(6))
    )
    assert len({a.review_id for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    assert await counts(db_engine) == (1, 3)


def test_the_digest_covers_content_not_field_order() -> None:
    finding = FindingDraft(
        client_finding_id="bot-1",
        rule_id="r",
        category="style",
        severity=2,
        confidence=0.5,
        file_path="a.py",
        line_start=1,
        line_end=2,
        title="t",
        message="m",
        suggested_fix="",
        code_context="x = 1",
    )
    draft = ReviewDraft(None, "https://x/y", "team", 1, "abc", (finding,))
    assert request_digest(draft) == request_digest(
        ReviewDraft(None, "https://x/y", "team", 1, "abc", (finding,))
    )
    assert request_digest({"a": 1, "b": 2.5}) == request_digest({"b": 2.5, "a": 1})
    assert request_digest(draft) != request_digest(
        ReviewDraft(None, "https://x/y", "team", 2, "abc", (finding,))
    )
    assert request_digest(0.1) != request_digest(0.1000000000000001)
