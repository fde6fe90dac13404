"""Batch jobs as data: their names and families, the slot a tick belongs to, and how a run's
attempts add up to its status. No I/O: the runner (``usecases.run_jobs``) does that.

A *slot* is the period a tick belongs to — the hour, the UTC day or the ISO week (Monday 00:00
UTC) that contains it. Each job runs once per slot (``job_runs`` is unique on
``(job_name, scheduled_for)``), so a CronJob that fires twice, or the scheduler and a CronJob
together, never do the work twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any


class Frequency(IntEnum):
    """Values of ``reviewlearn.common.v1.JobFrequency`` (stored in ``job_runs.frequency``)."""

    HOURLY = 1
    DAILY = 2
    WEEKLY = 3


class JobStatus(IntEnum):
    """Values of ``reviewlearn.learning.v1.JobStatus`` (stored in ``job_runs.status``)."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    SKIPPED = 4
    PARTIAL = 5


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PARTIAL)
"""A slot whose row has one of these ran: a repeat runs nothing. A SKIPPED slot (a gate was
off) or a RUNNING one whose runner died (its lock is free) is run by the next caller."""


@dataclass(frozen=True)
class JobSpec:
    """One batch job; what it does is its action's docstring (``usecases.batch_jobs``)."""

    name: str
    frequency: Frequency
    feature: str | None = None
    """A gate besides ``batch_jobs`` that must be on (e.g. ``insights`` for insights' jobs)."""
    per_repository: bool = False
    """Works repository by repository: a request's repository list narrows it, and failures
    are per repository. Otherwise it is one unit over everything, whatever the list says."""


JOBS: tuple[JobSpec, ...] = (
    JobSpec("update_learning_metrics", Frequency.HOURLY),
    JobSpec("calculate_roi", Frequency.HOURLY, feature="insights", per_repository=True),
    JobSpec("validate_data_integrity", Frequency.HOURLY),
    JobSpec("generate_learning_paths", Frequency.DAILY, feature="insights", per_repository=True),
    JobSpec("analyze_trends", Frequency.DAILY, feature="insights", per_repository=True),
    JobSpec("detect_anti_patterns", Frequency.DAILY, feature="patterns"),
    JobSpec("archive_old_trends", Frequency.DAILY, feature="insights", per_repository=True),
    JobSpec("generate_insights_report", Frequency.WEEKLY, feature="insights", per_repository=True),
    JobSpec("update_confidence_thresholds", Frequency.WEEKLY),
    JobSpec("cleanup_orphaned_records", Frequency.WEEKLY),
)

JOBS_BY_NAME = {job.name: job for job in JOBS}


def jobs_of(frequency: Frequency) -> list[JobSpec]:
    return [job for job in JOBS if job.frequency is frequency]


def slot_of(frequency: Frequency, tick: datetime) -> datetime:
    """Start of the hour, UTC day or ISO week that contains ``tick``."""
    tick = tick.astimezone(UTC)
    hour = tick.replace(minute=0, second=0, microsecond=0)
    if frequency is Frequency.HOURLY:
        return hour
    day = hour.replace(hour=0)
    if frequency is Frequency.DAILY:
        return day
    return day - timedelta(days=day.weekday())


@dataclass
class AttemptTally:
    """What the attempts of one run achieved, repository by repository."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Repository → reason, of the last attempt that tried it."""
    error: str = ""
    """Why the job as a whole failed (its last attempt raised), if it did."""
    summary: dict[str, Any] = field(default_factory=dict)
    check_passed: bool | None = None

    def add_attempt(self, *, done: list[str], failed: dict[str, str]) -> None:
        for url in done:
            self.failed.pop(url, None)
            if url not in self.done:
                self.done.append(url)
        self.failed.update(failed)

    def describe_error(self) -> str:
        """``job_runs.error``: the job's exception, or the integrity checks that failed."""
        if self.error or self.check_passed is not False:
            return self.error
        return "data integrity check failed: " + ", ".join(self.summary.get("failed_checks", []))

    def status(self) -> JobStatus:
        if self.error or self.check_passed is False:
            return JobStatus.FAILED
        if self.failed:
            return JobStatus.PARTIAL if self.done else JobStatus.FAILED
        return JobStatus.SUCCEEDED


@dataclass(frozen=True)
class FinishedRun:
    """What ``job_runs`` records of a run once it has ended (``reason``: why it was skipped)."""

    status: JobStatus
    attempts: int
    error: str
    reason: str
    summary: dict[str, Any]
    done: Sequence[str]
    failed: dict[str, str]
    check_passed: bool | None
    duration_seconds: float

    @staticmethod
    def of(tally: AttemptTally, *, attempts: int, seconds: float, skipped: str) -> FinishedRun:
        return FinishedRun(
            status=JobStatus.SKIPPED if skipped else tally.status(),
            attempts=attempts,
            error=tally.describe_error(),
            reason=skipped,
            summary=tally.summary,
            done=tally.done,
            failed=tally.failed,
            check_passed=tally.check_passed,
            duration_seconds=seconds,
        )


def merge_summaries(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Adds the numbers of ``part`` to ``total`` (the summary of several attempts or calls);
    anything else in ``part`` replaces what ``total`` had."""
    merged = dict(total)
    for key, value in part.items():
        before = merged.get(key)
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and isinstance(before, int | float) and not isinstance(before, bool):
            merged[key] = before + value
        else:
            merged[key] = value
    return merged
