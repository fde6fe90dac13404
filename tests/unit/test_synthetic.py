"""Tests for services.cli.synthetic: determinism and the ground truth the learner should find."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest

from services.cli.synthetic import (
    CLIENT_ID_SEPARATOR,
    FEEDBACK_KINDS,
    POSITIVE_KINDS,
    SyntheticFinding,
    SyntheticHistory,
    generate_history,
    split_holdout,
)
from shared.fingerprint import finding_fingerprint
from shared.outcome import OUTCOME_OF_KIND, FeedbackKind, Outcome

END = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> SyntheticHistory:
    return generate_history(seed=42, reviews=1500, end=END)


def _outcomes(history: SyntheticHistory) -> dict[tuple[int, int], bool]:
    """Each reacted-to finding's outcome by the shared rule: latest decisive event wins."""
    winning: dict[tuple[int, int], tuple[tuple[bool, datetime], str]] = {}
    for event in history.feedback:
        key = (event.review_index, event.finding_index)
        rank = (event.kind != "dismissed", event.occurred_at)
        if key not in winning or rank >= winning[key][0]:
            winning[key] = (rank, event.kind)
    return {key: kind in POSITIVE_KINDS for key, (_, kind) in winning.items()}


def _labelled(
    history: SyntheticHistory,
) -> tuple[list[SyntheticFinding], npt.NDArray[np.bool_]]:
    outcomes = _outcomes(history)
    findings = [history.reviews[r].findings[f] for r, f in outcomes]
    return findings, np.array(list(outcomes.values()))


def _ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    ranks = np.empty(values.size)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ranks


def _auc(score: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]) -> float:
    """Mann-Whitney AUC (ties are rare here, so ordinal ranks are good enough)."""
    ranks = _ranks(score)
    pos = int(positive.sum())
    neg = positive.size - pos
    return float((ranks[positive].sum() - pos * (pos - 1) / 2) / (pos * neg))


def test_same_seed_same_history_and_other_seed_differs() -> None:
    first = generate_history(seed=3, reviews=60, end=END)
    assert first == generate_history(seed=3, reviews=60, end=END)
    assert first != generate_history(seed=4, reviews=60, end=END)


def test_sizes_and_identifiers(history: SyntheticHistory) -> None:
    assert len(history.reviews) == 1500
    assert all(len(review.findings) == 10 for review in history.reviews)
    assert len(history.rules) == 40
    assert len({event.event_id for event in history.feedback}) == len(history.feedback)
    assert {event.event_id for event in history.feedback} == {
        f"syn-42-{i}" for i in range(len(history.feedback))
    }
    ids = [(r.repository_url, f.client_finding_id) for r in history.reviews for f in r.findings]
    assert len(set(ids)) == len(ids)
    assert len({review.repository_url for review in history.reviews}) == 9
    assert {f.category for r in history.reviews for f in r.findings} == {
        "security",
        "performance",
        "correctness",
        "style",
        "maintainability",
        "documentation",
    }


def test_rule_usefulness_is_widely_spread(history: SyntheticHistory) -> None:
    usefulness = np.array([rule.usefulness for rule in history.rules])
    assert (usefulness <= 0.25).sum() >= 5
    assert (usefulness >= 0.85).sum() >= 5
    assert any(r.category == "security" and r.severity == 5 for r in history.rules)


def test_timestamps_are_ordered_and_inside_the_period(history: SyntheticHistory) -> None:
    created = [review.created_at for review in history.reviews]
    assert created == sorted(created)
    assert created[0] >= END - timedelta(weeks=12)
    assert created[-1] < END
    occurred = [event.occurred_at for event in history.feedback]
    assert occurred == sorted(occurred)
    for event in history.feedback:
        assert history.reviews[event.review_index].created_at < event.occurred_at <= END


def test_feedback_kinds_match_the_shared_outcome_rule(history: SyntheticHistory) -> None:
    kinds = {event.kind for event in history.feedback}
    assert kinds == set(FEEDBACK_KINDS)
    for kind in kinds:
        outcome = OUTCOME_OF_KIND[FeedbackKind[kind.upper()]]
        assert (outcome is Outcome.POSITIVE) == (kind in POSITIVE_KINDS)


def test_some_findings_change_their_outcome(history: SyntheticHistory) -> None:
    events = defaultdict(list)
    for event in history.feedback:
        events[(event.review_index, event.finding_index)].append(event.kind)
    twice = [kinds for kinds in events.values() if len(kinds) == 2]
    assert len(twice) > 20
    assert ["dismissed", "applied"] in twice or ["not_helpful", "applied"] in twice


