"""The answer encoded to wire bytes is the message the field-by-field construction built.

``reference_answer`` and ``_ReferenceExplainer`` are the former ``convert.rank_outcome_to_pb`` and
``convert._Explainer``, kept verbatim: every ranked finding built with ``add(**fields)``. The
current encoder writes protobuf wire bytes and parses them once, so its answer must equal the
reference's on every shape of outcome: explained or lean, suppressed with each reason,
duplicates, registered and inline findings, item errors, learning off.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2

from services.learning.convert import _REASONS, rank_outcome_to_pb
from services.learning.domain.model import SLOTS
from services.learning.storage.ranking_repository import FindingRecord
from services.learning.usecases.rank_suggestions import (
    Candidate,
    RankOptions,
    RankOutcome,
    RankRequest,
)
from shared.finding_input import FindingDraft
from tests.unit.learning.test_rank_use_case import FakeStore, ranker


def _ref(candidate: Candidate) -> dict[str, int | str]:
    return {
        "index": candidate.index,
        "finding_id": candidate.finding_id,
        "client_finding_id": candidate.client_finding_id,
    }


def reference_answer(
    outcome: RankOutcome, *, explain: bool = True
) -> learning_pb2.RankSuggestionsResponse:
    """The answer, built in place: each ranked finding from plain values in one ``add`` and its
    terms merged from bytes encoded once per distinct term (see ``_ReferenceExplainer``).
    ``explain=False`` leaves the explanations out (the lean answer: order, scores, suppression)."""
    response = learning_pb2.RankSuggestionsResponse(
        learning_applied=outcome.learning_applied,
        not_applied_reason=outcome.not_applied_reason,
        model_version=outcome.model_version,
        item_errors=[
            common_pb2.ItemError(index=p.index, code=p.code, reason=p.reason, message=p.message)
            for p in outcome.problems
        ],
        hidden_count=outcome.hidden,
        expected_useful_hidden=outcome.expected_useful_hidden,
    )
    explainer = (
        _ReferenceExplainer(outcome) if explain and outcome.explanations is not None else None
    )
    add = response.findings.add
    candidates = outcome.candidates
    unspecified = learning_pb2.SUPPRESSION_REASON_UNSPECIFIED
    for i in outcome.order:
        candidate = candidates[i]
        suppressed = outcome.suppressed[i]
        fields: dict[str, object] = {
            "ref": _ref(candidate),
            "fingerprint": candidate.fingerprint,
            "rank": outcome.rank[i],
            "score": outcome.score[i],
            "calibrated_probability": outcome.probability[i],
            "suppressed": suppressed,
            "suppression_reason": _REASONS.get(outcome.reason[i], unspecified),
            "suppression_detail": outcome.detail(i) if suppressed else "",
            "flagged": outcome.flagged[i],
            "rule_id": candidate.rule_id,
            "category": candidate.category,
        }
        duplicate = outcome.duplicate_of[i]
        if duplicate >= 0:
            fields["duplicate_of"] = _ref(candidates[duplicate])
        if explainer is None:
            add(**fields)
            continue
        fields["explanation"] = explainer.fields(i, candidate, suppressed)
        add(**fields).explanation.MergeFromString(explainer.terms[i])
    return response


class _ReferenceExplainer:
    """The explanations of one ranking, with the work done once per distinct term.

    Every term is categorical (confidence is binned), so a (slot, column) pair — a level of a
    term — has one contribution, one label and one evidence count wherever it appears. Each
    distinct pair is encoded once, as the bytes of an Explanation holding just that term, and its
    words for the summary are formatted once; a finding's terms are then the concatenation of its
    pairs' bytes (merging concatenated encodings appends to a repeated field), and its summary a
    join of cached words. Which terms each finding has, and its three largest, come from NumPy.
    """

    def __init__(self, outcome: RankOutcome) -> None:
        e = outcome.explanations
        assert e is not None
        self._outcome = outcome
        self._e = e
        model = e.state.model
        prediction = e.prediction
        contributions = prediction.contributions
        columns = prediction.columns
        n, slots = contributions.shape
        # A level the model never saw (or a path kind the file is not) contributes nothing and
        # is left out; the base (slot 0) is always there.
        present = ~((columns < 0) & (contributions == 0.0))
        present[:, 0] = True
        # Per slot, the bytes and words of each finding's level there ("" where absent).
        slot_bytes = np.full((n, slots), b"", dtype=object)
        slot_words = np.full((n, slots), "", dtype=object)
        for slot in range(slots):
            rows = np.flatnonzero(present[:, slot])
            if rows.size == 0:
                continue
            levels, first, inverse = np.unique(
                columns[rows, slot], return_index=True, return_inverse=True
            )
            encoded: list[bytes] = []
            words: list[str] = []
            for column, row in zip(levels.tolist(), rows[first].tolist(), strict=True):
                candidate = outcome.candidates[row]
                contribution = float(contributions[row, slot])
                acted_on, outcomes = model.evidence(slot, column)
                label = model.term_label(
                    slot,
                    category=candidate.category,
                    rule_id=candidate.rule_id,
                    severity=candidate.severity,
                    confidence=candidate.confidence,
                )
                encoded.append(
                    learning_pb2.Explanation(
                        terms=[
                            learning_pb2.TermContribution(
                                term=SLOTS[slot],
                                key=label,
                                contribution=contribution,
                                acted_on=acted_on,
                                outcomes=outcomes,
                            )
                        ]
                    ).SerializeToString()
                )
                words.append(
                    f"{_TERM_WORDS.get(SLOTS[slot], SLOTS[slot] + ' {key}').format(key=label)} "
                    f"{contribution:+.2f} (acted on {acted_on} of {outcomes})"
                )
            slot_bytes[rows, slot] = np.array(encoded, dtype=object)[inverse]
            slot_words[rows, slot] = np.array(words, dtype=object)[inverse]
        self.terms: list[bytes] = [b"".join(row) for row in slot_bytes.tolist()]
        # The three largest terms after the base, ties in slot order (a stable sort).
        size = np.where(present, np.abs(contributions), -1.0)
        size[:, 0] = -1.0
        top = np.argsort(-size, axis=1, kind="stable")[:, :3]
        top_present = np.take_along_axis(present, top, axis=1)
        top_present[:, :] &= np.take_along_axis(size, top, axis=1) >= 0.0
        self._words = slot_words
        self._top = top.tolist()
        self._top_present = top_present.tolist()
        self._logit = prediction.logit.tolist()

    def fields(self, i: int, candidate: Candidate, suppressed: bool) -> dict[str, object]:
        e, outcome = self._e, self._outcome
        fields: dict[str, object] = {
            "raw_confidence": candidate.confidence,
            "calibrated_probability": outcome.probability[i],
            "diversity_penalty": e.diversity_penalty[i],
            "explored": e.explored[i],
            "logit": self._logit[i],
            "upper_bound": e.upper[i],
            "hide_below": e.floor[i],
            "severity_value": e.severity_value[i],
            "probation_scope": e.probation_evidence[i],
        }
        if not suppressed:
            # The sentence only for shown findings: suppressed ones carry their detail.
            fields["summary"] = self._summary(i)
        return fields

    def _summary(self, i: int) -> str:
        """'P(acted on) 0.42: base rate -0.85 (acted on 4210 of 10004); rule X in this
        repository +1.20 (acted on 18 of 21); ...' with the three largest terms after the base."""
        words = self._words[i]
        parts = [words[0]]
        parts.extend(
            words[slot]
            for slot, present in zip(self._top[i], self._top_present[i], strict=True)
            if present
        )
        outcome = self._outcome
        score, probability = outcome.score[i], outcome.probability[i]
        return (
            f"P(acted on) {probability:.2f}: "
            + "; ".join(parts)
            + (f"; score {score:.3f}" if abs(score - probability) > 1e-12 else "")
        )


