"""Learning paths: the categories a team keeps getting *real* (acted-on) findings in.

A finding the team acted on is evidence of a real gap, one they dismissed or rejected is not.
Each acted-on finding weighs its severity's weight times a recency factor that halves every
``half_life_days``, so a burst of critical findings last week outranks a trickle of style nits
from last quarter. The SQL sums the decayed counts per (category, rule, severity) over the
rollups; this module only ranks those sums and writes the one-line why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.insights.domain.roi import SEVERITY_NAMES

CRITICAL, HIGH = 5, 4


@dataclass(frozen=True)
class PathEvidence:
    """Acted-on findings of one (category, rule, severity) in the lookback."""

    category: str
    rule_id: str
    severity: int
    real_findings: int
    decayed: float
    """Σ findings × 0.5^(age in days / half-life)."""
    recent_findings: int


@dataclass(frozen=True)
class PathPolicy:
    lookback_days: int = 90
    half_life_days: float = 30.0
    recent_days: int = 30
    min_real_findings: int = 5
    """A category needs this many acted-on findings before it is a path (a pattern, not luck)."""
    severity_weights: Mapping[int, float] = field(
        default_factory=lambda: {1: 0.25, 2: 0.5, 3: 1.0, 4: 2.0, 5: 4.0}
    )
    top_rules: int = 3


@dataclass(frozen=True)
class LearningPath:
    rank: int
    category: str
    weight: float
    real_findings: int
    critical_findings: int
    high_findings: int
    recent_findings: int
    top_rules: tuple[str, ...]
    recommendation: str
    example_finding_ids: tuple[int, ...] = ()


def rank_paths(
    evidence: Sequence[PathEvidence], policy: PathPolicy, *, max_paths: int
) -> list[LearningPath]:
    by_category: dict[str, list[PathEvidence]] = {}
    for row in evidence:
        by_category.setdefault(row.category, []).append(row)
    scored = []
    for category, rows in by_category.items():
        real = sum(r.real_findings for r in rows)
        if real < policy.min_real_findings:
            continue
        rule_weights: dict[str, float] = {}
        for r in rows:
            contribution = policy.severity_weights.get(r.severity, 1.0) * r.decayed
            rule_weights[r.rule_id] = rule_weights.get(r.rule_id, 0.0) + contribution
        weight = sum(rule_weights.values())
        rules = tuple(
            rule for rule, _ in sorted(rule_weights.items(), key=lambda kv: (-kv[1], kv[0]))
        )[: policy.top_rules]
        scored.append(
            (
                weight,
                category,
                real,
                sum(r.real_findings for r in rows if r.severity == CRITICAL),
                sum(r.real_findings for r in rows if r.severity == HIGH),
                sum(r.recent_findings for r in rows),
                rules,
            )
        )
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [
        LearningPath(
            rank=rank,
            category=category,
            weight=round(weight, 6),
            real_findings=real,
            critical_findings=critical,
            high_findings=high,
            recent_findings=recent,
            top_rules=rules,
            recommendation=_why(category, real, critical, high, recent, rules, policy),
        )
        for rank, (weight, category, real, critical, high, recent, rules) in enumerate(
            scored[:max_paths], start=1
        )
    ]


def _why(
    category: str,
    real: int,
    critical: int,
    high: int,
    recent: int,
    rules: Sequence[str],
    policy: PathPolicy,
) -> str:
    severe = ", ".join(
        f"{count} {SEVERITY_NAMES[severity]}"
        for severity, count in ((CRITICAL, critical), (HIGH, high))
        if count
    )
    return (
        f"Study {category}: {real} findings acted on in the last {policy.lookback_days} days"
        f" ({recent} in the last {policy.recent_days}{'; ' + severe if severe else ''}),"
        f" most from {', '.join(rules)}."
    )
