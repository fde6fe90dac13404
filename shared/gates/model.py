"""What a gate decision is, and the one function that makes it (pure: no I/O, no clock).

Precedence, first match wins (documented once, here; docs/PHASE_5_ARCHITECTURE.md §7 quotes it):

1. ``environment`` — this process runs with ``LEARNING_ENABLED=false``: everything is off.
2. ``kill_switch`` — the control plane's kill switch is engaged: everything is off.
3. ``repository_gate`` — the repository's own gate for the feature (an override), on or off.
4. For every feature except ``learning``: the ``learning`` master switch, evaluated by these same
   rules (3, 5, 6) — off there is off here.
5. ``global_gate`` — the feature's global gate, when it is set to off.
6. ``rollout`` — for ``learning`` only: while a rollout is in force, a repository outside it is
   off (``not_in_rollout``); an override (3) includes or excludes it whatever the rollout says.
7. ``default`` — on. Until an operator starts a rollout none is in force, so learning applies to
   every repository.

The most specific switch wins below the two emergency stops: an override for one repository beats
the global gates and the rollout, and nothing beats the kill switch or the environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

BUCKETS = 10_000
"""Rollout buckets: a repository's bucket is stable, so raising the percentage only adds."""

PHASE_PERCENTAGES: Mapping[int, int] = {0: 0, 1: 10, 2: 25, 3: 50, 4: 100}
LAST_PHASE = 4


class Feature(StrEnum):
    """The switchable features (``reviewlearn.common.v1.Feature``)."""

    LEARNING = "learning"
    """The master switch: off turns every other feature off too."""
    RANKING = "ranking"
    SUPPRESSION = "suppression"
    DEDUPLICATION = "deduplication"
    EXPLORATION = "exploration"
    CALIBRATION = "calibration"
    PATTERNS = "patterns"
    INSIGHTS = "insights"
    BATCH_JOBS = "batch_jobs"


class DecidedBy(StrEnum):
    ENVIRONMENT = "environment"
    KILL_SWITCH = "kill_switch"
    REPOSITORY_GATE = "repository_gate"
    GLOBAL_GATE = "global_gate"
    ROLLOUT = "rollout"
    DEFAULT = "default"
    NOT_LOADED = "not_loaded"
    """No snapshot could be read since the process started: off, never a guessed default."""


@dataclass(frozen=True)
class Switch:
    """A stored gate: global (no repository) or one repository's override."""

    enabled: bool
    reason: str = ""
    updated_by: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class KillSwitch:
    engaged: bool = False
    reason: str = ""
    updated_by: str = ""
    updated_at: datetime | None = None


def rollout_bucket(salt: str, repository_url: str) -> int:
    """The repository's bucket in [0, 10,000): the first 60 bits of SHA-256(salt ":" url).

    ``shared.gates.store.BUCKET_SQL`` computes the same number in PostgreSQL, so that listing and
    counting the repositories in a rollout happens in SQL.
    """
    return _bucket(salt, repository_url)


@lru_cache(maxsize=65_536)
def _bucket(salt: str, repository_url: str) -> int:
    digest = hashlib.sha256(f"{salt}:{repository_url}".encode()).hexdigest()
    return int(digest[:15], 16) % BUCKETS


class Membership(StrEnum):
    NO_ROLLOUT = "no_rollout"
    IN_BUCKET = "in_bucket"
    STICKY_EXPOSURE = "sticky_exposure"
    NOT_IN_ROLLOUT = "not_in_rollout"


@dataclass(frozen=True)
class Rollout:
    """The rollout as every replica needs it to decide membership locally."""

    in_force: bool = False
    phase: int = 0
    percentage: int = 0
    salt: str = ""
    sticky_exposure: bool = False
    sticky_repositories: frozenset[str] = frozenset()
    """Exposed repositories outside the current percentage (only with sticky exposure)."""

    @property
    def bucket_limit(self) -> int:
        return self.percentage * BUCKETS // 100

    def membership(self, repository_url: str) -> tuple[Membership, int]:
        """Whether the repository is in, why, and its bucket."""
        if not self.in_force:
            return Membership.NO_ROLLOUT, -1
        bucket = rollout_bucket(self.salt, repository_url)
        if bucket < self.bucket_limit:
            return Membership.IN_BUCKET, bucket
        if self.sticky_exposure and repository_url in self.sticky_repositories:
            return Membership.STICKY_EXPOSURE, bucket
        return Membership.NOT_IN_ROLLOUT, bucket


