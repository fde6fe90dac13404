"""What each of the ten batch jobs does (``domain.jobs.JOBS`` names them); the runner in
``run_jobs`` gives them their slot, lock, attempts and history.

Each job is idempotent: run twice with nothing new in between, the second run changes nothing
and its summary says so. The insights-owned jobs ask the insights service over gRPC
(``RefreshInsights``, with the caller's trace context) — this service never imports insights
code. Those work per repository: with no repository list, one call per team covers all its
repositories; with a list (or when retrying the repositories that failed), one call per
repository, so a repository that fails is told apart from the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.learning.domain.jobs import JobSpec, merge_summaries
from services.learning.domain.learned_state import LearnedState
from services.learning.domain.scopes import ALL_KEY, GLOBAL_SCOPE, Dimension
from services.learning.storage.transactions import Transaction
from services.learning.usecases.fit_model import TuneOutcome, TuneRequest
from services.learning.usecases.fold_feedback import FoldResult, SampleCheck, Validation

log = logging.getLogger("reviewlearn.learning.jobs")

ACTOR = "batch-jobs"


@dataclass(frozen=True)
class JobContext:
    spec: JobSpec
    slot: datetime
    request_id: str
    repositories: tuple[str, ...] | None
    """The repositories to work on (those still failing, on a retry); None: all of them, as
    always for a job that does not work per repository (``JobSpec.per_repository``)."""
    previous: dict[str, Any] | None
    """The summary of the job's last successful run (None: it never succeeded)."""


@dataclass(frozen=True)
class JobResult:
    summary: dict[str, Any] = field(default_factory=dict)
    done: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    """Repository → why it failed; the runner retries these."""
    check_passed: bool | None = None


JobAction = Callable[[JobContext], Awaitable[JobResult]]


class InsightsRefresher(Protocol):
    """``InsightsService.RefreshInsights``; raises on a failed call."""

    async def refresh(
        self,
        *,
        parts: Sequence[str],
        teams: Sequence[str] = (),
        repositories: Sequence[str] = (),
        request_id: str,
    ) -> dict[str, int]: ...


class RepositoryDirectory(Protocol):
    async def repositories(self, urls: Sequence[str] | None) -> list[tuple[str, str]]: ...


class MaintenanceStore(Protocol):
    async def orphaned_scope_rows(self) -> dict[str, int]: ...
    async def watermark(self) -> tuple[int, int]: ...
    async def delete_orphaned_outcomes(self) -> int: ...
    async def delete_orphaned_scope_rows(self) -> dict[str, int]: ...
    async def delete_job_runs(self, *, older_than: timedelta) -> int: ...


class MetricsFolder(Protocol):
    async def fold(self) -> FoldResult: ...
    async def validate(self) -> Validation: ...
    async def reconcile_sample(self, *, repositories: int, seed: str) -> SampleCheck: ...
    async def recompute(self) -> FoldResult: ...


class LearnedStateSource(Protocol):
    def mark_stale(self) -> None: ...
    async def refresh(self) -> LearnedState: ...


class PatternMiner(Protocol):
    async def refresh(self, *, force: bool = False) -> int: ...


class Tuner(Protocol):
    async def tune(self, request: TuneRequest) -> TuneOutcome: ...


