"""Server interceptors: telemetry (outermost), error mapping, then authentication.

grpc.aio interceptors can only act inside the RPC through its behaviour function, so each
interceptor wraps the behaviour of the handler it is given (``wrap_handler``). The order in
``shared.rpc.server`` matters: errors raised by auth are mapped to codes, and telemetry sees the
final code of every call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import metrics, trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import exc as sa_exc

from shared import errors
from shared.auth import Principal, Role, TokenRegistry, role_allows
from shared.db.failures import is_unavailable, sqlstate
from shared.heartbeat.stats import RpcStats
from shared.telemetry import current_trace_id

log = logging.getLogger("reviewlearn.rpc")

# Who is calling the current RPC; set by the auth interceptor, read by handlers for audit trails.
current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)

OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

Behaviour = Callable[..., Any]

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.aio.ServerInterceptor
BehaviourWrapper = Callable[[Behaviour, bool], Behaviour]


def wrap_handler(
    handler: Handler,
    wrap: Callable[[Behaviour, bool], Behaviour],
    deserializer: Callable[[Any], Any] | None = None,
) -> Handler:
    """Rebuilds a method handler with its behaviour wrapped; the flag tells a response stream."""
    options = {
        "request_deserializer": deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), **options)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), **options)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), **options)
    assert handler.stream_stream is not None, "a handler has exactly one behaviour"
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), **options)


class UndecodableRequest:
    """Stands in for a request message that failed to parse (e.g. a string that is not UTF-8),
    so that the client gets INVALID_ARGUMENT instead of grpc's own INTERNAL."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def error(self) -> errors.InvalidArgument:
        return errors.InvalidArgument(
            [errors.FieldViolation("request", f"is not a valid message: {self.problem}")],
            reason="UNDECODABLE_REQUEST",
        )


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf raises DecodeError, or RuntimeError for bad UTF-8
            return UndecodableRequest(str(exc) or exc.__class__.__name__)

    return deserialize


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, UndecodableRequest):
            raise request.error()
        yield request


def _decoded(request: Any) -> Any:
    """The request itself, or a stream that raises on an undecodable message."""
    if isinstance(request, UndecodableRequest):
        raise request.error()
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request


def _yields_responses(behaviour: Behaviour, streaming: bool) -> bool:
    """Whether a response-streaming behaviour is an async generator.

    Streaming behaviours may instead be coroutines that call ``context.write`` (the health
    servicer's Watch does); those are wrapped like unary ones, since grpc.aio forbids mixing.
    """
    return streaming and inspect.isasyncgenfunction(behaviour)


