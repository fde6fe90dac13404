"""The in-process scheduler of the embedded default (``reviewlearn up``): fires the hourly,
daily and weekly jobs at their cron times through the same path as RunJobs.

In Kubernetes the CronJobs call RunJobs instead and the scheduler is off
(``REVIEWLEARN_JOB_SCHEDULER_ENABLED=false``); were both on, each slot would still run once.
``tick()`` asks the clock it was given, so tests move time instead of sleeping. At start the
most recent due time of each family counts as not yet fired: a system that was down at its
daily time runs that day's jobs when it comes back (once — the slot is recorded).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from services.learning.domain.jobs import Frequency, JobStatus
from services.learning.usecases.run_jobs import JobRunView

log = logging.getLogger("reviewlearn.learning.scheduler")

Fire = Callable[[Frequency, datetime], Awaitable[tuple[JobRunView, ...]]]


@dataclass
class FamilyState:
    expression: str
    next_time: datetime
    last_fired: datetime | None = None
    last_result: dict[str, str] | None = None
    last_error: str = ""


class JobScheduler:
    def __init__(
        self,
        *,
        schedules: Mapping[Frequency, str],
        fire: Fire,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._fire = fire
        self._clock = clock
        now = clock()
        self._families = {}
        for frequency, expression in schedules.items():
            if not croniter.is_valid(expression):
                raise ValueError(
                    f"not a cron expression for the {frequency.name} jobs: {expression!r}"
                )
            previous = croniter(expression, now).get_prev(datetime)
            self._families[frequency] = FamilyState(expression, previous)

    async def tick(self) -> list[Frequency]:
        """Fires every family whose next cron time has come; returns those it fired."""
        now = self._clock()
        fired = []
        for frequency, state in self._families.items():
            if state.next_time > now:
                continue
            due = state.next_time
            state.next_time = croniter(state.expression, now).get_next(datetime)
            state.last_fired = due
            fired.append(frequency)
            try:
                runs = await self._fire(frequency, due)
            except Exception as error:  # the next due time tries again; the error is in health
                state.last_error = f"{type(error).__name__}: {error}"
                log.warning("scheduled %s jobs failed: %s", frequency.name, state.last_error)
                continue
            state.last_error = ""
            state.last_result = {
                view.record.job_name: JobStatus(view.record.status).name.lower() for view in runs
            }
        return fired

    def state(self) -> dict[str, Any]:
        """For the health report: each family's cron, next time and last outcome."""
        return {
            frequency.name.lower(): {
                "cron": s.expression,
                "next": s.next_time.isoformat(),
                "last_fired": s.last_fired.isoformat() if s.last_fired else None,
                "last_result": s.last_result,
                "last_error": s.last_error,
            }
            for frequency, s in self._families.items()
        }
