"""Loads the learned model from the database and keeps the current one in memory.

The ranker reads the in-memory model (no query per ranking for learned state); it is rebuilt
after every fold or tune that changed something, and periodically as a fallback.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.learning.domain.calibration import CalibrationCurve
from services.learning.domain.learned_state import (
    LearnedModel,
    ModelParameters,
    ThresholdEntry,
    build_model,
)
from services.learning.domain.scopes import Scope
from services.learning.storage.learning_repository import LearningRepository


class ModelStore:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], parameters: ModelParameters
    ) -> None:
        self._sessions = sessions
        self._parameters = parameters
        self._model: LearnedModel | None = None
        self._lock = asyncio.Lock()
        self._stale = True
        self._refreshed_at = 0.0

    def mark_stale(self) -> None:
        """New counts were folded: the next refresh_if_stale rebuilds the model."""
        self._stale = True

    async def refresh_if_stale(self, *, max_age: float) -> None:
        """Rebuilds when something changed, or at least every ``max_age`` seconds (another
        replica may have tuned). Called on a short tick, so a burst of folds costs one build."""
        if self._stale or time.monotonic() - self._refreshed_at > max_age:
            await self.refresh()

    async def current(self) -> LearnedModel:
        if self._model is None:
            await self.refresh()
        assert self._model is not None
        return self._model

    async def refresh(self) -> LearnedModel:
        async with self._lock:
            self._stale = False
            self._refreshed_at = time.monotonic()
            async with self._sessions.begin() as session:
                repo = LearningRepository(session)
                state = await repo.fold_state()
                rows = await repo.all_metrics([1, 2, 3, 4])
                rule_category = await repo.rule_categories()
                _, _, team_of_repository = await repo.scope_names()
                curve_rows = await repo.curves()
                threshold_rows = await repo.thresholds()
            curves: dict[tuple[Scope, str], CalibrationCurve] = {
                ((row.scope_type, row.scope_id), row.category): CalibrationCurve.from_dict(
                    row.curve
                )
                for row in curve_rows
            }
            thresholds = {
                ((row.scope_type, row.scope_id), row.category): ThresholdEntry(
                    threshold=row.threshold,
                    source=row.source,
                    target=row.target,
                    not_useful_upper=row.not_useful_upper,
                    sample_size=row.sample_size,
                    updated_at=row.updated_at,
                )
                for row in threshold_rows
            }
            self._model = await asyncio.to_thread(
                build_model,
                watermark=state.watermark if state else 0,
                built_at=datetime.now(UTC),
                rows=rows,
                rule_category=rule_category,
                team_of_repository=team_of_repository,
                curves=curves,
                thresholds=thresholds,
                last_tune=max((row.updated_at for row in threshold_rows), default=None),
                parameters=self._parameters,
            )
            return self._model