def _around(
    before: Callable[[Any], Awaitable[None]] | None,
    on_error: Callable[[BaseException, Any], Awaitable[None]] | None,
    after: Callable[[Any], None] | None,
) -> Callable[[Behaviour, bool], Behaviour]:
    """Builds a wrapper that runs hooks around unary and streaming behaviours alike."""

    def wrap(behaviour: Behaviour, streaming: bool) -> Behaviour:
        if _yields_responses(behaviour, streaming):

            async def stream_wrapper(request: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    if before:
                        await before(context)
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    if on_error is None:
                        raise
                    await on_error(exc, context)
                finally:
                    if after:
                        after(context)

            return stream_wrapper

        async def unary_wrapper(request: Any, context: Any) -> Any:
            try:
                if before:
                    await before(context)
                return await behaviour(request, context)
            except BaseException as exc:
                if on_error is None:
                    raise
                await on_error(exc, context)
                raise  # on_error aborts; this line is never reached
            finally:
                if after:
                    after(context)

        return unary_wrapper

    return wrap


class _CachingInterceptor(_ServerInterceptor):
    """Wraps each method's handler once and reuses it: per-call work stays inside the behaviour.

    Rebuilding handlers and closures on every call costs more than a small RPC itself. Every
    interceptor of the chain caches, so the handler it receives for a method is the same object
    each time and the identity check below holds.
    """

    def __init__(self) -> None:
        # Keyed by handler identity too: the auth interceptor hands out a rejecting handler
        # beside the real one, and alternating between them must not rebuild either.
        self._wrapped: dict[tuple[str, int], tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        key = (method, id(handler))
        cached = self._wrapped.get(key)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[key] = (handler, wrapped)
        return wrapped

    def wrap(self, method: str, handler: Handler) -> Handler:
        raise NotImplementedError


def _metadata(context: Any) -> dict[str, str]:
    return {
        key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)
    }


class AuthInterceptor(_ServerInterceptor):
    """Bearer token → role, checked before the request is read; the role each method needs
    comes from its proto option.

    The check runs in ``intercept_service``, where the call's metadata is known but its message
    has not been decoded: a caller without a valid token gets UNAUTHENTICATED whatever it sent,
    and no unauthenticated message is ever parsed. A rejected call is given a handler that drops
    the request bytes unread and raises the error (the error interceptor outside maps it).
    """

    def __init__(self, *, tokens: TokenRegistry, method_roles: Mapping[str, Role]) -> None:
        self._tokens = tokens
        self._method_roles = dict(method_roles)
        self._rejections: dict[tuple[str, str], tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.lstrip("/").startswith(OPEN_SERVICES):
            return handler
        rejection = self._check(method, handler_call_details.invocation_metadata)
        if rejection is None:
            return handler
        return self._rejecting(method, handler, *rejection)

    def _check(
        self, method: str, metadata: Any
    ) -> tuple[str, Callable[[], errors.ReviewlearnError]] | None:
        """None when the caller may go on (and is then ``current_principal``), else the
        rejection: a cache key and the error to raise."""
        headers = [value for key, value in metadata or () if key == "authorization"]
        # Two headers are refused rather than one picked: proxies and clients disagree on which
        # one wins, and a token smuggled in beside another must not be the one that counts.
        principal = (
            self._tokens.authenticate(_bearer_token(headers[0])) if len(headers) == 1 else None
        )
        if principal is None:
            return "unauthenticated", lambda: errors.Unauthenticated(
                "missing, repeated or unknown bearer token: "
                "send one 'authorization: Bearer <token>'",
                reason="TOKEN_INVALID",
            )
        required = self._method_roles.get(method)
        if required is None:
            return "undeclared", lambda: errors.PermissionDenied(
                f"{method} declares no required role", reason="ROLE_UNDECLARED"
            )
        if not role_allows(principal.role, required):
            role = principal.role
            return f"forbidden:{role.value}", lambda: errors.PermissionDenied(
                f"role {role.value!r} may not call {method} (needs {required.value!r})",
                reason="ROLE_FORBIDDEN",
                metadata={"required_role": required.value, "role": role.value},
            )
        # Interceptors and the handler run in the call's one task, so the handler sees this.
        current_principal.set(principal)
        return None

    def _rejecting(
        self, method: str, handler: Handler, key: str, error: Callable[[], errors.ReviewlearnError]
    ) -> Handler:
        cached = self._rejections.get((method, key))
        if cached is not None and cached[0] is handler:
            return cached[1]

        def wrap(behaviour: Behaviour, streaming: bool) -> Behaviour:
            async def reject(request: Any, context: Any) -> Any:
                raise error()

            return reject

        rejecting = wrap_handler(handler, wrap, deserializer=_unread)
        self._rejections[(method, key)] = (handler, rejecting)
        return rejecting


def _unread(data: bytes) -> None:
    """The deserializer of a rejected call: its message is never parsed."""


def _bearer_token(header: str | bytes) -> str:
    value = header.decode(errors="replace") if isinstance(header, bytes) else header
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class ErrorInterceptor(_CachingInterceptor):
    """Maps typed errors to status codes with google.rpc.Status details; unknown → INTERNAL."""

    def __init__(self, *, domain: str) -> None:
        super().__init__()
        self._domain = domain

    def wrap(self, method: str, handler: Handler) -> Handler:
        async def on_error(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if isinstance(exc, errors.ReviewlearnError):
                await _abort_with(context, exc, self._domain)
            if not isinstance(exc, Exception) or _is_grpc_abort(exc):
                raise exc  # cancelled, or already aborted with a status
            if isinstance(exc, sa_exc.DataError) or sqlstate(exc).startswith("22"):
                # SQLSTATE class 22: a value the database cannot take. Validation should have
                # caught it; the caller still gets a clear INVALID_ARGUMENT, not INTERNAL.
                log.warning("data error in %s: %s", method, getattr(exc, "orig", exc))
                await _abort_with(
                    context,
                    errors.InvalidArgument(
                        [errors.FieldViolation("request", "holds a value that cannot be stored")],
                        reason="UNSTORABLE_VALUE",
                    ),
                    self._domain,
                )
            if sqlstate(exc) == "57014":  # query_canceled: the statement timeout fired
                log.warning("statement timeout in %s: %s", method, getattr(exc, "orig", exc))
                await _abort_with(
                    context,
                    errors.Unavailable(
                        "the database took too long; retry later or narrow the request",
                        reason="DATABASE_TIMEOUT",
                    ),
                    self._domain,
                )
            if is_unavailable(exc):
                log.warning("database unavailable in %s: %s", method, exc)
                await _abort_with(
                    context,
                    errors.Unavailable(
                        "the database is unavailable; retry with backoff",
                        reason="DATABASE_UNAVAILABLE",
                    ),
                    self._domain,
                )
            log.exception("unhandled error in %s", method)
            await _abort_with(
                context,
                errors.ReviewlearnError(
                    f"internal error (trace id {current_trace_id() or 'n/a'})",
                    reason="INTERNAL",
                ),
                self._domain,
                code=grpc.StatusCode.INTERNAL,
            )

        def wrap(behaviour: Behaviour, streaming: bool) -> Behaviour:
            guarded = _around(None, on_error, None)
            if _yields_responses(behaviour, streaming):

                async def stream_decoded(request: Any, context: Any) -> AsyncIterator[Any]:
                    async for response in behaviour(_decoded(request), context):
                        yield response

                return guarded(stream_decoded, streaming)

            async def decoded(request: Any, context: Any) -> Any:
                return await behaviour(_decoded(request), context)

            return guarded(decoded, streaming)

        return wrap_handler(handler, wrap, tolerant(handler.request_deserializer))


def _is_grpc_abort(exc: BaseException) -> bool:
    return type(exc).__name__ == "AbortError"


_CODES: dict[type[errors.ReviewlearnError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}


# Errors travel in HTTP/2 trailers, which peers cap at a few KiB: an error that echoes a huge
# input must not turn into RESOURCE_EXHAUSTED. Long texts are clipped, long lists cut.
MAX_MESSAGE_CHARS = 1000
MAX_VIOLATIONS = 20


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_code_of(error: errors.ReviewlearnError) -> grpc.StatusCode:
    for error_type, code in _CODES.items():
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def to_rpc_status(
    error: errors.ReviewlearnError, domain: str, code: grpc.StatusCode | None = None
) -> status_pb2.Status:
    """The google.rpc.Status for an error: ErrorInfo always, BadRequest for field violations."""
    grpc_code = code or status_code_of(error)
    status = status_pb2.Status(code=grpc_code.value[0], message=_clip(error.message))
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=domain,
        metadata={key: _clip(value, 200) for key, value in error.metadata.items()},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status.details.append(detail)
    if isinstance(error, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_clip(v.field, 200), description=_clip(v.description, 300)
                )
                for v in error.violations[:MAX_VIOLATIONS]
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    assert status.code != code_pb2.OK
    return status


async def _abort_with(
    context: grpc.aio.ServicerContext[Any, Any],
    error: errors.ReviewlearnError,
    domain: str,
    code: grpc.StatusCode | None = None,
) -> None:
    # grpcio-status puts the google.rpc.Status into the grpc-status-details-bin trailer
    # (grpc-stubs does not declare grpc.aio's abort_with_status).
    status = rpc_status.to_status(to_rpc_status(error, domain, code))
    await context.abort_with_status(status)  # type: ignore[attr-defined]


class TelemetryInterceptor(_CachingInterceptor):
    """A server span per call (W3C context from metadata) and RPC count/errors/duration."""

    def __init__(self, *, service: str, stats: RpcStats | None = None) -> None:
        super().__init__()
        self._stats = stats
        self._tracer = trace.get_tracer("reviewlearn.rpc")
        meter = metrics.get_meter("reviewlearn.rpc")
        self._requests = meter.create_counter("api_request_rate", description="RPCs handled")
        self._errors = meter.create_counter("api_error_rate", description="RPCs that failed")
        self._duration = meter.create_histogram(
            "api_response_time", unit="s", description="RPC duration by method and status"
        )
        self._service = service

    @contextmanager
    def _observed(self, method: str, context: Any, streaming: bool) -> Iterator[None]:
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            method.lstrip("/"),
            context=extract(_metadata(context)),
            kind=SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            error: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = _final_code(context, error)
                attributes = {
                    "service": self._service,
                    "rpc_method": method,
                    "grpc_code": code.name,
                }
                elapsed = time.perf_counter() - started
                self._duration.record(elapsed, attributes)
                self._requests.add(1, attributes)
                if self._stats is not None:
                    self._stats.observe(method, code.name, elapsed, streaming=streaming)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    self._errors.add(1, attributes)
                    span.set_status(Status(StatusCode.ERROR, code.name))

    def wrap(self, method: str, handler: Handler) -> Handler:
        observed = self._observed

        def wrap(behaviour: Behaviour, streaming: bool) -> Behaviour:
            if _yields_responses(behaviour, streaming):

                async def stream_wrapper(request: Any, context: Any) -> AsyncIterator[Any]:
                    with observed(method, context, True):
                        async for response in behaviour(request, context):
                            yield response

                return stream_wrapper

            async def unary_wrapper(request: Any, context: Any) -> Any:
                with observed(method, context, streaming):
                    return await behaviour(request, context)

            return unary_wrapper

        return wrap_handler(handler, wrap)


def _final_code(context: Any, exc: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, errors.ReviewlearnError):
        return status_code_of(exc)
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
