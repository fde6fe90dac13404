"""Keeps the rollups current: folds new feedback exactly once, rebuilds, validates.

Every replica may fold (woken by the feedback service's notifications, and by a periodic
catch-up); the watermark row lock serialises them, so one folds and the others find nothing new.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.insights.instruments import InsightsInstruments
from shared.log_horizon import FoldWindow

log = logging.getLogger("reviewlearn.insights.fold")


@dataclass(frozen=True)
class FoldCounts:
    window: FoldWindow
    findings: int
    """States added (findings seen for the first time)."""
    changes: int
    """Rollup contributions moved (new findings, changed outcomes, deletions)."""
    team_versions: dict[int, int]
    """Teams whose numbers moved, with their new versions."""


class FoldRepository(Protocol):
    async def fold(self) -> FoldCounts: ...
    async def rebuild(self) -> FoldCounts: ...
    async def snapshot(self) -> dict[str, set[tuple[Any, ...]]]: ...
    async def last_fold(self) -> datetime | None: ...


Transaction = Callable[[], AbstractAsyncContextManager[FoldRepository]]
"""Opens a transaction and yields the repository on it; commits when the block ends."""

ReadOnly = Callable[[], AbstractAsyncContextManager[FoldRepository]]
"""Opens a REPEATABLE READ transaction that is always rolled back."""


@dataclass(frozen=True)
class Mismatch:
    table: str
    only_folded: int
    only_rebuilt: int


class RollupFolder:
    def __init__(
        self,
        *,
        transaction: Transaction,
        rolled_back: ReadOnly,
        instruments: InsightsInstruments,
        on_change: Callable[[dict[int, int]], None],
    ) -> None:
        self._transaction = transaction
        self._rolled_back = rolled_back
        self._instruments = instruments
        self._on_change = on_change

    async def fold(self) -> FoldCounts:
        started = time.perf_counter()
        async with self._transaction() as repository:
            counts = await repository.fold()
        self._finish("fold", counts, time.perf_counter() - started)
        return counts

    async def rebuild(self) -> FoldCounts:
        started = time.perf_counter()
        async with self._transaction() as repository:
            counts = await repository.rebuild()
        self._finish("rebuild", counts, time.perf_counter() - started)
        return counts

    async def validate(self) -> list[Mismatch]:
        """Folds, then rebuilds from the raw log in the same snapshot, and lists the rollup
        tables where the two differ (none when all is well). Rolled back: changes nothing."""
        await self.fold()
        async with self._rolled_back() as repository:
            await repository.fold()
            folded = await repository.snapshot()
            await repository.rebuild()
            rebuilt = await repository.snapshot()
        return [
            Mismatch(
                table, len(folded[table] - rebuilt[table]), len(rebuilt[table] - folded[table])
            )
            for table in folded
            if folded[table] != rebuilt[table]
        ]

    async def last_fold(self) -> datetime | None:
        async with self._transaction() as repository:
            return await repository.last_fold()

    def _finish(self, kind: str, counts: FoldCounts, seconds: float) -> None:
        if counts.changes or kind == "rebuild":
            self._instruments.fold_duration.record(seconds, {"kind": kind})
            log.info(
                "rollups %s",
                kind,
                extra={
                    "fields": {
                        "findings": counts.findings,
                        "changes": counts.changes,
                        "teams": len(counts.team_versions),
                        "watermark": counts.window.horizon,
                        "seconds": round(seconds, 3),
                    }
                },
            )
        if counts.team_versions:
            self._on_change(counts.team_versions)
