"""The control service's OpenTelemetry instruments: alerts firing by severity, notifications
sent, failed and lease lost by channel, and the alert signals' values.

The gauges report what this process's last evaluation computed, and nothing once that is older
than a few evaluation intervals: only the replica holding the evaluation lock evaluates, and a
replica that stopped evaluating must not keep exporting old values (PromQL takes the ``max``
over replicas). The instruments exist once per process (OpenTelemetry keeps the first of two
instruments with one name), so every runtime in a process shares them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry import metrics

from services.control.domain.alerts import Channel, Severity


@dataclass
class _Latest:
    evaluated_at: float = -float("inf")
    fresh_seconds: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    firing: dict[Severity, int] = field(default_factory=dict)

    def fresh(self) -> bool:
        return time.monotonic() - self.evaluated_at <= self.fresh_seconds


_latest = _Latest()
_instruments: tuple[metrics.Counter, metrics.Counter, metrics.Counter] | None = None


def _observe_firing(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    if not _latest.fresh():
        return []
    return [metrics.Observation(n, {"severity": s.label}) for s, n in _latest.firing.items()]


def _observe_values(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    if not _latest.fresh():
        return []
    return [metrics.Observation(v, {"signal": name}) for name, v in _latest.values.items()]


def _counters() -> tuple[metrics.Counter, metrics.Counter, metrics.Counter]:
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter("reviewlearn.control")
        meter.create_observable_gauge(
            "alerts_firing",
            callbacks=[_observe_firing],
            description="Firing alerts by severity, as of this replica's last evaluation",
        )
        meter.create_observable_gauge(
            "alert_signal_value",
            callbacks=[_observe_values],
            description="Alert signal values computed by this replica's last evaluation",
        )
        _instruments = (
            meter.create_counter(
                "alert_notifications_sent", description="Alert notifications delivered"
            ),
            meter.create_counter(
                "alert_notifications_failed",
                description="Alert notifications given up on after their last attempt",
            ),
            meter.create_counter(
                "alert_notifications_lease_lost",
                description="Deliveries that outlived their lease: another replica claimed the "
                "notification, and this one's outcome was not recorded",
            ),
        )
    return _instruments


class AlertInstruments:
    def __init__(self, *, fresh_seconds: float) -> None:
        self._fresh_seconds = fresh_seconds
        self._sent, self._failed, self._lease_lost = _counters()

    def evaluated(self, values: Mapping[str, float | None], firing: Mapping[Severity, int]) -> None:
        _latest.values = {name: v for name, v in values.items() if v is not None}
        _latest.firing = dict(firing)
        _latest.fresh_seconds = self._fresh_seconds
        _latest.evaluated_at = time.monotonic()

    def delivered(self, channel: Channel) -> None:
        self._sent.add(1, {"channel": str(channel)})

    def failed(self, channel: Channel) -> None:
        self._failed.add(1, {"channel": str(channel)})

    def lease_lost(self, channel: Channel) -> None:
        self._lease_lost.add(1, {"channel": str(channel)})
