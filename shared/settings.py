"""Settings every service shares, read from ``REVIEWLEARN_*`` environment variables.

Each service subclasses ``ServiceSettings`` in its own ``settings.py`` (default ports and its own
knobs) and builds it once in ``__main__``; nothing reads the environment at import time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import TokenRegistry, parse_tokens
from shared.pagination import PageTokens, derived_key


def port_field(service: str, default: int, kind: Literal["GRPC", "METRICS"]) -> int:
    """A port that ``REVIEWLEARN_<SERVICE>_<KIND>_PORT`` or ``REVIEWLEARN_<KIND>_PORT`` sets."""
    return Field(
        default,
        validation_alias=AliasChoices(
            f"REVIEWLEARN_{service.upper()}_{kind}_PORT", f"REVIEWLEARN_{kind}_PORT"
        ),
        ge=0,
        le=65535,
    )


class ServiceSettings(BaseSettings):
    """Configuration common to the four services."""

    model_config = SettingsConfigDict(
        env_prefix="REVIEWLEARN_", extra="ignore", populate_by_name=True
    )

    service_name: str = "reviewlearn"
    """Overridden by each service; used in logs, metrics and traces."""

    database_url: str | None = None
    """SQLAlchemy URL (``postgresql+asyncpg://...``). ``reviewlearn up`` fills it in for the
    embedded database; a service started alone refuses to start without it."""

    redis_url: str | None = None
    """Optional. Unset → in-process cache and PostgreSQL NOTIFY only."""

    redis_prefix: str | None = None
    """Put in front of every Redis key and channel (``shared.redis_namespace``). Unset →
    ``reviewlearn:<database name>:``, so deployments sharing one Redis database stay apart."""

    tokens: str = ""
    """Bearer tokens as ``role=token,role=token`` (roles: ingest, reader, operator)."""

    page_token_key: SecretStr | None = None
    """HMAC key that signs page tokens; every replica of every service needs the same one.
    Unset → derived from ``tokens`` (the same secret everywhere already), so rotating the bearer
    tokens also invalidates outstanding page tokens. ``reviewlearn up`` generates one."""

    learning_enabled: bool = Field(
        True, validation_alias=AliasChoices("LEARNING_ENABLED", "REVIEWLEARN_LEARNING_ENABLED")
    )
    """The hard kill switch. ``LEARNING_ENABLED=false`` turns every learned behaviour off;
    feedback is still recorded."""

    host: str = "127.0.0.1"
    """Interface the gRPC and HTTP side ports bind to; ``0.0.0.0`` in containers."""

    grpc_port: int = 0
    metrics_port: int = 0

    health_check_seconds: float = Field(5.0, gt=0)
    """How often the database is checked; gRPC health is NOT_SERVING while it is unreachable."""

    grace_period_seconds: float = Field(10.0, ge=0)
    """How long in-flight RPCs may run after SIGTERM before they are cancelled."""

    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest request or response (32 MiB). The largest legitimate message is a full
    RecordFindings or RankSuggestions request: 10,000 findings at up to ~2 KiB each on the wire
    (ids, path and title at their usual lengths, ~1.5 KiB of message, fix and context) is
    ~20 MiB, so 32 MiB leaves 1.6× margin; 10,000 feedback events with 1 KiB comments are
    ~12 MiB. The per-field limits (20,000 characters of message, fix or context) are for the
    occasional long finding: a request at every ceiling at once is not legitimate — split it.
    Only authenticated calls are ever decoded."""

    keepalive_time_ms: int = Field(30_000, ge=1000)
    keepalive_timeout_ms: int = Field(10_000, ge=1000)
    max_concurrent_rpcs: int | None = None

    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_statement_timeout_ms: int = Field(30_000, ge=0)
    db_pool_pre_ping: bool = False
    """Ping every connection on checkout. Off: with asyncpg it costs three round trips per
    transaction; a dead connection is instead retried (writes) or answered UNAVAILABLE."""

    log_level: str = "INFO"
    log_json: bool = True

    otlp_endpoint: str | None = None
    """OTLP/gRPC collector for traces; traces stay in-process when unset."""

    replica_id: str = ""
    """Identifies this process in heartbeats; defaults to service@host:pid:random."""

    uvloop: bool = True
    """Run the event loop on uvloop (when installed): less CPU per RPC; false for asyncio's."""
    workers: int = Field(1, ge=1, le=64)
    """Processes ``reviewlearn serve`` runs for this service, sharing its gRPC port
    (SO_REUSEPORT), each with its own event loop and database pool; in Kubernetes, the pod's CPU
    limit. See docs/operations.md, "Workers"."""
    worker_index: int | None = Field(None, ge=0)
    """Set by ``reviewlearn serve --workers`` in each worker (0-based): the worker binds the gRPC
    port with SO_REUSEPORT. Not for hand configuration."""

    gate_poll_seconds: float = Field(5.0, gt=0)
    """Fallback check for a new gate version when no notification arrives (Unleash polls 15 s)."""
    gate_stale_seconds: float = Field(15.0, gt=0)
    """A replica that could not confirm its gates for this long reports them stale."""
    heartbeat_seconds: float = Field(2.0, gt=0)
    """How often each replica writes its heartbeat (and at once after applying new gates)."""
    heartbeat_sample_seconds: float = Field(15.0, gt=0)
    """Window of the stored measurements (RPCs, errors, latency, pool, RSS) per replica."""

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        # Accept the plain libpq form people paste and use the asyncpg driver for it.
        if value and value.startswith("postgresql://"):
            return "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if value and value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.removeprefix("postgres://")
        return value

    def token_registry(self) -> TokenRegistry:
        return parse_tokens(self.tokens)

    def page_tokens(self) -> PageTokens:
        if self.page_token_key is not None and self.page_token_key.get_secret_value():
            return PageTokens(self.page_token_key.get_secret_value())
        # With no bearer tokens no call is ever authenticated, so no page token is ever issued;
        # the derived key is then as good as any.
        return PageTokens(derived_key(self.tokens))

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SystemExit(
                "REVIEWLEARN_DATABASE_URL is not set. Start everything with `reviewlearn up` "
                "(embedded PostgreSQL), or point it at a database, "
                "e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/reviewlearn"
            )
        return self.database_url
