"""When to hide a finding: a decision under uncertainty that never hides what the record says
is useful.

Hiding a finding developers would have acted on costs more than showing one they ignore: a
bot that hides real bugs loses trust faster than a noisy one. With a cost ratio C (hiding a
useful finding costs C noisy ones), hiding is the cheaper choice when P(acted on) < 1/(1+C).
The same reasoning is applied *relative to the scope*: developers who act on a share b of their
findings already triage (1-b)/b noisy findings per useful one, so a useful finding is worth at
least that much noise to them, and hiding is cheaper only below b / (b + C·(1-b)), the
probability whose odds are C times worse than the scope's own. The floor is the lower of the
two, so in a repository where developers act on 10% of all findings nothing is hidden merely for
being typical, and where nothing predicts usefulness (every finding looks like the base rate)
nothing is hidden at all.

A finding is hidden when, even at the *upper bound* of its P(acted on), it is below the floor
(``below_floor``): thin evidence keeps the bound high, so the model hides little when it does
not know. Or when its rule is on probation in this scope and its estimate is below the floor
(``probation``): Tricorder's signal, a rule whose findings were confidently (Wilson lower bound)
not useful at least 10% of the time, decided by the most specific scope with enough evidence —
the repository over its team. The global scope pools every tenant in the database and never
decides: one organisation's history must not change what another's bot hides. Critical security
findings are never hidden; the ranking flags them instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from services.learning.domain.rates import wilson_interval

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

BELOW_FLOOR: Final = "below_floor"
PROBATION: Final = "probation"

REPOSITORY_EVIDENCE: Final = "repository"
TEAM_EVIDENCE: Final = "team"


@dataclass(frozen=True)
class SuppressionPolicy:
    cost_ratio: float = 3.0
    """How many shown noisy findings one hidden useful finding is worth."""
    z: float = 1.645
    """Upper bound of P(acted on): one-sided 95%."""
    probation_not_useful: float = 0.10
    """Tricorder's bar: a rule not useful at least this often (Wilson lower bound) is on
    probation in a scope."""
    probation_min_outcomes: int = 20
    """A scope decides probation only with at least this many outcomes of the rule."""

    def __post_init__(self) -> None:
        if not self.cost_ratio > 0:
            raise ValueError("cost_ratio must be positive")
        if not self.z >= 0:
            raise ValueError("z must be non-negative")
        if not 0.0 < self.probation_not_useful < 1.0:
            raise ValueError("probation_not_useful must lie in (0, 1)")
        if self.probation_min_outcomes < 1:
            raise ValueError("probation_min_outcomes must be at least 1")


def hiding_floor(base_rate: npt.ArrayLike, *, cost_ratio: float) -> FloatArray:
    """The P(acted on) below which hiding costs less than showing (see the module docstring)."""
    b = np.clip(np.asarray(base_rate, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    relative = b / (b + cost_ratio * (1.0 - b))
    floor: FloatArray = np.minimum(1.0 / (1.0 + cost_ratio), relative)
    return floor


@dataclass(frozen=True, eq=False)
class RuleRecord:
    """Each finding's rule record in its repository and in its team: (acted on, outcomes)."""

    repository_acted_on: IntArray
    repository_outcomes: IntArray
    team_acted_on: IntArray
    team_outcomes: IntArray


@dataclass(frozen=True, eq=False)
class Probation:
    on_probation: BoolArray
    evidence: npt.NDArray[np.object_]
    """Which scope decided: "repository", "team", or "" (neither had enough evidence)."""


def probation(record: RuleRecord, policy: SuppressionPolicy) -> Probation:
    """Per finding, whether its rule is on probation, decided by the most specific scope that
    has at least ``probation_min_outcomes`` outcomes of it."""
    enough_repository = record.repository_outcomes >= policy.probation_min_outcomes
    enough_team = ~enough_repository & (record.team_outcomes >= policy.probation_min_outcomes)
    acted_on = np.where(enough_repository, record.repository_acted_on, record.team_acted_on)
    outcomes = np.where(enough_repository, record.repository_outcomes, record.team_outcomes)
    decided = enough_repository | enough_team
    lower, _ = wilson_interval(outcomes - acted_on, outcomes)
    evidence = np.full(record.repository_outcomes.shape, "", dtype=object)
    evidence[enough_repository] = REPOSITORY_EVIDENCE
    evidence[enough_team] = TEAM_EVIDENCE
    return Probation(decided & (lower >= policy.probation_not_useful), evidence)


@dataclass(frozen=True, eq=False)
class HidingDecision:
    hidden: BoolArray
    reason: npt.NDArray[np.object_]
    """BELOW_FLOOR, PROBATION or ""; set also for findings kept shown because they are
    critical security findings (``hidden`` is False for them)."""
    floor: FloatArray
    upper: FloatArray


def decide(
    *,
    probability: FloatArray,
    upper: FloatArray,
    base_rate: FloatArray,
    on_probation: BoolArray,
    never_hide: BoolArray,
    policy: SuppressionPolicy,
) -> HidingDecision:
    floor = hiding_floor(base_rate, cost_ratio=policy.cost_ratio)
    below = upper < floor
    on_trial = on_probation & (probability < floor) & ~below
    reason = np.full(probability.shape, "", dtype=object)
    reason[below] = BELOW_FLOOR
    reason[on_trial] = PROBATION
    return HidingDecision((below | on_trial) & ~never_hide, reason, floor, upper)
