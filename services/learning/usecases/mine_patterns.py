"""PatternLearner: recurring (rule, normalised message) keys per scope, classified and stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.learning.domain.learned_state import LearnedModel
from services.learning.domain.patterns import (
    ANTI_PATTERN,
    EMERGING,
    RECURRING,
    TEAM_WEAKNESS,
    PatternStats,
    classify_patterns,
)
from services.learning.domain.scopes import Dimension, ScopeType
from services.learning.model_cache import ModelStore
from services.learning.storage.learning_repository import LearningRepository
from shared.fingerprint import normalize_message

# Values of reviewlearn.learning.v1.PatternKind, as stored in pattern_metrics.pattern_type.
PATTERN_TYPES = {TEAM_WEAKNESS: 1, ANTI_PATTERN: 2, EMERGING: 3, RECURRING: 4}


class PatternMiner:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        models: ModelStore,
        min_occurrences: int,
        alpha: float,
        emerging_ratio: float,
        window: timedelta,
    ) -> None:
        self._sessions = sessions
        self._models = models
        self._min_occurrences = min_occurrences
        self._alpha = alpha
        self._emerging_ratio = emerging_ratio
        self._window = window
        self._mined_counts: object = None

    async def refresh(self, *, force: bool = False) -> int:
        """Recomputes every pattern; skipped when nothing was folded since the last time."""
        model = await self._models.current()
        # The watermark moves on every fold, even an idle one; the global counts move only when
        # findings or outcomes changed, which is when patterns can change.
        counts = model.metrics.get(((ScopeType.GLOBAL, 0), Dimension.ALL, "*"))
        signature = counts.counts if counts is not None else None
        if not force and signature == self._mined_counts:
            return 0
        now = datetime.now(UTC)
        async with self._sessions.begin() as session:
            repo = LearningRepository(session)
            rows = await repo.pattern_stats(
                recent_since=now - self._window, prior_since=now - 2 * self._window
            )
            messages = await repo.messages([int(row[13]) for row in rows])
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
                baseline_acceptance=_baseline(model, scope),
                min_occurrences=self._min_occurrences,
                alpha=self._alpha,
                emerging_ratio=self._emerging_ratio,
            )
            for (stats, row), verdict in zip(entries, verdicts, strict=True):
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
                        "first_seen": row[11],
                        "last_seen": row[12],
                        "updated_at": now,
                    }
                )
        async with self._sessions.begin() as session:
            repo = LearningRepository(session)
            if not await repo.try_lock("reviewlearn.patterns"):
                return 0  # another replica is writing the same patterns right now
            await repo.replace_patterns(stored)
        self._mined_counts = signature
        return len(stored)


def _baseline(model: LearnedModel, scope: tuple[int, int]) -> float:
    """The scope's overall usefulness, which a pattern is compared with."""
    view = model.metrics.get((scope, Dimension.ALL, "*"))
    if view is None or view.usefulness.trials == 0:
        return 0.5
    return min(max(view.usefulness.smoothed, 1e-3), 1 - 1e-3)
