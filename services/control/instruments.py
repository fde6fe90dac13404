"""The control service's OpenTelemetry instruments: alerts firing by severity, notifications
sent and failed by channel, and the alert signals' values.

The gauges report what this replica's last evaluation computed, and nothing once that is older
than a few evaluation intervals: only the replica holding the evaluation lock evaluates, and a
replica that stopped evaluating must not keep exporting old values (PromQL takes the ``max``
over replicas).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from opentelemetry import metrics

from services.control.domain.alerts import Channel, Severity


class AlertInstruments:
    def __init__(self, *, fresh_seconds: float) -> None:
        meter = metrics.get_meter("reviewlearn.control")
        self._fresh_seconds = fresh_seconds
        self._evaluated_at = -float("inf")
        self._values: dict[str, float] = {}
        self._firing: dict[Severity, int] = {}
        self._sent = meter.create_counter(
            "alert_notifications_sent", description="Alert notifications delivered, by channel"
        )
        self._failed = meter.create_counter(
            "alert_notifications_failed",
            description="Alert notifications given up on after their last attempt, by channel",
        )
        meter.create_observable_gauge(
            "alerts_firing",
            callbacks=[self._observe_firing],
            description="Firing alerts by severity, as of this replica's last evaluation",
        )
        meter.create_observable_gauge(
            "alert_signal_value",
            callbacks=[self._observe_values],
            description="Alert signal values computed by this replica's last evaluation",
        )

    def _fresh(self) -> bool:
        return time.monotonic() - self._evaluated_at <= self._fresh_seconds

    def _observe_firing(self, _options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        if not self._fresh():
            return []
        return [
            metrics.Observation(count, {"severity": severity.label})
            for severity, count in self._firing.items()
        ]

    def _observe_values(self, _options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        if not self._fresh():
            return []
        return [metrics.Observation(v, {"signal": name}) for name, v in self._values.items()]

    def evaluated(self, values: Mapping[str, float | None], firing: Mapping[Severity, int]) -> None:
        self._values = {name: v for name, v in values.items() if v is not None}
        self._firing = dict(firing)
        self._evaluated_at = time.monotonic()

    def delivered(self, channel: Channel) -> None:
        self._sent.add(1, {"channel": str(channel)})

    def failed(self, channel: Channel) -> None:
        self._failed.add(1, {"channel": str(channel)})
