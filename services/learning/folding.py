"""Folds new feedback into learning metrics, exactly once, and recomputes them from scratch.

The watermark advances in the same transaction as the counts, and the fold_state row lock
serialises folders, so replicas may all try: one folds, the others wait and find nothing new.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.learning.instruments import LearningInstruments
from services.learning.repository import FoldCounts, FoldRepository

log = logging.getLogger("reviewlearn.learning.fold")


@dataclass(frozen=True)
class FoldResult:
    counts: FoldCounts
    seconds: float

    @property
    def advanced(self) -> bool:
        return self.counts.horizon > self.counts.watermark


class Folder:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], instruments: LearningInstruments
    ) -> None:
        self._sessions = sessions
        self._instruments = instruments
        self._deletions_pending = True  # a fresh process checks for deletions once

    def note_deletion(self) -> None:
        """The feedback service deleted a finding: the next fold takes it out of the counts."""
        self._deletions_pending = True

    async def fold(self) -> FoldResult:
        started = time.perf_counter()
        deletions = self._deletions_pending
        self._deletions_pending = False
        try:
            async with self._sessions.begin() as session:
                repo = FoldRepository(session)
                watermark = await repo.lock_watermark()
                horizon = await repo.horizon()
                if horizon <= watermark and not deletions:
                    counts = FoldCounts(watermark, watermark, 0, 0, 0)
                else:
                    counts = await repo.fold(
                        watermark=watermark, horizon=max(horizon, watermark), deletions=deletions
                    )
        except BaseException:
            self._deletions_pending = self._deletions_pending or deletions
            raise
        result = FoldResult(counts, time.perf_counter() - started)
        if counts.findings or counts.events or counts.changes:
            self._instruments.update_duration.record(result.seconds, {"kind": "fold"})
            self._instruments.events_folded.add(counts.events)
            fields = {
                "findings": counts.findings,
                "events": counts.events,
                "watermark": counts.horizon,
                "seconds": round(result.seconds, 3),
            }
            log.info("folded", extra={"fields": fields})
        return result

    async def recompute(self) -> FoldResult:
        """Rebuilds every count from the raw log in one transaction (readers see old or new)."""
        started = time.perf_counter()
        async with self._sessions.begin() as session:
            repo = FoldRepository(session)
            await repo.lock_watermark()
            await repo.reset()
            horizon = await repo.horizon()
            counts = await repo.fold(watermark=0, horizon=horizon, deletions=False)
        result = FoldResult(counts, time.perf_counter() - started)
        self._instruments.update_duration.record(result.seconds, {"kind": "recompute"})
        return result
