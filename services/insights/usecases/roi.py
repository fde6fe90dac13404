"""GetRoi: minutes saved minus minutes lost per category, with 95% intervals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

from services.insights.domain.roi import OutcomeCounts, Roi, RoiAssumptions, roi_of, total_of
from services.insights.domain.scopes import ResolvedScope
from services.insights.domain.windows import Window
from services.insights.usecases.reads import OutcomeRow
from shared.outcome import Outcome


class OutcomeReads(Protocol):
    async def outcome_counts(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[OutcomeRow]: ...


@dataclass(frozen=True)
class RoiView:
    window: Window
    assumptions: RoiAssumptions
    categories: list[Roi]
    total: Roi


def roi_from_rows(rows: list[OutcomeRow], window: Window, assumptions: RoiAssumptions) -> RoiView:
    groups: dict[str, tuple[dict[int, int], list[int]]] = {}
    for row in rows:
        positives, rest = groups.setdefault(row.category, ({}, [0, 0]))
        if row.outcome == Outcome.POSITIVE:
            positives[row.severity] = positives.get(row.severity, 0) + row.findings
        elif row.outcome == Outcome.NEGATIVE:
            rest[0] += row.findings
        elif row.outcome == Outcome.DISMISSED:
            rest[1] += row.findings
    counts = {
        category: OutcomeCounts(positives, rest[0], rest[1])
        for category, (positives, rest) in groups.items()
    }
    categories = sorted(
        (roi_of(category, c, assumptions) for category, c in counts.items()),
        key=lambda r: (-r.net_minutes, r.key),
    )
    total = roi_of("", total_of(list(counts.values())), assumptions)
    return RoiView(window, assumptions, categories, total)


async def roi(
    reads: OutcomeReads, scope: ResolvedScope, window: Window, assumptions: RoiAssumptions
) -> RoiView:
    rows = await reads.outcome_counts(scope, window.first_day, window.last_day)
    return roi_from_rows(rows, window, assumptions)
