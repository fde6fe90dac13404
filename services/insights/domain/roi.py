"""Return on investment: minutes saved by acted-on findings minus minutes lost to noise.

Every count is uncertain (it is one sample of how the team reacts), so the net comes with a 95%
interval. With R reacted findings, a share p of them acted on, S̄ the mean minutes saved per
acted-on finding (by their severities) and L̄ the mean minutes lost per rejected or dismissed
one, the net is ``R · (p · S̄ − (1 − p) · L̄)``. It rises with p, so letting p run over its Wilson
interval gives the net's interval, and at the observed p it is exactly the point value (the sum
of minutes saved minus minutes lost), which therefore always lies inside the interval.
The total uses the same formula over all categories (not a sum of per-category bounds, which
would be wider than the uncertainty of the total).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from services.insights.domain.rates import wilson_bounds

SEVERITY_NAMES = {1: "info", 2: "low", 3: "medium", 4: "high", 5: "critical"}
SEVERITY_OF_NAME = {name: value for value, name in SEVERITY_NAMES.items()}


@dataclass(frozen=True)
class RoiAssumptions:
    minutes_saved_per_positive: float = 15.0
    """For a severity with no entry in ``minutes_saved_by_severity``."""
    minutes_lost_per_negative: float = 5.0
    minutes_lost_per_dismissed: float = 2.0
    hourly_cost: float = 100.0
    minutes_saved_by_severity: Mapping[int, float] = field(
        default_factory=lambda: {1: 2.0, 2: 5.0, 3: 15.0, 4: 30.0, 5: 60.0}
    )

    def minutes_saved(self, severity: int) -> float:
        return self.minutes_saved_by_severity.get(severity, self.minutes_saved_per_positive)

    def overridden(
        self,
        *,
        minutes_saved_per_positive: float | None = None,
        minutes_lost_per_negative: float | None = None,
        minutes_lost_per_dismissed: float | None = None,
        hourly_cost: float | None = None,
        minutes_saved_by_severity: Mapping[int, float] | None = None,
    ) -> RoiAssumptions:
        """These assumptions with the given values replaced (None keeps the value)."""
        changes: dict[str, object] = {}
        for name, value in (
            ("minutes_saved_per_positive", minutes_saved_per_positive),
            ("minutes_lost_per_negative", minutes_lost_per_negative),
            ("minutes_lost_per_dismissed", minutes_lost_per_dismissed),
            ("hourly_cost", hourly_cost),
        ):
            if value is not None:
                changes[name] = value
        if minutes_saved_by_severity:
            changes["minutes_saved_by_severity"] = {
                **self.minutes_saved_by_severity,
                **minutes_saved_by_severity,
            }
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OutcomeCounts:
    """One group's reacted findings: acted on by severity, rejected, dismissed."""

    positive_by_severity: Mapping[int, int]
    negative: int
    dismissed: int

    @property
    def positive(self) -> int:
        return sum(self.positive_by_severity.values())


@dataclass(frozen=True)
class Roi:
    key: str
    positive: int
    negative: int
    dismissed: int
    minutes_saved: float
    minutes_lost: float
    net_minutes: float
    net_lower: float
    net_upper: float

    def cost(self, minutes: float, assumptions: RoiAssumptions) -> float:
        return minutes / 60.0 * assumptions.hourly_cost


def roi_of(key: str, counts: OutcomeCounts, assumptions: RoiAssumptions) -> Roi:
    positive = counts.positive
    saved = sum(
        count * assumptions.minutes_saved(severity)
        for severity, count in counts.positive_by_severity.items()
    )
    lost = (
        counts.negative * assumptions.minutes_lost_per_negative
        + counts.dismissed * assumptions.minutes_lost_per_dismissed
    )
    noise = counts.negative + counts.dismissed
    reacted = positive + noise
    mean_saved = saved / positive if positive else assumptions.minutes_saved_per_positive
    mean_lost = (
        lost / noise
        if noise
        else (assumptions.minutes_lost_per_negative + assumptions.minutes_lost_per_dismissed) / 2
    )
    lower_p, upper_p = wilson_bounds(positive, reacted)

    def net_at(share: float) -> float:
        return reacted * (share * mean_saved - (1.0 - share) * mean_lost)

    net = saved - lost
    low, high = (net_at(lower_p), net_at(upper_p)) if reacted else (0.0, 0.0)
    # Rounding must not put the point a hair outside its own interval.
    return Roi(
        key, positive, counts.negative, counts.dismissed, saved, lost, net,
        min(low, net), max(high, net),
    )  # fmt: skip


def total_of(groups: Sequence[OutcomeCounts]) -> OutcomeCounts:
    by_severity: dict[int, int] = {}
    for group in groups:
        for severity, count in group.positive_by_severity.items():
            by_severity[severity] = by_severity.get(severity, 0) + count
    return OutcomeCounts(
        by_severity, sum(g.negative for g in groups), sum(g.dismissed for g in groups)
    )
