"""A finding as the review bot reports it, and the rules it must meet.

Shared because two services take findings: feedback records them, learning ranks inline ones.
Pure: no gRPC, no SQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.errors import Violations


@dataclass(frozen=True)
class Limits:
    """Size limits of stored fields; configurable, see FeedbackSettings."""

    max_findings_per_request: int = 10_000
    max_events_per_batch: int = 10_000
    max_id_chars: int = 200
    max_url_chars: int = 2048
    max_path_chars: int = 1024
    max_title_chars: int = 500
    max_text_chars: int = 20_000
    max_category_chars: int = 64
    future_tolerance: timedelta = timedelta(minutes=5)
    oldest_event: datetime = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FindingDraft:
    client_finding_id: str | None
    rule_id: str
    category: str
    severity: int
    confidence: float
    file_path: str
    line_start: int
    line_end: int
    title: str
    message: str
    suggested_fix: str
    code_context: str


def check_text(
    violations: Violations,
    field: str,
    value: str,
    *,
    max_chars: int,
    required: bool = False,
) -> None:
    """Required, length-limited and storable (PostgreSQL text cannot hold NUL)."""
    if required and not value.strip():
        violations.add(field, "is required")
    elif len(value) > max_chars:
        violations.add(field, f"is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        violations.add(field, "contains a NUL byte")


def validate_finding(
    finding: FindingDraft, prefix: str, limits: Limits, violations: Violations
) -> None:
    if finding.client_finding_id is not None:
        check_text(
            violations,
            f"{prefix}.client_finding_id",
            finding.client_finding_id,
            max_chars=limits.max_id_chars,
        )
    check_text(
        violations,
        f"{prefix}.rule_id",
        finding.rule_id,
        max_chars=limits.max_id_chars,
        required=True,
    )
    check_text(
        violations,
        f"{prefix}.category",
        finding.category,
        max_chars=limits.max_category_chars,
        required=True,
    )
    if finding.category and finding.category != finding.category.strip().lower():
        violations.add(f"{prefix}.category", "must be lower-case without surrounding spaces")
    if not 1 <= finding.severity <= 5:
        violations.add(f"{prefix}.severity", "must be one of SEVERITY_INFO … SEVERITY_CRITICAL")
    if not math.isfinite(finding.confidence) or not 0.0 <= finding.confidence <= 1.0:
        violations.add(f"{prefix}.confidence", f"must be within [0, 1], got {finding.confidence}")
    check_text(
        violations,
        f"{prefix}.file_path",
        finding.file_path,
        max_chars=limits.max_path_chars,
        required=True,
    )
    if finding.line_start < 0:
        violations.add(f"{prefix}.line_start", "must not be negative")
    if finding.line_end < finding.line_start:
        violations.add(f"{prefix}.line_end", "must not be before line_start")
    check_text(violations, f"{prefix}.title", finding.title, max_chars=limits.max_title_chars)
    check_text(
        violations,
        f"{prefix}.message",
        finding.message,
        max_chars=limits.max_text_chars,
        required=True,
    )
    check_text(
        violations,
        f"{prefix}.suggested_fix",
        finding.suggested_fix,
        max_chars=limits.max_text_chars,
    )
    check_text(
        violations, f"{prefix}.code_context", finding.code_context, max_chars=limits.max_text_chars
    )