_TERM_WORDS = {
    "base": "base rate",
    "team_rule": "rule {key} in this team",
    "repository_rule": "rule {key} in this repository",
    "team": "this team",
    "repository": "this repository",
    "path:test": "test code",
    "path:generated": "generated code",
    "path:vendored": "vendored code",
}


class StoreWithFindings(FakeStore):
    """Two registered findings of the known repository (one of them a copy of an inline one)."""

    async def findings(self, finding_ids: object) -> dict[int, FindingRecord]:
        records = {}
        for finding_id, rule in ((7, "R_good"), (8, "R_bad")):
            records[finding_id] = FindingRecord(
                finding_id=finding_id,
                repository_id=1,
                client_finding_id=f"stored-{finding_id}",
                rule_id=rule,
                category="style",
                severity=3,
                confidence=0.5,
                file_path="src/stored.py",
                line_start=finding_id,
                message=f"stored message about {rule}",
                fingerprint=f"{finding_id:032x}",
            )
        return records


def _drafts(count: int, seed: int) -> tuple[FindingDraft, ...]:
    """Findings that collide: a few files and lines, repeated messages (exact and near
    duplicates), both rules, every severity, some without a client id."""
    rng = np.random.default_rng(seed)
    drafts = []
    for i in range(count):
        rule = ["R_good", "R_bad", "R_new"][int(rng.integers(0, 3))]
        drafts.append(
            FindingDraft(
                client_finding_id=None if i % 5 == 0 else f"c{i}",
                rule_id=rule,
                category="security" if i % 7 == 0 else "style",
                severity=int(rng.integers(1, 6)),
                confidence=float(rng.choice([0.3, 0.5, 0.7])),
                file_path=f"src/f{int(rng.integers(0, 3))}.py",
                line_start=int(rng.integers(1, 40)),
                line_end=40,
                title="t",
                message=f"message {int(rng.integers(0, 6))} about {rule} ünïcode",
                suggested_fix="",
                code_context=f"x = {int(rng.integers(0, 4))}",
            )
        )
    return tuple(drafts)


