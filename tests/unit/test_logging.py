"""Structured logs: one JSON object per line, carrying the current trace id."""

from __future__ import annotations

import json
import logging

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.telemetry import JsonFormatter


def test_log_lines_are_json_with_the_trace_id() -> None:
    formatter = JsonFormatter("feedback")
    record = logging.LogRecord(
        "reviewlearn.test", logging.WARNING, __file__, 1, "hello %s", ("x",), None
    )
    record.fields = {"events": 3}
    context = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(1),
    )
    with trace.use_span(NonRecordingSpan(context)):
        line = json.loads(formatter.format(record))
    assert line["msg"] == "hello x"
    assert line["level"] == "warning"
    assert line["service"] == "feedback"
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["events"] == 3
    outside = json.loads(formatter.format(record))
    assert "trace_id" not in outside
