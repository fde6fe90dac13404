"""The black-box probe, kept: arbitrary messages, bytes, page tokens and credentials at EVERY RPC
of all four services get documented codes, and the stored data stays sound.

Generic on purpose: the RPCs are read from the service descriptors, so an RPC added to a
contract later is fuzzed from its first day.
Examples are bounded (``REVIEWLEARN_FUZZ_EXAMPLES``, default 25; each example calls every RPC of
the service once) to keep the suite fast.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.descriptor import ServiceDescriptor as ServiceDescriptorType
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.control.server import build_server as build_control
from services.control.settings import ControlSettings
from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from services.insights.server import build_server as build_insights
from services.insights.settings import InsightsSettings
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from shared.settings import ServiceSettings
from tests.conftest import TOKENS, RunningService, StartService, auth
from tests.integration.feedback.conftest import record_review


@dataclass(frozen=True)
class ServiceUnderTest:
    descriptor: ServiceDescriptorType
    build: Callable[..., Any]
    settings: type[ServiceSettings]


SERVICES = {
    "feedback": ServiceUnderTest(
        feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"],
        build_feedback,
        FeedbackSettings,
    ),
    "learning": ServiceUnderTest(
        learning_pb2.DESCRIPTOR.services_by_name["LearningService"],
        build_learning,
        LearningSettings,
    ),
    "insights": ServiceUnderTest(
        insights_pb2.DESCRIPTOR.services_by_name["InsightsService"],
        build_insights,
        InsightsSettings,
    ),
    "control": ServiceUnderTest(
        control_pb2.DESCRIPTOR.services_by_name["ControlService"], build_control, ControlSettings
    ),
}

# What the API reference documents for a well-authenticated caller with the database up.
# UNAVAILABLE only with a reason of its own (a gate, say): DATABASE_* would mean a misread error.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,
}
EXAMPLES = int(os.environ.get("REVIEWLEARN_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CALL_TIMEOUT = 60.0  # a unary call this slow has stalled the service: a failure, not a code
STREAM_WINDOW = 1.0  # server streams (watches) may run forever: read for this long, then stop


def _forged_token(position: Any) -> str:
    raw = json.dumps({"q": "patterns:1::0", "p": position}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    st.sampled_from(["", " ", "security", "rule-1", "a\x00b", "https://git.example.com/acme/api"]),
    st.just("x" * 25_000),
)
# Page tokens as a forger writes them: the old unsigned format with positions of every type.
_PAGE_TOKENS = st.one_of(
    _TEXT,
    st.lists(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
        max_size=3,
    ).map(_forged_token),
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers()).map(_forged_token),
)
_INT = st.one_of(st.integers(-3, 8), st.integers(-(2**31), 2**31 - 1))
_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: _TEXT,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=20),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(allow_nan=True, allow_infinity=True, width=32),
    FieldDescriptor.TYPE_INT32: _INT,
    FieldDescriptor.TYPE_INT64: st.one_of(_INT, st.integers(-(2**63), 2**63 - 1)),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_ENUM: st.integers(-2, 12),
}


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of a descriptor: every field maybe set, to any value of its type."""
    cls = GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(
            cls,
            seconds=st.one_of(st.integers(0, 2_000_000_000), st.integers(-(2**40), 2**40)),
            # Out of range on purpose too: the contract says 0 … 999,999,999.
            nanos=st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1)),
        )
    if descriptor.full_name == "google.protobuf.Duration":
        return st.builds(
            cls, seconds=st.integers(-(2**40), 2**40), nanos=st.integers(-(2**31), 2**31 - 1)
        )
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.GetOptions().map_entry:
                continue
            value: st.SearchStrategy[Any] = messages(field.message_type, depth + 1)
        elif field.name == "page_token":
            value = _PAGE_TOKENS
        else:
            value = _SCALARS[field.type]
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: cls(**values))


def reason_of(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


async def call(
    service: RunningService,
    descriptor: ServiceDescriptorType,
    method: MethodDescriptor,
    request: Message | bytes,
    metadata: tuple[tuple[str, str], ...],
) -> tuple[grpc.StatusCode, str]:
    """Calls any RPC with a message (or raw bytes); the status code and the ErrorInfo reason."""
    path = f"/{descriptor.full_name}/{method.name}"
    serialize: Callable[[Any], bytes] = (
        (lambda b: b) if isinstance(request, bytes) else (lambda m: m.SerializeToString())
    )
    deserialize = GetMessageClass(method.output_type).FromString
    channel = service.channel
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path, serialize, deserialize)(
                iter([request, request]), metadata=metadata, timeout=STREAM_WINDOW
            )
            async for _ in stream:
                pass
        elif method.client_streaming:
            await channel.stream_unary(path, serialize, deserialize)(
                iter([request, request]), metadata=metadata, timeout=CALL_TIMEOUT
            )
        elif method.server_streaming:
            stream = channel.unary_stream(path, serialize, deserialize)(
                request, metadata=metadata, timeout=STREAM_WINDOW
            )
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(path, serialize, deserialize)(
                request, metadata=metadata, timeout=CALL_TIMEOUT
            )
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
            return grpc.StatusCode.OK, ""  # a watch that was still streaming when we left
        return error.code(), reason_of(error)
    return grpc.StatusCode.OK, ""


def documented(code: grpc.StatusCode, reason: str) -> bool:
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return reason == "NOT_YET_IMPLEMENTED"  # declared in the contract, not served
    if code is grpc.StatusCode.UNAVAILABLE:
        return not reason.startswith("DATABASE_")
    return code in DOCUMENTED


