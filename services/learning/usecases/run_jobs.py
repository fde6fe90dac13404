"""RunJobs and ListJobRuns: each job once per slot, one runner at a time, retried, recorded.

For every job asked for, in order:

1. ``job_runs`` gets the slot's row (``INSERT ... ON CONFLICT DO NOTHING``, committed at once,
   so every caller sees it);
2. a transaction takes the job's advisory lock (``pg_try_advisory_xact_lock``) and keeps it
   open while the job runs — a caller that cannot take it is answered SKIPPED with the holder
   and runs nothing;
3. with the lock held, a slot whose row says it ran (succeeded, failed or partial) is answered
   as recorded (``already_ran``) and runs nothing; a row left RUNNING by a runner that died (its
   lock went with its connection) or SKIPPED by a gate is run now, and the job's runs of other
   slots left RUNNING by dead runners are marked FAILED ("abandoned");
4. the gates: ``batch_jobs`` off (or the kill switch, or learning) → SKIPPED with the reason;
5. the job runs with up to ``attempts`` attempts (tenacity: exponential backoff with jitter);
   repositories that fail are retried alone, and those still failing after the last attempt
   leave the run PARTIAL (FAILED when none succeeded);
6. the row is finished (status, attempts, summary, repositories, duration) before the lock is
   released, so the next caller finds it finished.

The job's own work runs in its own transactions; this one RPC is the exception to "one
transaction per RPC": a job takes minutes and writes in steps that are each idempotent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.learning.domain.jobs import (
    FINISHED,
    JOBS_BY_NAME,
    AttemptTally,
    FinishedRun,
    Frequency,
    JobSpec,
    JobStatus,
    jobs_of,
    merge_summaries,
    slot_of,
)
from services.learning.storage.job_repository import JobRunRecord
from services.learning.storage.transactions import Transaction
from services.learning.usecases.batch_jobs import JobAction, JobContext
from shared.errors import FieldViolation, InvalidArgument
from shared.idempotency import IdempotentRequest, request_digest

log = logging.getLogger("reviewlearn.learning.jobs")

SERVICE = "learning"
METHOD = "RunJobs"


class JobRunStore(Protocol):
    async def answered(self, request: IdempotentRequest) -> bytes | None: ...
    async def claim(self, request: IdempotentRequest) -> bytes | None: ...
    async def answer(self, request: IdempotentRequest, response: bytes) -> None: ...
    async def claim_slot(
        self, *, job_name: str, frequency: Frequency, slot: datetime, request_id: str | None
    ) -> int: ...
    async def try_lock(self, job_name: str, *, holder: str) -> bool: ...
    async def lock_holder(self, job_name: str) -> str: ...
    async def run(self, run_id: int) -> JobRunRecord: ...
    async def start(self, run_id: int, *, holder: str, request_id: str | None) -> None: ...
    async def abandon_others(self, job_name: str, *, running_id: int) -> int: ...
    async def finish(self, run_id: int, run: FinishedRun) -> None: ...
    async def runs(
        self, *, job_name: str | None, status: JobStatus | None, before_id: int | None, limit: int
    ) -> list[JobRunRecord]: ...
    async def last_summary(self, job_name: str, *, before_id: int) -> dict[str, Any] | None: ...


class GateAnswer(Protocol):
    @property
    def enabled(self) -> bool: ...
    @property
    def reason(self) -> str: ...


class JobGate(Protocol):
    async def check(self, *, feature: str, repository_url: str) -> GateAnswer: ...


class JobInstruments(Protocol):
    def job_finished(
        self, job: str, *, status: JobStatus, seconds: float, check_passed: bool | None
    ) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial_seconds: float = 5.0
    max_seconds: float = 60.0
    jitter_seconds: float = 2.0


@dataclass(frozen=True)
class RunJobsRequest:
    request_id: str | None
    frequency: Frequency | None
    job_names: tuple[str, ...]
    repositories: tuple[str, ...] | None
    scheduled_time: datetime | None
    caller: str

    def idempotent(self) -> IdempotentRequest | None:
        if not self.request_id:
            return None
        return IdempotentRequest(
            service=SERVICE,
            method=METHOD,
            caller=self.caller,
            request_id=self.request_id,
            digest=request_digest(
                {
                    "frequency": self.frequency,
                    "job_names": list(self.job_names),
                    "repositories": None if self.repositories is None else list(self.repositories),
                    "scheduled_time": self.scheduled_time,
                }
            ),
        )


@dataclass(frozen=True)
class JobRunView:
    record: JobRunRecord
    already_ran: bool = False


@dataclass(frozen=True)
class RunJobsOutcome:
    runs: tuple[JobRunView, ...]
    replayed: bool


class RepositoriesFailed(Exception):
    """An attempt left some repositories failed: tenacity retries those."""

    def __init__(self, failed: Mapping[str, str]) -> None:
        super().__init__(f"{len(failed)} repositories failed")
        self.failed = dict(failed)


class RunJobs:
    def __init__(
        self,
        *,
        transaction: Transaction[JobRunStore],
        actions: Mapping[str, JobAction],
        gate: JobGate,
        instruments: JobInstruments,
        retry: RetryPolicy,
        holder: str,
    ) -> None:
        self._transaction = transaction
        self._actions = actions
        self._gate = gate
        self._instruments = instruments
        self._retry = retry
        self._holder = holder

    def jobs_for(self, frequency: Frequency | None, names: Sequence[str]) -> list[JobSpec]:
        """The jobs a request asks for, or INVALID_ARGUMENT naming what is wrong."""
        if not names:
            if frequency is None:
                raise InvalidArgument(
                    [FieldViolation("frequency", "is required unless job_names are given")]
                )
            return jobs_of(frequency)
        unknown = [name for name in names if name not in JOBS_BY_NAME]
        if unknown:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "job_names",
                        f"unknown job {name!r}; known: {', '.join(sorted(JOBS_BY_NAME))}",
                    )
                    for name in unknown
                ]
            )
        specs = [JOBS_BY_NAME[name] for name in dict.fromkeys(names)]
        if frequency is not None:
            other = [s.name for s in specs if s.frequency is not frequency]
            if other:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "job_names", f"{', '.join(other)} not of the {frequency.name} jobs"
                        )
                    ]
                )
        return specs

    async def run(self, request: RunJobsRequest) -> RunJobsOutcome:
        specs = self.jobs_for(request.frequency, request.job_names)
        entry = request.idempotent()
        if entry is not None:
            async with self._transaction() as store:
                stored = await store.answered(entry)
            if stored is not None:
                return RunJobsOutcome(await self._replay(stored), replayed=True)
        # The id is recorded only with the answer: a retry while the first call still runs
        # runs too, and the slots and locks make sure nothing runs twice.
        tick = request.scheduled_time or datetime.now(UTC)
        views = [
            await self._run_one(spec, request, slot_of(spec.frequency, tick)) for spec in specs
        ]
        if entry is not None:
            async with self._transaction() as store:
                if await store.claim(entry) is None:  # a concurrent retry may have answered
                    await store.answer(
                        entry, json.dumps({"run_ids": [v.record.run_id for v in views]}).encode()
                    )
        return RunJobsOutcome(tuple(views), replayed=False)

    async def runs(
        self, *, job_name: str | None, status: JobStatus | None, before_id: int | None, limit: int
    ) -> list[JobRunRecord]:
        async with self._transaction() as store:
            return await store.runs(
                job_name=job_name, status=status, before_id=before_id, limit=limit
            )

    async def _replay(self, stored: bytes) -> tuple[JobRunView, ...]:
        async with self._transaction() as store:
            return tuple(
                [
                    JobRunView(await store.run(run_id), already_ran=True)
                    for run_id in json.loads(stored)["run_ids"]
                ]
            )

    async def _run_one(self, spec: JobSpec, request: RunJobsRequest, slot: datetime) -> JobRunView:
        async with self._transaction() as store:
            run_id = await store.claim_slot(
                job_name=spec.name,
                frequency=spec.frequency,
                slot=slot,
                request_id=request.request_id,
            )
        # This transaction holds the job's lock until the run is recorded; the run's own
        # bookkeeping goes through short transactions of its own, so others see it at once.
        async with self._transaction() as lock:
            if not await lock.try_lock(spec.name, holder=self._holder):
                return await self._held_elsewhere(lock, spec, run_id)
            record = await lock.run(run_id)
            if record.status in FINISHED:
                return JobRunView(record, already_ran=True)
            closed = await self._closed_gate(spec)
            if closed:
                return JobRunView(await self._finish(run_id, AttemptTally(), 0, 0.0, closed))
            return await self._execute(spec, request, slot, run_id)

    async def _held_elsewhere(self, lock: JobRunStore, spec: JobSpec, run_id: int) -> JobRunView:
        """SKIPPED, naming who holds the lock (not recorded: the slot's row is the holder's)."""
        record = await lock.run(run_id)
        holder = record.holder if record.status is JobStatus.RUNNING else ""
        holder = holder or await lock.lock_holder(spec.name) or "another runner"
        skipped = replace(
            record, status=JobStatus.SKIPPED, reason=f"already running: {holder}", holder=holder
        )
        return JobRunView(skipped)

    async def _execute(
        self, spec: JobSpec, request: RunJobsRequest, slot: datetime, run_id: int
    ) -> JobRunView:
        async with self._transaction() as store:
            await store.start(run_id, holder=self._holder, request_id=request.request_id)
            abandoned = await store.abandon_others(spec.name, running_id=run_id)
            previous = await store.last_summary(spec.name, before_id=run_id)
        if abandoned:
            log.warning(
                "job %s: %d earlier run(s) never finished; marked failed", spec.name, abandoned
            )
        context = JobContext(
            spec=spec,
            slot=slot,
            request_id=request.request_id or f"job-{spec.name}-{slot:%Y%m%dT%H}",
            # A repository list narrows only the jobs that work repository by repository.
            repositories=request.repositories if spec.per_repository else None,
            previous=previous,
        )
        started = time.perf_counter()
        tally, attempts = await self._attempts(spec, context)
        seconds = time.perf_counter() - started
        record = await self._finish(run_id, tally, attempts, seconds, "")
        self._instruments.job_finished(
            spec.name, status=record.status, seconds=seconds, check_passed=tally.check_passed
        )
        log.info(
            "job %s of %s: %s after %d attempt(s)",
            spec.name,
            slot.isoformat(),
            record.status.name,
            attempts,
            extra={"fields": {"job": spec.name, "status": record.status.name, "seconds": seconds}},
        )
        return JobRunView(record)

    async def _finish(
        self, run_id: int, tally: AttemptTally, attempts: int, seconds: float, skipped: str
    ) -> JobRunRecord:
        """Records the run's outcome (``skipped``: why it did not run) and returns the row."""
        async with self._transaction() as store:
            await store.finish(
                run_id, FinishedRun.of(tally, attempts=attempts, seconds=seconds, skipped=skipped)
            )
            return await store.run(run_id)

    async def _closed_gate(self, spec: JobSpec) -> str:
        """Why the job may not run now (empty: it may)."""
        for feature in ("batch_jobs", spec.feature):
            if feature is None:
                continue
            decision = await self._gate.check(feature=feature, repository_url="")
            if not decision.enabled:
                return f"{feature} is off: {decision.reason}"
        return ""

    async def _attempts(self, spec: JobSpec, context: JobContext) -> tuple[AttemptTally, int]:
        action = self._actions[spec.name]
        tally = AttemptTally()
        attempts = 0
        pending = context.repositories
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential_jitter(
                multiplier=self._retry.initial_seconds,
                max=self._retry.max_seconds,
                jitter=self._retry.jitter_seconds,
            ),
            retry=retry_if_exception_type(Exception),
            before_sleep=_log_retry(spec.name),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    result = await action(replace(context, repositories=pending))
                    tally.add_attempt(done=list(result.done), failed=dict(result.failed))
                    tally.summary = merge_summaries(tally.summary, result.summary)
                    tally.check_passed = result.check_passed
                    if result.failed:
                        pending = tuple(result.failed)
                        raise RepositoriesFailed(result.failed)
        except RepositoriesFailed:
            pass  # recorded per repository in the tally
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if pending is not None and context.repositories != pending:
                # Retrying the repositories that failed: the error is theirs, not the job's.
                tally.failed.update(dict.fromkeys(pending, reason))
            else:
                tally.error = reason
            log.warning("job %s failed after %d attempt(s): %s", spec.name, attempts, reason)
        return tally, attempts


def _log_retry(job: str) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "job %s attempt %d failed (%s); retrying in %.2fs",
            job,
            state.attempt_number,
            error,
            wait,
        )

    return before_sleep
