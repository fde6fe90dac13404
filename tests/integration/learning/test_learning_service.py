"""The learning service end to end, proven against ground truth from the synthetic generator."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from sklearn.metrics import roc_auc_score

from services.cli.loader import finding_input, load_feedback, load_reviews
from services.cli.synthetic import SyntheticHistory, generate_history, split_holdout
from services.learning.domain.scoring import expected_calibration_error
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from shared.outcome import FeedbackKind, Outcome, outcome_of
from tests.conftest import RunningService, StartService, auth
from tests.integration.feedback.conftest import event
from tests.integration.feedback.conftest import finding_input as sample_finding

END = datetime(2026, 11, 1, tzinfo=UTC)
LearningStub = learning_pb2_grpc.LearningServiceStub


async def start_learning(start_service: StartService, **overrides: object) -> RunningService:
    values: dict[str, object] = {
        "fold_poll_seconds": 0.2,
        "model_refresh_seconds": 0.5,
        "patterns_refresh_seconds": 3600,
    }
    values.update(overrides)
    return await start_service(build_learning, LearningSettings, **values)


async def wait_for_fold(stub: LearningStub, *, backlog: int = 0, within: float = 20.0) -> None:
    """Waits until the learning service has folded everything recorded so far."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await stub.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
            metadata=auth("reader"),
        )
        if response.backlog <= backlog and response.watermark > 0:
            return
        assert asyncio.get_running_loop().time() < deadline, f"no fold caught up: {response}"
        await asyncio.sleep(0.1)


def true_outcomes(history: SyntheticHistory) -> dict[tuple[int, int], bool]:
    """Per (review, finding): was it useful? (only findings somebody reacted to)."""
    events: dict[tuple[int, int], list[tuple[FeedbackKind, datetime, int]]] = {}
    for position, e in enumerate(history.feedback):
        events.setdefault((e.review_index, e.finding_index), []).append(
            (FeedbackKind[e.kind.upper()], e.occurred_at, position)
        )
    return {key: outcome_of(evs) == Outcome.POSITIVE for key, evs in events.items()}


def precision_at(k: int, scores: Sequence[float], useful: Sequence[bool]) -> float:
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(np.mean(np.asarray(useful)[order]))


