"""A bare grpc.aio server answering the benchmarked RPCs without doing any work.

It is the framework ceiling the benchmarks compare the real services with: the same method paths,
the same request decoding and a response of the same shape (one result per batch item, one
ranked finding per finding to rank), but no interceptors, no auth, no validation, no learning
and no database. Run it in its own process, as the benchmarks do, so that it competes with the
load generator exactly as a service does::

    python -m tests.benchmarks.echo --port 50151
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2

from shared.rpc.entrypoint import run_event_loop
from shared.rpc.server import run_until_signalled

SERVICE_NAME = "reviewlearn.feedback.v1.FeedbackService"
LEARNING_SERVICE_NAME = "reviewlearn.learning.v1.LearningService"
INSIGHTS_SERVICE_NAME = "reviewlearn.insights.v1.InsightsService"
# As large as the services allow (shared.settings.max_message_bytes): a ranking of 10,000
# findings with explanations is larger than gRPC's default 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# As long as a typical summary of the learning service's explanations.
ECHO_SUMMARY = (
    "P(acted on) 0.50: base rate -0.25 (acted on 4210 of 10004); rule R001 in this repository "
    "+1.20 (acted on 18 of 21); category security +0.30 (acted on 400 of 900); confidence "
    "0.40-0.60 -0.10 (acted on 1200 of 3000)"
)
# The terms the service explains a typical finding with (a level the model saw each).
ECHO_TERMS = (
    "base",
    "category",
    "rule",
    "team",
    "repository",
    "repository_rule",
    "severity",
    "confidence",
    "category_confidence",
)


def _echo_terms(finding: common_pb2.FindingInput) -> list[dict[str, object]]:
    return [
        {"term": term, "key": finding.rule_id, "contribution": 0.1, "acted_on": 18, "outcomes": 21}
        for term in ECHO_TERMS
    ]


async def batch_record_feedback(
    request: feedback_pb2.BatchRecordFeedbackRequest, context: Any
) -> feedback_pb2.BatchRecordFeedbackResponse:
    # Building one result per event keeps the response as large as the service's, so the
    # comparison is not flattered by a tiny reply.
    return feedback_pb2.BatchRecordFeedbackResponse(
        results=[
            feedback_pb2.FeedbackItemResult(
                index=index, event_id=event.event_id, feedback_id=index + 1
            )
            for index, event in enumerate(request.events)
        ],
        stored_count=len(request.events),
    )


async def record_feedback(
    request: feedback_pb2.RecordFeedbackRequest, context: Any
) -> feedback_pb2.RecordFeedbackResponse:
    return feedback_pb2.RecordFeedbackResponse(feedback_id=1)


async def rank_suggestions(
    request: learning_pb2.RankSuggestionsRequest, context: Any
) -> learning_pb2.RankSuggestionsResponse:
    # One ranked finding per input in input order, with the fields the service fills and an
    # explanation whose summary is as long as the service's, so that building and encoding the
    # response costs the ceiling what it costs the service; nothing is scored or deduplicated.
    if request.options.HasField("explain") and not request.options.explain:
        return _lean_ranking(request)
    offset = len(request.finding_ids)
    # Built in place, as cheaply as protobuf allows (the service builds its answer this way too),
    # so the ceiling is not flattered by slow construction.
    response = learning_pb2.RankSuggestionsResponse(learning_applied=True, model_version="echo")
    add = response.findings.add
    for index, finding_id in enumerate(request.finding_ids):
        add(
            ref={"index": index, "finding_id": finding_id},
            rank=index + 1,
            score=0.5,
            calibrated_probability=0.5,
            explanation={"summary": ECHO_SUMMARY},
        )
    for position, finding in enumerate(request.findings):
        add(
            ref={"index": offset + position, "client_finding_id": finding.client_finding_id},
            fingerprint="0" * 32,
            rank=offset + position + 1,
            score=finding.confidence,
            calibrated_probability=finding.confidence,
            rule_id=finding.rule_id,
            category=finding.category,
            explanation={
                "raw_confidence": finding.confidence,
                "calibrated_probability": finding.confidence,
                "terms": _echo_terms(finding),
                "logit": 0.0,
                "upper_bound": 0.9,
                "hide_below": 0.2,
                "severity_value": 1.0,
                "probation_scope": "repository",
                "summary": ECHO_SUMMARY,
            },
        )
    return response


def _lean_ranking(
    request: learning_pb2.RankSuggestionsRequest,
) -> learning_pb2.RankSuggestionsResponse:
    """The lean answer's shape (RankOptions.explain=false): no explanations."""
    response = learning_pb2.RankSuggestionsResponse(learning_applied=True, model_version="echo")
    add = response.findings.add
    for position, finding in enumerate(request.findings):
        add(
            ref={"index": position, "client_finding_id": finding.client_finding_id},
            fingerprint="0" * 32,
            rank=position + 1,
            score=finding.confidence,
            calibrated_probability=finding.confidence,
            rule_id=finding.rule_id,
            category=finding.category,
        )
    return response


def _echo_report() -> insights_pb2.GetInsightsReportResponse:
    """A report of the benchmark's shape (6 categories, 60 rules, 10 trends of 12 weeks, 5 paths),
    built once: the echo answers it without computing anything."""
    rate = common_pb2.Rate(
        successes=40, trials=80, value=0.5, wilson95=common_pb2.Interval(lower=0.39, upper=0.61)
    )
    categories = [f"category-{i}" for i in range(6)]
    metrics = insights_pb2.GetTeamMetricsResponse(
        metrics=insights_pb2.TeamMetrics(findings=1000, positive=400, acceptance=rate,
                                         not_useful=rate),
        categories=[insights_pb2.CategoryMetrics(category=c, findings=100, acceptance=rate,
                                                 not_useful=rate) for c in categories],
        rules=[insights_pb2.RuleMetrics(rule_id=f"rule-{i}", category=categories[i % 6],
                                        findings=20, acceptance=rate, not_useful=rate)
               for i in range(60)],
    )  # fmt: skip
    trend = insights_pb2.Trend(
        points=[insights_pb2.TrendPoint(value=0.5, samples=80) for _ in range(12)],
        summary="acceptance +0.1 pp/week, Mann–Kendall p = 0.5: stable (no significant trend)",
    )
    return insights_pb2.GetInsightsReportResponse(
        metrics=metrics,
        trends=insights_pb2.GetTrendsResponse(trends=[trend] * 10),
        learning_paths=insights_pb2.GetLearningPathsResponse(
            paths=[insights_pb2.LearningPath(rank=i, category=categories[i],
                                             recommendation="Study " + "x" * 120,
                                             top_rules=["a", "b", "c"],
                                             example_finding_ids=[1, 2, 3, 4, 5])
                   for i in range(5)]
        ),
        roi=insights_pb2.GetRoiResponse(
            categories=[insights_pb2.CategoryRoi(category=c, net_minutes=60.0) for c in categories]
        ),
    )  # fmt: skip


ECHO_REPORT = _echo_report()


async def get_insights_report(
    request: insights_pb2.GetInsightsReportRequest, context: Any
) -> insights_pb2.GetInsightsReportResponse:
    return ECHO_REPORT


def _unary(
    behaviour: Any, request_type: Any, response_type: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )


class EchoServer:
    """Start/stop shaped like a service runtime, so it shares the services' signal handling."""

    def __init__(self, *, host: str, port: int) -> None:
        self._address = f"{host}:{port}"
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE_NAME,
                    {
                        "BatchRecordFeedback": _unary(
                            batch_record_feedback,
                            feedback_pb2.BatchRecordFeedbackRequest,
                            feedback_pb2.BatchRecordFeedbackResponse,
                        ),
                        "RecordFeedback": _unary(
                            record_feedback,
                            feedback_pb2.RecordFeedbackRequest,
                            feedback_pb2.RecordFeedbackResponse,
                        ),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    INSIGHTS_SERVICE_NAME,
                    {
                        "GetInsightsReport": _unary(
                            get_insights_report,
                            insights_pb2.GetInsightsReportRequest,
                            insights_pb2.GetInsightsReportResponse,
                        ),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    LEARNING_SERVICE_NAME,
                    {
                        "RankSuggestions": _unary(
                            rank_suggestions,
                            learning_pb2.RankSuggestionsRequest,
                            learning_pb2.RankSuggestionsResponse,
                        ),
                    },
                ),
            )
        )
        # Health only so that the benchmark waits for readiness the same way for both servers.
        checker = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        self.port = server.add_insecure_port(self._address)
        if self.port == 0:
            raise SystemExit(f"cannot bind {self._address}")
        await server.start()
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)
            self._server = None


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare grpc.aio server on the benchmarked RPCs.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    run_event_loop(run_until_signalled(EchoServer(host=arguments.host, port=arguments.port)))


if __name__ == "__main__":
    main()
