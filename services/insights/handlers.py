"""gRPC transport of the insights service.

Team metrics, trends, learning paths and ROI belong to the insights issue, which has not landed:
until it does, every RPC answers UNIMPLEMENTED with a reason rather than a made-up number.
"""

from __future__ import annotations

from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc

from shared.rpc.server import answer_unimplemented

SERVICE = insights_pb2.DESCRIPTOR.services_by_name["InsightsService"]


class InsightsHandlers(insights_pb2_grpc.InsightsServiceServicer):
    pass


answer_unimplemented(InsightsHandlers, SERVICE, pending="the insights issue")
