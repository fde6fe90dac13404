"""The feedback service's domain: what a review, a finding and a feedback event are, and the
rules a request must meet before anything is stored. Pure: no gRPC, no SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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


def validate_batch_size(events: Sequence[object], limits: Limits) -> None:
    violations = Violations()
    if not events:
        violations.add("events", "at least one event is required")
    elif len(events) > limits.max_events_per_batch:
        violations.add(
            "events", f"{len(events)} events; at most {limits.max_events_per_batch} per batch"
        )
    violations.raise_if_any()
