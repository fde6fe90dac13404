"""Loads a synthetic review history into a running system through the public RPCs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc

from services.cli.client import Metadata
from services.cli.synthetic import (
    SyntheticFeedback,
    SyntheticFinding,
    SyntheticHistory,
    SyntheticReview,
)

Progress = Callable[[int], None]

FEEDBACK_BATCH = 1000
CONCURRENT_CALLS = 4


def finding_input(finding: SyntheticFinding) -> common_pb2.FindingInput:
    return common_pb2.FindingInput(
        client_finding_id=finding.client_finding_id,
        rule_id=finding.rule_id,
        category=finding.category,
        severity=finding.severity,  # type: ignore[arg-type]
        confidence=finding.confidence,
        file_path=finding.file_path,
        line_start=finding.line_start,
        line_end=finding.line_end,
        title=finding.title,
        message=finding.message,
        code_context=finding.code_context,
    )


def review_request(review: SyntheticReview, request_id: str) -> feedback_pb2.RecordFindingsRequest:
    return feedback_pb2.RecordFindingsRequest(
        request_id=request_id,
        repository_url=review.repository_url,
        team=review.team,
        pull_request=review.pull_request,
        head_commit=review.head_commit,
        findings=[finding_input(f) for f in review.findings],
    )


def feedback_event(event: SyntheticFeedback, finding_id: int) -> feedback_pb2.FeedbackEvent:
    occurred_at = Timestamp()
    occurred_at.FromDatetime(event.occurred_at)
    return feedback_pb2.FeedbackEvent(
        event_id=event.event_id,
        finding_id=finding_id,
        kind=common_pb2.FeedbackKind.Value(f"FEEDBACK_KIND_{event.kind.upper()}"),
        actor_id=event.actor_id,
        occurred_at=occurred_at,
    )


async def load_reviews(
    stub: feedback_pb2_grpc.FeedbackServiceAsyncStub,
    reviews: Sequence[SyntheticReview],
    *,
    metadata: Metadata,
    request_prefix: str,
    progress: Progress | None = None,
) -> list[list[int]]:
    """Records every review; returns the finding ids of each review, in order."""
    ids: list[list[int]] = [[] for _ in reviews]
    gate = asyncio.Semaphore(CONCURRENT_CALLS)

    async def record(index: int, review: SyntheticReview) -> None:
        async with gate:
            response = await stub.RecordFindings(
                review_request(review, f"{request_prefix}-{index}"), metadata=metadata
            )
        ids[index] = [f.finding_id for f in response.findings]
        if progress:
            progress(1)

    # The first review of each repository creates it and its team; the rest may run concurrently.
    first: dict[str, int] = {}
    for index, review in enumerate(reviews):
        first.setdefault(review.repository_url, index)
    for index in first.values():
        await record(index, reviews[index])
    rest = sorted(set(range(len(reviews))) - set(first.values()))
    await asyncio.gather(*(record(index, reviews[index]) for index in rest))
    return ids


async def load_feedback(
    stub: feedback_pb2_grpc.FeedbackServiceAsyncStub,
    feedback: Sequence[SyntheticFeedback],
    finding_ids: Sequence[Sequence[int]],
    *,
    metadata: Metadata,
    progress: Progress | None = None,
) -> int:
    """Sends the feedback in batches; returns how many events were stored."""
    events = [feedback_event(e, finding_ids[e.review_index][e.finding_index]) for e in feedback]
    gate = asyncio.Semaphore(CONCURRENT_CALLS)
    stored = 0

    async def send(batch: list[feedback_pb2.FeedbackEvent]) -> None:
        nonlocal stored
        async with gate:
            response = await stub.BatchRecordFeedback(
                feedback_pb2.BatchRecordFeedbackRequest(events=batch), metadata=metadata
            )
        stored += response.stored_count + response.duplicate_count
        if progress:
            progress(len(batch))

    await asyncio.gather(
        *(send(events[i : i + FEEDBACK_BATCH]) for i in range(0, len(events), FEEDBACK_BATCH))
    )
    return stored


async def load_history(
    stub: feedback_pb2_grpc.FeedbackServiceAsyncStub,
    history: SyntheticHistory,
    *,
    metadata: Metadata,
    request_prefix: str = "synthetic",
) -> list[list[int]]:
    ids = await load_reviews(
        stub, history.reviews, metadata=metadata, request_prefix=request_prefix
    )
    await load_feedback(stub, history.feedback, ids, metadata=metadata)
    return ids
