"""OpenTelemetry metrics (exported in Prometheus format), traces and JSON logs with trace ids.

``setup_telemetry`` is called once per process from a service's ``__main__`` (tests call it once
per session): OpenTelemetry's global providers may only be set once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

# Latency buckets in seconds, from sub-millisecond RPCs to slow batch jobs.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclass
class Telemetry:
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    *,
    service_name: str,
    otlp_endpoint: str | None = None,
    log_level: str = "INFO",
    log_json: bool = True,
) -> Telemetry:
    resource = Resource.create({"service.name": f"reviewlearn-{service_name}"})
    second_views = [
        View(
            instrument_name=f"*{suffix}",
            aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
        )
        for suffix in ("duration", "response_time", "latency")
    ]
    ratio_view = View(
        instrument_name="diversity_factor_distribution",
        aggregation=ExplicitBucketHistogramAggregation(tuple(i / 10 for i in range(11))),
    )
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[PrometheusMetricReader()],
        views=[*second_views, ratio_view],
    )
    metrics.set_meter_provider(meter_provider)

    # Without an exporter nothing would read the spans: record none, but keep creating span
    # contexts so that W3C trace ids still propagate to downstream calls and into the logs.
    tracer_provider = TracerProvider(
        resource=resource, sampler=ParentBased(ALWAYS_ON) if otlp_endpoint else ALWAYS_OFF
    )
    if otlp_endpoint:
        # Imported lazily: the OTLP exporter pulls in a second gRPC client stack.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True))
        )
    trace.set_tracer_provider(tracer_provider)
    configure_logging(service_name=service_name, level=log_level, as_json=log_json)
    return Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the current trace and span ids."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self._service = service_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = f"{span_context.trace_id:032x}"
            entry["span_id"] = f"{span_context.span_id:016x}"
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(*, service_name: str, level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(service_name))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def current_trace_id() -> str:
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else ""