async def test_learned_ranking_beats_raw_confidence_on_held_out_reviews(
    start_service: StartService, feedback_service: RunningService
) -> None:
    history = generate_history(seed=11, reviews=700, findings_per_review=10, end=END)
    train, holdout = split_holdout(history, holdout_fraction=0.25, seed=11)
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    service = await start_learning(start_service)
    learning = learning_pb2_grpc.LearningServiceStub(service.channel)

    ids = await load_reviews(feedback, train.reviews, metadata=auth("ingest"), request_prefix="t")
    await load_feedback(feedback, train.feedback, ids, metadata=auth("ingest"))
    await wait_for_fold(learning)
    tune = await learning.TuneConfidenceThresholds(
        learning_pb2.TuneConfidenceThresholdsRequest(request_id="tune-1", reason="test"),
        metadata=auth("operator"),
    )
    assert tune.applied
    assert tune.model.samples > 0
    assert tune.model.calibration.samples > 0

    # Rank every held-out review as it would arrive (inline), against the truth.
    truth = true_outcomes(holdout)
    learned: list[float] = []
    raw: list[float] = []
    calibrated: list[float] = []
    useful: list[bool] = []
    by_repository: dict[str, tuple[list[float], list[float], list[bool]]] = {}
    for r, review in enumerate(holdout.reviews):
        response = await learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url=review.repository_url,
                findings=[finding_input(f) for f in review.findings],
            ),
            metadata=auth("reader"),
        )
        assert response.learning_applied
        by_index = {item.ref.index: item for item in response.findings}
        scores, raws, labels = [], [], []
        for f, finding in enumerate(review.findings):
            if (r, f) not in truth:
                continue
            item = by_index[f]
            scores.append(item.score)
            # The explanation is the score: the terms add up to the logit of the probability.
            terms = sum(t.contribution for t in item.explanation.terms)
            assert terms == pytest.approx(item.explanation.logit, abs=1e-9)
            assert item.calibrated_probability == pytest.approx(
                1 / (1 + math.exp(-item.explanation.logit)), abs=1e-9
            )
            raws.append(finding.confidence)
            labels.append(truth[(r, f)])
            calibrated.append(item.calibrated_probability)
        learned += scores
        raw += raws
        useful += labels
        pooled = by_repository.setdefault(review.repository_url, ([], [], []))
        pooled[0].extend(scores)
        pooled[1].extend(raws)
        pooled[2].extend(labels)

    # Precision@10 per repository: of the ten findings ranked first, how many were acted on.
    per_repository_learned = [precision_at(10, s, u) for s, _, u in by_repository.values()]
    per_repository_raw = [precision_at(10, r, u) for _, r, u in by_repository.values()]
    learned_auc = roc_auc_score(useful, learned)
    raw_auc = roc_auc_score(useful, raw)
    precision_learned, precision_raw = np.mean(per_repository_learned), np.mean(per_repository_raw)
    print(
        f"\nAUC learned {learned_auc:.3f} vs raw {raw_auc:.3f}; "
        f"precision@10 learned {precision_learned:.3f} vs raw {precision_raw:.3f}"
    )
    assert learned_auc > raw_auc + 0.03
    assert precision_learned >= precision_raw
    ece = expected_calibration_error(np.asarray(calibrated), np.asarray(useful, dtype=float))
    raw_ece = expected_calibration_error(np.asarray(raw), np.asarray(useful, dtype=float))
    print(f"ECE calibrated {ece:.3f} vs raw {raw_ece:.3f}")
    assert ece < 0.05 < raw_ece

    # A noisy rule's findings are hidden where the record says so; a good rule's are not.
    noisiest = min(history.rules, key=lambda rule: rule.usefulness)
    best = max(history.rules, key=lambda rule: rule.usefulness)
    where = Counter(
        review.repository_url
        for review in train.reviews
        for finding in review.findings
        if finding.rule_id == noisiest.rule_id
    )
    # Probes as the bot reports these rules: their usual severity and confidence.
    typical = {
        rule.rule_id: [
            f for review in train.reviews for f in review.findings if f.rule_id == rule.rule_id
        ]
        for rule in (noisiest, best)
    }
    probes = [
        sample_finding(
            0,
            rule_id=rule.rule_id,
            category=rule.category,
            severity=rule.severity,
            confidence=float(np.median([f.confidence for f in typical[rule.rule_id]])),
            client_finding_id=f"probe-{rule.rule_id}",
            message=f"probe {i}",
            file_path=f"src/probe_{i}.py",
        )
        for i, rule in enumerate((noisiest, best))
    ]
    response = await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url=where.most_common(1)[0][0], findings=probes
        ),
        metadata=auth("reader"),
    )
    by_rule = {item.rule_id: item for item in response.findings}
    noisy = by_rule[noisiest.rule_id]
    assert noisy.suppressed, noisy
    assert noisy.suppression_reason in (
        learning_pb2.SUPPRESSION_REASON_NOISY_RULE,
        learning_pb2.SUPPRESSION_REASON_BELOW_THRESHOLD,
    )
    assert noisy.explanation.upper_bound >= noisy.calibrated_probability
    assert response.hidden_count == 1
    assert response.expected_useful_hidden == pytest.approx(noisy.calibrated_probability)
    assert not by_rule[best.rule_id].suppressed

    # Metrics carry intervals and smoothed values; thresholds are fresh after the tune.
    metrics = await learning.GetLearningMetrics(
        learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_RULE),
        metadata=auth("reader"),
    )
    rule_metric = next(m for m in metrics.metrics if m.key == noisiest.rule_id)
    assert (
        rule_metric.acceptance.wilson95.lower
        <= rule_metric.acceptance.value
        <= rule_metric.acceptance.wilson95.upper
    )
    assert rule_metric.not_useful.value > 0.5
    thresholds = await learning.GetConfidenceThresholds(
        learning_pb2.GetConfidenceThresholdsRequest(), metadata=auth("reader")
    )
    assert not thresholds.stale
    assert thresholds.thresholds
    assert thresholds.model.version == tune.model.version
    assert thresholds.model.calibration.samples > 0


