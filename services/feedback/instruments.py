"""The feedback service's OpenTelemetry instruments (the plan's ingestion metrics)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from opentelemetry import metrics

from services.feedback.domain import ItemStatus
from shared.outcome import FeedbackKind

_KIND_NAMES = {int(kind): kind.name.lower() for kind in FeedbackKind}


class FeedbackInstruments:
    """Counters and gauges of ingestion; the backlog gauge reads what BacklogMonitor measured."""

    def __init__(self) -> None:
        meter = metrics.get_meter("reviewlearn.feedback")
        self.ingestion_rate = meter.create_counter(
            "feedback_ingestion_rate", description="Feedback events received, by kind and result"
        )
        self.ingestion_duration = meter.create_histogram(
            "feedback_ingestion_duration",
            unit="s",
            description="Time to validate and store a batch",
        )
        self.backlog = 0
        self.received = 0
        self.accepted = 0
        meter.create_observable_gauge(
            "feedback_ingestion_backlog",
            callbacks=[lambda _: [metrics.Observation(self.backlog)]],
            description="Feedback events recorded but not yet folded into learning",
        )
        meter.create_observable_gauge(
            "feedback_collection_success_rate",
            callbacks=[lambda _: [metrics.Observation(self.success_rate)]],
            description="Share of received events stored or recognised as duplicates",
        )

    @property
    def success_rate(self) -> float:
        return self.accepted / self.received if self.received else 1.0

    def record(self, kinds: Sequence[int], statuses: Sequence[str]) -> None:
        """Counts a batch's events by kind and result (``kinds[i]`` is the i-th event's)."""
        counts = Counter(zip(kinds, statuses, strict=True))
        for (kind, status), count in counts.items():
            # An invalid item's kind may itself be what is invalid.
            name = "unknown" if status == ItemStatus.INVALID else _KIND_NAMES[kind]
            self.ingestion_rate.add(count, {"kind": name, "result": status})
        self.received += len(statuses)
        self.accepted += statuses.count(ItemStatus.STORED) + statuses.count(ItemStatus.DUPLICATE)
