"""Synthetic histories as the learning domain sees them: outcome logs split at a cut in time.

What the service's EvaluateModel does with the database, done in memory: findings first seen
before the cut are the past, labelled only by the reactions that had happened by the cut;
findings after it are scored, labelled by their final outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from services.cli.synthetic import SyntheticHistory
from services.learning.domain.features import FindingFeatures, OutcomeLog
from shared.outcome import FeedbackKind, Outcome, outcome_of


@dataclass(frozen=True)
class SplitHistory:
    train: OutcomeLog
    test: OutcomeLog
    cut: datetime


def outcome_logs(history: SyntheticHistory, *, holdout: float = 0.25) -> SplitHistory:
    events: dict[tuple[int, int], list[tuple[FeedbackKind, datetime, int]]] = {}
    for position, e in enumerate(history.feedback):
        events.setdefault((e.review_index, e.finding_index), []).append(
            (FeedbackKind[e.kind.upper()], e.occurred_at, position)
        )
    times = sorted(review.created_at for review in history.reviews)
    cut = times[min(int(len(times) * (1.0 - holdout)), len(times) - 1)]
    teams: dict[str, int] = {}
    repositories: dict[str, int] = {}
    train: list[tuple[object, ...]] = []
    test: list[tuple[object, ...]] = []
    for r, review in enumerate(history.reviews):
        team = teams.setdefault(review.team, len(teams) + 1)
        repository = repositories.setdefault(review.repository_url, len(repositories) + 1)
        for f, finding in enumerate(review.findings):
            reactions = events.get((r, f))
            if not reactions:
                continue
            row = (
                team,
                repository,
                finding.rule_id,
                finding.category,
                finding.severity,
                finding.confidence,
                finding.file_path,
                review.created_at.timestamp(),
                r,
            )
            if review.created_at < cut:
                known = [e for e in reactions if e[1] < cut]
                if known:
                    train.append((*row, outcome_of(known) == Outcome.POSITIVE))
            else:
                test.append((*row, outcome_of(reactions) == Outcome.POSITIVE))
    return SplitHistory(_log(train), _log(test), cut.astimezone(UTC))


def _log(rows: list[tuple[object, ...]]) -> OutcomeLog:
    columns = list(zip(*rows, strict=True)) if rows else [()] * 10
    return OutcomeLog(
        FindingFeatures.build(
            team_id=np.asarray(columns[0], dtype=np.int64),
            repository_id=np.asarray(columns[1], dtype=np.int64),
            rule_id=[str(v) for v in columns[2]],
            category=[str(v) for v in columns[3]],
            severity=np.asarray(columns[4], dtype=np.int64),
            confidence=np.asarray(columns[5], dtype=np.float64),
            file_path=[str(v) for v in columns[6]],
        ),
        seen_at=np.asarray(columns[7], dtype=np.float64),
        review_id=np.asarray(columns[8], dtype=np.int64),
        useful=np.asarray(columns[9], dtype=bool),
    )
