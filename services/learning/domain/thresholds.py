"""The Tricorder bar: the lowest confidence threshold whose shown findings are rarely useless.

A threshold is accepted only when the 95% Wilson upper bound of the not-useful rate among
findings at or above it stays under the target, so small lucky samples do not pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.learning.domain.rates import Z_95, wilson_interval


@dataclass(frozen=True)
class ThresholdDecision:
    """Outcome of ``choose_threshold``.

    ``threshold`` is an observed confidence value; show findings with confidence >= it.
    ``threshold is None and reachable`` means too little data here (defer to the parent
    scope); ``threshold is None and not reachable`` means no threshold meets the target,
    and the remaining fields then describe the best candidate (lowest upper bound).
    ``sample_size`` and the rates refer to the findings at or above the threshold, or to
    all findings when there were too few of them.

    When the target is not reachable on the Wilson bound, two fallbacks are offered:
    ``point_threshold`` is the lowest candidate whose observed rate meets the target (the bar
    is met, just not yet with 95% confidence), and ``best_threshold`` the candidate with the
    lowest upper bound.
    """

    threshold: float | None
    reachable: bool
    sample_size: int
    not_useful_upper: float
    not_useful_rate: float
    point_threshold: float | None = None
    best_threshold: float | None = None


def choose_threshold(
    confidence: npt.ArrayLike,
    useful: npt.ArrayLike,
    *,
    target: float = 0.10,
    min_samples: int = 50,
    z: float = Z_95,
) -> ThresholdDecision:
    """Lowest observed confidence t with n(t) >= min_samples and Wilson upper <= target.

    n(t) counts findings with confidence >= t; ``useful`` is False for negative or
    dismissed outcomes. One sort plus cumulative sums from the top: O(n log n).
    """
    if not 0.0 < target < 1.0:
        raise ValueError("target must lie in (0, 1)")
    if min_samples < 1:
        raise ValueError("min_samples must be at least 1")
    scores = np.asarray(confidence, dtype=np.float64).ravel()
    good = np.asarray(useful).ravel()
    if good.shape != scores.shape:
        raise ValueError("confidence and useful must have the same length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("confidence must be finite")
    if good.dtype != np.bool_ and not np.all((good == 0) | (good == 1)):
        raise ValueError("useful must be boolean or 0/1")
    bad = good == 0

    total = int(scores.size)
    if total < min_samples:
        total_bad = int(bad.sum())
        _, upper = wilson_interval(total_bad, total, z=z)
        return ThresholdDecision(
            threshold=None,
            reachable=True,
            sample_size=total,
            not_useful_upper=float(upper),
            not_useful_rate=total_bad / total if total else 0.0,
        )

    order = np.argsort(-scores)
    ranked = scores[order]
    cumulative_bad = np.cumsum(bad[order])
    # The last position of each run of equal scores closes the set {confidence >= score}.
    run_ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    shown = run_ends + 1
    eligible = shown >= min_samples
    shown = shown[eligible]
    shown_bad = cumulative_bad[run_ends[eligible]]
    candidates = ranked[run_ends[eligible]]
    _, upper = wilson_interval(shown_bad, shown, z=z)

    passing = np.flatnonzero(upper <= target)
    point_threshold: float | None = None
    best_threshold: float | None = None
    if passing.size:
        # Candidates run from high to low confidence, so the last passing one is the lowest.
        pick = int(passing[-1])
        threshold: float | None = float(candidates[pick])
    else:
        # Best effort: lowest upper bound, preferring the larger sample on ties.
        pick = int(np.flatnonzero(upper == upper.min())[-1])
        threshold = None
        best_threshold = float(candidates[pick])
        meets_on_average = np.flatnonzero(shown_bad <= target * shown)
        if meets_on_average.size:
            point_threshold = float(candidates[int(meets_on_average[-1])])
    return ThresholdDecision(
        threshold=threshold,
        reachable=threshold is not None,
        sample_size=int(shown[pick]),
        not_useful_upper=float(upper[pick]),
        not_useful_rate=float(shown_bad[pick] / shown[pick]),
        point_threshold=point_threshold,
        best_threshold=best_threshold,
    )
