"""Small in-memory outcome logs for the model's tests and the tests that need a fitted model."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from services.learning.domain.features import FindingFeatures, OutcomeLog

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def features(n: int, **columns: object) -> FindingFeatures:
    values: dict[str, object] = {
        "team_id": np.ones(n, dtype=np.int64),
        "repository_id": np.ones(n, dtype=np.int64),
        "rule_id": ["R1"] * n,
        "category": ["style"] * n,
        "severity": np.full(n, 3),
        "confidence": np.full(n, 0.5),
        "file_path": ["src/a.py"] * n,
    }
    values.update(columns)
    return FindingFeatures.build(**values)  # type: ignore[arg-type]


def two_rule_log(n: int = 4000, seed: int = 1) -> OutcomeLog:
    """R_good acted on 80% of the time, R_bad 10%, in two repositories of one team."""
    rng = np.random.default_rng(seed)
    good = rng.random(n) < 0.5
    repository = rng.integers(1, 3, n)
    useful = rng.random(n) < np.where(good, 0.8, 0.1)
    return OutcomeLog(
        features(
            n,
            repository_id=repository,
            rule_id=np.where(good, "R_good", "R_bad").tolist(),
            confidence=rng.choice([0.3, 0.5, 0.7], n),
        ),
        seen_at=np.sort(rng.uniform(0, 90 * 86_400, n)) + 1.7e9,
        review_id=np.arange(n) // 8,
        useful=useful,
    )