async def assert_consistent(engine: AsyncEngine) -> None:
    checks = {
        "feedback whose repository differs from its finding's": """
            SELECT count(*) FROM suggestion_feedback fb JOIN findings f ON f.id = fb.finding_id
            WHERE fb.repository_id <> f.repository_id""",
        "findings whose team differs from their repository's": """
            SELECT count(*) FROM findings f JOIN repositories r ON r.id = f.repository_id
            WHERE f.team_id <> r.team_id""",
        "findings of another repository than their review's": """
            SELECT count(*) FROM findings f JOIN reviews rv ON rv.id = f.review_id
            WHERE rv.repository_id <> f.repository_id""",
        "reviews without findings": """
            SELECT count(*) FROM reviews rv
            WHERE NOT EXISTS (SELECT 1 FROM findings f WHERE f.review_id = rv.id)
              AND NOT EXISTS (SELECT 1 FROM idempotency_records i
                              WHERE i.service = 'feedback' AND i.request_id = rv.request_id)""",
        "answered request ids without an answer": """
            SELECT count(*) FROM idempotency_records WHERE response = ''::bytea""",
    }
    async with engine.connect() as connection:
        for problem, query in checks.items():
            assert (await connection.execute(text(query))).scalar_one() == 0, problem


@pytest.fixture
async def running(service_name: str, start_service: StartService) -> RunningService:
    """The service under test, started once per test (hypothesis runs the body per example)."""
    service = SERVICES[service_name]
    running = await start_service(service.build, service.settings)
    if service_name != "feedback":
        # Small finding ids exist, so that RPCs taking finding ids reach their real paths.
        feedback = await start_service(build_feedback, FeedbackSettings)
        await record_review(feedback_pb2_grpc.FeedbackServiceStub(feedback.channel), findings=5)
    else:
        await record_review(feedback_pb2_grpc.FeedbackServiceStub(running.channel), findings=5)
    return running


@pytest.mark.parametrize("service_name", list(SERVICES))
@FUZZ
@given(data=st.data())
async def test_arbitrary_messages_get_documented_codes(
    service_name: str, running: RunningService, db_engine: AsyncEngine, data: st.DataObject
) -> None:
    """Each example sends one arbitrary message to every RPC of the service, in turn."""
    descriptor = SERVICES[service_name].descriptor
    for method in descriptor.methods:
        request = data.draw(messages(method.input_type), label=method.name)
        code, reason = await call(running, descriptor, method, request, auth("operator"))
        assert documented(code, reason), f"{method.name} answered {code} {reason}"
    await assert_consistent(db_engine)


@pytest.mark.parametrize("service_name", list(SERVICES))
@FUZZ
@given(payload=st.binary(max_size=200))
async def test_arbitrary_bytes_get_documented_codes(
    service_name: str, running: RunningService, payload: bytes
) -> None:
    descriptor = SERVICES[service_name].descriptor
    service = running
    for method in descriptor.methods:
        code, reason = await call(service, descriptor, method, payload, auth("operator"))
        assert documented(code, reason), (method.name, payload, code, reason)


# Every way a credential can be wrong; each must be UNAUTHENTICATED before anything is decoded.
_OPERATOR = TOKENS["operator"]
BAD_CREDENTIALS: list[tuple[tuple[str, str], ...]] = [
    (),
    (("authorization", ""),),
    (("authorization", "Bearer"),),
    (("authorization", "Bearer "),),
    (("authorization", _OPERATOR),),
    (("authorization", f"Basic {_OPERATOR}"),),
    (("authorization", f"Token {_OPERATOR}"),),
    (("authorization", f"Bearer {_OPERATOR}x"),),
    (("authorization", f"Bearer {_OPERATOR[:-1]}"),),
    (("authorization", f"Bearer {_OPERATOR.upper()}"),),
    (("authorization", f"Bearer {_OPERATOR} {_OPERATOR}"),),
    (("authorization", f"Bearer {_OPERATOR},Bearer {_OPERATOR}"),),
    (("authorization", f"Bearer {_OPERATOR}"), ("authorization", f"Bearer {_OPERATOR}")),
    (("authorization", f"Bearer {_OPERATOR}"), ("authorization", "Bearer nope")),
    (("authorization", "Bearer nope"), ("authorization", f"Bearer {_OPERATOR}")),
    (("x-authorization", f"Bearer {_OPERATOR}"),),
]


@pytest.mark.parametrize("service_name", list(SERVICES))
async def test_every_credential_variant_is_refused_at_every_rpc(
    service_name: str, running: RunningService, db_engine: AsyncEngine
) -> None:
    descriptor = SERVICES[service_name].descriptor
    service = running
    garbage = b"\xff" * 64  # decoded, it would be INVALID_ARGUMENT: auth must come first
    for method in descriptor.methods:
        required = method.GetOptions().Extensions[common_pb2.required_role]
        for metadata in BAD_CREDENTIALS:
            for request in (garbage, GetMessageClass(method.input_type)()):
                code, reason = await call(service, descriptor, method, request, metadata)
                assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"), (
                    method.name,
                    metadata,
                    code,
                    reason,
                )
        for role in ("ingest", "reader"):
            if common_pb2.Role.Name(required) == f"ROLE_{role.upper()}":
                continue
            code, reason = await call(service, descriptor, method, garbage, auth(role))
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_FORBIDDEN"), (
                method.name,
                role,
                code,
            )
    await assert_consistent(db_engine)
