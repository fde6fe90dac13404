"""Settings of the learning service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from services.learning.domain.jobs import Frequency
from services.learning.domain.model_fitting import FitParameters
from services.learning.domain.suppression import SuppressionPolicy
from services.learning.domain.threshold_fitting import ThresholdParameters
from services.learning.usecases.rank_suggestions import RankingSettings
from services.learning.usecases.run_jobs import RetryPolicy
from shared.auth import Role
from shared.finding_input import Limits
from shared.settings import ServiceSettings, port_field


class LearningSettings(ServiceSettings):
    service_name: str = "learning"
    grpc_port: int = port_field("learning", 50052, "GRPC")
    metrics_port: int = port_field("learning", 9102, "METRICS")

    fold_poll_seconds: float = Field(5.0, gt=0)
    """Fallback poll for new feedback when no notification arrives."""
    model_refresh_seconds: float = Field(30.0, gt=0)
    """How often the in-memory state is rebuilt even without a fold (another replica's tune)."""
    model_rebuild_tick_seconds: float = Field(0.5, gt=0)
    """How soon after a fold the ranker sees the new counts; many folds share one rebuild."""
    patterns_refresh_seconds: float = Field(300.0, gt=0)

    # ------------------------------------------------------------------ the model
    model_half_lives_days: tuple[float, ...] = (0.0, 180.0, 60.0, 20.0)
    """Candidate half-lives of an outcome's weight (0: no decay), chosen out of time."""
    model_validation_share: float = Field(0.2, gt=0, lt=1)
    """The most recent share of outcomes held out to choose, calibrate and validate the model."""
    model_confidence_bins: int = Field(5, ge=1, le=20)
    models_kept: int = Field(10, ge=1)
    """Earlier models kept for RollbackModel."""

    # ------------------------------------------------------------------ hiding and thresholds
    hide_cost_ratio: float = Field(3.0, gt=0)
    """Hiding a finding developers would act on costs this many shown noisy ones."""
    hide_upper_bound_z: float = Field(1.645, ge=0)
    """The upper bound of P(acted on) that must be below the floor (1.645: one-sided 95%)."""
    probation_not_useful_rate: float = Field(0.10, gt=0, lt=1)
    """Tricorder's bar: a rule not useful this often (Wilson lower bound) is on probation."""
    probation_min_outcomes: int = Field(20, ge=1)
    threshold_suppression: bool = False
    """Also hide findings below their category's certified threshold (off: thresholds are
    reported, the cost-weighted rule alone hides)."""
    target_not_useful_rate: float = Field(0.10, gt=0, lt=1)
    """Tricorder's bar for thresholds: the share of shown findings nobody acts on."""
    threshold_min_samples: int = Field(50, ge=1)
    threshold_stale_hours: float = Field(24.0, gt=0)

    # ------------------------------------------------------------------ ranking
    max_findings_per_ranking: int = Field(10_000, ge=1)
    ranking_threads: int = Field(2, ge=1)
    """Worker threads that rank off the event loop; more requests than this wait their turn."""
    max_text_chars: int = Field(20_000, ge=100)
    """Longest message or code context of an inline finding (as in the feedback service)."""
    severity_values: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
    """Value of showing an info, low, medium, high, critical finding: the score is
    P(acted on) × value. All 1 (the score is the probability) costs no ranking quality where
    severity says little about usefulness, which the model already takes into account."""
    near_duplicate_line_window: int = Field(10, ge=0)
    near_duplicate_max_hamming: int = Field(6, ge=0, le=64)

    pattern_min_occurrences: int = Field(10, ge=2)
    pattern_alpha: float = Field(0.01, gt=0, lt=1)
    pattern_emerging_ratio: float = Field(2.0, gt=1)
    pattern_window_days: int = Field(28, ge=1)

    # ------------------------------------------------------------------ batch jobs
    job_attempts: int = Field(3, ge=1, le=10)
    """Attempts per job run; repositories still failing after the last leave the run partial."""
    job_retry_initial_seconds: float = Field(5.0, ge=0)
    """Backoff before the second attempt; doubles each attempt (plus jitter), up to the max."""
    job_retry_max_seconds: float = Field(60.0, ge=0)
    job_retry_jitter_seconds: float = Field(2.0, ge=0)
    job_run_retention_days: float = Field(90.0, gt=0)
    """cleanup_orphaned_records deletes job runs older than this."""
    job_reconcile_repositories: int = Field(20, ge=1)
    """update_learning_metrics compares the counts of this many repositories, a sample seeded
    by the job's slot, with a recount of their log (cost grows with the sample, not the
    history); validate_data_integrity compares every count."""
    insights_address: str = "127.0.0.1:50053"
    """Where the insights service listens, for the insights-owned jobs (RefreshInsights)."""
    insights_token: SecretStr | None = None
    """Bearer token for RefreshInsights (operator); unset: the first operator token of
    ``tokens`` (every service is given the same ones)."""
    insights_timeout_seconds: float = Field(600.0, gt=0)
    job_scheduler_enabled: bool = False
    """Run the jobs on their cron times in this process: ``reviewlearn up`` turns it on (the
    embedded default); off in Kubernetes, where the CronJobs call RunJobs."""
    job_scheduler_tick_seconds: float = Field(30.0, gt=0)
    """How often the scheduler looks at the clock."""
    job_schedule_hourly: str = "5 * * * *"
    job_schedule_daily: str = "30 2 * * *"
    job_schedule_weekly: str = "0 4 * * 1"
    """Cron expressions (UTC) of the hourly, daily and weekly jobs (the CronJobs use the same)."""

    def job_retry(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.job_attempts,
            initial_seconds=self.job_retry_initial_seconds,
            max_seconds=self.job_retry_max_seconds,
            jitter_seconds=self.job_retry_jitter_seconds,
        )

    def job_schedules(self) -> dict[Frequency, str]:
        return {
            Frequency.HOURLY: self.job_schedule_hourly,
            Frequency.DAILY: self.job_schedule_daily,
            Frequency.WEEKLY: self.job_schedule_weekly,
        }

    def insights_bearer(self) -> str | None:
        if self.insights_token is not None and self.insights_token.get_secret_value():
            return self.insights_token.get_secret_value()
        return self.token_registry().token_of(Role.OPERATOR)

    def fit_parameters(self) -> FitParameters:
        return FitParameters(
            half_lives_days=tuple(h or None for h in self.model_half_lives_days),
            validation_share=self.model_validation_share,
            confidence_bins=self.model_confidence_bins,
        )

    def threshold_parameters(self) -> ThresholdParameters:
        return ThresholdParameters(
            target_not_useful_rate=self.target_not_useful_rate,
            min_samples=self.threshold_min_samples,
        )

    def suppression_policy(self) -> SuppressionPolicy:
        return SuppressionPolicy(
            cost_ratio=self.hide_cost_ratio,
            z=self.hide_upper_bound_z,
            probation_not_useful=self.probation_not_useful_rate,
            probation_min_outcomes=self.probation_min_outcomes,
        )

    def ranking_settings(self) -> RankingSettings:
        return RankingSettings(
            limits=Limits(max_text_chars=self.max_text_chars),
            max_findings=self.max_findings_per_ranking,
            severity_values=self.severity_values,
            line_window=self.near_duplicate_line_window,
            max_hamming=self.near_duplicate_max_hamming,
            suppression=self.suppression_policy(),
            threshold_suppression=self.threshold_suppression,
        )
