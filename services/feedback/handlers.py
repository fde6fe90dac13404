"""gRPC transport of the feedback service."""

from __future__ import annotations

from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc

from shared.rpc.server import answer_unimplemented

SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"]


class FeedbackHandlers(feedback_pb2_grpc.FeedbackServiceServicer):
    pass


answer_unimplemented(FeedbackHandlers, SERVICE, pending="the feedback issue")