def test_feedback_rate_controls_reactions() -> None:
    silent = generate_history(seed=1, reviews=40, end=END, feedback_rate=0.0)
    assert silent.feedback == ()
    full = generate_history(seed=1, reviews=40, end=END, feedback_rate=1.0)
    reacted = {(event.review_index, event.finding_index) for event in full.feedback}
    first_push = [
        (r, f)
        for r, review in enumerate(full.reviews)
        for f, finding in enumerate(review.findings)
        if finding.client_finding_id.endswith(f"{CLIENT_ID_SEPARATOR}1")
    ]
    assert set(first_push) <= reacted


def test_confidence_is_informative_but_miscalibrated(history: SyntheticHistory) -> None:
    findings, positive = _labelled(history)
    confidence = np.array([f.confidence for f in findings])
    truth = np.array([f.true_useful_probability for f in findings])
    spearman = np.corrcoef(_ranks(confidence), _ranks(truth))[0, 1]
    assert spearman > 0.3
    bins = np.minimum((confidence * 10).astype(int), 9)
    ece = sum(
        abs(confidence[bins == b].mean() - positive[bins == b].mean()) * (bins == b).mean()
        for b in np.unique(bins)
    )
    assert ece > 0.1


def test_rule_acceptance_beats_raw_confidence(history: SyntheticHistory) -> None:
    findings, positive = _labelled(history)
    train = np.arange(len(findings)) % 2 == 0
    counts: dict[str, list[int]] = defaultdict(lambda: [1, 1])  # Beta(1, 1) prior
    for finding, good in zip(np.array(findings, dtype=object)[train], positive[train], strict=True):
        counts[finding.rule_id][0 if good else 1] += 1
    acceptance = np.array([counts[f.rule_id][0] / sum(counts[f.rule_id]) for f in findings])
    confidence = np.array([f.confidence for f in findings])
    test = ~train
    assert _auc(acceptance[test], positive[test]) > _auc(confidence[test], positive[test]) + 0.03


def test_recurring_findings_keep_their_fingerprint(history: SyntheticHistory) -> None:
    by_prefix: dict[tuple[str, str], list[SyntheticFinding]] = defaultdict(list)
    for review in history.reviews:
        for finding in review.findings:
            prefix = finding.client_finding_id.rsplit(CLIENT_ID_SEPARATOR, 1)[0]
            by_prefix[(review.repository_url, prefix)].append(finding)
    recurring = [group for group in by_prefix.values() if len(group) > 1]
    assert len(recurring) > 100
    moved = 0
    for group in recurring:
        prints = {
            finding_fingerprint(
                rule_id=f.rule_id,
                file_path=f.file_path,
                message=f.message,
                code_context=f.code_context,
            )
            for f in group
        }
        assert len(prints) == 1
        assert len({f.client_finding_id for f in group}) == len(group)
        moved += len({f.line_start for f in group}) > 1
    assert moved > len(recurring) // 2


def test_split_keeps_pull_requests_together(history: SyntheticHistory) -> None:
    train, holdout = split_holdout(history, holdout_fraction=0.25, seed=5)
    assert len(train.reviews) + len(holdout.reviews) == len(history.reviews)
    train_prs = {(r.repository_url, r.pull_request) for r in train.reviews}
    holdout_prs = {(r.repository_url, r.pull_request) for r in holdout.reviews}
    assert not train_prs & holdout_prs
    assert 0.2 < len(holdout_prs) / len(train_prs | holdout_prs) < 0.3
    assert len(train.feedback) + len(holdout.feedback) == len(history.feedback)
    original = {event.event_id: event for event in history.feedback}
    for part in (train, holdout):
        for event in part.feedback:
            source = original[event.event_id]
            assert (
                part.reviews[event.review_index].findings[event.finding_index]
                is history.reviews[source.review_index].findings[source.finding_index]
            )
    assert split_holdout(history, holdout_fraction=0.25, seed=5) == (train, holdout)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="feedback_rate"):
        generate_history(seed=1, reviews=5, end=END, feedback_rate=1.5)
    with pytest.raises(ValueError, match="timezone"):
        generate_history(seed=1, reviews=5, end=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_holdout(generate_history(seed=1, reviews=5, end=END), holdout_fraction=2, seed=0)
