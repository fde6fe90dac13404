"""The dashboard route over plain HTTP: status codes and what the page says."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import StartService
from tests.integration.insights.conftest import fold, start_insights, stub_of
from tests.integration.insights.history import GeneratedLog


async def test_dashboard_pages_and_their_status_codes(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    insights = await start_insights(start_service)
    await fold(stub_of(insights))
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{insights.runtime.metrics_port}"
    ) as http:
        picker = await http.get("/dashboard")
        page = await http.get("/dashboard", params={"team": "team-1"})
        missing = await http.get("/dashboard", params={"team": "<script>x</script>"})
    assert picker.status_code == 200
    assert all(f'href="/dashboard?team={name}"' in picker.text for name in generated.teams)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["server-timing"].startswith("app;dur=")
    assert 'id="m-findings"' in page.text
    assert "Learning paths" in page.text
    assert missing.status_code == 404
    assert "<script>x</script>" not in missing.text  # escaped, never echoed raw
    assert "&lt;script&gt;" in missing.text


async def test_dashboard_says_why_when_insights_are_off(start_service: StartService) -> None:
    insights = await start_insights(start_service, learning_enabled=False)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{insights.runtime.metrics_port}"
    ) as http:
        response = await http.get("/dashboard", params={"team": "any"})
    assert response.status_code == 503
    assert "LEARNING_ENABLED=false" in response.text
