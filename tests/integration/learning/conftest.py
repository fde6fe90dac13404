"""Fixtures of the learning tests: the feedback service to load data through."""

from __future__ import annotations

import pytest

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from tests.conftest import RunningService, StartService


@pytest.fixture
async def feedback_service(start_service: StartService) -> RunningService:
    return await start_service(build_feedback, FeedbackSettings)
