"""The rollups recounted the slow, obvious way, to check the fold and its SQL rebuild.

Pure Python over the raw log: each finding's outcome by :func:`shared.outcome.outcome_of` (the
rule every service uses), counted under its UTC day; each review under its own UTC day. It
shares no SQL with the code it checks.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from shared.outcome import Outcome, outcomes_by_finding

RollupKey = tuple[int, date, str, int, str, int, int]
"""(repository, day, category, severity, rule, outcome, team), as in ``insight_rollups``."""
GlobalKey = tuple[date, str, int]
"""(day, category, outcome), as in ``insight_global_rollups``."""
ReviewKey = tuple[int, date, int]
"""(repository, review day, team), as in ``insight_review_rollups``."""


@dataclass(frozen=True, slots=True)
class RawFinding:
    finding_id: int
    review_id: int
    review_created_at: datetime
    team_id: int
    repository_id: int
    rule_id: str
    category: str
    severity: int
    created_at: datetime


RawEvent = tuple[int, int, datetime, int]
"""(finding id, kind, occurred_at, feedback id), as stored in ``suggestion_feedback``."""


@dataclass(frozen=True)
class Recount:
    rollups: dict[RollupKey, int]
    global_rollups: dict[GlobalKey, int]
    review_rollups: dict[ReviewKey, int]


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def recount(findings: Iterable[RawFinding], events: Iterable[RawEvent]) -> Recount:
    outcomes = outcomes_by_finding(events)
    rollups: Counter[RollupKey] = Counter()
    global_rollups: Counter[GlobalKey] = Counter()
    reviews: dict[ReviewKey, set[int]] = defaultdict(set)
    for f in findings:
        outcome = int(outcomes.get(f.finding_id, Outcome.PENDING))
        day = _day(f.created_at)
        rollups[(f.repository_id, day, f.category, f.severity, f.rule_id, outcome, f.team_id)] += 1
        global_rollups[(day, f.category, outcome)] += 1
        reviews[(f.repository_id, _day(f.review_created_at), f.team_id)].add(f.review_id)
    return Recount(
        dict(rollups), dict(global_rollups), {key: len(ids) for key, ids in reviews.items()}
    )
