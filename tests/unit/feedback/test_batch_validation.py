"""The batch path's cheap pass must find every event the single-event rules reject: a rule
added to ``validate_feedback`` (or to ``check_text``) that the pass does not know would be skipped
silently for BatchRecordFeedback, StreamFeedback and the unary group commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.feedback.domain import (
    FeedbackBatch,
    FeedbackDraft,
    validate_feedback,
    validate_feedback_batch,
)
from shared.errors import Violations
from shared.finding_input import Limits
from shared.outcome import FeedbackKind

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LIMITS = Limits(max_id_chars=8, max_text_chars=12)

# Short texts around the limits, with the characters the rules care about.
texts = st.text(alphabet=st.sampled_from(["a", "Z", " ", "\t", "\n", "\x00", "é"]), max_size=14)
moments = st.sampled_from(
    [
        NOW,
        NOW + LIMITS.future_tolerance,
        NOW + LIMITS.future_tolerance + timedelta(microseconds=1),
        LIMITS.oldest_event,
        LIMITS.oldest_event - timedelta(microseconds=1),
        datetime(1970, 1, 1, tzinfo=UTC),
    ]
)
drafts = st.builds(
    FeedbackDraft,
    event_id=texts,
    finding_id=st.integers(min_value=-2, max_value=3),
    kind=st.sampled_from(list(FeedbackKind)),
    actor_id=texts,
    comment=texts,
    occurred_at=moments,
)


def single_event_violations(draft: FeedbackDraft, name: str) -> tuple[tuple[str, str], ...]:
    violations = Violations()
    validate_feedback(draft, name, LIMITS, violations, now=NOW)
    return tuple((v.field, v.description) for v in violations.items)


@settings(max_examples=400, deadline=None)
@given(st.lists(drafts, min_size=1, max_size=6))
def test_the_batch_pass_rejects_exactly_what_the_single_event_rules_reject(
    events: list[FeedbackDraft],
) -> None:
    batch = FeedbackBatch()
    for draft in events:
        batch.append(draft)
    found = validate_feedback_batch(batch, lambda i: f"events[{i}]", LIMITS, now=NOW)
    expected = {
        position: violations
        for position, draft in enumerate(events)
        if (violations := single_event_violations(draft, f"events[{position}]"))
    }
    assert found == expected


def test_a_blank_event_or_actor_id_is_rejected_in_a_batch() -> None:
    batch = FeedbackBatch()
    batch.append(FeedbackDraft(" ", 1, FeedbackKind.APPLIED, "\t", "", NOW))
    found = validate_feedback_batch(batch, lambda i: f"events[{i}]", LIMITS, now=NOW)
    assert found == {
        0: (("events[0].event_id", "is required"), ("events[0].actor_id", "is required"))
    }
