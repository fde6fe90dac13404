"""gRPC transport of the feedback service: convert the request, call the use case, convert back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc

from services.feedback import convert
from services.feedback.domain import ItemStatus, validate_batch_size
from services.feedback.ingestion import FeedbackIngestion
from shared.convert import timestamp_to_pb
from shared.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound, Violations
from shared.finding_input import check_text
from shared.idempotency import ANONYMOUS
from shared.pagination import PageTokens, page_size
from shared.rpc.interceptors import current_principal

SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"]

# StreamFeedback stores what arrived at least this often, so a slow firehose is not held in memory.
STREAM_CHUNK_EVENTS = 1000
STREAM_FLUSH_SECONDS = 0.2
MAX_STREAM_ERRORS_REPORTED = 1000


class FeedbackHandlers(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self, ingestion: FeedbackIngestion, *, pages: PageTokens) -> None:
        self._ingestion = ingestion
        self._pages = pages

    async def RecordFindings(
        self, request: feedback_pb2.RecordFindingsRequest, context: Any
    ) -> feedback_pb2.RecordFindingsResponse:
        recorded = await self._ingestion.record_findings(
            convert.review_from_pb(request), caller=_caller()
        )
        return convert.recorded_review_to_pb(recorded)

    async def GetFinding(
        self, request: feedback_pb2.GetFindingRequest, context: Any
    ) -> feedback_pb2.GetFindingResponse:
        view = await self._ingestion.get_finding(request.finding_id)
        return feedback_pb2.GetFindingResponse(finding=convert.finding_to_pb(view))

    async def DeleteFinding(
        self, request: feedback_pb2.DeleteFindingRequest, context: Any
    ) -> feedback_pb2.DeleteFindingResponse:
        deleted = await self._ingestion.delete_finding(
            request.finding_id,
            actor=_caller(),
            reason=request.reason,
        )
        return feedback_pb2.DeleteFindingResponse(deleted_feedback_count=deleted)

    async def RecordFeedback(
        self, request: feedback_pb2.RecordFeedbackRequest, context: Any
    ) -> feedback_pb2.RecordFeedbackResponse:
        violations = Violations()
        draft = convert.feedback_from_pb(request.event, "event", violations)
        result = await self._ingestion.record_event(draft, violations)
        if result.status == ItemStatus.INVALID:
            raise InvalidArgument([FieldViolation(f, d) for f, d in result.violations])
        if result.status == ItemStatus.NOT_FOUND:
            raise NotFound(result.message, reason="FINDING_NOT_FOUND")
        if result.status == ItemStatus.CONFLICT:
            raise AlreadyExists(result.message, reason="EVENT_ID_CONFLICT")
        response = feedback_pb2.RecordFeedbackResponse(
            feedback_id=result.feedback_id, duplicate=result.status == ItemStatus.DUPLICATE
        )
        if result.recorded_at is not None:
            response.record_time.CopyFrom(timestamp_to_pb(result.recorded_at))
        return response

    async def BatchRecordFeedback(
        self, request: feedback_pb2.BatchRecordFeedbackRequest, context: Any
    ) -> feedback_pb2.BatchRecordFeedbackResponse:
        validate_batch_size(request.events, self._ingestion.limits)
        outcome = await self._ingestion.record_feedback(
            convert.feedback_batch_from_pb(request.events)
        )
        return convert.batch_outcome_to_pb(outcome)

    async def StreamFeedback(
        self, request_iterator: AsyncIterator[feedback_pb2.StreamFeedbackRequest], context: Any
    ) -> feedback_pb2.StreamFeedbackResponse:
        response = feedback_pb2.StreamFeedbackResponse()
        async for offset, chunk in _chunks(request_iterator):
            outcome = await self._ingestion.record_feedback(
                convert.feedback_batch_from_pb(message.event for message in chunk),
                first_index=offset,
            )
            stored, duplicates, failed = outcome.tally()
            response.received_count += len(chunk)
            response.stored_count += stored
            response.duplicate_count += duplicates
            response.failed_count += failed
            for position in sorted(outcome.errors):
                if len(response.errors) >= MAX_STREAM_ERRORS_REPORTED:
                    break
                response.errors.append(convert.item_error_to_pb(outcome.item(position)))
        return response

    async def ListFeedback(
        self, request: feedback_pb2.ListFeedbackRequest, context: Any
    ) -> feedback_pb2.ListFeedbackResponse:
        if (request.finding_id > 0) == bool(request.repository_url):
            raise InvalidArgument(
                [FieldViolation("finding_id", "set exactly one of finding_id and repository_url")]
            )
        violations = Violations()
        check_text(
            violations,
            "repository_url",
            request.repository_url,
            max_chars=self._ingestion.limits.max_url_chars,
        )
        violations.raise_if_any()
        query = f"f:{request.finding_id}" if request.finding_id else f"r:{request.repository_url}"
        before = self._pages.decode(request.page_token, query, int)
        size = page_size(request.page_size)
        rows = await self._ingestion.list_feedback(
            finding_id=request.finding_id or None,
            repository_url=request.repository_url or None,
            before_id=before,
            page_size=size + 1,
        )
        response = feedback_pb2.ListFeedbackResponse(
            feedback=[convert.feedback_record_to_pb(row) for row in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = self._pages.encode(query, rows[size - 1].feedback_id)
        return response


def _caller() -> str:
    """Who is calling (the auth interceptor set it): scopes request ids, names audit actors."""
    principal = current_principal.get()
    return principal.token_id if principal else ANONYMOUS


async def _chunks(
    requests: AsyncIterator[feedback_pb2.StreamFeedbackRequest],
) -> AsyncIterator[tuple[int, list[feedback_pb2.StreamFeedbackRequest]]]:
    """Groups a request stream into chunks by size or by time, whichever comes first."""
    queue: asyncio.Queue[feedback_pb2.StreamFeedbackRequest | None] = asyncio.Queue(
        maxsize=STREAM_CHUNK_EVENTS * 4
    )

    async def pump() -> None:
        try:
            async for message in requests:
                await queue.put(message)
        finally:
            await queue.put(None)

    reader = asyncio.ensure_future(pump())
    offset = 0
    try:
        finished = False
        while not finished:
            chunk: list[feedback_pb2.StreamFeedbackRequest] = []
            deadline = asyncio.get_running_loop().time() + STREAM_FLUSH_SECONDS
            while len(chunk) < STREAM_CHUNK_EVENTS:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    async with asyncio.timeout(max(remaining, 0.001)):
                        message = await queue.get()
                except TimeoutError:
                    break
                if message is None:
                    finished = True
                    break
                chunk.append(message)
            if chunk:
                yield offset, chunk
                offset += len(chunk)
        await reader  # surfaces a broken stream (e.g. an undecodable message) to the caller
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
