"""``reviewlearn validate contracts``: every RPC of every service, found and called through
gRPC server reflection only — the way grpcurl sees the system, with no generated code.

For each method the services list, three calls: an empty request without a token, an empty
request with the operator's token, and a *malformed* one (every field set to a value out of its
domain: negative numbers, unknown enum values, strings that name nothing, a page token that was
never issued). Each answer must be one of the documented codes; INTERNAL and UNKNOWN never are,
and UNIMPLEMENTED is a failure except for the methods in :data:`PENDING_IMPLEMENTATION`.

Malformed requests never set a boolean (``engaged``, ``force``…): against a production system a
check must not flip a switch, and a false boolean is the harmless default. The writes whose
empty or malformed request could still be valid (an empty RollbackModel rolls the model back,
a reason is all AdvanceRollout needs) get the fields in :data:`GUARDED` on top, which make them
harmless (a dry run) or invalid whatever else they carry; the check changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool, message, message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from rich.console import Console
from rich.table import Table

from services.cli.client import Metadata

OK = 0
FAILED = 1
COULD_NOT_CHECK = 75

# Every declared RPC is implemented since wave 2 landed; a method listed here (while its
# issue is being built) may answer UNIMPLEMENTED without failing the check.
PENDING_IMPLEMENTATION: frozenset[str] = frozenset()
"""Methods allowed to answer UNIMPLEMENTED (``service/method``)."""

_NONE = object()
GUARDED: dict[str, dict[str, object]] = {
    "reviewlearn.learning.v1.LearningService/TuneConfidenceThresholds": {"dry_run": True},
    "reviewlearn.learning.v1.LearningService/RollbackModel": {"version": "contracts-check:none"},
    "reviewlearn.feedback.v1.FeedbackService/DeleteFinding": {"finding_id": 0, "reason": ""},
    "reviewlearn.control.v1.ControlService/SetKillSwitch": {"reason": ""},
    "reviewlearn.control.v1.ControlService/SetFeatureGate": {"reason": ""},
    "reviewlearn.control.v1.ControlService/ClearFeatureGate": {"reason": ""},
    "reviewlearn.control.v1.ControlService/AdvanceRollout": {"reason": ""},
    "reviewlearn.control.v1.ControlService/RollbackRollout": {"reason": ""},
    "reviewlearn.control.v1.ControlService/UpsertAlertRule": {"rule": _NONE},
    "reviewlearn.control.v1.ControlService/CreateSilence": {"rule_names": _NONE},
    "reviewlearn.control.v1.ControlService/ExpireSilence": {"silence_id": 0},
    "reviewlearn.control.v1.ControlService/SendTestNotification": {"channel": _NONE},
}
"""Field values set on the requests of these writes (``_NONE``: the field cleared); a field a
proto does not have is ignored, so a renamed field weakens a guard but never breaks the check."""

EXPECTED_SERVICES = frozenset(
    {
        "reviewlearn.feedback.v1.FeedbackService",
        "reviewlearn.learning.v1.LearningService",
        "reviewlearn.insights.v1.InsightsService",
        "reviewlearn.control.v1.ControlService",
    }
)
"""Every one must be served at one of the targets."""

SKIPPED_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
"""The reflection service is the instrument of this check, not a subject of it."""

OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
"""Answer without a token (probes must work without one)."""

DOCUMENTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAVAILABLE,  # e.g. insights while learning is switched off
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
"""What docs/PHASE_5_API.md lists as answers; INTERNAL and UNKNOWN are bugs by definition."""

MALFORMED_STRING = "no-such-thing::\u2603"
CALL_TIMEOUT_SECONDS = 10.0
STREAM_TIMEOUT_SECONDS = 1.0
"""A server stream that is still open after this answered the call (a watch waits for news)."""


@dataclass(frozen=True)
class Call:
    method: str
    """``package.Service/Method``."""
    case: str
    code: grpc.StatusCode
    details: str
    passed: bool


def _fill(msg: message.Message, depth: int = 0) -> None:
    """Every field of ``msg`` set out of its domain (see the module docstring)."""
    for field in msg.DESCRIPTOR.fields:
        if field.containing_oneof is not None and msg.WhichOneof(field.containing_oneof.name):
            continue
        value: object
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            kind = field.message_type
            if kind is None or depth >= 3 or kind.GetOptions().map_entry:
                continue
            target = getattr(msg, field.name)
            child = target.add() if _is_repeated(field) else target
            if kind.full_name == "google.protobuf.Timestamp":
                child.seconds = -62135596801  # before year 1: out of Timestamp's range
                continue
            _fill(child, depth + 1)
            continue
        if field.type == FieldDescriptor.TYPE_BOOL:
            continue
        if field.type == FieldDescriptor.TYPE_ENUM:
            value = 9999
        elif field.type == FieldDescriptor.TYPE_STRING:
            value = MALFORMED_STRING
        elif field.type == FieldDescriptor.TYPE_BYTES:
            value = b"\xff\x00"
        elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            value = -1e300
        elif field.type in (
            FieldDescriptor.TYPE_UINT32,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_FIXED32,
            FieldDescriptor.TYPE_FIXED64,
        ):
            value = 2**32 - 1
        else:
            value = -1
        if _is_repeated(field):
            getattr(msg, field.name).append(value)
        else:
            setattr(msg, field.name, value)


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


class ReflectedService:
    """Message classes and callables of one server, built from what its reflection says."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._database = ProtoReflectionDescriptorDatabase(channel)
        self._pool = descriptor_pool.DescriptorPool(self._database)

    def services(self) -> list[descriptor.ServiceDescriptor]:
        names = [n for n in self._database.get_services() if n not in SKIPPED_SERVICES]
        return [self._pool.FindServiceByName(name) for name in sorted(names)]

    def call(
        self,
        method: descriptor.MethodDescriptor,
        request: message.Message | None,
        metadata: Metadata,
    ) -> tuple[grpc.StatusCode, str]:
        path = f"/{method.containing_service.full_name}/{method.name}"
        response_type = message_factory.GetMessageClass(method.output_type)
        serialize = _serializer
        deserialize = response_type.FromString
        try:
            if method.client_streaming:
                requests: Iterator[message.Message] = iter([] if request is None else [request])
                if method.server_streaming:
                    stream = self._channel.stream_stream(path, serialize, deserialize)(
                        requests, metadata=metadata, timeout=STREAM_TIMEOUT_SECONDS
                    )
                    next(iter(stream), None)
                else:
                    self._channel.stream_unary(path, serialize, deserialize)(
                        requests, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS
                    )
            elif method.server_streaming:
                stream = self._channel.unary_stream(path, serialize, deserialize)(
                    request, metadata=metadata, timeout=STREAM_TIMEOUT_SECONDS
                )
                next(iter(stream), None)
            else:
                self._channel.unary_unary(path, serialize, deserialize)(
                    request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS
                )
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""

    def request(self, method: descriptor.MethodDescriptor, *, malformed: bool) -> message.Message:
        request = message_factory.GetMessageClass(method.input_type)()
        if malformed:
            _fill(request)
        _guard(request, GUARDED.get(f"{method.containing_service.full_name}/{method.name}", {}))
        return request


