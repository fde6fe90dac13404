"""The demo a new user sees, run against real services: it loads, learns and explains."""

from __future__ import annotations

from rich.console import Console

from services.cli.demo import DemoTarget, run_demo
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from tests.conftest import RunningService, StartService, auth


async def test_the_demo_loads_a_history_and_shows_what_was_learned(
    start_service: StartService, feedback_service: RunningService
) -> None:
    learning = await start_service(build_learning, LearningSettings, fold_poll_seconds=0.2)
    console = Console(record=True, width=200)
    target = DemoTarget(
        feedback_address=feedback_service.address,
        learning_address=learning.address,
        ingest=auth("ingest"),
        reader=auth("reader"),
        operator=auth("operator"),
    )
    await run_demo(target, seed=3, reviews=150, console=console)
    shown = console.export_text()
    assert "rules: most useful and noisiest" in shown
    assert "thresholds on P(acted on)" in shown
    assert "raw order vs learned ranking" in shown
    assert "P(acted on)" in shown  # every shown finding is explained
    assert "does learning earn its keep" in shown
    assert "learned model" in shown
    assert "per-rule rate" in shown
