"""C. Component integration: pairs of components in different processes, through their RPCs."""

from __future__ import annotations

import json
from collections import Counter

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2

from services.cli.supervisor import SERVICES
from shared.outcome import Outcome
from tests.conftest import auth
from tests.integration.control.conftest import (
    eventually,
    kill_switch,
    reason_of,
    set_gate,
)
from tests.integration.feedback.conftest import finding_input
from tests.integration.test_integration_phase5.conftest import (
    Clients,
    Names,
    Seeded,
    findings,
    reactions,
    team_scope,
)

APPLIED = common_pb2.FEEDBACK_KIND_APPLIED
REJECTED = common_pb2.FEEDBACK_KIND_REJECTED
DISMISSED = common_pb2.FEEDBACK_KIND_DISMISSED
WAIT = Duration(seconds=20)


async def _rank(clients: Clients, repository: str) -> learning_pb2.RankSuggestionsResponse:
    return await clients.learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url=repository,
            findings=[finding_input(i, confidence=0.1 * (i + 1)) for i in range(5)],
        ),
        metadata=auth("reader"),
    )


class TestComponentIntegration:
    async def test_feedback_collector_and_learning_metrics(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(6))).findings]
        events = reactions(names, ids[:4], APPLIED, label="a") + reactions(
            names, ids[4:], REJECTED, label="r"
        )
        bad = feedback_pb2.FeedbackEvent(event_id=names.event_id("bad"), finding_id=ids[0])

        async def stream():  # type: ignore[no-untyped-def]
            for e in [*events, bad, *events[:2]]:  # an invalid event and two retries
                yield feedback_pb2.StreamFeedbackRequest(event=e)

        summary = await clients.feedback.StreamFeedback(stream(), metadata=auth("ingest"))
        assert (summary.received_count, summary.stored_count) == (9, 6)
        assert (summary.duplicate_count, summary.failed_count) == (2, 1)
        assert [e.index for e in summary.errors] == [6]
        metric = await clients.folded(names.repository, reactions=6)
        assert (metric.positive, metric.negative, metric.pending) == (4, 2, 0)

    async def test_confidence_tuner_affects_ranker(
        self, clients: Clients, names: Names, seeded: Seeded
    ) -> None:
        before = await clients.learning.GetConfidenceThresholds(
            learning_pb2.GetConfidenceThresholdsRequest(), metadata=auth("reader")
        )
        ids = [f.finding_id for f in (await clients.record(names, findings(10))).findings]
        await clients.react(reactions(names, ids, REJECTED, label="r"))
        await clients.folded(names.repository, reactions=10)
        tuned = await clients.tune()
        assert tuned.applied
        assert tuned.model.version != before.model.version
        assert tuned.model.samples > before.model.samples

        async def ranks_with_it() -> bool:
            response = await _rank(clients, names.repository)
            return response.model_version.startswith(tuned.model.version)

        await eventually(ranks_with_it, within=30, what="the ranker picks up the tuned model")
        after = await clients.learning.GetConfidenceThresholds(
            learning_pb2.GetConfidenceThresholdsRequest(), metadata=auth("reader")
        )
        assert after.model.version == tuned.model.version
        assert not after.stale

    async def test_pattern_learner_detects_new_patterns(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        usefulness = {rule.rule_id: rule.usefulness for rule in seeded.history.rules}
        found: list[learning_pb2.Pattern] = []

        async def mined() -> bool:
            response = await clients.learning.ListPatterns(
                learning_pb2.ListPatternsRequest(page_size=1000), metadata=auth("reader")
            )
            found[:] = [p for p in response.patterns if p.rule_id in usefulness]
            return any(p.kind == learning_pb2.PATTERN_KIND_ANTI_PATTERN for p in found)

        await eventually(mined, within=60, what="patterns are mined from the seeded history")
        anti = [p for p in found if p.kind == learning_pb2.PATTERN_KIND_ANTI_PATTERN]
        weak = [p for p in found if p.kind == learning_pb2.PATTERN_KIND_TEAM_WEAKNESS]
        assert all(usefulness[p.rule_id] < 0.5 for p in anti)
        assert all(usefulness[p.rule_id] > 0.5 for p in weak)
        assert all(p.acceptance.trials <= p.occurrences for p in found)

    async def test_deduplication_in_ranking_flow(self, clients: Clients, names: Names) -> None:
        # The same message a few lines apart with other code: a near duplicate, not an exact one.
        first = findings(1, start=3)[0]
        echo = findings(
            1, start=3, client_finding_id="echo", line_start=16, line_end=17, code_context="y = 2"
        )[0]
        unrelated = findings(1, start=7, file_path="src/other.py")[0]
        response = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url=names.repository, findings=[first, echo, unrelated]
            ),
            metadata=auth("reader"),
        )
        by_index = {item.ref.index: item for item in response.findings}
        assert by_index[0].fingerprint != by_index[1].fingerprint
        suppressed = [item for item in response.findings if item.suppressed]
        assert len(suppressed) == 1
        assert suppressed[0].suppression_reason == learning_pb2.SUPPRESSION_REASON_DUPLICATE
        assert {suppressed[0].ref.index, suppressed[0].duplicate_of.index} == {0, 1}
        assert not by_index[2].suppressed

    async def test_pattern_learner_and_deduplication_share_the_fingerprint(
        self, clients: Clients, names: Names
    ) -> None:
        recorded = await clients.record(names, findings(2), pull_request=42)
        await clients.react(reactions(names, [recorded.findings[0].finding_id], DISMISSED))
        await clients.folded(names.repository, reactions=1)
        # The next push of the pull request: the same findings, lines shifted.
        next_push = [
            findings(1, start=0, line_start=90, line_end=91)[0],
            findings(1, start=1, line_start=95, line_end=96)[0],
        ]
        response = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url=names.repository, pull_request=42, findings=next_push
            ),
            metadata=auth("reader"),
        )
        by_index = {item.ref.index: item for item in response.findings}
        assert by_index[0].fingerprint == recorded.findings[0].fingerprint
        assert (
            by_index[0].suppression_reason == learning_pb2.SUPPRESSION_REASON_PREVIOUSLY_DISMISSED
        )
        assert not by_index[1].suppressed
        other_pr = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(
                repository_url=names.repository, pull_request=43, findings=next_push
            ),
            metadata=auth("reader"),
        )
        assert not any(item.suppressed for item in other_pr.findings)

    async def test_insights_uses_all_learning_data(self, clients: Clients, seeded: Seeded) -> None:
        team = seeded.teams[1]
        response = await clients.insights.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=team_scope(team)), metadata=auth("reader")
        )
        expected: Counter[str] = Counter()
        for review, ids in zip(seeded.history.reviews, seeded.finding_ids, strict=True):
            if review.team == team:
                for finding_id, finding in zip(ids, review.findings, strict=True):
                    if seeded.outcomes.get(finding_id) == Outcome.POSITIVE:
                        expected[finding.category] += 1
        assert {c.category: c.positive for c in response.categories if c.positive} == dict(expected)
        metrics = response.metrics
        assert metrics.positive + metrics.negative + metrics.dismissed + metrics.pending == (
            metrics.findings
        )
        assert sum(r.findings for r in response.rules) == metrics.findings
        assert metrics.reviews == sum(1 for r in seeded.history.reviews if r.team == team)

    async def test_insights_generator_and_team_metrics_agree(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        scope = team_scope(seeded.teams[0])
        report = await clients.insights.GetInsightsReport(
            insights_pb2.GetInsightsReportRequest(scope=scope), metadata=auth("reader")
        )
        metrics = await clients.insights.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=scope), metadata=auth("reader")
        )
        roi = await clients.insights.GetRoi(
            insights_pb2.GetRoiRequest(scope=scope), metadata=auth("reader")
        )
        paths = await clients.insights.GetLearningPaths(
            insights_pb2.GetLearningPathsRequest(scope=scope), metadata=auth("reader")
        )
        assert report.metrics.metrics.findings == metrics.metrics.findings > 0
        assert report.metrics.metrics.positive == metrics.metrics.positive
        assert [c.category for c in report.metrics.categories] == [
            c.category for c in metrics.categories
        ]
        assert report.roi.net_minutes == pytest.approx(roi.net_minutes)
        assert [p.category for p in report.learning_paths.paths] == [
            p.category for p in paths.paths
        ]
        assert report.trends.trends

    async def test_ranking_and_insights_agree_on_noisy_rules(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        team = seeded.teams[0]
        response = await clients.insights.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(scope=team_scope(team)), metadata=auth("reader")
        )
        rated = [r for r in response.rules if not r.rates_withheld_reason and r.acceptance.trials]
        assert len(rated) >= 2
        noisiest, best = rated[0], max(rated, key=lambda r: r.acceptance.value)
        assert noisiest.acceptance.value < best.acceptance.value  # lowest acceptance first
        repository = next(r.repository_url for r in seeded.history.reviews if r.team == team)
        pair = [
            findings(1, start=0, rule_id=rule.rule_id, category=rule.category)[0]
            for rule in (noisiest, best)
        ]
        pair[1].client_finding_id = "other"
        ranked = await clients.learning.RankSuggestions(
            learning_pb2.RankSuggestionsRequest(repository_url=repository, findings=pair),
            metadata=auth("reader"),
        )
        probability = {item.rule_id: item.calibrated_probability for item in ranked.findings}
        assert probability[noisiest.rule_id] < probability[best.rule_id]

    async def test_kill_switch_reaches_ranking_and_insights_and_feedback_is_kept(
        self, clients: Clients, names: Names
    ) -> None:
        ids = [f.finding_id for f in (await clients.record(names, findings(2))).findings]
        engaged = await kill_switch(
            clients.control, True, "integration drill", wait_for_replicas=WAIT
        )
        try:
            assert engaged.propagation.converged
            passed = await _rank(clients, names.repository)
            assert not passed.learning_applied
            assert "integration drill" in passed.not_applied_reason
            assert [item.ref.index for item in passed.findings] == list(range(5))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await clients.insights.GetTeamMetrics(
                    insights_pb2.GetTeamMetricsRequest(scope=team_scope(names.team)),
                    metadata=auth("reader"),
                )
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert reason_of(refused.value) == "INSIGHTS_DISABLED"
            stored = await clients.react(reactions(names, ids, APPLIED))
            assert stored.stored_count == 2  # no data is lost to a gate
        finally:
            released = await kill_switch(
                clients.control, False, "drill over", wait_for_replicas=WAIT
            )
        assert released.propagation.converged
        assert (await _rank(clients, names.repository)).learning_applied

    async def test_repository_gate_switches_ranking_off_only_there(
        self, clients: Clients, names: Names
    ) -> None:
        other = names.other_repository("web")
        await set_gate(
            clients.control,
            common_pb2.FEATURE_RANKING,
            False,
            names.repository,
            reason="noisy here",
            wait_for_replicas=WAIT,
        )
        try:
            off = await _rank(clients, names.repository)
            assert not off.learning_applied
            assert off.not_applied_reason
            assert (await _rank(clients, other)).learning_applied
        finally:
            await clients.control.ClearFeatureGate(
                control_pb2.ClearFeatureGateRequest(
                    feature=common_pb2.FEATURE_RANKING,
                    repository_url=names.repository,
                    reason="done",
                ),
                metadata=auth("operator"),
            )

        async def back_on() -> bool:
            return (await _rank(clients, names.repository)).learning_applied

        await eventually(back_on, within=30, what="ranking is back on in the repository")

    async def test_every_replica_heartbeats_and_applies_the_gates(self, clients: Clients) -> None:
        async def converged() -> bool:
            response = await clients.control.GetGatePropagation(
                control_pb2.GetGatePropagationRequest(), metadata=auth("reader")
            )
            live = {r.service for r in response.replicas if r.live}
            return response.converged and set(SERVICES) - {"control"} <= live

        await eventually(converged, within=30, what="every service's replica heartbeats")
        response = await clients.control.GetGatePropagation(
            control_pb2.GetGatePropagationRequest(), metadata=auth("reader")
        )
        for replica in (r for r in response.replicas if r.live):
            assert replica.applied_version == response.current_version
            assert not replica.gates_stale

    async def test_gate_changes_are_audited_with_the_caller(
        self, clients: Clients, names: Names
    ) -> None:
        await set_gate(
            clients.control,
            common_pb2.FEATURE_SUPPRESSION,
            False,
            names.repository,
            reason="audit me",
            request_id=names.event_id("gate"),
        )
        await clients.control.ClearFeatureGate(
            control_pb2.ClearFeatureGateRequest(
                feature=common_pb2.FEATURE_SUPPRESSION,
                repository_url=names.repository,
                reason="audit me too",
            ),
            metadata=auth("operator"),
        )
        response = await clients.control.ListAuditEvents(
            control_pb2.ListAuditEventsRequest(repository_url=names.repository),
            metadata=auth("operator"),
        )
        assert [e.action for e in response.events] == ["gate.clear", "gate.set"]
        assert all(e.actor.startswith("operator:") for e in response.events)
        cleared, set_ = response.events
        assert (set_.reason, set_.request_id) == ("audit me", names.event_id("gate"))
        assert json.loads(set_.after_json)["enabled"] is False
        assert json.loads(cleared.before_json)["reason"] == "audit me"

    async def test_system_health_reports_every_component(
        self, clients: Clients, seeded: Seeded
    ) -> None:
        wanted = {"feedback_collector", "learning_engine", "ranking_engine", "insights_engine"}

        last: list[control_pb2.GetSystemHealthResponse] = []

        async def healthy() -> bool:
            report = await clients.control.GetSystemHealth(
                control_pb2.GetSystemHealthRequest(), metadata=auth("reader")
            )
            last[:] = [report]
            statuses = {c.name: c.status for c in report.components}
            return all(statuses.get(n) == control_pb2.HEALTH_STATUS_HEALTHY for n in wanted)

        try:
            await eventually(healthy, within=30, what="every component reports healthy")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{last[0].components}") from exc
        report = await clients.control.GetSystemHealth(
            control_pb2.GetSystemHealthRequest(), metadata=auth("reader")
        )
        assert all(c.live_replicas >= 1 for c in report.components if c.name in wanted)
        assert not report.kill_switch_engaged
        assert not report.confidence_threshold_stale
