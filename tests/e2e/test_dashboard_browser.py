"""The dashboard in a real headless browser: Debian's chromium driven by Playwright.

It renders, shows the numbers GetInsightsReport returns, the team picker works, and the console
stays clean. A screenshot is kept under tmp/artifacts/ (not committed) for a person to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from reviewlearn.insights.v1 import insights_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import StartService, auth
from tests.integration.insights.conftest import NOW, fold, load, start_insights, stub_of, team
from tests.integration.insights.history import generate

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts"


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium with apt-get")
    pytest.skip(f"no {CHROMIUM}: `apt-get install -y chromium` to run the browser test")


async def test_the_dashboard_shows_the_report_in_a_real_browser(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    await load(db_engine, generate(seed=5, teams=3, reviews=500, days=100, now=NOW))
    insights = await start_insights(start_service)
    stub = stub_of(insights)
    await fold(stub)
    await stub.RefreshInsights(
        insights_pb2.RefreshInsightsRequest(parts=["learning_paths"]), metadata=auth("operator")
    )
    report = await stub.GetInsightsReport(
        insights_pb2.GetInsightsReportRequest(scope=team("team-0")), metadata=auth("reader")
    )
    other = await stub.GetInsightsReport(
        insights_pb2.GetInsightsReportRequest(scope=team("team-2")), metadata=auth("reader")
    )
    m = report.metrics.metrics
    assert m.findings > 0
    assert report.learning_paths.paths
    base = f"http://127.0.0.1:{insights.runtime.metrics_port}"

    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console", lambda msg: problems.append(msg.text) if msg.type == "error" else None
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            response = await page.goto(f"{base}/dashboard?team=team-0")
            assert response is not None
            assert response.status == 200
            assert await page.title() == "team-0 — reviewlearn insights"

            async def value(selector: str) -> str:
                found = await page.get_attribute(selector, "data-value")
                assert found is not None, selector
                return found

            assert int(await value("#m-findings")) == m.findings
            assert int(await value("#m-positive")) == m.positive
            assert int(await value("#m-negative")) == m.negative
            assert int(await value("#m-dismissed")) == m.dismissed
            assert await page.inner_text("#m-acceptance") == f"{m.acceptance.value * 100:.1f}%"
            interval = await page.inner_text("#m-acceptance-interval")
            assert f"{m.acceptance.wilson95.lower * 100:.1f}%" in interval
            assert f"{m.acceptance.wilson95.upper * 100:.1f}%" in interval
            assert float(await value("#roi-hours")) == pytest.approx(report.roi.net_minutes / 60)
            assert await page.locator(".trend").count() == len(report.trends.trends)
            assert await page.locator(".trend svg").count() == len(report.trends.trends)
            for trend in report.trends.trends[:4]:
                card = page.locator(
                    f'.trend[data-metric="{insights_pb2.TrendMetric.Name(trend.metric)}"]'
                    '[data-category=""]'
                )
                assert await card.locator(".p-value").inner_text() == f"{trend.p_value:.3g}"
            assert await page.locator(".path").count() == len(report.learning_paths.paths)
            first_path = report.learning_paths.paths[0]
            assert first_path.recommendation in await page.inner_text(".path >> nth=0")
            assert await page.locator("#rules tbody tr").count() == len(report.metrics.rules)
            assert await page.locator("#categories tbody tr").count() == len(
                report.metrics.categories
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The team picker navigates to the other team's page.
            async with page.expect_navigation():
                await page.select_option("#team", "team-2")
            assert page.url.endswith("/dashboard?team=team-2")
            assert int(await value("#m-findings")) == other.metrics.metrics.findings
        finally:
            await browser.close()
    assert problems == []
