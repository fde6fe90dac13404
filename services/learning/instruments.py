"""The learning service's OpenTelemetry instruments (the plan's learning and ranking metrics)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
from opentelemetry import metrics

from services.learning.domain.jobs import JobStatus

RECENT_FOLDS = 200


class LearningInstruments:
    def __init__(self) -> None:
        meter = metrics.get_meter("reviewlearn.learning")
        self.update_duration = meter.create_histogram(
            "learning_metrics_update_duration", unit="s", description="Time to fold new feedback"
        )
        self.events_folded = meter.create_counter(
            "learning_events_folded", description="Feedback events folded into learning metrics"
        )
        self.threshold_changes = meter.create_counter(
            "confidence_threshold_changes", description="Confidence thresholds changed by a tune"
        )
        self.ranking_duration = meter.create_histogram(
            "suggestion_ranking_duration", unit="s", description="Time to rank one request"
        )
        self.deduplication_hits = meter.create_counter(
            "deduplication_hits", description="Findings collapsed into another (exact or near)"
        )
        self.findings_hidden = meter.create_counter(
            "suggestions_hidden", description="Findings hidden by a learned filter"
        )
        self.expected_useful_hidden = meter.create_counter(
            "suggestions_hidden_expected_useful",
            description="Sum of P(acted on) of hidden findings: useful ones expected among them",
        )
        self.rankings_abandoned = meter.create_counter(
            "suggestion_rankings_abandoned",
            description="Rankings stopped part-way: the caller gave up or its deadline passed",
        )
        self.model_fits = meter.create_counter("learning_model_fits", description="Models fitted")
        self.diversity_factor = meter.create_histogram(
            "diversity_factor_distribution", description="Diversity asked for by ranking requests"
        )
        # The control service's alert on fold latency reads this p95 from the heartbeats.
        self.recent_folds: deque[float] = deque(maxlen=RECENT_FOLDS)
        self.last_average_score = 0.0
        meter.create_observable_gauge(
            "average_ranking_score",
            callbacks=[lambda _: [metrics.Observation(self.last_average_score)]],
            description="Mean score of the shown findings of the last ranking",
        )
        self.job_duration = meter.create_histogram(
            "learning_jobs_duration", unit="s", description="Time of one batch job run"
        )
        self._jobs = _JobTally.of_process(meter)

    def fold_p95(self) -> float | None:
        """p95 seconds of the last folds that folded anything; None before the first."""
        if not self.recent_folds:
            return None
        return round(float(np.quantile(np.fromiter(self.recent_folds, float), 0.95)), 4)

    def job_finished(
        self, job: str, *, status: JobStatus, seconds: float, check_passed: bool | None
    ) -> None:
        self.job_duration.record(seconds, {"job": job, "status": status.name.lower()})
        self._jobs.add(job, status=status, check_passed=check_passed)


class _JobTally:
    """Finished batch job runs (succeeded, partial, failed; skipped ones ran nothing) since the
    process started, per job, and integrity checks passed / run: the success-rate gauges.

    One per process: OpenTelemetry keeps the first observable gauge of a name and drops later
    ones' callbacks, so every LearningInstruments (tests build several) adds to this one."""

    _process: _JobTally | None = None

    def __init__(self, meter: metrics.Meter) -> None:
        self.runs: dict[str, list[int]] = {}
        self.checks = [0, 0]
        meter.create_observable_gauge(
            "learning_jobs_success_rate",
            callbacks=[self._job_success_rates],
            description="Share of a batch job's finished runs that succeeded, per job",
        )
        meter.create_observable_gauge(
            "batch_job_success_rate",
            callbacks=[self._batch_success_rate],
            description="Share of all finished batch job runs that succeeded",
        )
        meter.create_observable_gauge(
            "data_integrity_check_pass_rate",
            callbacks=[self._integrity_pass_rate],
            description="Share of data-integrity checks that passed",
        )

    @classmethod
    def of_process(cls, meter: metrics.Meter) -> _JobTally:
        if cls._process is None:
            cls._process = cls(meter)
        return cls._process

    def add(self, job: str, *, status: JobStatus, check_passed: bool | None) -> None:
        if status is JobStatus.SKIPPED:
            return
        counts = self.runs.setdefault(job, [0, 0])
        counts[0] += 1
        counts[1] += status is JobStatus.SUCCEEDED
        if check_passed is not None:
            self.checks[0] += 1
            self.checks[1] += check_passed

    def _job_success_rates(self, _: object) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(ok / runs, {"job": job})
            for job, (runs, ok) in self.runs.items()
            if runs
        ]

    def _batch_success_rate(self, _: object) -> Iterable[metrics.Observation]:
        runs = sum(c[0] for c in self.runs.values())
        ok = sum(c[1] for c in self.runs.values())
        return [metrics.Observation(ok / runs)] if runs else []

    def _integrity_pass_rate(self, _: object) -> Iterable[metrics.Observation]:
        runs, passed = self.checks
        return [metrics.Observation(passed / runs)] if runs else []
