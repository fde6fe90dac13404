"""``reviewlearn validate integrity``: is the database internally consistent?

Read-only, on one REPEATABLE READ snapshot, safe on a live system. Four families of checks, each
a SQL count that must be zero:

* **fk** — every declared foreign key, generated from the models (a constraint that was dropped
  or added ``NOT VALID`` would let such rows in), and constraints PostgreSQL has not validated;
* **orphans** — references the schema cannot declare (derived state keyed by a finding id,
  denormalised ids that must agree with their parent row, scope ids of the learned counts);
* **counts vs log** — everything below a fold's watermark was folded: each such finding has its
  learning outcome and its insights state, and the totals agree with the number of findings;
* **watermarks** — each fold's stream row exists and its watermark is not in the future.

Transient states of a working system are not failures: a finding deleted through DeleteFinding
keeps its derived rows until the next fold, and findings above a watermark are the backlog.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import Base
from shared.outcome import Outcome

OK = 0
FAILED = 1
COULD_NOT_CHECK = 75

_DELETED = "SELECT finding_id FROM finding_deletions"
_REPAIR = "`reviewlearn validate metrics --repair` rebuilds every derived number from the log"


@dataclass(frozen=True)
class Check:
    family: str
    name: str
    sql: str
    """Counts the offending rows."""
    remedy: str


@dataclass(frozen=True)
class Result:
    check: Check
    offending: int


def foreign_key_checks() -> list[Check]:
    """One check per declared foreign key: child rows whose parent is missing."""
    checks = []
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            child, parent = fk.parent, fk.column
            checks.append(
                Check(
                    "fk",
                    f"{table.name}.{child.name} → {parent.table.name}.{parent.name}",
                    f'SELECT count(*) FROM "{table.name}" c WHERE c."{child.name}" IS NOT NULL '
                    f'AND NOT EXISTS (SELECT 1 FROM "{parent.table.name}" p '
                    f'WHERE p."{parent.name}" = c."{child.name}")',
                    f"rows of {table.name} point at missing {parent.table.name}: the constraint "
                    "was bypassed; restore it (`reviewlearn migrate`) and delete or re-parent them",
                )
            )
    checks.append(
        Check(
            "fk",
            "every constraint validated",
            "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = current_schema() AND NOT c.convalidated",
            "run ALTER TABLE … VALIDATE CONSTRAINT on the constraints PostgreSQL lists as "
            "NOT VALID (pg_constraint.convalidated = false)",
        )
    )
    return checks


ORPHAN_CHECKS = [
    Check(
        "orphans",
        "learning outcomes of missing findings",
        "SELECT count(*) FROM finding_outcomes o WHERE NOT EXISTS "
        "(SELECT 1 FROM findings f WHERE f.id = o.finding_id) "
        f"AND o.finding_id NOT IN ({_DELETED})",
        f"findings were deleted outside DeleteFinding; {_REPAIR}",
    ),
    Check(
        "orphans",
        "insights states of missing findings",
        "SELECT count(*) FROM insight_finding_states s WHERE NOT EXISTS "
        "(SELECT 1 FROM findings f WHERE f.id = s.finding_id) "
        f"AND s.finding_id NOT IN ({_DELETED})",
        f"findings were deleted outside DeleteFinding; {_REPAIR}",
    ),
    Check(
        "orphans",
        "feedback whose repository is not its finding's",
        "SELECT count(*) FROM suggestion_feedback fb JOIN findings f ON f.id = fb.finding_id "
        "WHERE fb.repository_id <> f.repository_id",
        "suggestion_feedback.repository_id was written by hand: set it from the finding",
    ),
    Check(
        "orphans",
        "findings whose review is in another repository",
        "SELECT count(*) FROM findings f JOIN reviews rv ON rv.id = f.review_id "
        "WHERE rv.repository_id <> f.repository_id OR rv.pull_request <> f.pull_request",
        "findings were edited by hand: set repository_id and pull_request from the review",
    ),
    Check(
        "orphans",
        "findings whose team is not their repository's",
        "SELECT count(*) FROM findings f JOIN repositories r ON r.id = f.repository_id "
        "WHERE r.team_id <> f.team_id",
        "a repository moved teams by hand: set findings.team_id from the repository, then "
        + _REPAIR,
    ),
    Check(
        "orphans",
        "learned counts of missing teams or repositories",
        "SELECT count(*) FROM learning_metrics m WHERE (shown, positive, negative, dismissed) "
        "<> (0, 0, 0, 0) AND ((m.scope_type = 2 AND NOT EXISTS (SELECT 1 FROM teams t "
        "WHERE t.id = m.scope_id)) OR (m.scope_type = 3 AND NOT EXISTS "
        "(SELECT 1 FROM repositories r WHERE r.id = m.scope_id)))",
        _REPAIR,
    ),
    Check(
        "orphans",
        "insights rollups of missing repositories",
        "SELECT count(*) FROM insight_rollups r WHERE findings <> 0 AND NOT EXISTS "
        "(SELECT 1 FROM repositories p WHERE p.id = r.repository_id)",
        "run RefreshInsights with parts=[rollups] and rebuild_rollups=true",
    ),
]

COUNT_CHECKS = [
    Check(
        "counts vs log",
        "findings below the learning watermark without an outcome",
        "SELECT count(*) FROM findings f WHERE f.tx_id < (SELECT watermark FROM fold_state "
        "WHERE stream = 'feedback') AND NOT EXISTS "
        "(SELECT 1 FROM finding_outcomes o WHERE o.finding_id = f.id)",
        f"the learning fold skipped findings; {_REPAIR}",
    ),
    Check(
        "counts vs log",
        "learned global count ≠ learning outcomes",
        "SELECT abs(coalesce((SELECT shown FROM learning_metrics WHERE scope_type = 1 AND "
        "dimension = 1), 0) - (SELECT count(*) FROM finding_outcomes))",
        _REPAIR,
    ),
    Check(
        "counts vs log",
        "learned global outcomes ≠ learning outcomes",
        "SELECT count(*) FROM (SELECT outcome, count(*) AS n FROM finding_outcomes GROUP BY 1) o "
        "WHERE o.n <> coalesce((SELECT CASE o.outcome"
        f" WHEN {int(Outcome.POSITIVE)} THEN positive WHEN {int(Outcome.NEGATIVE)} THEN negative"
        f" WHEN {int(Outcome.DISMISSED)} THEN dismissed END FROM learning_metrics"
        f" WHERE scope_type = 1 AND dimension = 1), 0) AND o.outcome <> {int(Outcome.PENDING)}",
        _REPAIR,
    ),
    Check(
        "counts vs log",
        "findings below the insights watermark without a state",
        "SELECT count(*) FROM findings f WHERE f.tx_id < coalesce((SELECT watermark FROM "
        "insight_fold_state WHERE stream = 'rollups'), 0) AND NOT EXISTS "
        "(SELECT 1 FROM insight_finding_states s WHERE s.finding_id = f.id)",
        "the insights fold skipped findings; run RefreshInsights with parts=[rollups] and "
        "rebuild_rollups=true",
    ),
    Check(
        "counts vs log",
        "insights global rollups ≠ insights states",
        "SELECT abs(coalesce((SELECT sum(findings) FROM insight_global_rollups), 0) - "
        "(SELECT count(*) FROM insight_finding_states))",
        "run RefreshInsights with parts=[rollups] and rebuild_rollups=true",
    ),
]

_XMAX = "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
WATERMARK_CHECKS = [
    Check(
        "watermarks",
        "learning stream row exists",
        "SELECT 1 - count(*) FROM fold_state WHERE stream = 'feedback'",
        "the row is created by the migrations: run `reviewlearn migrate`",
    ),
    Check(
        "watermarks",
        "watermarks not in the future",
        f"SELECT (SELECT count(*) FROM fold_state WHERE watermark < 0 OR watermark > {_XMAX}) + "
        f"(SELECT count(*) FROM insight_fold_state WHERE watermark < 0 OR watermark > {_XMAX})",
        "a watermark ahead of every transaction hides new feedback from the fold: "
        "the database was restored from another cluster? " + _REPAIR,
    ),
    Check(
        "watermarks",
        "learning watermark within what it saw",
        "SELECT count(*) FROM fold_state WHERE seen_through > 0 AND watermark > seen_through",
        "the fold's bookkeeping was edited by hand: " + _REPAIR,
    ),
]


def all_checks() -> list[Check]:
    return [*foreign_key_checks(), *ORPHAN_CHECKS, *COUNT_CHECKS, *WATERMARK_CHECKS]


async def run_checks(engine: AsyncEngine) -> list[Result]:
    """Every check on one snapshot; nothing is written."""
    results = []
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            await connection.execute(text("SET TRANSACTION READ ONLY"))
            for check in all_checks():
                value = (await connection.execute(text(check.sql))).scalar_one()
                results.append(Result(check, int(value or 0)))
    return results


async def check_integrity(engine: AsyncEngine, console: Console) -> int:
    """0: consistent; 1: something is not; 75: could not check."""
    try:
        with console.status("checking the database's integrity ..."):
            results = await run_checks(engine)
    except (DBAPIError, OSError) as error:
        console.print(
            f"[yellow]could not check integrity: {error}[/yellow]\n"
            "is the database reachable and migrated (`reviewlearn migrate`)? try again later"
        )
        return COULD_NOT_CHECK
    failed = [r for r in results if r.offending]
    table = Table(title=f"integrity: {len(results)} checks, {len(failed)} failed")
    for column in ("family", "check", "offending rows"):
        table.add_column(column)
    for family in ("fk", "orphans", "counts vs log", "watermarks"):
        mine = [r for r in results if r.check.family == family]
        bad = [r for r in mine if r.offending]
        if not bad:
            table.add_row(family, f"[green]{len(mine)} checks passed[/green]", "0")
        for r in bad:
            table.add_row(family, f"[red]{r.check.name}[/red]", str(r.offending))
    console.print(table)
    if not failed:
        console.print("[green]the database is consistent[/green]")
        return OK
    console.print("what to do next:")
    for remedy in dict.fromkeys(r.check.remedy for r in failed):
        console.print(f"  - {remedy}")
    return FAILED
