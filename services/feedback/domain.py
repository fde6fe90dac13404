"""The feedback service's domain: what a review, a finding and a feedback event are, and the
rules a request must meet before anything is stored. Pure: no gRPC, no SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.errors import Violations
from shared.finding_input import FindingDraft, Limits, check_text, validate_finding
from shared.outcome import FeedbackKind


@dataclass(frozen=True)
class ReviewDraft:
    request_id: str | None
    repository_url: str
    team: str | None
    pull_request: int
    head_commit: str
    findings: tuple[FindingDraft, ...]


@dataclass(frozen=True)
class FeedbackDraft:
    event_id: str
    finding_id: int
    kind: FeedbackKind
    actor_id: str
    comment: str
    occurred_at: datetime

    def same_content(self, other: FeedbackDraft) -> bool:
        """Whether a re-sent event is a harmless duplicate rather than a conflict."""
        return (
            self.finding_id == other.finding_id
            and self.kind == other.kind
            and self.actor_id == other.actor_id
            and self.comment == other.comment
            and self.occurred_at == other.occurred_at
        )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

StagedEvent = tuple[int, str, int, int, str, str, int]
"""(position, event_id, finding_id, kind, actor_id, comment, occurred_at in µs since the epoch)."""


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICROSECOND


@dataclass
class FeedbackBatch:
    """A batch of feedback events as plain tuples, exactly the records COPY sends.

    Thousands of events are decoded, validated and copied into the database without building a
    draft, a violations list or a datetime per event: those were most of the old path's time
    (see docs/architecture.md, "Feedback ingestion"). The kind is 0 where the wire value is not a
    kind; ``problems`` says so.
    """

    events: list[StagedEvent] = field(default_factory=list)
    problems: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    """What decoding found wrong, by position: (field below the event, description)."""

    def __len__(self) -> int:
        return len(self.events)

    @property
    def event_ids(self) -> list[str]:
        return [event[1] for event in self.events]

    @property
    def kinds(self) -> list[int]:
        return [event[3] for event in self.events]

    def append(self, draft: FeedbackDraft) -> None:
        self.events.append(
            (
                len(self.events),
                draft.event_id,
                draft.finding_id,
                int(draft.kind),
                draft.actor_id,
                draft.comment,
                to_micros(draft.occurred_at),
            )
        )

    def draft(self, position: int) -> FeedbackDraft:
        _, event_id, finding_id, kind, actor_id, comment, occurred_us = self.events[position]
        return FeedbackDraft(
            event_id=event_id,
            finding_id=finding_id,
            kind=FeedbackKind(kind) if kind else FeedbackKind.DISMISSED,
            actor_id=actor_id,
            comment=comment,
            occurred_at=EPOCH + timedelta(microseconds=occurred_us),
        )


@dataclass
class BatchOutcome:
    """What happened to each event of a batch, as columns in the batch's order."""

    first_index: int
    event_ids: list[str]
    statuses: list[str]
    feedback_ids: list[int]
    recorded_ats: list[datetime | None]
    errors: dict[int, tuple[str, tuple[tuple[str, str], ...]]]
    """Position → (message, field violations) of every item that was not stored."""

    def count(self, status: str) -> int:
        return self.statuses.count(status)

    def tally(self) -> tuple[int, int, int]:
        """(stored, duplicate, failed): the counts every response of a batch carries."""
        stored = self.statuses.count(ItemStatus.STORED)
        duplicates = self.statuses.count(ItemStatus.DUPLICATE)
        return stored, duplicates, len(self.statuses) - stored - duplicates

    def item(self, position: int) -> ItemResult:
        message, violations = self.errors.get(position, ("", ()))
        return ItemResult(
            index=self.first_index + position,
            event_id=self.event_ids[position],
            status=self.statuses[position],
            feedback_id=self.feedback_ids[position],
            message=message,
            violations=violations,
            recorded_at=self.recorded_ats[position],
        )


@dataclass(frozen=True)
class RecordedFinding:
    finding_id: int
    client_finding_id: str | None
    fingerprint: str
    already_recorded: bool


@dataclass(frozen=True)
class RecordedReview:
    review_id: int
    findings: tuple[RecordedFinding, ...]
    replayed: bool