async def test_a_dismissed_finding_is_not_raised_again_on_the_next_push(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    repository = "https://git.example.com/acme/web"
    first = await feedback.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url=repository,
            team="web",
            pull_request=42,
            head_commit="c1",
            findings=[sample_finding(0), sample_finding(1)],
        ),
        metadata=auth("ingest"),
    )
    await feedback.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(
            event=event(
                "dismiss-1", first.findings[0].finding_id, common_pb2.FEEDBACK_KIND_DISMISSED
            )
        ),
        metadata=auth("ingest"),
    )
    await wait_for_fold(learning)
    # The next push: the same two findings, lines shifted.
    next_push = [
        sample_finding(0, line_start=90, line_end=91),
        sample_finding(1, line_start=95, line_end=96),
    ]
    response = await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url=repository, pull_request=42, findings=next_push
        ),
        metadata=auth("reader"),
    )
    by_index = {item.ref.index: item for item in response.findings}
    assert by_index[0].suppressed
    assert by_index[0].suppression_reason == learning_pb2.SUPPRESSION_REASON_PREVIOUSLY_DISMISSED
    assert not by_index[1].suppressed
    # On another pull request the same finding is fair game.
    other = await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url=repository, pull_request=43, findings=next_push
        ),
        metadata=auth("reader"),
    )
    assert not any(item.suppressed for item in other.findings)


async def test_exploration_is_reproducible_with_a_seed(start_service: StartService) -> None:
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    findings = [sample_finding(i) for i in range(20)]

    async def rank(seed: int) -> list[tuple[int, float]]:
        response = await learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url="https://git.example.com/acme/api",
                findings=findings,
                options=learning_pb2.RankOptions(exploration=True, seed=seed),
            ),
            metadata=auth("reader"),
        )
        return [(item.ref.index, item.score) for item in response.findings]

    assert await rank(7) == await rank(7)
    assert await rank(7) != await rank(8)


async def test_learning_disabled_passes_findings_through_untouched(
    start_service: StartService,
) -> None:
    learning = learning_pb2_grpc.LearningServiceStub(
        (await start_learning(start_service, learning_enabled=False)).channel
    )
    findings = [sample_finding(i, confidence=0.01 * i) for i in range(6)]
    findings.append(sample_finding(0))  # an exact duplicate stays too
    response = await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url="https://git.example.com/acme/api", findings=findings
        ),
        metadata=auth("reader"),
    )
    assert not response.learning_applied
    assert "LEARNING_ENABLED" in response.not_applied_reason
    assert [item.ref.index for item in response.findings] == list(range(7))
    assert not any(item.suppressed for item in response.findings)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.ClearField("findings"), "finding_ids"),
        (lambda r: r.findings[0].__setattr__("confidence", math.nan), "findings[0].confidence"),
        (lambda r: r.findings[0].__setattr__("confidence", 1.5), "findings[0].confidence"),
        (lambda r: r.options.__setattr__("diversity", 1.5), "options.diversity"),
        (lambda r: r.__setattr__("repository_url", ""), "repository_url"),
        (lambda r: r.findings.extend([sample_finding(i) for i in range(10_001)]), "findings"),
    ],
)
async def test_bad_rank_requests_are_invalid_argument(
    start_service: StartService, mutate: object, field: str
) -> None:
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    request = learning_pb2.RankSuggestionsRequest(
        repository_url="https://git.example.com/acme/api", findings=[sample_finding(0)]
    )
    mutate(request)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await learning.RankSuggestions(request, metadata=auth("reader"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    from tests.integration.feedback.test_ingestion import violations_of

    assert field in violations_of(caught.value)


async def test_unknown_finding_ids_get_item_errors_and_the_rest_is_ranked(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    recorded = await feedback.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url="https://git.example.com/acme/api",
            team="platform",
            pull_request=3,
            head_commit="c",
            findings=[sample_finding(i) for i in range(3)],
        ),
        metadata=auth("ingest"),
    )
    ids = [f.finding_id for f in recorded.findings]
    response = await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url="https://git.example.com/acme/api", finding_ids=[ids[0], 999_999, ids[2]]
        ),
        metadata=auth("reader"),
    )
    assert [(e.index, e.code) for e in response.item_errors] == [(1, 5)]
    assert sorted(item.ref.finding_id for item in response.findings) == sorted([ids[0], ids[2]])


