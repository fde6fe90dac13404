"""PatternLearner: recurring (rule, normalised message) keys per scope, classified and stored.

A pattern's acceptance is positive / decided, like every acceptance, and its smoothed value is
shrunk toward its scope's acceptance with a prior strength estimated from the scope's patterns
(empirical Bayes), so a pattern seen twice does not read 100%."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from services.learning.domain.learned_state import LearnedState
from services.learning.domain.patterns import (
    ANTI_PATTERN,
    EMERGING,
    RECURRING,
    TEAM_WEAKNESS,
    PatternStats,
    classify_patterns,
)
from services.learning.domain.rates import estimate_prior_strength, shrink_toward
from services.learning.domain.scopes import ALL_KEY, GLOBAL_SCOPE, Dimension
from services.learning.storage.transactions import Transaction
from shared.fingerprint import normalize_message

# Values of reviewlearn.learning.v1.PatternKind, as stored in pattern_metrics.pattern_type.
PATTERN_TYPES = {TEAM_WEAKNESS: 1, ANTI_PATTERN: 2, EMERGING: 3, RECURRING: 4}


class PatternStore(Protocol):
    async def pattern_stats(
        self, *, recent_since: datetime, prior_since: datetime
    ) -> list[Any]: ...
    async def messages(self, finding_ids: Sequence[int]) -> dict[int, str]: ...
    async def try_lock(self, name: str) -> bool: ...
    async def replace_patterns(self, rows: Sequence[dict[str, Any]]) -> None: ...


class StateSource(Protocol):
    async def current(self) -> LearnedState: ...


class MinePatterns:
    def __init__(
        self,
        *,
        transaction: Transaction[PatternStore],
        state: StateSource,
        min_occurrences: int,
        alpha: float,
        emerging_ratio: float,
        window: timedelta,
    ) -> None:
        self._transaction = transaction
        self._state = state
        self._min_occurrences = min_occurrences
        self._alpha = alpha
        self._emerging_ratio = emerging_ratio
        self._window = window
        self._mined_counts: object = None

    async def refresh(self, *, force: bool = False) -> int:
        """Recomputes every pattern; skipped when nothing was folded since the last time."""
        state = await self._state.current()
        # The watermark moves on every fold, even an idle one; the global counts move only when
        # findings or outcomes changed, which is when patterns can change.
        counts = state.metrics.get(GLOBAL_SCOPE, Dimension.ALL, ALL_KEY)
        signature = counts.counts if counts is not None else None
        if not force and signature == self._mined_counts:
            return 0
        now = datetime.now(UTC)
        async with self._transaction() as store:
            rows = await store.pattern_stats(
                recent_since=now - self._window, prior_since=now - 2 * self._window
            )
            messages = await store.messages([int(row[13]) for row in rows])
        by_scope: dict[tuple[int, int], list[tuple[PatternStats, tuple[object, ...]]]] = {}
        for row in rows:
            stats = PatternStats(
                pattern_key=str(row[2]),
                rule_id=str(row[3]),
                category=str(row[4]),
                normalized_message=normalize_message(messages.get(int(row[13]), "")),
                occurrences=int(row[5]),
                positive=int(row[6]),
                negative=int(row[7]),
                dismissed=int(row[8]),
                recent_occurrences=int(row[9]),
                prior_occurrences=int(row[10]),
            )
            by_scope.setdefault((int(row[0]), int(row[1])), []).append((stats, tuple(row)))
        stored: list[dict[str, object]] = []
        for scope, entries in by_scope.items():
            verdicts = await asyncio.to_thread(
                classify_patterns,
                [stats for stats, _ in entries],
                baseline_acceptance=_baseline(state, scope),
                min_occurrences=self._min_occurrences,
                alpha=self._alpha,
                emerging_ratio=self._emerging_ratio,
            )
            smoothed = _smoothed_acceptance(state, scope, [stats for stats, _ in entries])
            for (stats, row), verdict, accepted in zip(entries, verdicts, smoothed, strict=True):
                stored.append(
                    {
                        "scope_type": scope[0],
                        "scope_id": scope[1],
                        "pattern_key": stats.pattern_key,
                        "rule_id": stats.rule_id,
                        "category": stats.category,
                        "normalized_message": stats.normalized_message,
                        "pattern_type": PATTERN_TYPES[verdict.kind],
                        "occurrences": stats.occurrences,
                        "positive": stats.positive,
                        "negative": stats.negative,
                        "dismissed": stats.dismissed,
                        "recent_occurrences": stats.recent_occurrences,
                        "prior_occurrences": stats.prior_occurrences,
                        "p_value": verdict.p_value,
                        "acceptance_smoothed": accepted,
                        "first_seen": row[11],
                        "last_seen": row[12],
                        "updated_at": now,
                    }
                )
        async with self._transaction() as store:
            if not await store.try_lock("reviewlearn.patterns"):
                return 0  # another replica is writing the same patterns right now
            await store.replace_patterns(stored)
        self._mined_counts = signature
        return len(stored)


def _baseline(state: LearnedState, scope: tuple[int, int]) -> float:
    """The scope's overall usefulness, which a pattern is compared with."""
    rate = state.metrics.usefulness_of(scope)
    return 0.5 if rate is None else min(max(rate, 1e-3), 1 - 1e-3)


def _smoothed_acceptance(
    state: LearnedState, scope: tuple[int, int], stats: Sequence[PatternStats]
) -> list[float]:
    positive = np.array([s.positive for s in stats], dtype=np.float64)
    decided = np.array([s.positive + s.negative for s in stats], dtype=np.float64)
    view = state.metrics.get(scope, Dimension.ALL, ALL_KEY)
    parent = view.acceptance.smoothed if view is not None and view.acceptance.trials else 0.5
    strength = estimate_prior_strength(positive, decided)
    smoothed = shrink_toward(positive, decided, parent_rate=parent, strength=strength)
    return [float(v) for v in np.atleast_1d(smoothed)]
