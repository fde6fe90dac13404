"""Settings of the feedback service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from shared.finding_input import Limits
from shared.settings import ServiceSettings, port_field


class FeedbackSettings(ServiceSettings):
    service_name: str = "feedback"
    grpc_port: int = port_field("feedback", 50051, "GRPC")
    metrics_port: int = port_field("feedback", 9101, "METRICS")

    max_events_per_batch: int = Field(10_000, ge=1)
    max_findings_per_request: int = Field(10_000, ge=1)
    max_text_chars: int = Field(20_000, ge=100)
    """Longest message, suggested fix, code context or comment."""
    future_tolerance_seconds: int = Field(300, ge=0)
    """How far in the future an event's occurred_at may be (clock skew)."""
    backlog_refresh_seconds: float = Field(5.0, gt=0)
    """How often the backlog gauge is measured."""
    notify_interval_seconds: float = Field(0.05, ge=0)
    """Writes within this interval share one change notification to the learning service."""

    def limits(self) -> Limits:
        return Limits(
            max_events_per_batch=self.max_events_per_batch,
            max_findings_per_request=self.max_findings_per_request,
            max_text_chars=self.max_text_chars,
            future_tolerance=timedelta(seconds=self.future_tolerance_seconds),
        )
