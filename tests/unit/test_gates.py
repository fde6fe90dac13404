"""The gate decision (precedence) and rollout membership, as pure functions."""

from __future__ import annotations

import hashlib
import math
import random

import pytest

from shared.gates.model import (
    BUCKETS,
    PHASE_PERCENTAGES,
    DecidedBy,
    Feature,
    GateSnapshot,
    KillSwitch,
    Membership,
    Rollout,
    Switch,
    evaluate,
    rollout_bucket,
)

REPO = "https://git.example.com/acme/api"
OTHER = "https://git.example.com/acme/web"
URLS = [f"https://git.example.com/org{i % 97}/repo-{i}" for i in range(10_000)]


def decide(
    snapshot: GateSnapshot,
    feature: Feature = Feature.RANKING,
    url: str = REPO,
    *,
    hard_kill: bool = False,
) -> tuple[bool, DecidedBy, Feature]:
    decision = evaluate(snapshot, feature, url, hard_kill=hard_kill)
    return decision.enabled, decision.decided_by, decision.feature


def test_nothing_set_is_on_by_default() -> None:
    assert decide(GateSnapshot(version=0)) == (True, DecidedBy.DEFAULT, Feature.RANKING)


def test_the_environment_beats_everything() -> None:
    snapshot = GateSnapshot(
        version=3, overrides={(Feature.RANKING, REPO): Switch(True)}, kill_switch=KillSwitch(False)
    )
    assert decide(snapshot, hard_kill=True) == (False, DecidedBy.ENVIRONMENT, Feature.RANKING)


def test_the_kill_switch_beats_overrides() -> None:
    snapshot = GateSnapshot(
        version=3,
        kill_switch=KillSwitch(True, "incident", "operator:x"),
        overrides={(Feature.RANKING, REPO): Switch(True), (Feature.LEARNING, REPO): Switch(True)},
    )
    decision = evaluate(snapshot, Feature.RANKING, REPO, hard_kill=False)
    assert (decision.enabled, decision.decided_by) == (False, DecidedBy.KILL_SWITCH)
    assert decision.reason == "kill_switch: engaged by operator:x: incident"
    assert decision.version == 3


@pytest.mark.parametrize(
    ("global_gates", "overrides", "expected"),
    [
        # the feature's own override beats every global gate
        (
            {Feature.RANKING: False, Feature.LEARNING: False},
            {Feature.RANKING: True},
            (True, DecidedBy.REPOSITORY_GATE, Feature.RANKING),
        ),
        ({}, {Feature.RANKING: False}, (False, DecidedBy.REPOSITORY_GATE, Feature.RANKING)),
        # the learning master switch decides for the other features
        ({Feature.LEARNING: False}, {}, (False, DecidedBy.GLOBAL_GATE, Feature.LEARNING)),
        ({}, {Feature.LEARNING: False}, (False, DecidedBy.REPOSITORY_GATE, Feature.LEARNING)),
        (
            {Feature.LEARNING: False},
            {Feature.LEARNING: True},
            (True, DecidedBy.REPOSITORY_GATE, Feature.LEARNING),
        ),
        # ... but a learning override does not switch on a feature that is globally off
        (
            {Feature.RANKING: False},
            {Feature.LEARNING: True},
            (False, DecidedBy.GLOBAL_GATE, Feature.RANKING),
        ),
        ({Feature.RANKING: False}, {}, (False, DecidedBy.GLOBAL_GATE, Feature.RANKING)),
        # a global gate set to on is the same as none
        ({Feature.RANKING: True}, {}, (True, DecidedBy.DEFAULT, Feature.RANKING)),
    ],
)
def test_the_most_specific_switch_wins(
    global_gates: dict[Feature, bool],
    overrides: dict[Feature, bool],
    expected: tuple[bool, DecidedBy, Feature],
) -> None:
    snapshot = GateSnapshot(
        version=1,
        global_gates={f: Switch(on) for f, on in global_gates.items()},
        overrides={(f, REPO): Switch(on) for f, on in overrides.items()},
    )
    assert decide(snapshot) == expected
    # another repository is not affected by this one's overrides
    if overrides and not global_gates:
        assert decide(snapshot, url=OTHER)[0]