async def test_tune_dry_run_shows_the_diff_without_applying_it(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    history = generate_history(seed=21, reviews=120, findings_per_review=10, end=END)
    ids = await load_reviews(feedback, history.reviews, metadata=auth("ingest"), request_prefix="d")
    await load_feedback(feedback, history.feedback, ids, metadata=auth("ingest"))
    await wait_for_fold(learning)
    # Metrics page in key order; every rule shows up exactly once.
    keys: list[str] = []
    token = ""
    for _ in range(100):
        page = await learning.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(
                dimension=learning_pb2.DIMENSION_RULE, page_size=7, page_token=token
            ),
            metadata=auth("reader"),
        )
        keys += [m.key for m in page.metrics]
        token = page.next_page_token
        if not token:
            break
    assert keys == sorted(keys)
    assert set(keys) == {f.rule_id for r in history.reviews for f in r.findings}
    before = await learning.GetConfidenceThresholds(
        learning_pb2.GetConfidenceThresholdsRequest(), metadata=auth("reader")
    )
    assert before.stale  # never tuned
    dry = await learning.TuneConfidenceThresholds(
        learning_pb2.TuneConfidenceThresholdsRequest(dry_run=True), metadata=auth("operator")
    )
    assert not dry.applied
    assert dry.changes
    still = await learning.GetConfidenceThresholds(
        learning_pb2.GetConfidenceThresholdsRequest(), metadata=auth("reader")
    )
    assert list(still.thresholds) == list(before.thresholds)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await learning.TuneConfidenceThresholds(
            learning_pb2.TuneConfidenceThresholdsRequest(dry_run=True), metadata=auth("reader")
        )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    applied = await learning.TuneConfidenceThresholds(
        learning_pb2.TuneConfidenceThresholdsRequest(request_id="t1", reason="weekly"),
        metadata=auth("operator"),
    )
    assert applied.applied
    assert len(applied.changes) == len(dry.changes)
    again = await learning.TuneConfidenceThresholds(
        learning_pb2.TuneConfidenceThresholdsRequest(request_id="t1", reason="weekly"),
        metadata=auth("operator"),
    )
    assert len(again.changes) == len(applied.changes)  # replayed, not re-tuned
    after = await learning.GetConfidenceThresholds(
        learning_pb2.GetConfidenceThresholdsRequest(), metadata=auth("reader")
    )
    assert not after.stale
    assert len(after.thresholds) == len(
        {c.category for c in applied.changes if c.scope.type == common_pb2.SCOPE_TYPE_GLOBAL}
    )


async def test_a_notification_wakes_the_fold_before_the_poll(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub(
        (await start_learning(start_service, fold_poll_seconds=600)).channel
    )
    await asyncio.sleep(0.5)  # the listener connects
    recorded = await feedback.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url="https://git.example.com/acme/api",
            team="platform",
            pull_request=3,
            head_commit="c",
            findings=[sample_finding(0)],
        ),
        metadata=auth("ingest"),
    )
    await feedback.RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(event=event("n-1", recorded.findings[0].finding_id)),
        metadata=auth("ingest"),
    )
    await wait_for_fold(learning)
    metrics = await learning.GetLearningMetrics(
        learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
        metadata=auth("reader"),
    )
    assert metrics.metrics[0].positive == 1


