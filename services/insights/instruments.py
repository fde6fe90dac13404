"""The insights service's OpenTelemetry instruments (the plan's insights engine metrics)."""

from __future__ import annotations

from opentelemetry import metrics


class InsightsInstruments:
    def __init__(self) -> None:
        meter = metrics.get_meter("reviewlearn.insights")
        self.generation_duration = meter.create_histogram(
            "insights_generation_duration",
            unit="s",
            description="Time to compute an insight from the rollups (cache misses only)",
        )
        self.trend_duration = meter.create_histogram(
            "trend_analysis_duration", unit="s", description="Time to analyse a set of trends"
        )
        self.path_duration = meter.create_histogram(
            "learning_path_generation_duration",
            unit="s",
            description="Time to compute a team's learning paths",
        )
        self.roi_duration = meter.create_histogram(
            "roi_calculation_duration", unit="s", description="Time to compute an ROI"
        )
        self.endpoint_latency = meter.create_histogram(
            "insights_endpoint_latency",
            unit="s",
            description="Time to answer an insights RPC or dashboard page, cache hits included",
        )
        self.fold_duration = meter.create_histogram(
            "insights_rollup_fold_duration",
            unit="s",
            description="Time to fold new feedback into the insights rollups",
        )
        self.cache_lookups = meter.create_counter(
            "insights_cache_lookups", description="Insights cache lookups by layer and result"
        )
        self.hits = 0
        self.misses = 0
        meter.create_observable_gauge(
            "insights_cache_hit_rate",
            callbacks=[lambda _: [metrics.Observation(self.hit_rate)]],
            description="Share of insights lookups answered from a cache layer since start",
        )

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def cache_result(self, layer: str) -> None:
        """Counts one lookup: ``layer`` is "l1", "l2" or "miss"."""
        if layer == "miss":
            self.misses += 1
        else:
            self.hits += 1
        self.cache_lookups.add(1, {"result": layer})
