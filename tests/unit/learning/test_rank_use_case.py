"""RankSuggestions assembled with in-memory fakes of its repository, state and gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import numpy as np
import pytest

from services.learning.domain.learned_state import LearnedState
from services.learning.domain.metrics import build_metrics
from services.learning.domain.model_fitting import fit_model
from services.learning.domain.suppression import SuppressionPolicy
from services.learning.gates import GateDecision
from services.learning.instruments import LearningInstruments
from services.learning.storage.ranking_repository import FindingRecord
from services.learning.usecases.rank_suggestions import (
    RankingSettings,
    RankOptions,
    RankRequest,
    RankSuggestions,
)
from shared.finding_input import FindingDraft, Limits
from tests.unit.learning.logs import NOW, two_rule_log


class FakeStore:
    def __init__(self, dismissed: set[str] | None = None) -> None:
        self.dismissed = dismissed or set()

    async def repository(self, url: str) -> tuple[int, int] | None:
        return (1, 1) if url.endswith("/known") else None

    async def findings(self, finding_ids: Sequence[int]) -> dict[int, FindingRecord]:
        return {}

    async def dismissed_fingerprints(
        self, *, repository_id: int, pull_request: int, fingerprints: Sequence[str]
    ) -> set[str]:
        return self.dismissed & set(fingerprints)


class FakeState:
    def __init__(self, state: LearnedState) -> None:
        self.state = state

    async def current(self) -> LearnedState:
        return self.state


class Gate:
    """Every feature on, unless switched off for the test (``enabled=False``: ranking too)."""

    def __init__(self, enabled: bool, off: frozenset[str] = frozenset()) -> None:
        self.enabled = enabled
        self.off = off
        self.asked: list[str] = []

    async def check(self, *, feature: str, repository_url: str) -> GateDecision:
        self.asked.append(feature)
        on = self.enabled and feature not in self.off
        return GateDecision(on, "" if on else "off for the test")


def ranker(
    *, enabled: bool = True, store: FakeStore | None = None, off: frozenset[str] = frozenset()
) -> RankSuggestions:
    fake = store or FakeStore()

    @asynccontextmanager
    async def transaction() -> AsyncIterator[FakeStore]:
        yield fake

    model = fit_model(two_rule_log(), version="m1", fitted_at=NOW)
    state = LearnedState(
        watermark=5,
        last_fold=datetime.now(UTC),
        metrics=build_metrics(rows=[], rule_category={}, team_of_repository={1: 1}),
        model=model,
    )
    return RankSuggestions(
        transaction=transaction,
        state=FakeState(state),
        gate=Gate(enabled, off),
        instruments=LearningInstruments(),
        settings=RankingSettings(
            limits=Limits(),
            max_findings=10_000,
            severity_values=(1.0, 1.0, 1.0, 1.0, 1.0),
            line_window=10,
            max_hamming=6,
            suppression=SuppressionPolicy(),
        ),
        executor=ThreadPoolExecutor(max_workers=1),
    )


def draft(i: int, rule: str) -> FindingDraft:
    return FindingDraft(
        client_finding_id=f"c{i}",
        rule_id=rule,
        category="style",
        severity=3,
        confidence=0.5,
        file_path=f"src/f{i}.py",
        line_start=1,
        line_end=1,
        title="t",
        message=f"message number {i} about {rule}",
        suggested_fix="",
        code_context=f"x{i} = 1",
    )


def request(url: str, rules: Sequence[str]) -> RankRequest:
    return RankRequest(
        repository_url=url,
        pull_request=1,
        finding_ids=(),
        inline=tuple(draft(i, rule) for i, rule in enumerate(rules)),
        options=RankOptions(),
    )


async def test_the_learned_order_and_explanations() -> None:
    outcome = await ranker().rank(request("https://x/known", ["R_bad", "R_good", "R_new"]))
    assert outcome.learning_applied
    assert outcome.model_version == "m1+wm5"
    assert outcome.candidates[outcome.order[0]].rule_id == "R_good"
    e = outcome.explanations
    assert e is not None
    sums = e.prediction.contributions.sum(axis=1)
    assert np.allclose(sums, e.prediction.logit)
    assert outcome.probability == pytest.approx((1 / (1 + np.exp(-sums))).tolist())


async def test_an_unknown_repository_hides_nothing_on_other_tenants_evidence() -> None:
    outcome = await ranker().rank(request("https://x/unknown", ["R_bad"] * 3))
    assert outcome.hidden == 0
    assert not any(outcome.suppressed)


async def test_gate_off_passes_through() -> None:
    outcome = await ranker(enabled=False).rank(request("https://x/known", ["R_bad", "R_good"]))
    assert not outcome.learning_applied
    assert outcome.order == [0, 1]
    assert outcome.not_applied_reason == "off for the test"


async def test_a_deadline_that_passed_stops_the_work() -> None:
    with pytest.raises(asyncio.CancelledError):
        await ranker().rank(request("https://x/known", ["R_good"] * 50), time_remaining=0.0)


async def test_the_suppression_gate_off_hides_nothing_but_still_ranks() -> None:
    rules = ["R_bad"] * 3 + ["R_good"]
    gated = await ranker().rank(request("https://x/known", rules))
    assert gated.hidden > 0  # the record says R_bad is noise here
    outcome = await ranker(off=frozenset({"suppression"})).rank(request("https://x/known", rules))
    assert outcome.learning_applied
    assert outcome.hidden == 0
    assert not any(outcome.suppressed)
    assert outcome.candidates[outcome.order[0]].rule_id == "R_good"


async def test_the_deduplication_gate_off_collapses_nothing() -> None:
    same = request("https://x/unknown", ["R_good"])
    twice = RankRequest(
        repository_url=same.repository_url,
        pull_request=1,
        finding_ids=(),
        inline=(same.inline[0], same.inline[0]),
        options=RankOptions(),
    )
    collapsed = await ranker().rank(twice)
    assert collapsed.duplicate_of.count(-1) == 1
    outcome = await ranker(off=frozenset({"deduplication"})).rank(twice)
    assert outcome.duplicate_of == [-1, -1]
    assert not any(outcome.suppressed)


async def test_the_calibration_gate_off_answers_the_uncalibrated_model() -> None:
    rules = ["R_bad", "R_good", "R_new"]
    calibrated = await ranker().rank(request("https://x/known", rules))
    raw = await ranker(off=frozenset({"calibration"})).rank(request("https://x/known", rules))
    model = fit_model(two_rule_log(), version="m1", fitted_at=NOW)
    assert (model.calibration.slope, model.calibration.offset) != (1.0, 0.0)
    assert raw.probability != pytest.approx(calibrated.probability)
    assert raw.learning_applied


async def test_the_exploration_gate_off_never_samples() -> None:
    asked = RankRequest(
        repository_url="https://x/known",
        pull_request=1,
        finding_ids=(),
        inline=request("https://x/known", ["R_bad", "R_good"]).inline,
        options=RankOptions(exploration=True, seed=3),
    )
    explored = await ranker().rank(asked)
    assert explored.explanations is not None
    assert any(explored.explanations.explored)
    outcome = await ranker(off=frozenset({"exploration"})).rank(asked)
    assert outcome.explanations is not None
    assert not any(outcome.explanations.explored)
