"""The outcome rule: how a finding's feedback decides whether it was useful.

It is written down once, here, and every consumer (the feedback service's GetFinding, the
learning fold and its full recompute, validation) uses these definitions:

* positive  = applied, fixed, helpful
* negative  = rejected, false_positive, not_helpful
* dismissed = dismissed (nobody acted on the finding)

The outcome of a finding is the outcome of its *winning* event: the event that is greatest by
``(decisive, occurred_at, feedback id)``, where every kind except ``dismissed`` is decisive.
So the latest decisive reaction wins, and a finding is dismissed only when nobody reacted
decisively. Because "greatest by a key" is order-independent, folding events one batch at a time
gives exactly what a recompute over the whole log gives.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import IntEnum


class FeedbackKind(IntEnum):
    """Stored as SMALLINT; values match ``reviewlearn.common.v1.FeedbackKind``."""

    APPLIED = 1
    FIXED = 2
    REJECTED = 3
    FALSE_POSITIVE = 4
    DISMISSED = 5
    HELPFUL = 6
    NOT_HELPFUL = 7


class Outcome(IntEnum):
    """Stored as SMALLINT; values match ``reviewlearn.common.v1.Outcome``."""

    PENDING = 1
    POSITIVE = 2
    NEGATIVE = 3
    DISMISSED = 4


OUTCOME_OF_KIND: dict[FeedbackKind, Outcome] = {
    FeedbackKind.APPLIED: Outcome.POSITIVE,
    FeedbackKind.FIXED: Outcome.POSITIVE,
    FeedbackKind.HELPFUL: Outcome.POSITIVE,
    FeedbackKind.REJECTED: Outcome.NEGATIVE,
    FeedbackKind.FALSE_POSITIVE: Outcome.NEGATIVE,
    FeedbackKind.NOT_HELPFUL: Outcome.NEGATIVE,
    FeedbackKind.DISMISSED: Outcome.DISMISSED,
}


def is_decisive(kind: FeedbackKind) -> bool:
    return kind is not FeedbackKind.DISMISSED


def sql_outcome_case(kind_column: str) -> str:
    """A SQL CASE expression mapping a feedback kind column to its outcome value."""
    whens = " ".join(
        f"WHEN {int(kind)} THEN {int(outcome)}" for kind, outcome in OUTCOME_OF_KIND.items()
    )
    return f"(CASE {kind_column} {whens} END)"


def sql_decisive(kind_column: str) -> str:
    """A SQL boolean expression: is this kind decisive?"""
    return f"({kind_column} <> {int(FeedbackKind.DISMISSED)})"


def outcome_of(events: Iterable[tuple[FeedbackKind | int, datetime, int]]) -> Outcome:
    """The outcome of a finding from its (kind, occurred_at, feedback id) events."""
    winner: tuple[bool, datetime, int] | None = None
    winning_kind = FeedbackKind.DISMISSED
    for raw_kind, occurred_at, feedback_id in events:
        kind = FeedbackKind(raw_kind)
        key = (is_decisive(kind), occurred_at, feedback_id)
        if winner is None or key > winner:
            winner, winning_kind = key, kind
    return Outcome.PENDING if winner is None else OUTCOME_OF_KIND[winning_kind]


def outcomes_by_finding(
    events: Iterable[tuple[int, FeedbackKind | int, datetime, int]],
) -> dict[int, Outcome]:
    """(finding id, kind, occurred_at, feedback id) rows → the outcome of every finding that
    has events (a finding without any is pending). The brute-force side of the validations."""
    grouped: dict[int, list[tuple[FeedbackKind | int, datetime, int]]] = {}
    for finding_id, kind, occurred_at, feedback_id in events:
        grouped.setdefault(finding_id, []).append((kind, occurred_at, feedback_id))
    return {finding_id: outcome_of(rows) for finding_id, rows in grouped.items()}
