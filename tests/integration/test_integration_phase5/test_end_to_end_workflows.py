"""A. End-to-end workflows: feedback → learning → ranking → insights, across the four processes."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2
from sklearn.metrics import roc_auc_score

from services.cli.loader import finding_input as synthetic_input
from shared.outcome import Outcome
from tests.conftest import auth
from tests.integration.control.conftest import eventually
from tests.integration.test_integration_phase5.conftest import (
    Clients,
    Names,
    Seeded,
    backdate,
    findings,
    reactions,
    team_scope,
)
from tests.system import System

APPLIED = common_pb2.FEEDBACK_KIND_APPLIED
REJECTED = common_pb2.FEEDBACK_KIND_REJECTED
DISMISSED = common_pb2.FEEDBACK_KIND_DISMISSED


def _by_repository(seeded: Seeded) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = defaultdict(list)
    for review, finding_ids in zip(seeded.history.reviews, seeded.finding_ids, strict=True):
        ids[review.repository_url].extend(finding_ids)
    return ids


def _categories(seeded: Seeded) -> dict[int, str]:
    return {
        finding_id: finding.category
        for review, ids in zip(seeded.history.reviews, seeded.finding_ids, strict=True)
        for finding_id, finding in zip(ids, review.findings, strict=True)
    }


class TestEndToEndWorkflows:
    async def test_complete_feedback_to_insights_pipeline(
        self, clients: Clients, names: Names
    ) -> None:
        recorded = await clients.record(names, findings(6))
        ids = [f.finding_id for f in recorded.findings]
        await clients.react(reactions(names, ids[:3], APPLIED, label="a"))
        await clients.react(reactions(names, ids[3:5], REJECTED, label="r"))
        # Learning folded it ...
        metric = await clients.folded(names.repository, reactions=5)
        assert (metric.shown, metric.positive, metric.negative, metric.pending) == (6, 3, 2, 1)
        # ... ranking ranks the registered findings with the learned model ...
        ranked = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url=names.repository, pull_request=99, finding_ids=ids
            ),
            metadata=auth("reader"),
        )
        assert ranked.learning_applied
        assert sorted(item.ref.finding_id for item in ranked.findings) == sorted(ids)
        # ... and insights count the same reactions for the team.
        await clients.refresh_insights()
        report = await clients.insights.GetInsightsReport(
            insights_pb2.GetInsightsReportRequest(scope=team_scope(names.team)),
            metadata=auth("reader"),
        )
        team = report.metrics.metrics
        assert (team.findings, team.positive, team.negative, team.pending) == (6, 3, 2, 1)
        assert report.roi.categories

    async def test_multiple_feedback_updates_learning_metrics(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(8))).findings]
        await clients.react(reactions(names, ids[:2], APPLIED, label="first"))
        first = await clients.folded(names.repository, reactions=2)
        assert (first.positive, first.negative, first.dismissed, first.pending) == (2, 0, 0, 6)
        await clients.react(reactions(names, ids[2:5], DISMISSED, label="second"))
        second = await clients.folded(names.repository, reactions=5)
        assert (second.positive, second.negative, second.dismissed, second.pending) == (2, 0, 3, 3)
        # A later decisive reaction overturns a dismissal: the latest decisive one wins.
        await clients.react(reactions(names, ids[2:3], REJECTED, label="third", minutes_ago=0))

        async def overturned() -> bool:
            metric = (await clients.repository_metrics(names.repository)).metrics[0]
            return metric.negative == 1

        await eventually(overturned, within=30, what="the rejection is folded")
        third = (await clients.repository_metrics(names.repository)).metrics[0]
        assert (third.positive, third.negative, third.dismissed, third.pending) == (2, 1, 2, 3)
        assert third.acceptance.successes == 2
        assert third.acceptance.trials == 3

    async def test_ranking_reflects_learned_patterns(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        decided: Counter[str] = Counter()
        positive: Counter[str] = Counter()
        for review, ids in zip(seeded.history.reviews, seeded.finding_ids, strict=True):
            for finding_id, finding in zip(ids, review.findings, strict=True):
                outcome = seeded.outcomes.get(finding_id)
                if outcome in (Outcome.POSITIVE, Outcome.NEGATIVE, Outcome.DISMISSED):
                    decided[finding.rule_id] += 1
                    positive[finding.rule_id] += outcome == Outcome.POSITIVE
        share = {rule: positive[rule] / n for rule, n in decided.items() if n >= 20}
        best = max(share, key=share.__getitem__)
        worst = min(share, key=share.__getitem__)
        assert share[best] - share[worst] > 0.3, share
        template = next(f for r in seeded.history.reviews for f in r.findings if f.rule_id == best)
        rules = {rule.rule_id: rule for rule in seeded.history.rules}
        # The same finding under the two rules: only what was learned about each rule differs.
        good = synthetic_input(template)
        bad = synthetic_input(template)
        bad.rule_id, bad.category = worst, rules[worst].category
        bad.client_finding_id += "-bad"
        bad.severity = good.severity
        response = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url=seeded.history.reviews[0].repository_url, findings=[good, bad]
            ),
            metadata=auth("reader"),
        )
        by_rule = {item.rule_id: item for item in response.findings}
        assert by_rule[best].calibrated_probability > by_rule[worst].calibrated_probability

    async def test_insights_generated_from_feedback_history(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        team = seeded.teams[0]
        counts = seeded.team_counts(team)
        response = await clients.insights.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=team_scope(team)), metadata=auth("reader")
        )
        metrics = response.metrics
        assert metrics.findings == len(seeded.team_findings(team))
        assert metrics.positive == counts[Outcome.POSITIVE]
        assert metrics.negative == counts[Outcome.NEGATIVE]
        assert metrics.dismissed == counts[Outcome.DISMISSED]
        assert metrics.pending == counts[Outcome.PENDING]
        assert sum(c.findings for c in response.categories) == metrics.findings

    async def test_learning_improves_ranking_accuracy(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        learned: list[float] = []
        raw: list[float] = []
        useful: list[bool] = []
        for repository, ids in _by_repository(seeded).items():
            response = await clients.learning.RankSuggestions(
                learning_pb2.RankSuggestionsRequest(repository_url=repository, finding_ids=ids),
                metadata=auth("reader"),
            )
            for item in response.findings:
                outcome = seeded.outcomes.get(item.ref.finding_id)
                if outcome is None:
                    continue
                learned.append(item.calibrated_probability)
                raw.append(item.explanation.raw_confidence)
                useful.append(outcome == Outcome.POSITIVE)
        assert len(useful) > 300
        assert roc_auc_score(useful, learned) > roc_auc_score(useful, raw)

    async def test_confidence_calibration_affects_ranking(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        repository, ids = next(iter(_by_repository(seeded).items()))
        response = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(repository_url=repository, finding_ids=ids[:50]),
            metadata=auth("reader"),
        )
        thresholds = await clients.learning.GetConfidenceThresholds(
            learning_pb2.GetConfidenceThresholdsRequest(), metadata=auth("reader")
        )
        # The ranking's model is the tuned one (its version, plus the fold it has seen).
        assert thresholds.model.version
        assert response.model_version.startswith(thresholds.model.version)
        probabilities = np.array([i.calibrated_probability for i in response.findings])
        raw = np.array([i.explanation.raw_confidence for i in response.findings])
        assert not np.allclose(probabilities, raw)  # the score is the model's, not the bot's
        for item in response.findings:
            terms = sum(t.contribution for t in item.explanation.terms)
            assert abs(terms - item.explanation.logit) < 1e-6
            assert (
                abs(1 / (1 + np.exp(-item.explanation.logit)) - item.calibrated_probability) < 1e-6
            )

    async def test_deduplication_in_ranking_pipeline(self, clients: Clients, names: Names) -> None:
        original = findings(1, start=0)[0]
        moved = findings(1, start=0, client_finding_id="bot-moved", line_start=40, line_end=42)[0]
        other = findings(1, start=1)[0]
        recorded = await clients.record(names, [original, moved, other])
        fingerprints = [f.fingerprint for f in recorded.findings]
        assert fingerprints[0] == fingerprints[1] != fingerprints[2]
        ids = [f.finding_id for f in recorded.findings]
        response = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(repository_url=names.repository, finding_ids=ids),
            metadata=auth("reader"),
        )
        duplicates = [i for i in response.findings if i.suppressed]
        assert len(duplicates) == 1
        duplicate = duplicates[0]
        assert duplicate.suppression_reason == learning_pb2.SUPPRESSION_REASON_DUPLICATE
        assert {duplicate.ref.finding_id, duplicate.duplicate_of.finding_id} == set(ids[:2])
        assert ids[2] in {i.ref.finding_id for i in response.findings if not i.suppressed}

    async def test_roi_calculation_includes_all_feedback(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(10))).findings]
        await clients.react(reactions(names, ids[:4], APPLIED, label="a"))
        await clients.react(reactions(names, ids[4:7], REJECTED, label="r"))
        await clients.react(reactions(names, ids[7:9], DISMISSED, label="d"))
        await clients.refresh_insights()
        roi = await clients.insights.GetRoi(
            insights_pb2.GetRoiRequest(scope=team_scope(names.team)), metadata=auth("reader")
        )
        assert sum(c.positive for c in roi.categories) == 4
        assert sum(c.negative for c in roi.categories) == 3
        assert sum(c.dismissed for c in roi.categories) == 2
        used = roi.assumptions
        saved = used.minutes_saved_by_severity.get("medium", used.minutes_saved_per_positive)
        assert abs(roi.minutes_saved - 4 * saved) < 1e-6
        lost = 3 * used.minutes_lost_per_negative + 2 * used.minutes_lost_per_dismissed
        assert abs(roi.minutes_lost - lost) < 1e-6
        assert abs(roi.net_minutes - (roi.minutes_saved - roi.minutes_lost)) < 1e-6
        assert abs(roi.net_cost_saved - roi.net_minutes / 60 * used.hourly_cost) < 1e-6

    async def test_learning_paths_reflect_team_patterns(
        self, clients: Clients, names: Names
    ) -> None:
        security = findings(8, start=0, category="security", severity=common_pb2.SEVERITY_CRITICAL)
        style = findings(5, start=100, category="style", severity=common_pb2.SEVERITY_LOW)
        recorded = await clients.record(names, security + style)
        ids = [f.finding_id for f in recorded.findings]
        await clients.react(reactions(names, ids, APPLIED, label="a"))
        await clients.refresh_insights("rollups", "learning_paths")
        response = await clients.insights.GetLearningPaths(
            insights_pb2.GetLearningPathsRequest(scope=team_scope(names.team)),
            metadata=auth("reader"),
        )
        paths = {p.category: p for p in response.paths}
        assert response.paths[0].category == "security"
        assert paths["security"].real_findings == 8
        assert paths["security"].critical_findings == 8
        assert set(paths["security"].example_finding_ids) <= set(ids[:8])
        assert paths["style"].real_findings == 5
        assert paths["security"].weight > paths["style"].weight

    async def test_trends_updated_with_new_feedback(
        self, clients: Clients, names: Names, system: System
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(12))).findings]
        await backdate(system, ids, days=7)  # posted last week, which is complete

        async def last_week() -> tuple[int, int, float]:
            await clients.refresh_insights(rebuild=True)
            trends = await clients.insights.GetTrends(
                insights_pb2.GetTrendsRequest(
                    scope=team_scope(names.team),
                    metrics=[
                        insights_pb2.TREND_METRIC_FINDINGS,
                        insights_pb2.TREND_METRIC_ACCEPTANCE_RATE,
                    ],
                ),
                metadata=auth("reader"),
            )
            by_metric = {t.metric: t for t in trends.trends}
            posted = by_metric[insights_pb2.TREND_METRIC_FINDINGS].points[-1]
            acceptance = by_metric[insights_pb2.TREND_METRIC_ACCEPTANCE_RATE].points[-1]
            return int(posted.value), acceptance.samples, acceptance.value

        assert await last_week() == (12, 0, 0.0)
        await clients.react(reactions(names, ids[:6], APPLIED, label="a"))
        await clients.react(reactions(names, ids[6:8], REJECTED, label="r"))
        assert await last_week() == (12, 8, 0.75)