def test_learning_itself_follows_its_own_gates() -> None:
    snapshot = GateSnapshot(version=1, global_gates={Feature.LEARNING: Switch(False, "pause")})
    decision = evaluate(snapshot, Feature.LEARNING, REPO, hard_kill=False)
    assert (decision.enabled, decision.decided_by) == (False, DecidedBy.GLOBAL_GATE)
    assert decision.reason == "global_gate: learning is off (pause)"


def _in_rollout(rollout: Rollout, url: str) -> bool:
    snapshot = GateSnapshot(version=1, rollout=rollout)
    return evaluate(snapshot, Feature.RANKING, url, hard_kill=False).enabled


def test_no_rollout_in_force_means_every_repository() -> None:
    assert all(_in_rollout(Rollout(), url) for url in URLS[:100])


def test_raising_the_percentage_only_adds_repositories_over_10000_urls() -> None:
    previous: set[str] = set()
    for phase in range(5):
        percentage = PHASE_PERCENTAGES[phase]
        rollout = Rollout(in_force=True, phase=phase, percentage=percentage, salt="s1")
        members = {url for url in URLS if _in_rollout(rollout, url)}
        assert previous <= members, f"phase {phase} dropped repositories"
        expected = len(URLS) * percentage / 100
        sigma = math.sqrt(len(URLS) * percentage / 100 * (1 - percentage / 100)) or 1.0
        assert abs(len(members) - expected) < 5 * sigma, (phase, len(members))
        previous = members
    assert previous == set(URLS)


def test_buckets_are_stable_and_salted() -> None:
    # Pinned: a bucket must never change between releases, or a rollout would reshuffle.
    digest = hashlib.sha256(b"s1:" + REPO.encode()).hexdigest()
    assert rollout_bucket("s1", REPO) == int(digest[:15], 16) % BUCKETS
    assert rollout_bucket("s1", REPO) == rollout_bucket("s1", REPO)
    same = sum(rollout_bucket("s1", u) == rollout_bucket("s2", u) for u in URLS)
    assert same < 20  # another salt is another shuffle


def test_sticky_exposure_keeps_exposed_repositories_in_during_a_rollback() -> None:
    at_50 = Rollout(in_force=True, phase=3, percentage=50, salt="s1")
    exposed = {url for url in random.Random(5).sample(URLS, 3000) if _in_rollout(at_50, url)}
    back_to_10 = Rollout(
        in_force=True,
        phase=1,
        percentage=10,
        salt="s1",
        sticky_exposure=True,
        sticky_repositories=frozenset(u for u in exposed if rollout_bucket("s1", u) >= 1000),
    )
    members = {url for url in URLS if _in_rollout(back_to_10, url)}
    assert exposed <= members
    at_10 = {url for url in URLS if _in_rollout(Rollout(True, 1, 10, "s1"), url)}
    assert members == at_10 | exposed
    # Without sticky exposure the rollback takes them out.
    plain = Rollout(
        True, 1, 10, "s1", sticky_exposure=False, sticky_repositories=back_to_10.sticky_repositories
    )
    assert {url for url in URLS if _in_rollout(plain, url)} == at_10
    assert (
        back_to_10.membership(next(iter(back_to_10.sticky_repositories)))[0]
        is Membership.STICKY_EXPOSURE
    )


def test_outside_the_rollout_the_reason_is_not_in_rollout() -> None:
    rollout = Rollout(in_force=True, phase=1, percentage=10, salt="s1")
    outside = next(u for u in URLS if rollout_bucket("s1", u) >= 1000)
    decision = evaluate(
        GateSnapshot(version=4, rollout=rollout), Feature.RANKING, outside, hard_kill=False
    )
    assert not decision.enabled
    assert decision.decided_by is DecidedBy.ROLLOUT
    assert decision.reason.startswith("not_in_rollout:")
    # An override includes it whatever the rollout says; the kill switch still beats both.
    included = GateSnapshot(
        version=5, rollout=rollout, overrides={(Feature.LEARNING, outside): Switch(True)}
    )
    assert evaluate(included, Feature.RANKING, outside, hard_kill=False).enabled
    killed = GateSnapshot(
        version=6, rollout=rollout, kill_switch=KillSwitch(True), overrides=included.overrides
    )
    assert not evaluate(killed, Feature.RANKING, outside, hard_kill=False).enabled
    # A call about no repository (a team's insights) is not subject to the rollout.
    assert evaluate(
        GateSnapshot(version=4, rollout=rollout), Feature.INSIGHTS, "", hard_kill=False
    ).enabled
