"""Token parsing, role rules and settings from the environment."""

from __future__ import annotations

import pytest

from services.feedback.settings import FeedbackSettings
from services.learning.settings import LearningSettings
from shared.auth import Role, generate_tokens, parse_tokens, role_allows


def test_tokens_parse_and_authenticate_by_role() -> None:
    registry = parse_tokens(" ingest=a1 , reader=r1,operator=o1,reader=r2")
    assert len(registry) == 4
    principal = registry.authenticate("r2")
    assert principal is not None
    assert principal.role is Role.READER
    # Audit trails name the caller by a digest of the token, never by the token itself.
    assert principal.token_id.startswith("reader:")
    assert "r2" not in principal.token_id
    assert principal.token_id != registry.authenticate("r1").token_id  # type: ignore[union-attr]
    assert registry.authenticate("nope") is None
    assert registry.authenticate("") is None


@pytest.mark.parametrize("spec", ["reader", "reader=", "admin=x", "=x"])
def test_malformed_token_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="role"):
        parse_tokens(spec)


def test_roles_are_not_a_ladder() -> None:
    assert role_allows(Role.OPERATOR, Role.INGEST)
    assert role_allows(Role.OPERATOR, Role.READER)
    assert role_allows(Role.READER, Role.READER)
    assert not role_allows(Role.READER, Role.OPERATOR)
    assert not role_allows(Role.INGEST, Role.READER)
    assert not role_allows(Role.READER, Role.INGEST)


def test_generated_tokens_round_trip_through_the_environment_form() -> None:
    tokens = generate_tokens()
    again = parse_tokens(tokens.as_env())
    assert again.as_env() == tokens.as_env()
    assert {
        p.role
        for p in (again.authenticate(e.split("=", 1)[1]) for e in tokens.as_env().split(","))
        if p
    } == set(Role)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEWLEARN_DATABASE_URL", "postgresql://u@db:5432/rl")
    monkeypatch.setenv("REVIEWLEARN_FEEDBACK_GRPC_PORT", "6001")
    monkeypatch.setenv("REVIEWLEARN_GRPC_PORT", "7001")
    monkeypatch.setenv("LEARNING_ENABLED", "false")
    feedback = FeedbackSettings()
    learning = LearningSettings()
    assert feedback.database_url == "postgresql+asyncpg://u@db:5432/rl"
    assert feedback.grpc_port == 6001  # the service-specific variable wins
    assert learning.grpc_port == 7001
    assert learning.metrics_port == 9102
    assert feedback.learning_enabled is False


def test_a_service_without_a_database_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIEWLEARN_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit, match="reviewlearn up"):
        FeedbackSettings().require_database_url()
