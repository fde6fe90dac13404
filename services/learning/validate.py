"""``python -m services.learning.validate [--repair]``: are the folded counts what a full
recompute from the feedback log gives? (``reviewlearn validate`` runs this.)"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from services.learning.instruments import LearningInstruments
from services.learning.settings import LearningSettings
from services.learning.usecases.fold_feedback import CouldNotValidate, Folder
from shared.db.engine import create_engine, create_session_factory

OK = 0
MISMATCH = 1
COULD_NOT_CHECK = 75
"""EX_TEMPFAIL: nothing is known about the counts; try again later (a CronJob should not page)."""


async def validate(settings: LearningSettings, *, repair: bool, console: Console) -> int:
    """0: the counts equal a recompute (or were repaired); 1: they differ; 75: could not check."""
    engine = create_engine(settings)
    try:
        folder = Folder(sessions=create_session_factory(engine), instruments=LearningInstruments())
        try:
            with console.status("recomputing every count from the feedback log ..."):
                found = await folder.validate()
        except (CouldNotValidate, DBAPIError, OSError) as error:
            console.print(
                f"[yellow]could not check the learned counts: {error}[/yellow]\n"
                "is the database reachable? nothing is known about the counts; try again later"
            )
            return COULD_NOT_CHECK
        if found.ok:
            console.print(
                "[green]the folded learning metrics equal a full recompute and a brute-force "
                "recount[/green]"
            )
            return OK
        if found.mismatches:
            table = Table(title=f"{len(found.mismatches)} counts differ (shown, +, -, dismissed)")
            for column in ("scope", "dimension", "key", "folded", "recomputed", "by"):
                table.add_column(column)
            for m in found.mismatches[:50]:
                table.add_row(
                    f"{m.key[0]}:{m.key[1]}",
                    str(m.key[2]),
                    m.key[3],
                    str(m.folded),
                    str(m.recomputed),
                    m.against,
                )
            console.print(table)
        if found.orphaned_outcomes:
            console.print(
                f"{found.orphaned_outcomes} outcomes of deleted findings are still counted "
                "(deleted outside DeleteFinding)"
            )
        if not repair:
            console.print("run `reviewlearn validate --repair` to rebuild them from the log")
            return MISMATCH
        with console.status("rebuilding every count from the feedback log ..."):
            result = await folder.recompute()
        console.print(
            f"[green]rebuilt from {result.counts.findings:,} findings "
            f"in {result.seconds:.1f}s[/green]"
        )
        return OK
    finally:
        await engine.dispose()


def main() -> None:
    repair = "--repair" in sys.argv[1:]
    settings = LearningSettings()
    sys.exit(asyncio.run(validate(settings, repair=repair, console=Console())))


if __name__ == "__main__":
    main()
