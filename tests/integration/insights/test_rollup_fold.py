"""The insights fold: exactly once (even when transactions commit out of order), identical to a
rebuild, and equal to a brute-force recomputation from the raw rows."""

from __future__ import annotations

import random

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.insights.instruments import InsightsInstruments
from services.insights.storage.rollup_repository import RollupRepository
from services.insights.storage.transactions import rolled_back, transaction
from services.insights.usecases.fold_rollups import RollupFolder
from services.insights.validate import brute_force_differences
from shared.db.engine import create_session_factory
from tests.integration.insights.history import (
    advance_sequences,
    as_counter,
    brute_force,
    generate,
    write_events,
    write_findings,
    write_scaffold,
)


def make_folder(engine: AsyncEngine, changed: list[dict[int, int]] | None = None) -> RollupFolder:
    sessions = create_session_factory(engine)
    return RollupFolder(
        transaction=transaction(sessions, RollupRepository),
        rolled_back=rolled_back(sessions, RollupRepository),
        instruments=InsightsInstruments(),
        on_change=(changed.append if changed is not None else lambda _: None),
    )


async def assert_matches_brute_force(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    async with sessions() as session:
        snapshot = await RollupRepository(session).snapshot()
        expected = await brute_force(await session.connection())
    assert as_counter(snapshot["insight_rollups"]) == expected.rollups
    assert as_counter(snapshot["insight_action_times"]) == expected.action_times
    assert as_counter(snapshot["insight_review_rollups"]) == expected.reviews
    assert as_counter(snapshot["insight_global_rollups"]) == expected.global_rollups


async def test_incremental_folds_equal_brute_force_and_rebuild(db_engine: AsyncEngine) -> None:
    log = generate(seed=11, reviews=150)
    async with db_engine.begin() as connection:
        await write_scaffold(connection, log)
    changed: list[dict[int, int]] = []
    folder = make_folder(db_engine, changed)
    rng = random.Random(5)
    findings, events = list(log.findings), list(log.events)
    # Events of a finding may commit before, with or after it; rows go in as 8 batches.
    finding_ids_written: set[int] = set()
    pending_events = events
    for batch in range(8):
        chunk = findings[batch * len(findings) // 8 : (batch + 1) * len(findings) // 8]
        async with db_engine.begin() as connection:
            await write_findings(connection, chunk)
        finding_ids_written |= {f["id"] for f in chunk}
        ready = [e for e in pending_events if e["finding_id"] in finding_ids_written]
        rng.shuffle(ready)
        now_events, later = ready[: len(ready) * 2 // 3], ready[len(ready) * 2 // 3 :]
        pending_events = [e for e in pending_events if e["finding_id"] not in finding_ids_written]
        pending_events += later
        async with db_engine.begin() as connection:
            await write_events(connection, now_events)
        await folder.fold()
    async with db_engine.begin() as connection:
        await write_events(connection, pending_events)
    await folder.fold()
    await folder.fold()  # idle: nothing moves
    await advance_sequences(db_engine)
    await assert_matches_brute_force(db_engine)
    assert await folder.validate() == []
    assert changed
    assert all(versions for versions in changed)


async def test_out_of_order_commits_are_folded_exactly_once(db_engine: AsyncEngine) -> None:
    log = generate(seed=3, reviews=40)
    async with db_engine.begin() as connection:
        await write_scaffold(connection, log)
        await write_findings(connection, log.findings)
    folder = make_folder(db_engine)
    await folder.fold()
    early, late = log.events[: len(log.events) // 2], log.events[len(log.events) // 2 :]
    # The early transaction takes its id first and commits last: a bigserial watermark would
    # skip its rows; the transaction-id horizon waits for it.
    async with db_engine.connect() as slow:
        await slow.begin()
        await write_events(slow, early)
        async with db_engine.begin() as fast:
            await write_events(fast, late)
        await folder.fold()
        await slow.commit()
    await folder.fold()
    await folder.fold()
    await assert_matches_brute_force(db_engine)
    assert await folder.validate() == []


async def test_deleted_findings_leave_the_rollups(db_engine: AsyncEngine) -> None:
    log = generate(seed=8, reviews=30)
    async with db_engine.begin() as connection:
        await write_scaffold(connection, log)
        await write_findings(connection, log.findings)
        await write_events(connection, log.events)
    folder = make_folder(db_engine)
    await folder.fold()
    doomed = [f["id"] for f in log.findings[::4]]
    # What DeleteFinding does: log the deletion, delete the finding (its feedback cascades).
    async with db_engine.begin() as connection:
        for finding_id in doomed:
            await connection.execute(
                text(
                    "INSERT INTO finding_deletions (finding_id, actor, reason, snapshot, "
                    "deleted_feedback_count) VALUES (:id, 'op', 'test', '{}', 0)"
                ),
                {"id": finding_id},
            )
        await connection.execute(text("DELETE FROM findings WHERE id = ANY(:ids)"), {"ids": doomed})
    # So is deleting a whole review: its count goes too.
    async with db_engine.begin() as connection:
        await connection.execute(text("DELETE FROM reviews WHERE id = 1"))
        await connection.execute(
            text(
                "INSERT INTO finding_deletions (finding_id, actor, reason, snapshot, "
                "deleted_feedback_count) VALUES (0, 'op', 'review', '{}', 0)"
            )
        )
    await folder.fold()
    await assert_matches_brute_force(db_engine)
    assert await folder.validate() == []


async def test_rebuild_gives_what_the_fold_gave(db_engine: AsyncEngine) -> None:
    log = generate(seed=21, reviews=60)
    async with db_engine.begin() as connection:
        await write_scaffold(connection, log)
        await write_findings(connection, log.findings)
    folder = make_folder(db_engine)
    await folder.fold()
    async with db_engine.begin() as connection:
        await write_events(connection, log.events)
    await folder.fold()
    sessions = create_session_factory(db_engine)
    async with sessions() as session:
        folded = await RollupRepository(session).snapshot()
    counts = await folder.rebuild()
    assert counts.team_versions  # every team's cached insights are invalidated
    async with sessions() as session:
        assert await RollupRepository(session).snapshot() == folded


async def test_the_validate_recount_finds_exactly_the_rows_that_are_wrong(
    db_engine: AsyncEngine,
) -> None:
    """``reviewlearn validate metrics``' brute-force half, on the rollups' own snapshot: nothing
    on a clean fold, one row per table that was made wrong, and it folds what is not folded yet."""
    log = generate(seed=17, reviews=40)
    async with db_engine.begin() as connection:
        await write_scaffold(connection, log)
        await write_findings(connection, log.findings)
    await make_folder(db_engine).fold()
    async with db_engine.begin() as connection:
        await write_events(connection, log.events)  # committed, not folded: the recount folds
    sessions = create_session_factory(db_engine)
    assert await brute_force_differences(sessions) == {}
    async with db_engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE insight_rollups SET findings = findings + 1 WHERE ctid = "
                "(SELECT ctid FROM insight_rollups LIMIT 1)"
            )
        )
        await connection.execute(
            text(
                "UPDATE insight_review_rollups SET reviews = reviews + 2 WHERE ctid = "
                "(SELECT ctid FROM insight_review_rollups LIMIT 1)"
            )
        )
    assert await brute_force_differences(sessions) == {
        "insight_rollups": 1,
        "insight_review_rollups": 1,
    }
