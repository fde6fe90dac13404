"""Property-based: arbitrary messages at every RPC get documented codes; the data stays sound."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reviewlearn.feedback.v1 import feedback_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import RunningService, auth
from tests.integration.feedback.conftest import record_review

SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"]
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    st.sampled_from(["", " ", "security", "rule-1", "a\x00b", "https://git.example.com/acme/api"]),
    st.just("x" * 25_000),
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
            nanos=st.integers(0, 999_999_999),
        )
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value: st.SearchStrategy[Any] = messages(field.message_type, depth + 1)
        else:
            value = _SCALARS[field.type]
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: cls(**values))


async def _call(service: RunningService, method: str, request: Message) -> grpc.StatusCode:
    method_descriptor = SERVICE.methods_by_name[method]
    response_class = GetMessageClass(method_descriptor.output_type)
    path = f"/{SERVICE.full_name}/{method}"
    try:
        if method_descriptor.client_streaming:
            stream = service.channel.stream_unary(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )
            await stream(iter([request, request]), metadata=auth("operator"))
        else:
            unary = service.channel.unary_unary(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )
            await unary(request, metadata=auth("operator"))
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


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
    }
    async with engine.connect() as connection:
        for problem, query in checks.items():
            assert (await connection.execute(text(query))).scalar_one() == 0, problem


@pytest.fixture
async def seeded(stub: Any) -> None:
    await record_review(stub, findings=5)  # so that small finding ids exist


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
@FUZZ
@given(data=st.data())
async def test_arbitrary_messages_get_documented_codes(
    method: str,
    feedback_service: RunningService,
    seeded: None,
    db_engine: AsyncEngine,
    data: st.DataObject,
) -> None:
    request = data.draw(messages(SERVICE.methods_by_name[method].input_type))
    code = await _call(feedback_service, method, request)
    assert code in DOCUMENTED, f"{method} answered {code} to {str(request)[:2000]}"
    await assert_consistent(db_engine)


@FUZZ
@given(payload=st.binary(max_size=200))
async def test_arbitrary_bytes_get_documented_codes(
    payload: bytes, feedback_service: RunningService
) -> None:
    for method in ("RecordFindings", "RecordFeedback", "BatchRecordFeedback", "ListFeedback"):
        call = feedback_service.channel.unary_unary(
            f"/{SERVICE.full_name}/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            await call(payload, metadata=auth("operator"))
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
        assert code in DOCUMENTED, (method, payload, code)
