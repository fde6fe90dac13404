"""Typed errors that domain and repository code raise; one interceptor maps them to gRPC codes.

The tree::

    ReviewlearnError
    ├── InvalidArgument      -> INVALID_ARGUMENT  (google.rpc.BadRequest field violations)
    ├── NotFound             -> NOT_FOUND
    ├── AlreadyExists        -> ALREADY_EXISTS
    ├── FailedPrecondition   -> FAILED_PRECONDITION
    ├── Unauthenticated      -> UNAUTHENTICATED
    ├── PermissionDenied     -> PERMISSION_DENIED
    ├── Unavailable          -> UNAVAILABLE       (a gate is off, a dependency is down)
    ├── ResourceExhausted    -> RESOURCE_EXHAUSTED
    └── Unimplemented        -> UNIMPLEMENTED     (a declared RPC this server does not implement)

Every error carries a machine-readable ``reason`` (UPPER_SNAKE_CASE, sent as google.rpc.ErrorInfo)
and optional ``metadata``. Nothing here imports grpc: the mapping lives in shared.rpc.interceptors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field, named by its path in the request (``events[3].occurred_at``)."""

    field: str
    description: str


class ReviewlearnError(Exception):
    """Base of every error the services raise on purpose."""

    default_reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(ReviewlearnError):
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Iterable[FieldViolation],
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:5])
        super().__init__(message or f"invalid request: {summary}", reason=reason)


class NotFound(ReviewlearnError):
    default_reason = "NOT_FOUND"


class AlreadyExists(ReviewlearnError):
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ReviewlearnError):
    default_reason = "FAILED_PRECONDITION"


class Unauthenticated(ReviewlearnError):
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ReviewlearnError):
    default_reason = "PERMISSION_DENIED"


class Unavailable(ReviewlearnError):
    default_reason = "UNAVAILABLE"


class ResourceExhausted(ReviewlearnError):
    default_reason = "RESOURCE_EXHAUSTED"


class Unimplemented(ReviewlearnError):
    default_reason = "UNIMPLEMENTED"


@dataclass
class Violations:
    """Collects field violations while validating a request, then raises them all at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, message: str | None = None) -> None:
        if self.items:
            raise InvalidArgument(self.items, message)
