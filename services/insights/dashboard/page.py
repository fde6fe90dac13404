"""``GET /dashboard?team=…``: the page a team lead opens.

It renders the very report GetInsightsReport returns (the same cached answer), so the page and
the RPC always show the same numbers, and a cached page costs a template render. Charts are
inline SVG: the page needs nothing from the internet.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.insights.v1 import insights_pb2

from services.insights.answers import InsightsAnswers
from services.insights.dashboard.charts import interval_bar, line_chart
from services.insights.domain.scopes import ScopeRef, ScopeType
from services.insights.instruments import InsightsInstruments
from shared.errors import NotFound, Unavailable
from shared.http_side import HttpResponse

if TYPE_CHECKING:
    from jinja2 import Template

TEMPLATES = Path(__file__).with_name("templates")
METRIC_TITLES = {
    insights_pb2.TREND_METRIC_ACCEPTANCE_RATE: "Acceptance",
    insights_pb2.TREND_METRIC_NOT_USEFUL_RATE: "Not useful",
    insights_pb2.TREND_METRIC_FINDINGS: "Findings",
    insights_pb2.TREND_METRIC_FINDINGS_PER_REVIEW: "Findings per review",
}
RATE_METRICS = {
    insights_pb2.TREND_METRIC_ACCEPTANCE_RATE,
    insights_pb2.TREND_METRIC_NOT_USEFUL_RATE,
}
DIRECTIONS = {
    insights_pb2.TREND_DIRECTION_IMPROVING: ("improving", "good"),
    insights_pb2.TREND_DIRECTION_WORSENING: ("worsening", "bad"),
    insights_pb2.TREND_DIRECTION_STABLE: ("stable", "neutral"),
    insights_pb2.TREND_DIRECTION_INSUFFICIENT_DATA: ("insufficient data", "muted"),
}


def _time(stamp: Timestamp) -> str:
    if stamp.seconds == 0:
        return "—"
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _rate(rate: common_pb2.Rate, present: bool) -> dict[str, Any] | None:
    if not present:
        return None
    return {
        "value": rate.value,
        "lower": rate.wilson95.lower,
        "upper": rate.wilson95.upper,
        "smoothed": rate.smoothed,
        "successes": rate.successes,
        "trials": rate.trials,
        "bar": interval_bar(rate.value, rate.wilson95.lower, rate.wilson95.upper, low=0, high=1),
    }


def _minutes(value: float) -> str:
    if value <= 0:
        return "—"
    if value < 120:
        return f"{value:.0f} min"
    if value < 48 * 60:
        return f"{value / 60:.1f} h"
    return f"{value / 1440:.1f} d"


def view_model(report: insights_pb2.GetInsightsReportResponse) -> dict[str, Any]:
    """Everything the template shows, taken from the report (nothing recomputed here)."""
    m = report.metrics.metrics
    trends = []
    for trend in report.trends.trends:
        rate = trend.metric in RATE_METRICS
        labels = [
            datetime.fromtimestamp(p.week_start.seconds, UTC).strftime("%b %d")
            for p in trend.points
        ]
        values = [None if p.withheld else p.value for p in trend.points]
        word, tone = DIRECTIONS.get(trend.direction, ("", "muted"))
        trends.append(
            {
                "title": METRIC_TITLES.get(trend.metric, "?"),
                "category": trend.category,
                "metric": insights_pb2.TrendMetric.Name(trend.metric),
                "chart": line_chart(values, labels, rate=rate),
                "first_week": labels[0] if labels else "",
                "last_week": labels[-1] if labels else "",
                "direction": word,
                "tone": tone,
                "p_value": trend.p_value,
                "slope": trend.slope,
                "rate": rate,
                "summary": trend.summary,
            }
        )
    roi = report.roi
    roi_span = max(
        [abs(c.net_minutes_interval.lower) for c in roi.categories]
        + [abs(c.net_minutes_interval.upper) for c in roi.categories]
        + [1.0]
    )
    return {
        "generated": _time(report.generate_time),
        "data_as_of": _time(report.metrics.data_as_of),
        "from_cache": report.from_cache,
        "period": f"{_time(m.period_start)} – {_time(m.period_end)}",
        "metrics": {
            "findings": m.findings,
            "positive": m.positive,
            "negative": m.negative,
            "dismissed": m.dismissed,
            "pending": m.pending,
            "reviews": m.reviews,
            "repositories": m.repositories,
            "median": _minutes(m.median_minutes_to_action),
            "median_minutes": m.median_minutes_to_action,
            "timed": m.timed_actions,
            "acceptance": _rate(m.acceptance, m.HasField("acceptance")),
            "not_useful": _rate(m.not_useful, m.HasField("not_useful")),
            "withheld": m.rates_withheld_reason,
        },
        "categories": [
            {
                "name": c.category,
                "findings": c.findings,
                "positive": c.positive,
                "negative": c.negative,
                "dismissed": c.dismissed,
                "acceptance": _rate(c.acceptance, c.HasField("acceptance")),
                "not_useful": _rate(c.not_useful, c.HasField("not_useful")),
                "withheld": c.rates_withheld_reason,
                "median": _minutes(c.median_minutes_to_action),
            }
            for c in report.metrics.categories
        ],
        "rules": [
            {
                "rule": r.rule_id,
                "category": r.category,
                "findings": r.findings,
                "acceptance": _rate(r.acceptance, r.HasField("acceptance")),
                "not_useful": _rate(r.not_useful, r.HasField("not_useful")),
                "withheld": r.rates_withheld_reason,
            }
            for r in report.metrics.rules
        ],
        "trends": trends,
        "paths": list(report.learning_paths.paths),
        "paths_computed": _time(report.learning_paths.computed_time),
        "roi": {
            "net_minutes": roi.net_minutes,
            "net_hours": roi.net_minutes / 60,
            "net_cost": roi.net_cost_saved,
            "cost_lower": roi.net_cost_interval.lower,
            "cost_upper": roi.net_cost_interval.upper,
            "hours_lower": roi.net_minutes_interval.lower / 60,
            "hours_upper": roi.net_minutes_interval.upper / 60,
            "assumptions": roi.assumptions,
            "categories": [
                {
                    "name": c.category,
                    "net_hours": c.net_minutes / 60,
                    "lower_hours": c.net_minutes_interval.lower / 60,
                    "upper_hours": c.net_minutes_interval.upper / 60,
                    "cost": c.net_cost_saved,
                    "positive": c.positive,
                    "noise": c.negative + c.dismissed,
                    "bar": interval_bar(
                        c.net_minutes,
                        c.net_minutes_interval.lower,
                        c.net_minutes_interval.upper,
                        low=-roi_span,
                        high=roi_span,
                    ),
                }
                for c in roi.categories
            ],
        },
    }


class DashboardPage:
    def __init__(self, *, answers: InsightsAnswers, instruments: InsightsInstruments) -> None:
        self._answers = answers
        self._instruments = instruments
        self._template: Template | None = None

    def _page(self) -> Template:
        if self._template is None:
            # Jinja2 is imported on the first page view: a replica that only serves RPCs never
            # pays for it.
            from jinja2 import Environment, FileSystemLoader, select_autoescape

            environment = Environment(
                loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"])
            )
            environment.filters["pct"] = lambda v: f"{v * 100:.1f}%"
            environment.filters["num"] = lambda v: f"{v:,.0f}"
            environment.filters["money"] = lambda v: f"{v:,.0f}"
            environment.filters["hours"] = lambda v: f"{v:,.1f}"
            self._template = environment.get_template("dashboard.html")
        return self._template

    async def __call__(self, query: Mapping[str, list[str]]) -> HttpResponse:
        started = time.perf_counter()
        try:
            return await self._render(query)
        finally:
            self._instruments.endpoint_latency.record(
                time.perf_counter() - started, {"endpoint": "dashboard"}
            )

    async def _render(self, query: Mapping[str, list[str]]) -> HttpResponse:
        team = (query.get("team") or [""])[0].strip()
        try:
            self._answers.require_enabled()
            teams = await self._answers.teams()
            if not team:
                return self._html(200, teams=teams, team="", report=None, problem="")
            report = await self._answers.report(ScopeRef(ScopeType.TEAM, team))
        except Unavailable as exc:
            return self._html(503, teams=[], team=team, report=None, problem=exc.message)
        except NotFound:
            return self._html(
                404, teams=teams, team=team, report=None, problem=f"No team named {team!r}."
            )
        return self._html(200, teams=teams, team=team, report=view_model(report), problem="")

    def _html(self, status: int, **context: Any) -> HttpResponse:
        body = self._page().render(**context).encode()
        return HttpResponse(status, body, headers=(("Cache-Control", "no-store"),))