def _request(draw: int, **options: object) -> RankRequest:
    return RankRequest(
        repository_url="https://x/known",
        pull_request=1,
        finding_ids=(7, 8, 99),  # 99 is unknown: an item error
        inline=_drafts(300, draw),
        options=RankOptions(**options),  # type: ignore[arg-type]
    )


async def _outcomes(seed: int) -> list[RankOutcome]:
    store = StoreWithFindings(dismissed={f"{8:032x}"})
    return [
        await ranker(store=store).rank(_request(seed)),
        await ranker(store=store).rank(_request(seed, max_results=5, diversity=0.3)),
        await ranker(store=store).rank(_request(seed, exploration=True, seed=seed)),
        await ranker(store=store, enabled=False).rank(_request(seed)),
    ]


@pytest.mark.parametrize("seed", range(3))
async def test_the_encoded_answer_is_the_reference_message(seed: int) -> None:
    outcomes = await _outcomes(seed)
    reasons = {r for outcome in outcomes for r in outcome.reason}
    assert {"duplicate", "previously_dismissed", "over_limit"} <= reasons
    assert any(outcome.problems for outcome in outcomes)
    for outcome in outcomes:
        for explain in (True, False):
            got = rank_outcome_to_pb(outcome, explain=explain)
            expected = reference_answer(outcome, explain=explain)
            assert got == expected
            # Again, now from the levels cached for this model.
            assert rank_outcome_to_pb(outcome, explain=explain) == expected
            assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
                deterministic=True
            )


def test_special_numbers_and_large_ids_encode_as_the_reference() -> None:
    candidates = tuple(
        Candidate(i, finding_id, client, "R", "style", 3, 0.5, "a.py", 1, "m", "f" * 32)
        for i, (finding_id, client) in enumerate([(0, ""), (2**40, "x"), (0, "ü" * 200), (300, "")])
    )
    n = len(candidates)
    outcome = RankOutcome(
        candidates=candidates,
        order=[3, 0, 1, 2],
        rank=[2, 0, 20_000, 1],
        score=[math.nan, -0.0, math.inf, 1e-300],
        probability=[0.0, 1.0, math.nan, 0.5],
        suppressed=[False, True, False, False],
        reason=["", "duplicate", "", ""],
        duplicate_of=[-1, 3, -1, -1],
        flagged=[True, False, False, False],
        explanations=None,
        learning_applied=False,
        not_applied_reason="why",
        model_version="v",
        problems=(),
    )
    assert n == 4
    got, expected = rank_outcome_to_pb(outcome), reference_answer(outcome)
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )
