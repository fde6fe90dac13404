"""A bare grpc.aio server answering the feedback ingestion RPCs without doing any work.

It is the framework ceiling the benchmarks compare the real service with: the same method paths,
the same request decoding and a response of the same shape (one result per batch item), but no
interceptors, no auth, no validation and no database. Run it in its own process, as the
benchmark does, so that it competes with the load generator exactly as the service does::

    python -m tests.benchmarks.echo --port 50151
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2

from shared.rpc.server import run_until_signalled

SERVICE_NAME = "reviewlearn.feedback.v1.FeedbackService"


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
        server = grpc.aio.server()
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
    parser = argparse.ArgumentParser(description="A bare grpc.aio feedback ingestion server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    asyncio.run(run_until_signalled(EchoServer(host=arguments.host, port=arguments.port)))


if __name__ == "__main__":
    main()
