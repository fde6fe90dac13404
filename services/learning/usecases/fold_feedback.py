"""Folds new feedback into learning metrics, exactly once, and recomputes them from scratch.

The watermark advances in the same transaction as the counts, and the fold_state row lock
serialises folders, so replicas may all try: one folds, the others wait and find nothing new.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.learning.domain.horizon_hold import HorizonHold
from services.learning.domain.recount import recount
from services.learning.instruments import LearningInstruments
from services.learning.storage.fold_repository import (
    FoldCounts,
    FoldRepository,
    MetricCounts,
    Snapshot,
)

log = logging.getLogger("reviewlearn.learning.fold")

VALIDATE_ATTEMPTS = 5

T = TypeVar("T")


class CouldNotValidate(Exception):
    """The check could not run (the database is unreachable, or kept failing the snapshot):
    nothing is known about the counts, which is not the same as their being wrong."""


@dataclass(frozen=True)
class FoldResult:
    counts: FoldCounts
    seconds: float

    @property
    def advanced(self) -> bool:
        return self.counts.horizon > self.counts.watermark


@dataclass(frozen=True)
class Mismatch:
    """A count that the fold and a recompute disagree on: (shown, positive, negative, dismissed)."""

    key: tuple[int, int, int, str]
    folded: tuple[int, int, int, int] | None
    recomputed: tuple[int, int, int, int] | None
    against: str = "recompute"
    """What the folded count was compared with: the SQL ``recompute`` or the ``brute force``
    recount in Python (:mod:`services.learning.domain.recount`)."""


@dataclass(frozen=True)
class Validation:
    """What ``Folder.validate`` found: nothing, when all is well."""

    mismatches: list[Mismatch]
    orphaned_outcomes: int
    """Outcomes still counted for findings deleted outside DeleteFinding (by hand, in SQL)."""

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.orphaned_outcomes


@dataclass(frozen=True)
class SampleCheck:
    """What ``Folder.reconcile_sample`` found."""

    repositories: tuple[int, ...]
    """The ids of the repositories checked (fewer than asked when there are fewer)."""
    mismatches: list[Mismatch]


class Folder:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], instruments: LearningInstruments
    ) -> None:
        self._sessions = sessions
        self._instruments = instruments
        # Deletions are found from the feedback service's deletion log, so folding them does not
        # depend on a notification arriving; -1 makes a fresh process check once.
        self._deletions_seen = -1
        self._hold = HorizonHold()

    def horizon_held_seconds(self) -> float:
        """Seconds since this replica's folds last saw the watermark catch up with everything
        committed (see :mod:`services.learning.domain.horizon_hold`); 0 when caught up."""
        return round(self._hold.held_seconds(time.monotonic()), 1)

    async def fold(self) -> FoldResult:
        started = time.perf_counter()
        async with self._sessions.begin() as session:
            repo = FoldRepository(session)
            watermark = await repo.lock_watermark()
            snapshot = await repo.snapshot()
            latest_deletion = await repo.latest_deletion()
            counts = await repo.fold(
                watermark=watermark,
                snapshot=snapshot,
                deletions=latest_deletion != self._deletions_seen,
            )
        self._deletions_seen = latest_deletion
        self._hold.observe(
            at=time.monotonic(), watermark=counts.horizon, seen_through=snapshot.seen_through
        )
        result = FoldResult(counts, time.perf_counter() - started)
        if counts.findings or counts.events or counts.changes:
            self._instruments.update_duration.record(result.seconds, {"kind": "fold"})
            self._instruments.recent_folds.append(result.seconds)
            self._instruments.events_folded.add(counts.events)
            fields = {
                "findings": counts.findings,
                "events": counts.events,
                "watermark": counts.horizon,
                "seconds": round(result.seconds, 3),
            }
            log.info("folded", extra={"fields": fields})
        return result

    async def validate(self) -> Validation:
        """Folds, then recomputes every count from the raw log, and lists where the two differ
        (none, when all is well). Works on a live system: raises :class:`CouldNotValidate` when
        the database cannot give it a stable snapshot, never a false mismatch.

        Outcomes of findings deleted outside DeleteFinding (by hand, in SQL) are reported too:
        the fold only notices deletions through the deletion log.
        """
        await self.fold()  # take in what DeleteFinding logged, so only stray rows remain
        return await self._on_one_snapshot(self._compare_everything)

    async def reconcile_sample(self, *, repositories: int, seed: str) -> SampleCheck:
        """Compares the repository-scope counts of a seeded sample of ``repositories``
        repositories with a recount of their findings from the log: the cost grows with the
        sample, not with the history. The same seed checks the same repositories. Like
        ``validate`` it changes nothing and never reports a false mismatch on a live system;
        unlike it, it does not fold first (call ``fold`` for that)."""

        async def compare(repo: FoldRepository, snapshot: Snapshot) -> SampleCheck:
            sample = await repo.sample_repositories(size=repositories, seed=seed)
            folded = await repo.metric_counts(repositories=sample)
            recounted = await repo.recount_repositories(sample)
            return SampleCheck(tuple(sample), _differences(folded, recounted))

        return await self._on_one_snapshot(compare)

    async def _on_one_snapshot(
        self, check: Callable[[FoldRepository, Snapshot], Awaitable[T]]
    ) -> T:
        """Runs ``check`` on the counts and the log as of one snapshot, changing nothing.

        One transaction holds the fold lock, so no fold changes the learned counts meanwhile
        (ingestion goes on); a second, REPEATABLE READ transaction, whose snapshot is taken only
        once the lock is held, folds what that snapshot sees beyond the watermark (so the counts
        are those of the snapshot's log), runs ``check`` and is rolled back. Were the snapshot
        taken before the lock (a single transaction that locks under REPEATABLE READ), a fold
        committing meanwhile would make the lock fail with a serialization error — what
        happened under ingestion load. Retried a few times, then :class:`CouldNotValidate`.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once_on_one_snapshot(check)
            except DBAPIError as error:
                if attempt >= VALIDATE_ATTEMPTS:
                    raise CouldNotValidate(
                        f"no stable snapshot after {attempt} attempts: {error.orig}"
                    ) from error
                log.info("validation snapshot failed (%s); retrying", error.orig)
                await asyncio.sleep(0.2 * attempt)

    async def _once_on_one_snapshot(
        self, check: Callable[[FoldRepository, Snapshot], Awaitable[T]]
    ) -> T:
        """One attempt of :meth:`_on_one_snapshot`: both transactions are rolled back."""
        async with self._sessions() as lock_session:
            try:
                await FoldRepository(lock_session).lock_watermark()
                async with self._sessions() as session:
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                    try:
                        repo = FoldRepository(session)
                        watermark = await repo.watermark()
                        snapshot = await repo.snapshot()
                        await repo.fold(
                            watermark=watermark, snapshot=snapshot, deletions=False, advance=False
                        )
                        return await check(repo, snapshot)
                    finally:
                        await session.rollback()
            finally:
                await lock_session.rollback()

    @staticmethod
    async def _compare_everything(repo: FoldRepository, snapshot: Snapshot) -> Validation:
        orphans = await repo.orphaned_outcomes()
        folded = await repo.metric_counts()
        brute_force = recount(*await repo.raw_log())
        await repo.recompute(snapshot=snapshot, advance=False)
        recomputed = await repo.metric_counts()
        return Validation(
            _differences(folded, recomputed) + _differences(folded, brute_force, "brute force"),
            orphans,
        )

    async def recompute(self) -> FoldResult:
        """Rebuilds every outcome and count from the raw log in one transaction (readers see the
        old counts or the new ones), and reconciles finding outcomes that drifted."""
        started = time.perf_counter()
        async with self._sessions.begin() as session:
            repo = FoldRepository(session)
            await repo.lock_watermark()
            snapshot = await repo.snapshot()
            counts = await repo.recompute(snapshot=snapshot)
        self._hold.observe(
            at=time.monotonic(), watermark=counts.horizon, seen_through=snapshot.seen_through
        )
        result = FoldResult(counts, time.perf_counter() - started)
        self._instruments.update_duration.record(result.seconds, {"kind": "recompute"})
        return result


def _differences(
    folded: MetricCounts, other: MetricCounts, against: str = "recompute"
) -> list[Mismatch]:
    return [
        Mismatch(key, folded.get(key), other.get(key), against)
        for key in sorted(set(folded) | set(other))
        if folded.get(key) != other.get(key)
    ]