@dataclass(frozen=True)
class GateSnapshot:
    """Every gate at one version; replicas hold one in memory and swap it whole."""

    version: int
    kill_switch: KillSwitch = KillSwitch()
    global_gates: Mapping[Feature, Switch] = field(default_factory=dict)
    overrides: Mapping[tuple[Feature, str], Switch] = field(default_factory=dict)
    rollout: Rollout = Rollout()


@dataclass(frozen=True, slots=True)
class GateDecision:
    enabled: bool
    reason: str = ""
    """Names the switch first (``kill_switch: …``, ``not_in_rollout: …``), then the detail."""
    decided_by: DecidedBy = DecidedBy.DEFAULT
    feature: Feature = Feature.LEARNING
    """The feature whose gate decided (the learning master switch may decide for ranking)."""
    version: int = 0


HARD_KILL_REASON = "learning is disabled by LEARNING_ENABLED=false"


def not_loaded(feature: Feature) -> GateDecision:
    return GateDecision(
        False,
        "not_loaded: no gate snapshot could be read since this replica started; "
        "off until the database answers",
        DecidedBy.NOT_LOADED,
        feature,
        0,
    )


def evaluate(
    snapshot: GateSnapshot, feature: Feature, repository_url: str, *, hard_kill: bool
) -> GateDecision:
    """The decision for one feature and repository (empty URL: no repository) by the precedence
    in this module's docstring."""
    version = snapshot.version
    if hard_kill:
        return GateDecision(
            False, f"environment: {HARD_KILL_REASON}", DecidedBy.ENVIRONMENT, feature, version
        )
    kill = snapshot.kill_switch
    if kill.engaged:
        by = f" by {kill.updated_by}" if kill.updated_by else ""
        return GateDecision(
            False,
            f"kill_switch: engaged{by}: {kill.reason}",
            DecidedBy.KILL_SWITCH,
            feature,
            version,
        )
    own = _override(snapshot, feature, repository_url)
    if own is not None:
        return own
    if feature is not Feature.LEARNING:
        master = _override(snapshot, Feature.LEARNING, repository_url)
        if master is None:
            master = _global_off(snapshot, Feature.LEARNING)
        if master is not None and not master.enabled:
            return master
        off = _global_off(snapshot, feature)
        if off is not None:
            return off
        if master is not None:  # learning's override includes the repository
            return master
        return _rollout(snapshot, feature, repository_url)
    off = _global_off(snapshot, feature)
    if off is not None:
        return off
    return _rollout(snapshot, feature, repository_url)


def _override(snapshot: GateSnapshot, feature: Feature, url: str) -> GateDecision | None:
    if not url:
        return None
    switch = snapshot.overrides.get((feature, url))
    if switch is None:
        return None
    state = "on" if switch.enabled else "off"
    return GateDecision(
        switch.enabled,
        f"repository_gate: {feature.value} is {state} for {url}{_why(switch.reason)}",
        DecidedBy.REPOSITORY_GATE,
        feature,
        snapshot.version,
    )


def _global_off(snapshot: GateSnapshot, feature: Feature) -> GateDecision | None:
    switch = snapshot.global_gates.get(feature)
    if switch is None or switch.enabled:
        return None
    return GateDecision(
        False,
        f"global_gate: {feature.value} is off{_why(switch.reason)}",
        DecidedBy.GLOBAL_GATE,
        feature,
        snapshot.version,
    )


def _rollout(snapshot: GateSnapshot, feature: Feature, url: str) -> GateDecision:
    rollout = snapshot.rollout
    if not rollout.in_force:
        return GateDecision(True, "default: on", DecidedBy.DEFAULT, feature, snapshot.version)
    if not url:
        # The rollout selects repositories; a call about no repository (a team's insights, a
        # batch job) is not subject to it.
        return GateDecision(
            True,
            "default: on (the rollout selects repositories; none given)",
            DecidedBy.DEFAULT,
            feature,
            snapshot.version,
        )
    membership, bucket = rollout.membership(url)
    phase = f"phase {rollout.phase} ({rollout.percentage}%)"
    if membership is Membership.NOT_IN_ROLLOUT:
        return GateDecision(
            False,
            f"not_in_rollout: {url} is in bucket {bucket}; {phase} covers buckets below "
            f"{rollout.bucket_limit} of {BUCKETS}",
            DecidedBy.ROLLOUT,
            Feature.LEARNING,
            snapshot.version,
        )
    detail = "ever exposed (sticky)" if membership is Membership.STICKY_EXPOSURE else "in bucket"
    return GateDecision(
        True,
        f"rollout: {url} {detail} {bucket}, {phase}",
        DecidedBy.ROLLOUT,
        Feature.LEARNING,
        snapshot.version,
    )


def _why(reason: str) -> str:
    return f" ({reason})" if reason else ""
