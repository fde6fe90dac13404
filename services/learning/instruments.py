"""The learning service's OpenTelemetry instruments (the plan's learning and ranking metrics)."""

from __future__ import annotations

from collections import deque

import numpy as np
from opentelemetry import metrics

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

    def fold_p95(self) -> float | None:
        """p95 seconds of the last folds that folded anything; None before the first."""
        if not self.recent_folds:
            return None
        return round(float(np.quantile(np.fromiter(self.recent_folds, float), 0.95)), 4)
