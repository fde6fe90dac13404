"""The incremental fold against the real database: exactly once, and equal to a recompute."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cli.loader import load_feedback, load_reviews
from services.cli.synthetic import generate_history
from services.learning.instruments import LearningInstruments
from services.learning.usecases.fold_feedback import Folder, SampleCheck, Validation
from shared.db.engine import create_session_factory
from shared.db.models import LearningMetric
from shared.outcome import FeedbackKind, Outcome, outcome_of
from tests.conftest import RunningService, auth

END = datetime(2026, 11, 1, tzinfo=UTC)


async def metrics_snapshot(engine: AsyncEngine) -> dict[tuple[int, int, int, str], tuple[int, ...]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(LearningMetric))
        return {
            (r.scope_type, r.scope_id, r.dimension, r.key): (
                r.shown,
                r.positive,
                r.negative,
                r.dismissed,
            )
            for r in rows
            if (r.shown, r.positive, r.negative, r.dismissed) != (0, 0, 0, 0)
        }


async def record_and_fold(
    feedback_service: RunningService, folder: Folder, *, seed: int, reviews: int, prefix: str
) -> list[list[int]]:
    """A generated history (5 findings a review) recorded through the feedback service and
    folded; the finding ids by review."""
    stub = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    history = generate_history(seed=seed, reviews=reviews, findings_per_review=5, end=END)
    ids = await load_reviews(stub, history.reviews, metadata=auth("ingest"), request_prefix=prefix)
    await load_feedback(stub, history.feedback, ids, metadata=auth("ingest"))
    await folder.fold()
    return ids


@pytest.fixture
def folder(db_engine: AsyncEngine) -> Folder:
    return Folder(sessions=create_session_factory(db_engine), instruments=LearningInstruments())


async def test_fold_in_steps_equals_recompute_and_the_outcome_rule(
    feedback_service: RunningService, db_engine: AsyncEngine, folder: Folder
) -> None:
    stub = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    history = generate_history(seed=3, reviews=60, findings_per_review=8, end=END)
    ids = await load_reviews(stub, history.reviews, metadata=auth("ingest"), request_prefix="fold")
    await folder.fold()
    # Feedback arrives in slices, with folds in between; later slices change earlier outcomes.
    slices = [history.feedback[i::3] for i in range(3)]
    for part in slices:
        await load_feedback(stub, part, ids, metadata=auth("ingest"))
        await folder.fold()
    folded = await metrics_snapshot(db_engine)
    assert (await folder.fold()).counts.changes == 0  # nothing new: nothing changes

    result = await folder.recompute()
    assert result.counts.findings == sum(len(r.findings) for r in history.reviews)
    assert await metrics_snapshot(db_engine) == folded

    # And the counts are what the outcome rule says, computed here independently.
    events: dict[int, list[tuple[FeedbackKind, datetime, int]]] = {}
    for position, event in enumerate(history.feedback):
        finding_id = ids[event.review_index][event.finding_index]
        events.setdefault(finding_id, []).append(
            (FeedbackKind[event.kind.upper()], event.occurred_at, position)
        )
    outcomes = Counter(outcome_of(e) for e in events.values())
    total = sum(len(r) for r in ids)
    assert folded[(1, 0, 1, "*")] == (
        total,
        outcomes[Outcome.POSITIVE],
        outcomes[Outcome.NEGATIVE],
        outcomes[Outcome.DISMISSED],
    )


async def test_folding_while_writers_write_loses_and_doubles_nothing(
    feedback_service: RunningService, db_engine: AsyncEngine, folder: Folder
) -> None:
    stub = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    history = generate_history(seed=4, reviews=40, findings_per_review=6, end=END)
    ids = await load_reviews(stub, history.reviews, metadata=auth("ingest"), request_prefix="race")
    done = asyncio.Event()

    async def keep_folding() -> int:
        folds = 0
        while not done.is_set():
            await folder.fold()
            folds += 1
            await asyncio.sleep(0)
        return folds

    async def write() -> None:
        for i in range(0, len(history.feedback), 25):
            await load_feedback(stub, history.feedback[i : i + 25], ids, metadata=auth("ingest"))
        done.set()

    folds, _ = await asyncio.gather(keep_folding(), write())
    await folder.fold()
    assert folds > 1
    folded = await metrics_snapshot(db_engine)
    await folder.recompute()
    assert await metrics_snapshot(db_engine) == folded


async def test_a_deleted_finding_leaves_the_counts(
    feedback_service: RunningService, db_engine: AsyncEngine, folder: Folder
) -> None:
    ids = await record_and_fold(feedback_service, folder, seed=5, reviews=10, prefix="del")
    stub = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    before = (await metrics_snapshot(db_engine))[(1, 0, 1, "*")]
    await stub.DeleteFinding(
        feedback_pb2.DeleteFindingRequest(finding_id=ids[0][0], reason="test"),
        metadata=auth("operator"),
    )
    await folder.fold()
    after = (await metrics_snapshot(db_engine))[(1, 0, 1, "*")]
    assert after[0] == before[0] - 1
    async with db_engine.connect() as connection:
        orphans = await connection.execute(
            text("SELECT count(*) FROM finding_outcomes WHERE finding_id = :id"), {"id": ids[0][0]}
        )
        assert orphans.scalar_one() == 0
    folded = await metrics_snapshot(db_engine)
    await folder.recompute()
    assert await metrics_snapshot(db_engine) == folded


async def test_validation_finds_a_corrupted_count_and_a_recompute_repairs_it(
    feedback_service: RunningService, db_engine: AsyncEngine, folder: Folder
) -> None:
    await record_and_fold(feedback_service, folder, seed=6, reviews=20, prefix="v")
    assert (await folder.validate()).ok
    async with db_engine.begin() as connection:
        await connection.execute(
            text("UPDATE learning_metrics SET positive = positive + 1 WHERE dimension = 2")
        )
    corrupted = await metrics_snapshot(db_engine)
    found = await folder.validate()
    assert found.mismatches
    assert found.orphaned_outcomes == 0
    assert all(m.key[2] == 2 for m in found.mismatches)
    assert await metrics_snapshot(db_engine) == corrupted  # validating changed nothing
    await folder.recompute()
    assert (await folder.validate()).ok


async def test_a_sample_of_repositories_is_reconciled_with_a_recount_of_their_log(
    feedback_service: RunningService, db_engine: AsyncEngine, folder: Folder
) -> None:
    await record_and_fold(feedback_service, folder, seed=7, reviews=40, prefix="s")
    async with db_engine.connect() as connection:
        repositories = (await connection.scalars(text("SELECT id FROM repositories"))).all()
    assert len(repositories) >= 3
    everything = await folder.reconcile_sample(repositories=len(repositories), seed="a")
    assert sorted(everything.repositories) == sorted(repositories)
    assert everything.mismatches == []
    samples = {
        seed: await folder.reconcile_sample(repositories=1, seed=seed) for seed in "abcdefgh"
    }
    assert samples["a"] == await folder.reconcile_sample(repositories=1, seed="a")  # same seed
    assert len({check.repositories for check in samples.values()}) > 1  # other seeds, others
    assert all(len(c.repositories) == 1 and not c.mismatches for c in samples.values())

    # Corrupt one repository's counts: a sample that holds it finds them, one that does not
    # does not, and checking changed nothing.
    corrupted = samples["a"].repositories[0]
    async with db_engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE learning_metrics SET negative = negative + 1 "
                "WHERE scope_type = 3 AND scope_id = :id AND dimension = 3"
            ),
            {"id": corrupted},
        )
    before = await metrics_snapshot(db_engine)
    found = await folder.reconcile_sample(repositories=1, seed="a")
    assert found.mismatches
    assert {m.key[:3] for m in found.mismatches} == {(3, corrupted, 3)}
    assert all(m.recomputed is not None for m in found.mismatches)
    assert await metrics_snapshot(db_engine) == before
    elsewhere = next(s for s, c in samples.items() if c.repositories != (corrupted,))
    assert not (await folder.reconcile_sample(repositories=1, seed=elsewhere)).mismatches


async def test_validation_reports_findings_deleted_behind_the_services_back(
    feedback_service: RunningService, db_engine: AsyncEngine, folder: Folder
) -> None:
    ids = await record_and_fold(feedback_service, folder, seed=8, reviews=10, prefix="h")
    async with db_engine.begin() as connection:  # not through DeleteFinding: no deletion log
        await connection.execute(text("DELETE FROM findings WHERE id = :id"), {"id": ids[0][0]})
    found = await folder.validate()
    assert found.orphaned_outcomes == 1
    await folder.recompute()
    assert (await folder.validate()).ok


async def test_validation_works_while_feedback_keeps_arriving_and_folds_keep_running(
    feedback_service: RunningService, db_engine: AsyncEngine, folder: Folder
) -> None:
    # The probe: every validation under ingestion load died of a serialization error, with
    # the same exit code as "counts differ". Now it must find the counts equal, every time.
    stub = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    history = generate_history(seed=9, reviews=60, findings_per_review=6, end=END)
    ids = await load_reviews(stub, history.reviews, metadata=auth("ingest"), request_prefix="live")
    done = asyncio.Event()
    other_folder = Folder(
        sessions=create_session_factory(db_engine), instruments=LearningInstruments()
    )

    async def keep_folding() -> None:
        while not done.is_set():
            await other_folder.fold()
            await asyncio.sleep(0.01)

    async def write() -> None:
        try:
            for i in range(0, len(history.feedback), 10):
                await load_feedback(
                    stub, history.feedback[i : i + 10], ids, metadata=auth("ingest")
                )
        finally:
            done.set()

    async def keep_validating() -> list[Validation | SampleCheck]:
        results: list[Validation | SampleCheck] = []
        # Two rounds at least: on a busy machine the writes can end within the first one.
        while not done.is_set() or len(results) < 4:
            results.append(await folder.validate())
            results.append(await folder.reconcile_sample(repositories=3, seed=str(len(results))))
        return results

    results, _, _ = await asyncio.gather(keep_validating(), keep_folding(), write())
    assert len(results) >= 4
    assert all(not result.mismatches for result in results), results
    assert all(result.ok for result in results if isinstance(result, Validation)), results


async def test_validate_exit_codes_tell_could_not_check_from_mismatch(
    feedback_service: RunningService, db_engine: AsyncEngine, database_url: str, folder: Folder
) -> None:
    from rich.console import Console

    from services.learning.settings import LearningSettings
    from services.learning.validate import COULD_NOT_CHECK, MISMATCH, OK, validate
    from tests.conftest import free_port

    await record_and_fold(feedback_service, folder, seed=10, reviews=10, prefix="x")
    console = Console(record=True)
    settings = LearningSettings(database_url=database_url)
    assert await validate(settings, repair=False, console=console) == OK
    async with db_engine.begin() as connection:
        await connection.execute(text("UPDATE learning_metrics SET shown = shown + 1"))
    assert await validate(settings, repair=False, console=console) == MISMATCH
    assert await validate(settings, repair=True, console=console) == OK
    unreachable = LearningSettings(
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    )
    assert await validate(unreachable, repair=False, console=console) == COULD_NOT_CHECK
    assert "could not check" in console.export_text()
