"""Slots, the run status from attempts, and the scheduler on an injected clock (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.learning.domain.jobs import (
    JOBS,
    AttemptTally,
    Frequency,
    JobStatus,
    jobs_of,
    merge_summaries,
    slot_of,
)
from services.learning.storage.job_repository import JobRunRecord
from services.learning.usecases.run_jobs import JobRunView
from services.learning.usecases.schedule_jobs import JobScheduler


def test_a_tick_belongs_to_its_hour_day_and_iso_week() -> None:
    tick = datetime(2026, 12, 2, 13, 47, 5, tzinfo=UTC)  # a Wednesday
    assert slot_of(Frequency.HOURLY, tick) == datetime(2026, 12, 2, 13, tzinfo=UTC)
    assert slot_of(Frequency.DAILY, tick) == datetime(2026, 12, 2, tzinfo=UTC)
    assert slot_of(Frequency.WEEKLY, tick) == datetime(2026, 11, 30, tzinfo=UTC)
    assert slot_of(Frequency.WEEKLY, datetime(2026, 11, 30, tzinfo=UTC)) == datetime(
        2026, 11, 30, tzinfo=UTC
    )


def test_the_ten_jobs_of_the_plan() -> None:
    assert len(JOBS) == 10
    assert [j.name for j in jobs_of(Frequency.HOURLY)] == [
        "update_learning_metrics",
        "calculate_roi",
        "validate_data_integrity",
    ]
    assert len(jobs_of(Frequency.DAILY)) == 4
    assert len(jobs_of(Frequency.WEEKLY)) == 3


def test_status_follows_the_repositories_and_the_check() -> None:
    tally = AttemptTally()
    tally.add_attempt(done=["a", "b"], failed={"c": "boom"})
    assert tally.status() is JobStatus.PARTIAL
    tally.add_attempt(done=["c"], failed={})
    assert (tally.status(), tally.failed, tally.done) == (JobStatus.SUCCEEDED, {}, ["a", "b", "c"])
    only_failures = AttemptTally()
    only_failures.add_attempt(done=[], failed={"a": "boom"})
    assert only_failures.status() is JobStatus.FAILED
    assert AttemptTally(check_passed=False).status() is JobStatus.FAILED
    assert AttemptTally(error="RuntimeError: x").status() is JobStatus.FAILED


def test_summaries_of_attempts_add_up() -> None:
    assert merge_summaries({"rows": 2, "ok": True}, {"rows": 3, "ok": False, "v": "x"}) == {
        "rows": 5,
        "ok": False,
        "v": "x",
    }


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _view(name: str) -> JobRunView:
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    return JobRunView(
        JobRunRecord(
            run_id=1,
            job_name=name,
            frequency=1,
            scheduled_for=moment,
            status=JobStatus.SUCCEEDED,
            request_id=None,
            attempts=1,
            error="",
            reason="",
            holder="",
            summary={},
            repositories_done=(),
            repositories_failed=(),
            check_passed=None,
            duration_seconds=0.1,
            started_at=moment,
            finished_at=moment,
        )
    )


async def test_the_scheduler_fires_a_family_when_its_cron_time_has_come() -> None:
    clock = Clock(datetime(2026, 12, 2, 10, 10, tzinfo=UTC))
    fired: list[tuple[Frequency, datetime]] = []

    async def fire(frequency: Frequency, due: datetime) -> tuple[JobRunView, ...]:
        fired.append((frequency, due))
        return (_view(f"{frequency.name.lower()}_job"),)

    scheduler = JobScheduler(
        schedules={Frequency.HOURLY: "5 * * * *", Frequency.DAILY: "30 2 * * *"},
        fire=fire,
        clock=clock,
    )
    # At start the most recent due time of each family has not been run here: it is caught up.
    assert await scheduler.tick() == [Frequency.HOURLY, Frequency.DAILY]
    assert fired == [
        (Frequency.HOURLY, datetime(2026, 12, 2, 10, 5, tzinfo=UTC)),
        (Frequency.DAILY, datetime(2026, 12, 2, 2, 30, tzinfo=UTC)),
    ]
    fired.clear()
    clock.now = datetime(2026, 12, 2, 11, 4, 59, tzinfo=UTC)
    assert await scheduler.tick() == []  # not yet
    clock.now = datetime(2026, 12, 2, 11, 5, tzinfo=UTC)
    assert await scheduler.tick() == [Frequency.HOURLY]
    assert fired == [(Frequency.HOURLY, datetime(2026, 12, 2, 11, 5, tzinfo=UTC))]
    assert await scheduler.tick() == []  # once per cron time
    state = scheduler.state()
    assert state["hourly"]["next"] == "2026-12-02T12:05:00+00:00"
    assert state["hourly"]["last_result"] == {"hourly_job": "succeeded"}
    # A process that slept through several hours fires once, not once per missed hour.
    fired.clear()
    clock.now += timedelta(hours=5)
    assert await scheduler.tick() == [Frequency.HOURLY]
    assert len(fired) == 1


async def test_a_failing_fire_is_reported_in_the_state_and_retried_next_time() -> None:
    clock = Clock(datetime(2026, 12, 2, 10, 10, tzinfo=UTC))

    async def fire(frequency: Frequency, due: datetime) -> tuple[JobRunView, ...]:
        raise ConnectionError("database unreachable")

    scheduler = JobScheduler(schedules={Frequency.HOURLY: "5 * * * *"}, fire=fire, clock=clock)
    await scheduler.tick()
    assert "database unreachable" in scheduler.state()["hourly"]["last_error"]


def test_a_bad_cron_expression_is_refused_at_start() -> None:
    async def fire(frequency: Frequency, due: datetime) -> tuple[JobRunView, ...]:
        return ()

    with pytest.raises(ValueError, match="not a cron expression"):
        JobScheduler(schedules={Frequency.DAILY: "every day"}, fire=fire)