class ItemStatus:
    """Per-item results of a feedback batch."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    INVALID = "invalid"


@dataclass(frozen=True)
class ItemResult:
    index: int
    event_id: str
    status: str
    feedback_id: int = 0
    message: str = ""
    violations: tuple[tuple[str, str], ...] = ()
    recorded_at: datetime | None = None


def check_timestamp(
    violations: Violations, field: str, value: datetime, *, now: datetime, limits: Limits
) -> None:
    if value > now + limits.future_tolerance:
        violations.add(field, f"is in the future ({value.isoformat()}; now is {now.isoformat()})")
    elif value < limits.oldest_event:
        violations.add(field, f"is before {limits.oldest_event.date().isoformat()}")


def validate_review(draft: ReviewDraft, limits: Limits, violations: Violations) -> None:
    """Adds a violation for everything wrong with a review; the caller raises them all."""
    if draft.request_id is not None:
        check_text(violations, "request_id", draft.request_id, max_chars=limits.max_id_chars)
    check_text(
        violations,
        "repository_url",
        draft.repository_url,
        max_chars=limits.max_url_chars,
        required=True,
    )
    if draft.team is not None:
        check_text(violations, "team", draft.team, max_chars=limits.max_id_chars)
    if draft.pull_request <= 0:
        violations.add("pull_request", "must be a positive pull-request number")
    check_text(
        violations, "head_commit", draft.head_commit, max_chars=limits.max_id_chars, required=True
    )
    if not draft.findings:
        violations.add("findings", "at least one finding is required")
    elif len(draft.findings) > limits.max_findings_per_request:
        violations.add(
            "findings",
            f"{len(draft.findings)} findings; "
            f"at most {limits.max_findings_per_request} per request",
        )
        return
    seen_client_ids: dict[str, int] = {}
    for index, finding in enumerate(draft.findings):
        validate_finding(finding, f"findings[{index}]", limits, violations)
        if finding.client_finding_id:
            first = seen_client_ids.setdefault(finding.client_finding_id, index)
            if first != index:
                violations.add(
                    f"findings[{index}].client_finding_id",
                    f"repeats findings[{first}].client_finding_id in the same request",
                )


def validate_feedback(
    draft: FeedbackDraft, prefix: str, limits: Limits, violations: Violations, *, now: datetime
) -> None:
    # validate_feedback_batch's cheap pass must know every rule here (and check_text's):
    # tests/unit/feedback/test_batch_validation.py compares the two.
    check_text(
        violations,
        f"{prefix}.event_id",
        draft.event_id,
        max_chars=limits.max_id_chars,
        required=True,
    )
    if draft.finding_id <= 0:
        violations.add(f"{prefix}.finding_id", "must be a positive finding id")
    check_text(
        violations,
        f"{prefix}.actor_id",
        draft.actor_id,
        max_chars=limits.max_id_chars,
        required=True,
    )
    check_text(violations, f"{prefix}.comment", draft.comment, max_chars=limits.max_text_chars)
    check_timestamp(violations, f"{prefix}.occurred_at", draft.occurred_at, now=now, limits=limits)


def validate_feedback_batch(
    batch: FeedbackBatch,
    prefix: Callable[[int], str],
    limits: Limits,
    *,
    now: datetime,
) -> dict[int, tuple[tuple[str, str], ...]]:
    """The violations of every invalid event, by position; valid events are not in the answer.

    One cheap pass over the batch finds the suspect events; only those go through
    ``validate_feedback``, so the messages are exactly the single-event ones. ``prefix`` names an
    event's position in the request (``events[7]``).
    """
    latest = to_micros(now + limits.future_tolerance)
    oldest = to_micros(limits.oldest_event)
    max_id = limits.max_id_chars
    max_text = limits.max_text_chars
    problems = batch.problems
    suspects = [
        position
        for position, event_id, finding_id, _, actor_id, comment, occurred_us in batch.events
        if not (
            # ``check_text``: required means more than whitespace
            event_id.strip()
            and len(event_id) <= max_id
            and finding_id > 0
            and actor_id.strip()
            and len(actor_id) <= max_id
            and len(comment) <= max_text
            and oldest <= occurred_us <= latest
            and "\x00" not in event_id
            and "\x00" not in actor_id
            and "\x00" not in comment
        )
        or position in problems
    ]
    invalid: dict[int, tuple[tuple[str, str], ...]] = {}
    for position in suspects:
        name = prefix(position)
        violations = Violations()
        for below, description in problems.get(position, ()):
            violations.add(f"{name}.{below}", description)
        validate_feedback(batch.draft(position), name, limits, violations, now=now)
        if violations:
            invalid[position] = tuple((v.field, v.description) for v in violations.items)
    return invalid


def validate_batch_size(events: Sequence[object], limits: Limits) -> None:
    violations = Violations()
    if not events:
        violations.add("events", "at least one event is required")
    elif len(events) > limits.max_events_per_batch:
        violations.add(
            "events", f"{len(events)} events; at most {limits.max_events_per_batch} per batch"
        )
    violations.raise_if_any()
