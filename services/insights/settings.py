"""Settings of the insights service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from services.insights.domain.learning_paths import PathPolicy
from services.insights.domain.rates import RatePolicy
from services.insights.domain.roi import RoiAssumptions
from services.insights.domain.trends import TrendPolicy
from shared.settings import ServiceSettings, port_field


class InsightsSettings(ServiceSettings):
    service_name: str = "insights"
    grpc_port: int = port_field("insights", 50053, "GRPC")
    metrics_port: int = port_field("insights", 9103, "METRICS")

    min_group_size: int = Field(5, ge=1)
    """Groups (team, repository, category, rule, week) with fewer findings get no rates, only a
    reason: a rate over a handful of findings says more about a person than about a team."""
    smoothing_strength: float = Field(10.0, ge=0)
    """Pseudo-counts of the parent group in every smoothed rate."""
    default_window_days: int = Field(30, ge=1)
    retention_days: int = Field(730, ge=7)
    """The oldest data a request may ask about; older windows are INVALID_ARGUMENT."""

    trend_weeks: int = Field(12, ge=2)
    trend_alpha: float = Field(0.05, gt=0, lt=1)
    trend_min_points: int = Field(6, ge=3)
    """Weeks with a value before a direction is claimed (fewer: INSUFFICIENT_DATA)."""
    trend_archive_days: int = Field(365, ge=7)
    """RefreshInsights moves persisted trend points older than this to the archive."""

    path_lookback_days: int = Field(90, ge=7)
    path_half_life_days: float = Field(30.0, gt=0)
    path_recent_days: int = Field(30, ge=1)
    max_learning_paths: int = Field(5, ge=1, le=50)
    path_severity_weights: tuple[float, float, float, float, float] = (0.25, 0.5, 1.0, 2.0, 4.0)
    """Weight of an acted-on info, low, medium, high, critical finding in a learning path."""

    roi_minutes_saved_by_severity: tuple[float, float, float, float, float] = (
        2.0,
        5.0,
        15.0,
        30.0,
        60.0,
    )
    """Minutes an acted-on info, low, medium, high, critical finding saves (a bug not shipped)."""
    roi_minutes_saved_per_positive: float = Field(15.0, ge=0)
    roi_minutes_lost_per_negative: float = Field(5.0, ge=0)
    """Minutes spent triaging a finding that was rejected."""
    roi_minutes_lost_per_dismissed: float = Field(2.0, ge=0)
    roi_hourly_cost: float = Field(100.0, ge=0)

    cache_ttl_seconds: float = Field(600.0, ge=0)
    """Layer 1 (in process) and layer 2 (Redis or the cached_* tables) lifetime; 0 disables
    caching. Entries are keyed by the team's version, so a fold never serves stale numbers."""
    cache_max_entries: int = Field(10_000, ge=1)
    cache_staleness_seconds: float = Field(5.0, gt=0)
    """How often team versions are re-read: the bound on how long a replica that missed an
    invalidation message may answer from before the last fold."""
    redis_timeout_seconds: float = Field(0.25, gt=0)
    redis_retry_seconds: float = Field(10.0, gt=0)
    """After a Redis error the cache skips Redis this long (answers stay correct, just uncached)."""

    rollup_poll_seconds: float = Field(30.0, gt=0)
    """Periodic catch-up of the rollups when no notification arrives."""
    paths_refresh_seconds: float = Field(300.0, gt=0)
    """How often the learning paths of teams with new feedback are recomputed and persisted."""

    def rate_policy(self) -> RatePolicy:
        return RatePolicy(min_group_size=self.min_group_size, strength=self.smoothing_strength)

    def trend_policy(self) -> TrendPolicy:
        return TrendPolicy(
            alpha=self.trend_alpha,
            min_points=self.trend_min_points,
            min_group_size=self.min_group_size,
        )

    def path_policy(self) -> PathPolicy:
        return PathPolicy(
            lookback_days=self.path_lookback_days,
            half_life_days=self.path_half_life_days,
            recent_days=self.path_recent_days,
            min_real_findings=self.min_group_size,
            severity_weights=dict(enumerate(self.path_severity_weights, start=1)),
        )

    def roi_assumptions(self) -> RoiAssumptions:
        return RoiAssumptions(
            minutes_saved_per_positive=self.roi_minutes_saved_per_positive,
            minutes_lost_per_negative=self.roi_minutes_lost_per_negative,
            minutes_lost_per_dismissed=self.roi_minutes_lost_per_dismissed,
            hourly_cost=self.roi_hourly_cost,
            minutes_saved_by_severity=dict(enumerate(self.roi_minutes_saved_by_severity, start=1)),
        )
