"""``python -m services.insights.validate [--repair]``: are the insights rollups what the
feedback log says? (``reviewlearn validate metrics`` runs this after the learning check.)

Two checks on one live system, changing nothing: the folded rollups against a SQL rebuild from
the whole log (:meth:`RollupFolder.validate`), and against a brute-force recount in Python
(:mod:`services.insights.domain.recount`) on a single snapshot in which the fold has caught up.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.insights.domain.recount import RawFinding, recount
from services.insights.instruments import InsightsInstruments
from services.insights.settings import InsightsSettings
from services.insights.storage.rollup_repository import RollupRepository
from services.insights.storage.transactions import rolled_back, transaction
from services.insights.usecases.fold_rollups import RollupFolder
from shared.db.engine import create_engine, create_session_factory

OK = 0
MISMATCH = 1
COULD_NOT_CHECK = 75
"""EX_TEMPFAIL, as in ``services.learning.validate``: nothing is known; try again later."""

_RAW_FINDINGS = """
SELECT f.id, f.review_id, rv.created_at, f.team_id, f.repository_id, f.rule_id, f.category,
    f.severity, f.created_at
FROM findings f JOIN reviews rv ON rv.id = f.review_id
"""
_RAW_EVENTS = "SELECT finding_id, kind, occurred_at, id FROM suggestion_feedback"
_RECOUNTED = ("insight_rollups", "insight_global_rollups", "insight_review_rollups")
"""The rollup tables the recount derives (time-to-action histograms it leaves to the rebuild)."""


async def brute_force_differences(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Rows per rollup table where the folded rollups and the Python recount differ."""
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            rollups = RollupRepository(session)
            await rollups.fold()  # what is committed but not yet folded
            snapshot = await rollups.snapshot(_RECOUNTED)
            # Rows whose count is zero are no rows to the recount (a fold removes them anyway).
            stored = {
                table: {row[:-1]: int(row[-1]) for row in snapshot[table] if row[-1] != 0}
                for table in _RECOUNTED
            }
            findings = [RawFinding(*row) for row in await session.execute(text(_RAW_FINDINGS))]
            events = [
                (int(a), int(b), c, int(d))
                for a, b, c, d in await session.execute(text(_RAW_EVENTS))
            ]
        finally:
            await session.rollback()
    counted = recount(findings, events)
    expected: dict[str, dict[Any, int]] = {
        "insight_rollups": dict(counted.rollups),
        "insight_global_rollups": dict(counted.global_rollups),
        "insight_review_rollups": dict(counted.review_rollups),
    }
    differences = {}
    for table, rows in stored.items():
        want = expected[table]
        wrong = sum(1 for key in set(rows) | set(want) if rows.get(key) != want.get(key))
        if wrong:
            differences[table] = wrong
    return differences


async def validate(settings: InsightsSettings, *, repair: bool, console: Console) -> int:
    """0: the rollups equal a rebuild and a recount (or were repaired); 1: they differ;
    75: could not check."""
    engine = create_engine(settings)
    try:
        sessions = create_session_factory(engine)
        folder = RollupFolder(
            transaction=transaction(sessions, RollupRepository),
            rolled_back=rolled_back(sessions, RollupRepository),
            instruments=InsightsInstruments(),
            on_change=lambda _moved: None,  # the running replicas learn of changes by polling
        )
        try:
            with console.status("rebuilding and recounting the insights rollups ..."):
                rebuilt = await folder.validate()
                recounted = await brute_force_differences(sessions)
        except (DBAPIError, OSError) as error:
            console.print(
                f"[yellow]could not check the insights rollups: {error}[/yellow]\n"
                "is the database reachable? nothing is known about them; try again later"
            )
            return COULD_NOT_CHECK
        if not rebuilt and not recounted:
            console.print(
                "[green]the insights rollups equal a rebuild from the log and a brute-force "
                "recount[/green]"
            )
            return OK
        table = Table(title="insights rollups that differ from the feedback log")
        for column in ("table", "rows only folded", "rows only rebuilt", "rows != recount"):
            table.add_column(column)
        for name in sorted({m.table for m in rebuilt} | set(recounted)):
            match = next((m for m in rebuilt if m.table == name), None)
            table.add_row(
                name,
                str(match.only_folded if match else 0),
                str(match.only_rebuilt if match else 0),
                str(recounted.get(name, 0)),
            )
        console.print(table)
        if not repair:
            console.print(
                "run `reviewlearn validate metrics --repair` to rebuild them from the log "
                "(or RefreshInsights with parts=[rollups], rebuild_rollups=true)"
            )
            return MISMATCH
        with console.status("rebuilding the rollups from the feedback log ..."):
            await folder.rebuild()
        console.print("[green]rebuilt the insights rollups from the log[/green]")
        return OK
    finally:
        await engine.dispose()


def main() -> None:
    repair = "--repair" in sys.argv[1:]
    sys.exit(asyncio.run(validate(InsightsSettings(), repair=repair, console=Console())))


if __name__ == "__main__":
    main()
