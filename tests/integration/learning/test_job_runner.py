"""The job runner on the real database with jobs written for the test: attempts, per-repository
retries and two replicas racing for one job (the real jobs are in test_jobs.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.domain.jobs import JobStatus
from services.learning.instruments import LearningInstruments
from services.learning.storage.job_repository import JobRunRepository
from services.learning.storage.transactions import transactional
from services.learning.usecases.batch_jobs import JobAction, JobContext, JobResult
from services.learning.usecases.run_jobs import RetryPolicy, RunJobs, RunJobsRequest
from shared.db.engine import create_session_factory

TICK = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, initial_seconds=0.01, max_seconds=0.02, jitter_seconds=0.01)


@dataclass(frozen=True)
class Open:
    enabled: bool = True
    reason: str = ""


class OpenGate:
    """Every gate on: the gates themselves are tested over gRPC in test_jobs.py."""

    async def check(self, *, feature: str, repository_url: str) -> Open:
        return Open()


def runner(
    engine: AsyncEngine,
    action: JobAction,
    *,
    holder: str = "replica-a",
    others: Mapping[str, JobAction] | None = None,
) -> RunJobs:
    return RunJobs(
        transaction=transactional(create_session_factory(engine), JobRunRepository),
        actions={"calculate_roi": action, **(others or {})},
        gate=OpenGate(),
        instruments=LearningInstruments(),
        retry=FAST,
        holder=holder,
    )


def request(**fields: object) -> RunJobsRequest:
    values: dict[str, object] = {
        "request_id": None,
        "frequency": None,
        "job_names": ("calculate_roi",),
        "repositories": None,
        "scheduled_time": TICK,
        "caller": "test",
    }
    values.update(fields)
    return RunJobsRequest(**values)  # type: ignore[arg-type]


async def test_a_job_that_fails_twice_then_succeeds_records_three_attempts(
    db_engine: AsyncEngine,
) -> None:
    calls: list[int] = []

    async def flaky(context: JobContext) -> JobResult:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("insights restarting")
        return JobResult(summary={"rows_written": 4})

    run = (await runner(db_engine, flaky).run(request())).runs[0].record
    assert (run.status, run.attempts, run.error) == (JobStatus.SUCCEEDED, 3, "")
    assert run.summary == {"rows_written": 4}
    assert len(calls) == 3


async def test_failing_repositories_are_retried_alone_and_recorded_with_their_reason(
    db_engine: AsyncEngine,
) -> None:
    seen: list[tuple[str, ...] | None] = []

    async def per_repository(context: JobContext) -> JobResult:
        seen.append(context.repositories)
        repositories = context.repositories or ("a", "b", "c")
        # "b" recovers on the second attempt; "c" never does.
        failing = {"c"} | ({"b"} if len(seen) == 1 else set())
        return JobResult(
            done=tuple(r for r in repositories if r not in failing),
            failed={r: f"{r} is broken" for r in repositories if r in failing},
        )

    run = (await runner(db_engine, per_repository).run(request())).runs[0].record
    assert seen == [None, ("b", "c"), ("c",)]
    assert (run.status, run.attempts) == (JobStatus.PARTIAL, 3)
    assert run.repositories_done == ("a", "b")
    assert run.repositories_failed == (("c", "c is broken"),)
    # The next slot tries every repository again.
    seen.clear()
    later = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    await runner(db_engine, per_repository).run(request(scheduled_time=later))
    assert seen[0] is None


async def test_two_replicas_racing_for_a_job_one_runs_and_the_other_is_told_who(
    db_engine: AsyncEngine,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def slow(context: JobContext) -> JobResult:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return JobResult(summary={"rows_written": 1})

    first = asyncio.create_task(runner(db_engine, slow, holder="replica-a").run(request()))
    await started.wait()
    second = (await runner(db_engine, slow, holder="replica-b").run(request())).runs[0]
    assert second.record.status is JobStatus.SKIPPED
    assert second.record.holder == "replica-a"
    assert "already running: replica-a" in second.record.reason
    release.set()
    done = (await first).runs[0].record
    assert done.status is JobStatus.SUCCEEDED
    third = (await runner(db_engine, slow, holder="replica-b").run(request())).runs[0]
    assert third.already_ran
    assert third.record.run_id == done.run_id
    assert runs == 1


async def test_a_run_whose_runner_died_is_taken_over_in_its_slot_and_marked_failed_after(
    db_engine: AsyncEngine,
) -> None:
    async def quick(context: JobContext) -> JobResult:
        return JobResult(summary={"rows_written": 1})

    async with db_engine.begin() as connection:  # two runs a crashed replica left behind
        await connection.execute(
            text(
                "INSERT INTO job_runs (job_name, frequency, scheduled_for, status, holder) VALUES "
                "('calculate_roi', 1, :earlier, 1, 'replica-dead'), "
                "('calculate_roi', 1, :slot, 1, 'replica-dead')"
            ),
            {
                "earlier": datetime(2026, 12, 2, 7, tzinfo=UTC),
                "slot": datetime(2026, 12, 2, 9, tzinfo=UTC),
            },
        )
    run = (await runner(db_engine, quick).run(request())).runs[0].record
    assert (run.status, run.holder, run.attempts) == (JobStatus.SUCCEEDED, "replica-a", 1)
    async with db_engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT scheduled_for, status, error FROM job_runs ORDER BY scheduled_for")
            )
        ).all()
    assert [(r.status, r.error.split(":")[0]) for r in rows] == [
        (int(JobStatus.FAILED), "abandoned"),
        (int(JobStatus.SUCCEEDED), ""),
    ]


async def test_a_repository_list_narrows_only_the_jobs_that_work_per_repository(
    db_engine: AsyncEngine,
) -> None:
    seen: dict[str, tuple[str, ...] | None] = {}

    def remember(name: str) -> JobAction:
        async def action(context: JobContext) -> JobResult:
            seen[name] = context.repositories
            return JobResult(done=context.repositories or ())

        return action

    jobs = runner(
        db_engine,
        remember("calculate_roi"),
        others={"update_learning_metrics": remember("update_learning_metrics")},
    )
    names = ("update_learning_metrics", "calculate_roi")
    runs = (await jobs.run(request(job_names=names, repositories=("a",)))).runs
    # calculate_roi works per repository; the fold is one unit over everything.
    assert seen == {"update_learning_metrics": None, "calculate_roi": ("a",)}
    assert [(v.record.job_name, v.record.repositories_done) for v in runs] == [
        ("update_learning_metrics", ()),
        ("calculate_roi", ("a",)),
    ]
