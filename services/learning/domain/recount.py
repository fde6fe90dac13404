"""The learned counts recounted the slow, obvious way, to check the fold and its SQL recompute.

Pure Python over the raw log: one finding at a time, its outcome by
:func:`shared.outcome.outcome_of` (the rule everything else uses), added to its 3 scopes x 4
dimensions. No SQL is shared with the code it checks, so a bug in the fold's statements cannot
hide itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.learning.domain.scopes import ALL_KEY, SEVERITY_NAMES, Dimension, ScopeType
from shared.outcome import Outcome, outcomes_by_finding

MetricKey = tuple[int, int, int, str]
"""(scope type, scope id, dimension, key), as in ``learning_metrics``."""
MetricCounts = tuple[int, int, int, int]
"""(shown, positive, negative, dismissed)."""


@dataclass(frozen=True, slots=True)
class RawFinding:
    finding_id: int
    team_id: int
    repository_id: int
    category: str
    severity: int
    rule_id: str


RawEvent = tuple[int, int, datetime, int]
"""(finding id, kind, occurred_at, feedback id), as stored in ``suggestion_feedback``."""


def recount(
    findings: Iterable[RawFinding], events: Iterable[RawEvent]
) -> dict[MetricKey, MetricCounts]:
    """Every non-zero count of ``learning_metrics``, from the log alone."""
    outcomes = outcomes_by_finding(events)
    totals: dict[MetricKey, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for finding in findings:
        outcome = outcomes.get(finding.finding_id, Outcome.PENDING)
        scopes = (
            (int(ScopeType.GLOBAL), 0),
            (int(ScopeType.TEAM), finding.team_id),
            (int(ScopeType.REPOSITORY), finding.repository_id),
        )
        dimensions = (
            (int(Dimension.ALL), ALL_KEY),
            (int(Dimension.CATEGORY), finding.category),
            (int(Dimension.SEVERITY), SEVERITY_NAMES[finding.severity - 1]),
            (int(Dimension.RULE), finding.rule_id),
        )
        for scope_type, scope_id in scopes:
            for dimension, key in dimensions:
                counts = totals[(scope_type, scope_id, dimension, key)]
                counts[0] += 1
                if outcome is Outcome.POSITIVE:
                    counts[1] += 1
                elif outcome is Outcome.NEGATIVE:
                    counts[2] += 1
                elif outcome is Outcome.DISMISSED:
                    counts[3] += 1
    return {key: (c[0], c[1], c[2], c[3]) for key, c in totals.items()}