async def test_metrics_of_unknown_scopes_are_not_found(start_service: StartService) -> None:
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await learning.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(
                scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id="nobody")
            ),
            metadata=auth("reader"),
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await learning.GetConfidenceThresholds(
            learning_pb2.GetConfidenceThresholdsRequest(
                scope=common_pb2.Scope(
                    type=common_pb2.SCOPE_TYPE_REPOSITORY, id="https://git.example.com/no/such"
                )
            ),
            metadata=auth("reader"),
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_patterns_find_the_noisy_rules_and_the_teams_weaknesses(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub(
        (await start_learning(start_service, patterns_refresh_seconds=2)).channel
    )
    history = generate_history(seed=31, reviews=300, findings_per_review=10, end=END)
    ids = await load_reviews(feedback, history.reviews, metadata=auth("ingest"), request_prefix="p")
    await load_feedback(feedback, history.feedback, ids, metadata=auth("ingest"))
    await wait_for_fold(learning)
    usefulness = {rule.rule_id: rule.usefulness for rule in history.rules}

    async def patterns(kind: int, token: str = "") -> learning_pb2.ListPatternsResponse:
        return await learning.ListPatterns(
            learning_pb2.ListPatternsRequest(kind=kind, page_size=5, page_token=token),  # type: ignore[arg-type]
            metadata=auth("reader"),
        )

    deadline = asyncio.get_running_loop().time() + 20
    while not (anti := await patterns(learning_pb2.PATTERN_KIND_ANTI_PATTERN)).patterns:
        assert asyncio.get_running_loop().time() < deadline, "patterns were never mined"
        await asyncio.sleep(0.2)
    # Anti-patterns come from rules developers statistically ignore; weaknesses from rules
    # they keep acting on.
    assert all(usefulness[p.rule_id] < 0.5 for p in anti.patterns)
    assert all(p.p_value < 0.01 for p in anti.patterns)
    weaknesses = await patterns(learning_pb2.PATTERN_KIND_TEAM_WEAKNESS)
    assert weaknesses.patterns
    assert all(usefulness[p.rule_id] > 0.5 for p in weaknesses.patterns)
    # Pages follow each other without repeats.
    seen: list[str] = []
    token = ""
    for _ in range(50):
        page = await patterns(learning_pb2.PATTERN_KIND_UNSPECIFIED, token)
        seen += [p.pattern_key for p in page.patterns]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) > 5


async def test_a_reused_tune_request_id_with_another_request_is_refused(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    history = generate_history(seed=22, reviews=80, findings_per_review=10, end=END)
    ids = await load_reviews(feedback, history.reviews, metadata=auth("ingest"), request_prefix="r")
    await load_feedback(feedback, history.feedback, ids, metadata=auth("ingest"))
    await wait_for_fold(learning)
    request = learning_pb2.TuneConfidenceThresholdsRequest(request_id="weekly-1", reason="weekly")
    # Two concurrent retries of one request: one tune, one replay of its answer, no error.
    first, second = await asyncio.gather(
        learning.TuneConfidenceThresholds(request, metadata=auth("operator")),
        learning.TuneConfidenceThresholds(request, metadata=auth("operator")),
    )
    assert first.model.version == second.model.version
    other = learning_pb2.TuneConfidenceThresholdsRequest(
        request_id="weekly-1", reason="weekly", target_not_useful_rate=0.2
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await learning.TuneConfidenceThresholds(other, metadata=auth("operator"))
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    from tests.integration.test_runtime import error_info

    assert error_info(caught.value).reason == "REQUEST_ID_REUSED"
