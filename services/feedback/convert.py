"""Protobuf ↔ domain for the feedback service. Conversion problems become field violations."""

from __future__ import annotations

from collections.abc import Iterable

from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2

from services.feedback.domain import (
    BatchOutcome,
    FeedbackBatch,
    FeedbackDraft,
    ItemResult,
    ItemStatus,
    RecordedReview,
    ReviewDraft,
    to_micros,
)
from services.feedback.repository import FeedbackRow, FindingView
from shared.convert import MAX_NANOS, finding_from_pb, timestamp_from_pb, timestamp_to_pb
from shared.errors import Violations
from shared.outcome import FeedbackKind

_KINDS = {int(kind): kind for kind in FeedbackKind}
_KIND_PROBLEM = ("kind", "must be one of FEEDBACK_KIND_APPLIED … FEEDBACK_KIND_NOT_HELPFUL")
# Timestamps in this range (1970 … 9999) convert on the fast path; any other goes through
# timestamp_from_pb, which words the problem.
_MAX_FAST_SECONDS = 253_402_300_799

_ITEM_CODES = {
    ItemStatus.CONFLICT: (6, "EVENT_ID_CONFLICT"),
    ItemStatus.NOT_FOUND: (5, "FINDING_NOT_FOUND"),
    ItemStatus.INVALID: (3, "INVALID_EVENT"),
}


def review_from_pb(request: feedback_pb2.RecordFindingsRequest) -> ReviewDraft:
    return ReviewDraft(
        request_id=request.request_id or None,
        repository_url=request.repository_url.strip(),
        team=request.team.strip() or None,
        pull_request=request.pull_request,
        head_commit=request.head_commit.strip(),
        findings=tuple(finding_from_pb(f) for f in request.findings),
    )


def feedback_from_pb(
    event: feedback_pb2.FeedbackEvent, prefix: str, violations: Violations
) -> FeedbackDraft:
    kind = _KINDS.get(event.kind)
    if kind is None:
        violations.add(
            f"{prefix}.kind", "must be one of FEEDBACK_KIND_APPLIED … FEEDBACK_KIND_NOT_HELPFUL"
        )
        kind = FeedbackKind.DISMISSED
    return FeedbackDraft(
        event_id=event.event_id.strip(),
        finding_id=event.finding_id,
        kind=kind,
        actor_id=event.actor_id.strip(),
        comment=event.comment,
        occurred_at=timestamp_from_pb(event.occurred_at, f"{prefix}.occurred_at", violations),
    )


def feedback_batch_from_pb(events: Iterable[feedback_pb2.FeedbackEvent]) -> FeedbackBatch:
    """Decodes a batch in one pass into COPY records; what cannot be decoded becomes a problem."""
    batch = FeedbackBatch()
    append = batch.events.append
    problems = batch.problems
    for position, event in enumerate(events):
        kind = int(event.kind)
        if kind not in _KINDS:
            kind = 0
            problems[position] = [_KIND_PROBLEM]
        stamp = event.occurred_at
        seconds, nanos = stamp.seconds, stamp.nanos
        if 0 < seconds <= _MAX_FAST_SECONDS and 0 <= nanos <= MAX_NANOS:
            occurred_us = seconds * 1_000_000 + nanos // 1000
        else:
            violations = Violations()
            occurred_us = to_micros(timestamp_from_pb(stamp, "occurred_at", violations))
            if violations:
                problems.setdefault(position, []).extend(
                    (v.field, v.description) for v in violations.items
                )
        append(
            (
                position,
                event.event_id.strip(),
                event.finding_id,
                kind,
                event.actor_id.strip(),
                event.comment,
                occurred_us,
            )
        )
    return batch


def batch_outcome_to_pb(outcome: BatchOutcome) -> feedback_pb2.BatchRecordFeedbackResponse:
    stored, duplicates, failed = outcome.tally()
    response = feedback_pb2.BatchRecordFeedbackResponse(
        stored_count=stored, duplicate_count=duplicates, failed_count=failed
    )
    # add() builds each result in place, twice as fast as constructing a list of messages.
    add = response.results.add
    index = outcome.first_index
    for position, (event_id, status, feedback_id) in enumerate(
        zip(outcome.event_ids, outcome.statuses, outcome.feedback_ids, strict=True)
    ):
        if status == ItemStatus.STORED:
            add(index=index + position, event_id=event_id, feedback_id=feedback_id)
        elif status == ItemStatus.DUPLICATE:
            add(index=index + position, event_id=event_id, feedback_id=feedback_id, duplicate=True)
        else:
            add(
                index=index + position,
                event_id=event_id,
                error=item_error_to_pb(outcome.item(position)),
            )
    return response


def recorded_review_to_pb(review: RecordedReview) -> feedback_pb2.RecordFindingsResponse:
    return feedback_pb2.RecordFindingsResponse(
        review_id=review.review_id,
        replayed=review.replayed,
        findings=[
            feedback_pb2.RecordedFinding(
                finding_id=f.finding_id,
                client_finding_id=f.client_finding_id or "",
                fingerprint=f.fingerprint,
                already_recorded=f.already_recorded,
            )
            for f in review.findings
        ],
    )


def item_error_to_pb(result: ItemResult) -> common_pb2.ItemError:
    code, reason = _ITEM_CODES[result.status]
    return common_pb2.ItemError(
        index=result.index,
        code=code,
        reason=reason,
        message=result.message,
        field_violations=[
            common_pb2.FieldViolation(field=field, description=description)
            for field, description in result.violations
        ],
    )


def finding_to_pb(view: FindingView) -> feedback_pb2.Finding:
    row = view.finding
    return feedback_pb2.Finding(
        finding_id=row.id,
        review_id=row.review_id,
        repository_url=view.repository_url,
        team=view.team,
        pull_request=row.pull_request,
        head_commit=view.head_commit,
        fingerprint=row.fingerprint,
        create_time=timestamp_to_pb(row.created_at),
        outcome=int(view.outcome),  # type: ignore[arg-type]
        feedback_count=view.feedback_count,
        input=common_pb2.FindingInput(
            client_finding_id=row.client_finding_id or "",
            rule_id=row.rule_id,
            category=row.category,
            severity=row.severity,  # type: ignore[arg-type]
            confidence=row.confidence,
            file_path=row.file_path,
            line_start=row.line_start,
            line_end=row.line_end,
            title=row.title,
            message=row.message,
            suggested_fix=row.suggested_fix,
            code_context=row.code_context,
        ),
    )


def feedback_record_to_pb(row: FeedbackRow) -> feedback_pb2.FeedbackRecord:
    return feedback_pb2.FeedbackRecord(
        feedback_id=row.feedback_id,
        repository_url=row.repository_url,
        record_time=timestamp_to_pb(row.recorded_at),
        event=feedback_pb2.FeedbackEvent(
            event_id=row.event_id,
            finding_id=row.finding_id,
            kind=row.kind,  # type: ignore[arg-type]
            actor_id=row.actor_id,
            comment=row.comment,
            occurred_at=timestamp_to_pb(row.occurred_at),
        ),
    )
