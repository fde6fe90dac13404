"""The brute-force recounts the validations compare the folds with."""

from __future__ import annotations

from datetime import UTC, date, datetime

from services.insights.domain import recount as insights_recount
from services.learning.domain.recount import RawFinding, recount
from shared.outcome import FeedbackKind, Outcome, outcomes_by_finding

T0 = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
T1 = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)


def test_the_latest_decisive_reaction_wins_per_finding() -> None:
    events = [
        (1, int(FeedbackKind.APPLIED), T0, 10),
        (1, int(FeedbackKind.DISMISSED), T1, 11),  # later, but not decisive
        (2, int(FeedbackKind.HELPFUL), T0, 12),
        (2, int(FeedbackKind.REJECTED), T1, 13),
    ]
    assert outcomes_by_finding(events) == {1: Outcome.POSITIVE, 2: Outcome.NEGATIVE}


def test_learning_recount_counts_each_finding_in_three_scopes_and_four_dimensions() -> None:
    findings = [
        RawFinding(1, team_id=7, repository_id=70, category="security", severity=4, rule_id="r1"),
        RawFinding(2, team_id=7, repository_id=71, category="style", severity=1, rule_id="r2"),
    ]
    counts = recount(findings, [(1, int(FeedbackKind.FIXED), T0, 1)])
    assert len(counts) == 2 * 3 * 4 - 2  # both share the global and team "*" keys
    assert counts[(1, 0, 1, "*")] == (2, 1, 0, 0)  # global, all: shown 2, one positive
    assert counts[(2, 7, 2, "security")] == (1, 1, 0, 0)
    assert counts[(3, 71, 3, "info")] == (1, 0, 0, 0)  # pending: shown only
    assert counts[(1, 0, 4, "r2")] == (1, 0, 0, 0)


def test_insights_recount_uses_utc_days_of_the_finding_and_of_its_review() -> None:
    finding = insights_recount.RawFinding(
        finding_id=1,
        review_id=5,
        review_created_at=T0,
        team_id=7,
        repository_id=70,
        rule_id="r1",
        category="security",
        severity=4,
        created_at=T1,
    )
    counted = insights_recount.recount([finding], [(1, int(FeedbackKind.REJECTED), T1, 1)])
    negative = int(Outcome.NEGATIVE)
    assert counted.rollups == {(70, date(2026, 12, 1), "security", 4, "r1", negative, 7): 1}
    assert counted.global_rollups == {(date(2026, 12, 1), "security", negative): 1}
    assert counted.review_rollups == {(70, date(2026, 11, 30), 7): 1}