def _guard(request: message.Message, fields: dict[str, object]) -> None:
    for name, value in fields.items():
        if name not in request.DESCRIPTOR.fields_by_name:
            continue
        if value is _NONE:
            request.ClearField(name)
        else:
            setattr(request, name, value)


def _serializer(request: message.Message) -> bytes:
    return request.SerializeToString()


def _judge(
    full: str, case: str, code: grpc.StatusCode, *, streaming: bool, open_service: bool
) -> bool:
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return full in PENDING_IMPLEMENTATION
    if case == "no token":
        return code is (
            grpc.StatusCode.OK if open_service else grpc.StatusCode.UNAUTHENTICATED
        ) or (streaming and open_service and code is grpc.StatusCode.DEADLINE_EXCEEDED)
    if streaming and code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    return code in DOCUMENTED


def check_server(address: str, operator: Metadata) -> list[Call]:
    """Every method of every service at ``address``, three calls each."""
    calls = []
    with grpc.insecure_channel(address) as channel:
        reflected = ReflectedService(channel)
        for service in reflected.services():
            open_service = service.full_name in OPEN_SERVICES
            for method in service.methods:
                full = f"{service.full_name}/{method.name}"
                streaming = method.server_streaming
                cases: list[tuple[str, message.Message | None, Metadata]] = [
                    ("no token", reflected.request(method, malformed=False), ()),
                    ("empty", reflected.request(method, malformed=False), operator),
                    ("malformed", reflected.request(method, malformed=True), operator),
                ]
                if method.client_streaming:
                    cases[1] = ("empty", None, operator)  # a stream of no messages
                for case, request, metadata in cases:
                    code, details = reflected.call(method, request, metadata)
                    passed = _judge(
                        full, case, code, streaming=streaming, open_service=open_service
                    )
                    calls.append(Call(full, case, code, details, passed))
    return calls