class BatchJobs:
    """The ten jobs as actions, keyed by name (``actions()``)."""

    def __init__(
        self,
        *,
        folder: MetricsFolder,
        state: LearnedStateSource,
        miner: PatternMiner,
        tuner: Tuner,
        insights: InsightsRefresher,
        directory: Transaction[RepositoryDirectory],
        maintenance: Transaction[MaintenanceStore],
        job_run_retention: timedelta,
        reconcile_repositories: int,
    ) -> None:
        self._folder = folder
        self._state = state
        self._miner = miner
        self._tuner = tuner
        self._insights = insights
        self._directory = directory
        self._maintenance = maintenance
        self._retention = job_run_retention
        self._reconcile_repositories = reconcile_repositories

    def actions(self) -> dict[str, JobAction]:
        return {
            "update_learning_metrics": self.update_learning_metrics,
            "calculate_roi": self._insights_job("roi"),
            "validate_data_integrity": self.validate_data_integrity,
            "generate_learning_paths": self._insights_job("learning_paths"),
            "analyze_trends": self._insights_job("trends"),
            "detect_anti_patterns": self.detect_anti_patterns,
            # Insights archives in its trends part: points past its archive age (a year) move
            # to insights_trends_archive; this job's summary reports rows_archived.
            "archive_old_trends": self._insights_job("trends"),
            "generate_insights_report": self._insights_job("team_metrics", "roi"),
            "update_confidence_thresholds": self.update_confidence_thresholds,
            "cleanup_orphaned_records": self.cleanup_orphaned_records,
        }

    # ------------------------------------------------------------------ learning's own jobs

    async def update_learning_metrics(self, context: JobContext) -> JobResult:
        """Catch-up fold, then reconcile: the counts of a sample of repositories, seeded by the
        slot (a rerun checks the same ones, the next hour others), are compared with a recount
        of their log on one snapshot; if any differ, everything is rebuilt from the log. The
        sample keeps the hourly job cheap on a long history; validate_data_integrity compares
        every count."""
        folded = await self._folder.fold()
        sample = await self._folder.reconcile_sample(
            repositories=self._reconcile_repositories,
            seed=f"{context.spec.name}:{context.slot.isoformat()}",
        )
        repaired = False
        if sample.mismatches:
            log.warning(
                "%d learned counts of %d sampled repositories differ from a recount; rebuilding",
                len(sample.mismatches),
                len(sample.repositories),
            )
            await self._folder.recompute()
            repaired = True
        if folded.counts.findings or folded.counts.events or repaired:
            self._state.mark_stale()
        return JobResult(
            summary={
                "findings_folded": folded.counts.findings,
                "events_folded": folded.counts.events,
                "repositories_reconciled": len(sample.repositories),
                "mismatches": len(sample.mismatches),
                "repaired": repaired,
            }
        )

    async def validate_data_integrity(self, context: JobContext) -> JobResult:
        """Checks, repairing nothing (the comparison folds what is new first, as every fold
        does): outcomes of deleted findings, learned rows of deleted scopes, every folded count
        against a recompute from the log, and the watermark (never ahead of the log's horizon,
        never behind the last check's)."""
        found = await self._folder.validate()
        async with self._maintenance() as store:
            orphaned_rows = await store.orphaned_scope_rows()
            watermark, horizon = await store.watermark()
        last_watermark = int((context.previous or {}).get("watermark", 0))
        checks = {
            "orphaned_outcomes": _check(found.orphaned_outcomes == 0, found.orphaned_outcomes),
            "orphaned_scope_rows": _check(not any(orphaned_rows.values()), orphaned_rows),
            "counts_match_log": _check(not found.mismatches, len(found.mismatches)),
            "watermark_within_log": _check(watermark <= horizon, [watermark, horizon]),
            "watermark_not_behind_last_check": _check(
                watermark >= last_watermark, [watermark, last_watermark]
            ),
        }
        passed = all(c["passed"] for c in checks.values())
        return JobResult(
            summary={"checks": checks, "failed_checks": _failed(checks), "watermark": watermark},
            check_passed=passed,
        )

    async def detect_anti_patterns(self, context: JobContext) -> JobResult:
        """Mines patterns on the current counts; nothing is rewritten when no counts moved."""
        await self._state.refresh()
        written = await self._miner.refresh()
        return JobResult(summary={"patterns_written": written})

    async def update_confidence_thresholds(self, context: JobContext) -> JobResult:
        """The model fit and threshold tune of TuneConfidenceThresholds, skipped when no
        outcome changed since the last successful run (the global counts are the same)."""
        state = await self._state.refresh()
        view = state.metrics.get(GLOBAL_SCOPE, Dimension.ALL, ALL_KEY)
        counts = view.counts if view is not None else None
        signature = (
            [counts.shown, counts.positive, counts.negative, counts.dismissed] if counts else []
        )
        previous = (context.previous or {}).get("global_counts")
        if previous == signature and signature:
            return JobResult(
                summary={"refitted": False, "threshold_changes": 0, "global_counts": signature}
            )
        outcome = await self._tuner.tune(
            TuneRequest(
                request_id=None,
                dry_run=False,
                target_not_useful_rate=None,
                reason=f"scheduled job {context.spec.name} of {context.slot.isoformat()}",
                actor=ACTOR,
            )
        )
        return JobResult(
            summary={
                "refitted": True,
                "model_version": outcome.model.version,
                "threshold_changes": len(outcome.changes),
                "thresholds_unchanged": outcome.unchanged,
                "global_counts": signature,
            }
        )

    async def cleanup_orphaned_records(self, context: JobContext) -> JobResult:
        """Deletes outcomes of findings that are gone, learned rows of teams and repositories
        that are gone, all-zero metric rows, and job runs past their retention; when outcomes
        went, the counts are rebuilt from the log so they stay equal to a recompute."""
        async with self._maintenance() as store:
            outcomes = await store.delete_orphaned_outcomes()
            rows = await store.delete_orphaned_scope_rows()
            runs = await store.delete_job_runs(older_than=self._retention)
        if outcomes:
            await self._folder.recompute()
            self._state.mark_stale()
        return JobResult(
            summary={
                "orphaned_outcomes_deleted": outcomes,
                **{f"{table}_deleted": count for table, count in rows.items()},
                "job_runs_deleted": runs,
            }
        )

    # ------------------------------------------------------------------ insights' jobs

    def _insights_job(self, *parts: str) -> JobAction:
        async def run(context: JobContext) -> JobResult:
            return await self._refresh_insights(context, parts)

        return run

    async def _refresh_insights(self, context: JobContext, parts: Sequence[str]) -> JobResult:
        request_id = f"{context.request_id}:{context.spec.name}"
        # Rollups first, once: they catch up with the feedback log for every team at once.
        summary: dict[str, Any] = {
            "rows_written": 0,
            "rows_archived": 0,
            "teams": 0,
            **_named(
                await self._insights.refresh(parts=["rollups"], request_id=request_id), "rollups"
            ),
        }
        async with self._directory() as directory:
            known = await directory.repositories(
                None if context.repositories is None else list(context.repositories)
            )
        done: list[str] = []
        failed: dict[str, str] = {}
        if context.repositories is None:
            by_team: dict[str, list[str]] = {}
            for url, team in known:
                by_team.setdefault(team, []).append(url)
            calls = [({"teams": [team]}, urls) for team, urls in by_team.items()]
        else:
            # Unknown repositories go to insights too: its answer (NOT_FOUND) is the reason.
            calls = [({"repositories": [url]}, [url]) for url in context.repositories]
        for scope, urls in calls:
            try:
                changed = await self._insights.refresh(parts=parts, request_id=request_id, **scope)
            except Exception as error:
                reason = _describe(error)
                log.warning("insights refresh of %s failed: %s", scope, reason)
                failed.update(dict.fromkeys(urls, reason))
                continue
            summary = merge_summaries(summary, changed)
            done.extend(urls)
        return JobResult(summary=summary, done=tuple(done), failed=failed)


def _named(counts: Mapping[str, int], part: str) -> dict[str, Any]:
    return {f"{part}_{key}": value for key, value in counts.items() if key != "teams"}


def _check(passed: bool, value: object) -> dict[str, Any]:
    return {"passed": passed, "value": value}


def _failed(checks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [name for name, check in checks.items() if not check["passed"]]


def _describe(error: Exception) -> str:
    """An RPC error's code and details, or the exception's type and message."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        name = getattr(code(), "name", str(code()))
        return f"{name}: {details()}"
    return f"{type(error).__name__}: {error}"
