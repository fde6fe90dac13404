"""gRPC transport of the learning service."""

from __future__ import annotations

from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from shared.rpc.server import answer_unimplemented

SERVICE = learning_pb2.DESCRIPTOR.services_by_name["LearningService"]


class LearningHandlers(learning_pb2_grpc.LearningServiceServicer):
    pass


answer_unimplemented(LearningHandlers, SERVICE, pending="the learning issue")
