"""Control-plane mutations as validated values, and what an idempotent retry must match.

Every mutation carries a reason (required) and optionally a ``request_id``. A retry by the same
caller with the same id and the same content is answered from the audit log without applying
anything again; the same id with other content is an error (AIP-155), never a silent replay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.errors import AlreadyExists, Violations
from shared.finding_input import check_text
from shared.gates.model import Feature

MAX_REASON_CHARS = 1000
MAX_URL_CHARS = 2048
MAX_REQUEST_ID_CHARS = 200
MAX_WAIT = timedelta(seconds=30)


class Action:
    """Audit action names."""

    SET_GATE = "gate.set"
    CLEAR_GATE = "gate.clear"
    SET_KILL_SWITCH = "kill_switch.set"
    ADVANCE_ROLLOUT = "rollout.advance"
    ROLLBACK_ROLLOUT = "rollout.rollback"

    ALL = (SET_GATE, CLEAR_GATE, SET_KILL_SWITCH, ADVANCE_ROLLOUT, ROLLBACK_ROLLOUT)


@dataclass(frozen=True)
class Mutation:
    """What every mutation has: who may retry it, and why it was made."""

    request_id: str | None
    reason: str


@dataclass(frozen=True)
class GateChange(Mutation):
    feature: Feature
    repository_url: str
    """Empty for the global gate."""
    enabled: bool


@dataclass(frozen=True)
class GateClear(Mutation):
    feature: Feature
    repository_url: str


@dataclass(frozen=True)
class KillSwitchChange(Mutation):
    engaged: bool


@dataclass(frozen=True)
class RolloutAdvance(Mutation):
    force: bool
    issues_found: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutRollback(Mutation):
    to_phase: int
    sticky_exposure: bool
    issues_found: tuple[str, ...] = ()


MAX_ISSUES = 50


def check_issues(violations: Violations, issues: Sequence[str], field: str) -> None:
    if len(issues) > MAX_ISSUES:
        violations.add(field, f"{len(issues)} issues; at most {MAX_ISSUES} per request")
    for i, issue in enumerate(issues[:MAX_ISSUES]):
        check_text(violations, f"{field}[{i}]", issue, max_chars=MAX_REASON_CHARS, required=True)


def check_mutation(
    violations: Violations, *, request_id: str, reason: str, reason_required: bool = True
) -> None:
    check_text(violations, "request_id", request_id, max_chars=MAX_REQUEST_ID_CHARS)
    check_text(violations, "reason", reason, max_chars=MAX_REASON_CHARS, required=reason_required)


def check_feature(violations: Violations, feature: Feature | None, field: str = "feature") -> None:
    if feature is None:
        known = ", ".join(f"FEATURE_{f.name}" for f in Feature)
        violations.add(field, f"must be one of {known}")


def check_repository_url(violations: Violations, url: str, field: str = "repository_url") -> None:
    check_text(violations, field, url, max_chars=MAX_URL_CHARS)
    if url != url.strip():
        violations.add(field, "must not start or end with whitespace")


def check_wait(violations: Violations, wait: timedelta | None, field: str) -> None:
    if wait is not None and not timedelta(0) <= wait <= MAX_WAIT:
        violations.add(field, f"must be between 0 and {int(MAX_WAIT.total_seconds())} seconds")


def request_digest(action: str, content: Mapping[str, object]) -> str:
    """A stable digest of what a request asks for (without its id or how long it waits)."""
    canonical = json.dumps({"action": action, **content}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer to a request id, as the audit log keeps it."""

    action: str
    digest: str
    response: Mapping[str, Any]


def replay(
    stored: StoredAnswer, *, action: str, digest: str, request_id: str
) -> Mapping[str, object]:
    """The stored answer if the retry asks for the same thing; else REQUEST_ID_REUSED."""
    if stored.action != action or stored.digest != digest:
        raise AlreadyExists(
            f"request_id {request_id!r} was already used for a different request; "
            "use a new request_id for a new change",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request_id, "first_action": stored.action},
        )
    return stored.response
