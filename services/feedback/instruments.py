"""The feedback service's OpenTelemetry instruments (the plan's ingestion metrics)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from opentelemetry import metrics

from services.feedback.domain import FeedbackDraft, ItemResult, ItemStatus


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

    def record_batch(
        self, results: Sequence[ItemResult], drafts: Sequence[FeedbackDraft], first_index: int = 0
    ) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        for result in results:
            # An invalid item's kind may itself be what is invalid.
            valid = result.status != ItemStatus.INVALID
            kind = drafts[result.index - first_index].kind.name.lower() if valid else "unknown"
            counts[(kind, result.status)] += 1
        for (kind, status), count in counts.items():
            self.ingestion_rate.add(count, {"kind": kind, "result": status})
        self.received += len(results)
        self.accepted += sum(r.status in (ItemStatus.STORED, ItemStatus.DUPLICATE) for r in results)
