"""PatternLearner's classification of recurring findings (the SQL aggregation lives elsewhere).

The exact one-sided binomial tests are evaluated with ``scipy.stats.binom`` tail functions over
all patterns at once; they are the same p-values ``scipy.stats.binomtest`` returns for
``alternative="less"`` / ``"greater"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

ANTI_PATTERN: Final = "anti_pattern"
TEAM_WEAKNESS: Final = "team_weakness"
EMERGING: Final = "emerging"
RECURRING: Final = "recurring"
PATTERN_KINDS: Final = frozenset({ANTI_PATTERN, TEAM_WEAKNESS, EMERGING, RECURRING})

# A baseline of exactly 0 or 1 makes every deviation infinitely significant; keep it inside.
_BASELINE_EPSILON: Final = 1e-6


@dataclass(frozen=True)
class PatternStats:
    """Aggregated outcomes of one normalised finding pattern.

    ``recent_occurrences`` and ``prior_occurrences`` count occurrences in two equally long
    windows (the latest one and the one before it).
    """

    pattern_key: str
    rule_id: str
    category: str
    normalized_message: str
    occurrences: int
    positive: int
    negative: int
    dismissed: int
    recent_occurrences: int
    prior_occurrences: int


@dataclass(frozen=True)
class PatternVerdict:
    """Kind of pattern and the p-value of the test that decided it.

    For "recurring" the p-value is the smallest one among the tests that were applicable
    (how close the pattern came to another kind), or 1.0 when none was.
    """

    kind: str
    p_value: float


def classify_patterns(
    stats: Sequence[PatternStats],
    *,
    baseline_acceptance: float,
    min_occurrences: int = 10,
    alpha: float = 0.01,
    emerging_ratio: float = 2.0,
) -> list[PatternVerdict]:
    """Classify each pattern, returning verdicts in input order.

    Acceptance is positive / (positive + negative + dismissed). anti_pattern: significantly
    below ``baseline_acceptance`` (developers reject the bot here); team_weakness:
    significantly above it (developers keep fixing it, so the team keeps making the mistake);
    emerging: recent >= emerging_ratio * max(prior, 1) and recent is significantly more than
    half of recent + prior. Precedence follows that order; the rest is recurring. Patterns
    with fewer than ``min_occurrences`` occurrences are recurring with p-value 1.0. The
    baseline is clamped to [1e-6, 1 - 1e-6].
    """
    if not 0.0 <= baseline_acceptance <= 1.0:
        raise ValueError("baseline_acceptance must lie in [0, 1]")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    if emerging_ratio <= 0.0:
        raise ValueError("emerging_ratio must be positive")
    if not stats:
        return []
    baseline = min(max(baseline_acceptance, _BASELINE_EPSILON), 1.0 - _BASELINE_EPSILON)

    counts = np.array(
        [
            (
                s.occurrences,
                s.positive,
                s.negative,
                s.dismissed,
                s.recent_occurrences,
                s.prior_occurrences,
            )
            for s in stats
        ],
        dtype=np.int64,
    )
    if np.any(counts < 0):
        raise ValueError("pattern counts must be non-negative")
    occurrences, positive, negative, dismissed, recent, prior = counts.T
    decided = positive + negative + dismissed

    # P(X <= k) and P(X >= k) for X ~ Binom(decided, baseline); 1.0 when nothing was decided.
    from scipy.stats import binom  # lazily: SciPy's import is slow and large for a server

    p_below = np.where(decided > 0, binom.cdf(positive, decided, baseline), 1.0)
    p_above = np.where(decided > 0, binom.sf(positive - 1, decided, baseline), 1.0)
    # Given recent + prior occurrences in two equal windows, recent ~ Binom(total, 1/2).
    growing = recent >= emerging_ratio * np.maximum(prior, 1)
    p_growth = np.where(growing, binom.sf(recent - 1, recent + prior, 0.5), 1.0)

    enough = occurrences >= min_occurrences
    anti = enough & (p_below < alpha)
    weakness = enough & ~anti & (p_above < alpha)
    emerging = enough & ~anti & ~weakness & (p_growth < alpha)
    kinds = np.select(
        [anti, weakness, emerging, enough],
        [ANTI_PATTERN, TEAM_WEAKNESS, EMERGING, RECURRING],
        default=RECURRING,
    )
    p_values = np.select(
        [anti, weakness, emerging, enough],
        [p_below, p_above, p_growth, np.minimum(np.minimum(p_below, p_above), p_growth)],
        default=1.0,
    )
    return [
        PatternVerdict(kind=str(kind), p_value=float(p))
        for kind, p in zip(kinds, p_values, strict=True)
    ]