def check_contracts(addresses: Sequence[str], operator: Metadata, console: Console) -> int:
    """0: every method answered as documented; 1: some did not; 75: a server was unreachable."""
    calls: list[Call] = []
    for address in addresses:
        try:
            with console.status(f"calling every method at {address} through reflection ..."):
                calls += check_server(address, operator)
        except grpc.RpcError as error:
            console.print(
                f"[yellow]cannot reflect {address}: {error.code().name}[/yellow]\n"
                "is the system running (`reviewlearn up`) and are --target addresses right?"
            )
            return COULD_NOT_CHECK
    failed = [c for c in calls if not c.passed]
    methods = {c.method for c in calls}
    absent = sorted(EXPECTED_SERVICES - {m.partition("/")[0] for m in methods})
    pending = {c.method for c in calls if c.code is grpc.StatusCode.UNIMPLEMENTED and c.passed}
    table = Table(title=f"contracts: {len(methods)} methods, {len(calls)} calls")
    for column in ("method", "no token", "empty", "malformed"):
        table.add_column(column)
    by_method: dict[str, dict[str, Call]] = {}
    for c in calls:
        by_method.setdefault(c.method, {})[c.case] = c
    for name, cases in by_method.items():
        table.add_row(
            name,
            *(
                (f"{c.code.name}" if c.passed else f"[red]{c.code.name}[/red]")
                for c in (cases["no token"], cases["empty"], cases["malformed"])
            ),
        )
    console.print(table)
    if pending:
        console.print(
            f"{len(pending)} methods answer UNIMPLEMENTED and are allowed to for now "
            "(services/cli/contracts.py PENDING_IMPLEMENTATION)"
        )
    if absent:
        console.print(
            f"[red]not served at any target: {', '.join(absent)}[/red] — pass its address with "
            "--target host:port (is the service running?)"
        )
    if not failed and not absent:
        console.print("[green]every method answers with a documented code[/green]")
        return OK
    if not failed:
        return FAILED
    console.print(f"[red]{len(failed)} calls answered outside the contract:[/red]")
    for c in failed[:40]:
        console.print(f"  {c.method} ({c.case}): {c.code.name} {c.details[:160]}")
    console.print(
        "what to do next: INTERNAL/UNKNOWN is an unmapped exception — find its trace id in the "
        "service's log and map the error in shared/errors.py; UNIMPLEMENTED means the method is "
        "in the proto but not served; a missing UNAUTHENTICATED means the auth interceptor does "
        "not guard the method"
    )
    return FAILED
