"""Control-plane mutations as validated values, and what an idempotent retry must match.

Every mutation carries a reason (required) and optionally a ``request_id``: a retry by the same
caller with the same id and content gets the first answer without applying anything again; the
same id with other content is an error (AIP-155), never a silent replay (``shared.idempotency``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from shared.errors import Violations
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
    PAUSE_ROLLOUT = "rollout.pause"
    RESUME_ROLLOUT = "rollout.resume"
    UPSERT_ALERT_RULE = "alert_rule.upsert"
    CREATE_SILENCE = "silence.create"
    EXPIRE_SILENCE = "silence.expire"

    ALL = (
        SET_GATE,
        CLEAR_GATE,
        SET_KILL_SWITCH,
        ADVANCE_ROLLOUT,
        ROLLBACK_ROLLOUT,
        PAUSE_ROLLOUT,
        RESUME_ROLLOUT,
        UPSERT_ALERT_RULE,
        CREATE_SILENCE,
        EXPIRE_SILENCE,
    )


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
