"""Reading an append-only log exactly once by transaction-id horizon: the generic fold window.

Rows of the feedback log carry the id of the transaction that wrote them (``tx_id``, see
shared.db.models). A consumer that folds the log keeps a *watermark*: every row with ``tx_id``
below it has been folded. A bigserial id would not do as a watermark: transactions commit out of
id order, so a row with a smaller id can become visible after a larger one was read, and would be
skipped forever. A transaction id horizon does not have that hole:

* the new watermark is the current snapshot's ``xmin``, the oldest transaction still running;
  every transaction below it has finished, so no row below it can appear later;
* a fold reads the rows with ``tx_id >= watermark`` that it can see, which includes rows of
  transactions at or above the new watermark that already committed. Those are read again by the
  next fold, so the fold itself must be idempotent (a row applied twice changes nothing).

The watermark row is locked ``FOR UPDATE`` for the whole fold, so concurrent folders (replicas)
serialise: one folds, the others wait and then find nothing new. The watermark advances in the
same transaction as the folded state, so a crash leaves either both or neither.

The learning service's fold follows the same discipline with its own copy (services/learning);
this module is the generic version for any other consumer (the insights rollups use it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

SNAPSHOT_HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


@dataclass(frozen=True)
class FoldWindow:
    """What one fold read: rows with ``watermark <= tx_id`` that were visible, and where the
    watermark moves to (never backwards)."""

    watermark: int
    horizon: int

    @property
    def advances(self) -> bool:
        return self.horizon > self.watermark


@dataclass(frozen=True)
class WatermarkTable:
    """A table with one row per stream: ``stream`` (text key) and ``watermark`` (bigint).

    Any further columns (counters, timestamps) belong to the consumer. The row is created on
    first use, so a consumer needs no seeding migration and survives its table being emptied.
    """

    table: str
    stream: str

    async def lock(self, session: AsyncSession) -> int:
        """Locks the stream's row for this transaction and returns its watermark."""
        await session.execute(
            text(
                f"INSERT INTO {self.table} (stream, watermark) VALUES (:stream, 0) "
                "ON CONFLICT (stream) DO NOTHING"
            ),
            {"stream": self.stream},
        )
        watermark = await session.scalar(
            text(f"SELECT watermark FROM {self.table} WHERE stream = :stream FOR UPDATE"),
            {"stream": self.stream},
        )
        return int(watermark or 0)

    async def advance(self, session: AsyncSession, horizon: int) -> None:
        await session.execute(
            text(
                f"UPDATE {self.table} SET watermark = :horizon, updated_at = now() "
                "WHERE stream = :stream AND watermark < :horizon"
            ),
            {"stream": self.stream, "horizon": horizon},
        )


async def snapshot_horizon(session: AsyncSession) -> int:
    """The oldest transaction id still running: every transaction below it has finished."""
    return int(await session.scalar(text(SNAPSHOT_HORIZON)) or 0)


async def fold_window(session: AsyncSession, watermarks: WatermarkTable) -> FoldWindow:
    """Locks the watermark and returns the window to fold, inside the caller's transaction.

    The caller folds every visible row with ``tx_id >= window.watermark`` idempotently, then
    calls ``watermarks.advance(session, window.horizon)`` before committing.
    """
    watermark = await watermarks.lock(session)
    horizon = await snapshot_horizon(session)
    return FoldWindow(watermark=watermark, horizon=max(horizon, watermark))
