"""The naive COPY reference: the least a server can do to store a feedback batch in PostgreSQL.

A bare grpc.aio server (no interceptors, auth, validation or per-item outcomes) that takes a
``BatchRecordFeedback`` of 1,000 events, ``copy_records_to_table``s them into a connection-local
staging table with asyncpg and stores them with one ``INSERT … SELECT … ON CONFLICT DO
NOTHING`` (joined to the findings for the repository column, as the log needs it). It answers
one result per event, as the echo server does, so the reply is as large as the service's.
What the service does beyond this — validation, duplicates told from conflicts, unknown findings
reported, telemetry, retries — is what the ratio to this reference costs. Run it in its own
process, as the benchmark does::

    python -m tests.benchmarks.copy_reference --port 50152 --database-url postgresql://…
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2

from shared.rpc.entrypoint import run_event_loop
from shared.rpc.server import run_until_signalled
from tests.benchmarks.echo import MAX_MESSAGE_BYTES, SERVICE_NAME

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = ("event_id", "finding_id", "kind", "actor_id", "comment", "occurred_at")
_CREATE = """
    CREATE TEMPORARY TABLE IF NOT EXISTS reference_staging (
        event_id text, finding_id bigint, kind smallint, actor_id text, comment text,
        occurred_at timestamptz
    ) ON COMMIT DELETE ROWS
"""
_INSERT = """
    INSERT INTO suggestion_feedback
        (event_id, finding_id, repository_id, kind, actor_id, comment, occurred_at)
    SELECT s.event_id, s.finding_id, f.repository_id, s.kind, s.actor_id, s.comment,
           s.occurred_at
    FROM reference_staging s JOIN findings f ON f.id = s.finding_id
    ON CONFLICT (event_id) DO NOTHING
"""


class CopyReference:
    def __init__(self, *, host: str, port: int, database_url: str) -> None:
        self._address = f"{host}:{port}"
        self._database_url = database_url
        self._server: grpc.aio.Server | None = None
        self._pool: asyncpg.Pool | None = None

    async def batch_record_feedback(
        self, request: feedback_pb2.BatchRecordFeedbackRequest, context: Any
    ) -> feedback_pb2.BatchRecordFeedbackResponse:
        assert self._pool is not None
        records = [
            (
                event.event_id,
                event.finding_id,
                event.kind,
                event.actor_id,
                event.comment,
                _EPOCH
                + timedelta(
                    seconds=event.occurred_at.seconds, microseconds=event.occurred_at.nanos // 1000
                ),
            )
            for event in request.events
        ]
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_CREATE)
            await connection.copy_records_to_table(
                "reference_staging", records=records, columns=_COLUMNS
            )
            status = await connection.execute(_INSERT)
        response = feedback_pb2.BatchRecordFeedbackResponse(stored_count=int(status.split()[-1]))
        add = response.results.add
        for index, event in enumerate(request.events):
            add(index=index, event_id=event.event_id, feedback_id=index + 1)
        return response

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self._database_url, min_size=2, max_size=8)
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
                        "BatchRecordFeedback": grpc.unary_unary_rpc_method_handler(
                            self.batch_record_feedback,
                            request_deserializer=feedback_pb2.BatchRecordFeedbackRequest.FromString,
                            response_serializer=(
                                feedback_pb2.BatchRecordFeedbackResponse.SerializeToString
                            ),
                        )
                    },
                ),
            )
        )
        checker = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        if server.add_insecure_port(self._address) == 0:
            raise SystemExit(f"cannot bind {self._address}")
        await server.start()
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)
        if self._pool is not None:
            await self._pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="The naive COPY reference server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="a postgresql:// URL (asyncpg)")
    arguments = parser.parse_args()
    reference = CopyReference(
        host=arguments.host, port=arguments.port, database_url=arguments.database_url
    )
    run_event_loop(run_until_signalled(reference))


if __name__ == "__main__":
    main()
