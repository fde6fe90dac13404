"""Keeps the learned state (counts, model, thresholds) in memory for the ranker and the reads.

The ranker reads the in-memory state: no query per ranking for learned numbers. It is rebuilt
after every fold or tune that changed something, and periodically as a fallback (another
replica may have tuned). The model document is parsed only when the active version changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from services.learning.domain.learned_state import LearnedState, ThresholdEntry
from services.learning.domain.metrics import MetricInput, build_metrics
from services.learning.domain.model import LogOddsModel, uninformed_model
from services.learning.domain.scopes import Dimension
from services.learning.storage.state_repository import FoldPosition, ThresholdRecord
from services.learning.storage.transactions import Transaction

UNINFORMED_VERSION = "none"


class StateStore(Protocol):
    async def fold_position(self) -> FoldPosition: ...
    async def metrics(self, dimensions: Sequence[int]) -> list[MetricInput]: ...
    async def rule_categories(self) -> dict[str, str]: ...
    async def team_of_repository(self) -> dict[int, int]: ...
    async def active_model_version(self) -> str | None: ...
    async def model_document(self, version: str) -> dict[str, Any] | None: ...
    async def thresholds(self) -> list[ThresholdRecord]: ...


class CurrentState:
    def __init__(self, *, transaction: Transaction[StateStore], prior_variance: float) -> None:
        self._transaction = transaction
        self._prior_variance = prior_variance
        self._state: LearnedState | None = None
        self._model: LogOddsModel | None = None
        self._lock = asyncio.Lock()
        self._stale = True
        self._refreshed_at = 0.0

    def mark_stale(self) -> None:
        """New counts were folded or a model was fitted: the next refresh_if_stale rebuilds."""
        self._stale = True

    async def refresh_if_stale(self, *, max_age: float) -> None:
        """Rebuilds when something changed, or at least every ``max_age`` seconds. Called on a
        short tick, so a burst of folds costs one build."""
        if self._stale or time.monotonic() - self._refreshed_at > max_age:
            await self.refresh()

    async def current(self) -> LearnedState:
        state = self._state
        if state is None:
            state = await self.refresh()
        return state

    async def refresh(self) -> LearnedState:
        async with self._lock:
            self._stale = False
            self._refreshed_at = time.monotonic()
            async with self._transaction() as store:
                position = await store.fold_position()
                rows = await store.metrics(list(Dimension))
                rule_category = await store.rule_categories()
                team_of_repository = await store.team_of_repository()
                version = await store.active_model_version()
                document = None
                if version is not None and (self._model is None or self._model.version != version):
                    document = await store.model_document(version)
                thresholds = await store.thresholds()
            if version is None:
                model = uninformed_model(
                    version=UNINFORMED_VERSION,
                    fitted_at=datetime.now(UTC),
                    prior_variance=self._prior_variance,
                )
            elif document is not None:
                model = await asyncio.to_thread(LogOddsModel.from_document, document)
            else:
                assert self._model is not None
                model = self._model
            self._model = model
            metrics = await asyncio.to_thread(
                build_metrics,
                rows=rows,
                rule_category=rule_category,
                team_of_repository=team_of_repository,
            )
            self._state = LearnedState(
                watermark=position.watermark,
                last_fold=position.updated_at,
                metrics=metrics,
                model=model,
                thresholds={
                    ((t.scope_type, t.scope_id), t.category): ThresholdEntry(
                        threshold=t.threshold,
                        source=t.source,
                        target=t.target,
                        not_useful_upper=t.not_useful_upper,
                        sample_size=t.sample_size,
                        updated_at=t.updated_at,
                    )
                    for t in thresholds
                },
                last_tune=max((t.updated_at for t in thresholds), default=None),
            )
            return self._state
