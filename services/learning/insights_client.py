"""The insights service's ``RefreshInsights``, called over gRPC by the insights-owned jobs.

The caller's trace context goes along (W3C ``traceparent`` in the metadata, under a client
span), so a job's trace spans both services; the learning service never imports insights code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc

if TYPE_CHECKING:
    from reviewlearn.insights.v1.insights_pb2_grpc import InsightsServiceAsyncStub as Stub
else:
    Stub = insights_pb2_grpc.InsightsServiceStub

tracer = trace.get_tracer("reviewlearn.learning.jobs")


class InsightsClient:
    def __init__(self, *, address: str, token: str | None, timeout_seconds: float) -> None:
        self._address = address
        self._token = token
        self._timeout = timeout_seconds
        self._channel: grpc.aio.Channel | None = None

    async def refresh(
        self,
        *,
        parts: Sequence[str],
        teams: Sequence[str] = (),
        repositories: Sequence[str] = (),
        request_id: str,
    ) -> dict[str, int]:
        """Rows written and archived (and teams refreshed); raises ``grpc.aio.AioRpcError``."""
        if self._channel is None:  # on first use: nothing connects when the service is built
            self._channel = grpc.aio.insecure_channel(self._address)
        stub: Stub = insights_pb2_grpc.InsightsServiceStub(self._channel)
        scopes = [common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=t) for t in teams] + [
            common_pb2.Scope(type=common_pb2.SCOPE_TYPE_REPOSITORY, id=r) for r in repositories
        ]
        with tracer.start_as_current_span(
            "reviewlearn.insights.v1.InsightsService/RefreshInsights", kind=SpanKind.CLIENT
        ):
            carrier: dict[str, str] = {}
            inject(carrier)
            metadata = list(carrier.items())
            if self._token:
                metadata.append(("authorization", f"Bearer {self._token}"))
            response = await stub.RefreshInsights(
                insights_pb2.RefreshInsightsRequest(
                    request_id=request_id, parts=list(parts), scopes=scopes
                ),
                metadata=tuple(metadata),
                timeout=self._timeout,
            )
        return {
            "rows_written": response.rows_written,
            "rows_archived": response.rows_archived,
            "teams": response.teams,
        }

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
