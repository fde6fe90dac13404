"""gRPC transport of the control plane.

Gates, the kill switch RPC, rollout and alerts belong to the control-plane issue, which has not
landed: until it does, every RPC answers UNIMPLEMENTED with a reason. The hard kill switch
(``LEARNING_ENABLED=false`` in the environment) already works in every service.
"""

from __future__ import annotations

from reviewlearn.control.v1 import control_pb2, control_pb2_grpc

from shared.rpc.server import answer_unimplemented

SERVICE = control_pb2.DESCRIPTOR.services_by_name["ControlService"]


class ControlHandlers(control_pb2_grpc.ControlServiceServicer):
    pass


answer_unimplemented(ControlHandlers, SERVICE, pending="the control-plane issue")
