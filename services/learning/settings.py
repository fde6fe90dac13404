"""Settings of the learning service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from services.learning.domain.learned_state import ModelParameters
from services.learning.domain.threshold_fitting import TuneParameters
from shared.settings import ServiceSettings, port_field


class LearningSettings(ServiceSettings):
    service_name: str = "learning"
    grpc_port: int = port_field("learning", 50052, "GRPC")
    metrics_port: int = port_field("learning", 9102, "METRICS")

    fold_poll_seconds: float = Field(5.0, gt=0)
    """Fallback poll for new feedback when no notification arrives."""
    model_refresh_seconds: float = Field(30.0, gt=0)
    """How often the in-memory model is rebuilt even without a fold (another replica's tune)."""
    model_rebuild_tick_seconds: float = Field(0.5, gt=0)
    """How soon after a fold the ranker sees the new counts; many folds share one rebuild."""
    patterns_refresh_seconds: float = Field(300.0, gt=0)

    target_not_useful_rate: float = Field(0.10, gt=0, lt=1)
    """Tricorder's bar: the share of shown findings nobody acts on."""
    threshold_min_samples: int = Field(50, ge=1)
    calibration_min_isotonic_samples: int = Field(200, ge=2)
    calibration_min_sigmoid_samples: int = Field(30, ge=2)
    noisy_rule_min_samples: int = Field(30, ge=1)
    noisy_rule_max_usefulness: float = Field(0.3, gt=0, lt=1)
    threshold_stale_hours: float = Field(24.0, gt=0)

    max_findings_per_ranking: int = Field(10_000, ge=1)
    ranking_threads: int = Field(2, ge=1)
    """Worker threads that rank off the event loop; more requests than this wait their turn."""
    max_text_chars: int = Field(20_000, ge=100)
    """Longest message or code context of an inline finding (as in the feedback service)."""
    severity_weights: tuple[float, float, float, float, float] = (0.6, 0.8, 1.0, 1.2, 1.5)
    """Score weight of info, low, medium, high, critical."""
    near_duplicate_line_window: int = Field(10, ge=0)
    near_duplicate_max_hamming: int = Field(6, ge=0, le=64)

    pattern_min_occurrences: int = Field(10, ge=2)
    pattern_alpha: float = Field(0.01, gt=0, lt=1)
    pattern_emerging_ratio: float = Field(2.0, gt=1)
    pattern_window_days: int = Field(28, ge=1)

    def tune_parameters(self, target: float | None = None) -> TuneParameters:
        return TuneParameters(
            target_not_useful_rate=target or self.target_not_useful_rate,
            min_samples=self.threshold_min_samples,
            min_isotonic_samples=self.calibration_min_isotonic_samples,
            min_sigmoid_samples=self.calibration_min_sigmoid_samples,
        )

    def model_parameters(self) -> ModelParameters:
        return ModelParameters(
            noisy_rule_min_samples=self.noisy_rule_min_samples,
            noisy_rule_max_usefulness=self.noisy_rule_max_usefulness,
        )
