"""ORM models for every table. Each table has exactly one writing service (see the section
comments); other services may read it but change it only through the owner's RPCs.

``tx_id`` columns hold the writing transaction's id (``pg_current_xact_id()``). The learning fold
reads rows whose transaction finished before the oldest transaction still running, which is
exactly-once even when transactions commit out of id order (a bigserial watermark is not).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CURRENT_TX_ID = text("(pg_current_xact_id()::text::bigint)")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
        datetime: DateTime(timezone=True),
    }


def created_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


# ---------------------------------------------------------------- feedback service


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = created_at_column()


class Repository(Base):
    __tablename__ = "repositories"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = created_at_column()


class Review(Base):
    """One bot run on a pull request at a head commit."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), index=True
    )
    pull_request: Mapped[int] = mapped_column(Integer)
    head_commit: Mapped[str] = mapped_column(String(200))
    # Informational: which request created the review. Replays are decided by the caller-scoped
    # idempotency_records, so two callers may use the same id.
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (CheckConstraint("pull_request > 0", name="pull_request_positive"),)


class Finding(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"))
    # Denormalised from the review so the hot queries (ranking, insights) need no join.
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    pull_request: Mapped[int] = mapped_column(Integer)
    client_finding_id: Mapped[str | None] = mapped_column(String(200))
    rule_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(64))
    severity: Mapped[int] = mapped_column(SmallInteger)
    confidence: Mapped[float] = mapped_column(Double)
    file_path: Mapped[str] = mapped_column(String(1024))
    line_start: Mapped[int] = mapped_column(Integer)
    line_end: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    suggested_fix: Mapped[str] = mapped_column(Text, server_default="")
    code_context: Mapped[str] = mapped_column(Text, server_default="")
    fingerprint: Mapped[str] = mapped_column(String(32))
    # Recurring (rule, normalised message) key, see shared.fingerprint.pattern_key.
    pattern_key: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = created_at_column()
    tx_id: Mapped[int] = mapped_column(BigInteger, server_default=CURRENT_TX_ID)

    __table_args__ = (
        UniqueConstraint("repository_id", "client_finding_id"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        CheckConstraint("severity BETWEEN 1 AND 5", name="severity_range"),
        CheckConstraint("line_start >= 0 AND line_end >= line_start", name="line_range"),
        Index("ix_findings_review_id", "review_id"),
        Index("ix_findings_created_at", "created_at"),
        Index("ix_findings_category_severity_created", "category", "severity", "created_at"),
        Index(
            "ix_findings_repository_pr_fingerprint", "repository_id", "pull_request", "fingerprint"
        ),
        Index("ix_findings_tx_id", "tx_id"),
    )


class Feedback(Base):
    """One developer reaction. Append-only; ``event_id`` is the idempotency key."""

    __tablename__ = "suggestion_feedback"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    repository_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[int] = mapped_column(SmallInteger)
    actor_id: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, server_default="")
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = created_at_column()
    tx_id: Mapped[int] = mapped_column(BigInteger, server_default=CURRENT_TX_ID)

    __table_args__ = (
        CheckConstraint("kind BETWEEN 1 AND 7", name="kind_range"),
        Index("ix_suggestion_feedback_finding_id_kind", "finding_id", "kind"),
        Index("ix_suggestion_feedback_recorded_at", "recorded_at"),
        Index("ix_suggestion_feedback_repository_id_id", "repository_id", "id"),
        Index("ix_suggestion_feedback_tx_id", "tx_id"),
    )


class FindingDeletion(Base):
    """The audit trail of DeleteFinding: who deleted what, why, and what it was."""

    __tablename__ = "finding_deletions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    finding_id: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    snapshot: Mapped[dict[str, Any]]
    deleted_feedback_count: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime] = created_at_column()


# ---------------------------------------------------------------- learning service


class FoldState(Base):
    """How far the learning fold has read the feedback log (one row per stream)."""

    __tablename__ = "fold_state"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Every row with tx_id below this is folded; rows at or above it are not.
    watermark: Mapped[int] = mapped_column(BigInteger)
    # What the last fold saw: rows of transactions below seen_through and not in_progress were
    # visible to it, so folded, even while the watermark is held back (the backlog uses this).
    seen_through: Mapped[int] = mapped_column(BigInteger, server_default="0")
    in_progress: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), server_default=text("'{}'::bigint[]")
    )
    findings_folded: Mapped[int] = mapped_column(BigInteger, server_default="0")
    events_folded: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = created_at_column()


class FindingOutcome(Base):
    """A finding's current outcome and the dimensions it counts under.

    No foreign key to findings on purpose: when a finding is deleted the fold still needs its
    dimensions to take it out of the counts, and then removes the orphan.
    """

    __tablename__ = "finding_outcomes"

    finding_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigInteger)
    repository_id: Mapped[int] = mapped_column(BigInteger)
    pull_request: Mapped[int] = mapped_column(Integer)
    rule_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(64))
    severity: Mapped[int] = mapped_column(SmallInteger)
    confidence: Mapped[float] = mapped_column(Double)
    fingerprint: Mapped[str] = mapped_column(String(32))
    pattern_key: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[int] = mapped_column(SmallInteger)
    # The winning event's key (see shared.outcome): decisive, occurred_at, feedback id.
    win_decisive: Mapped[bool | None] = mapped_column(Boolean)
    win_occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    win_feedback_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = created_at_column()

    # Outcomes change in place as feedback arrives: free space on each page lets PostgreSQL
    # update rows without touching the indexes (HOT updates), and no index covers ``outcome``.
    __table_args__ = (
        Index("ix_finding_outcomes_repository_pr", "repository_id", "pull_request"),
        {"postgresql_with": {"fillfactor": 80}},
    )


class LearningMetric(Base):
    """Outcome counts per scope (global 0 / team / repository) and dimension key."""

    __tablename__ = "learning_metrics"

    scope_type: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    scope_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dimension: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    shown: Mapped[int] = mapped_column(BigInteger, server_default="0")
    positive: Mapped[int] = mapped_column(BigInteger, server_default="0")
    negative: Mapped[int] = mapped_column(BigInteger, server_default="0")
    dismissed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = created_at_column()

    # No CHECK (>= 0) here: PostgreSQL checks the proposed row of an upsert before it sees the
    # conflict, and the fold's proposed rows carry negative deltas. Tests check the totals.
    __table_args__ = (Index("ix_learning_metrics_dimension_key", "dimension", "key"),)


class LearnedModelRow(Base):
    """A fitted model of P(acted on), versioned; the active one serves, earlier ones are kept
    for rollback (see services.learning.domain.model for the document)."""

    __tablename__ = "learned_models"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    document: Mapped[dict[str, Any]]
    samples: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean)
    fitted_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, server_default="")
    fitted_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        # At most one active model.
        Index("uq_learned_models_active", "active", unique=True, postgresql_where=text("active")),
    )


class ConfidenceThresholdRow(Base):
    __tablename__ = "confidence_thresholds"

    scope_type: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    scope_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[float | None] = mapped_column(Double)
    source: Mapped[str] = mapped_column(String(200))
    target: Mapped[float] = mapped_column(Double)
    not_useful_upper: Mapped[float] = mapped_column(Double)
    sample_size: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = created_at_column()


class ThresholdChange(Base):
    """Every threshold change ever applied, with who and why."""

    __tablename__ = "threshold_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tune_id: Mapped[str] = mapped_column(String(200), index=True)
    scope_type: Mapped[int] = mapped_column(SmallInteger)
    scope_id: Mapped[int] = mapped_column(BigInteger)
    category: Mapped[str] = mapped_column(String(64))
    old_threshold: Mapped[float | None] = mapped_column(Double)
    new_threshold: Mapped[float | None] = mapped_column(Double)
    old_source: Mapped[str] = mapped_column(String(200))
    new_source: Mapped[str] = mapped_column(String(200))
    sample_size: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, server_default="")
    changed_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("ix_threshold_history_scope", "scope_type", "scope_id", "category"),)


class PatternRow(Base):
    __tablename__ = "pattern_metrics"

    scope_type: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    scope_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    pattern_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(64))
    normalized_message: Mapped[str] = mapped_column(Text)
    pattern_type: Mapped[int] = mapped_column(SmallInteger)
    occurrences: Mapped[int] = mapped_column(BigInteger)
    positive: Mapped[int] = mapped_column(BigInteger)
    negative: Mapped[int] = mapped_column(BigInteger)
    dismissed: Mapped[int] = mapped_column(BigInteger)
    recent_occurrences: Mapped[int] = mapped_column(BigInteger)
    prior_occurrences: Mapped[int] = mapped_column(BigInteger)
    p_value: Mapped[float] = mapped_column(Double)
    # positive / (positive + negative), shrunk toward the scope's acceptance (empirical Bayes).
    acceptance_smoothed: Mapped[float] = mapped_column(Double, server_default="0")
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("ix_pattern_metrics_pattern_type", "pattern_type"),)


class JobRun(Base):
    """One run of a batch job per (job, scheduled slot); written by the learning service, read
    by the control plane's rollout criteria and alerts (columns in docs/PHASE_5_ARCHITECTURE.md).
    ``status`` holds reviewlearn.learning.v1.JobStatus values."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(String(100))
    frequency: Mapped[int] = mapped_column(SmallInteger)
    # The learning service always sets it; the default (distinct per statement) is for rows
    # written by hand, such as tests of the readers.
    scheduled_for: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )
    status: Mapped[int] = mapped_column(SmallInteger, index=True)
    request_id: Mapped[str | None] = mapped_column(String(200), index=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str] = mapped_column(Text, server_default="")
    reason: Mapped[str] = mapped_column(Text, server_default="")
    holder: Mapped[str] = mapped_column(Text, server_default="")
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    repositories_done: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    repositories_failed: Mapped[list[dict[str, str]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    check_passed: Mapped[bool | None] = mapped_column(Boolean)
    duration_seconds: Mapped[float] = mapped_column(Double, server_default=text("0"))
    started_at: Mapped[datetime] = created_at_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_job_runs_job_name_started_at", "job_name", "started_at"),
        UniqueConstraint("job_name", "scheduled_for", name="uq_job_runs_job_name_scheduled_for"),
    )


class IdempotentResponse(Base):
    """A stored answer to a request_id, so a retried call returns the first answer.

    Superseded by ``IdempotencyRecord`` (caller-scoped, content-checked); still read by the
    learning service until it moves to shared.idempotency."""

    __tablename__ = "idempotent_responses"

    service: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    method: Mapped[str] = mapped_column(String(100))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = created_at_column()


class IdempotencyRecord(Base):
    """AIP-155: a request id, scoped by its caller, with a digest of the request and the first
    answer (see shared.idempotency). Each service writes only the rows of its own `service`."""

    __tablename__ = "idempotency_records"

    service: Mapped[str] = mapped_column(String(32), primary_key=True)
    caller: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    method: Mapped[str] = mapped_column(String(100))
    request_digest: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = created_at_column()


# ---------------------------------------------------------------- insights service


class InsightFoldState(Base):
    """How far the insights fold has read the feedback log (its own watermark, one row)."""

    __tablename__ = "insight_fold_state"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Every row with tx_id below this is folded into the rollups (see shared.log_horizon).
    watermark: Mapped[int] = mapped_column(BigInteger)
    # The latest finding_deletions id taken into account: deletions are folded only when the
    # deletion log has moved, so an idle fold never scans for orphans.
    deletions_seen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    findings_folded: Mapped[int] = mapped_column(BigInteger, server_default="0")
    events_folded: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = created_at_column()


class InsightFindingState(Base):
    """What one finding contributes to the rollups: its dimensions, outcome and first action.

    No foreign key to findings: when a finding is deleted the fold still needs its dimensions
    to take it out of the rollups, and then removes the orphan.
    """

    __tablename__ = "insight_finding_states"

    finding_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    review_id: Mapped[int] = mapped_column(BigInteger)
    # The UTC day of the review (it counts once, on that day, while any of its findings is here).
    review_day: Mapped[date] = mapped_column(Date)
    team_id: Mapped[int] = mapped_column(BigInteger)
    repository_id: Mapped[int] = mapped_column(BigInteger)
    rule_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(64))
    severity: Mapped[int] = mapped_column(SmallInteger)
    # The UTC day the finding was posted: the bucket it counts in.
    day: Mapped[date] = mapped_column(Date)
    outcome: Mapped[int] = mapped_column(SmallInteger)
    # The winning event's key (see shared.outcome): decisive, occurred_at, feedback id.
    win_decisive: Mapped[bool | None] = mapped_column(Boolean)
    win_occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    win_feedback_id: Mapped[int | None] = mapped_column(BigInteger)
    # The earliest decisive reaction, for time-to-first-action.
    first_action_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    # Outcomes change in place: free space on each page keeps those updates HOT, and no index
    # covers a column that changes (outcome, winner, first action).
    __table_args__ = (
        Index("ix_insight_finding_states_review_id", "review_id"),
        Index("ix_insight_finding_states_team_day", "team_id", "day"),
        {"postgresql_with": {"fillfactor": 80}},
    )


class InsightRollup(Base):
    """Findings per UTC day × repository × category × severity × rule × outcome.

    The base of every insight: metrics, trends, learning paths and ROI are SQL aggregates over
    these rows. No CHECK (>= 0): the fold's upserts carry negative deltas.
    """

    __tablename__ = "insight_rollups"

    repository_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    severity: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    outcome: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigInteger)
    findings: Mapped[int] = mapped_column(BigInteger)

    # Team reads scan a team's days; the index carries the counted columns so that they are
    # answered from the index alone (an index-only scan once the table is vacuumed).
    __table_args__ = (
        Index(
            "ix_insight_rollups_team_day",
            "team_id",
            "day",
            postgresql_include=["category", "severity", "rule_id", "outcome", "findings"],
        ),
    )


class InsightActionTime(Base):
    """Time from a finding to its first decisive reaction: a histogram per day and category.

    ``bucket`` b holds minutes in [2^(b/8) - 1, 2^((b+1)/8) - 1): 1/8-octave buckets, so a
    median read from them is within 9% of the exact one.
    """

    __tablename__ = "insight_action_times"

    repository_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigInteger)
    findings: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_insight_action_times_team_day", "team_id", "day"),)


class InsightReviewRollup(Base):
    """Reviews (bot runs with at least one finding) per UTC day and repository."""

    __tablename__ = "insight_review_rollups"

    repository_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigInteger)
    reviews: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_insight_review_rollups_team_day", "team_id", "day"),)


class InsightGlobalRollup(Base):
    """Findings per UTC day × category × outcome over every team: the parent that team rates
    are smoothed toward, small enough to read on every uncached request."""

    __tablename__ = "insight_global_rollups"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    findings: Mapped[int] = mapped_column(BigInteger)


class InsightTeamVersion(Base):
    """A counter per team, bumped whenever the team's insights change (fold or refresh).

    Cache keys carry it, so an entry computed before a change is never read after it.
    """

    __tablename__ = "insight_team_versions"

    team_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = created_at_column()


class TeamMetricsSnapshot(Base):
    """A team's metrics for a period, as persisted by RefreshInsights (one row per period)."""

    __tablename__ = "team_metrics"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("ix_team_metrics_team_id_created", "team_id", text("created_at DESC")),
        UniqueConstraint("team_id", "period_start", "period_end"),
    )


class TrendPointRow(Base):
    """One persisted weekly point of a team's trend (per metric, overall or per category)."""

    __tablename__ = "insights_trends"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[date] = mapped_column(Date)
    metric: Mapped[int] = mapped_column(SmallInteger)
    category: Mapped[str] = mapped_column(String(64), server_default="")
    value: Mapped[float] = mapped_column(Double)
    samples: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("ix_insights_trends_team_id_period", "team_id", "period"),
        UniqueConstraint("team_id", "period", "metric", "category"),
    )


class TrendPointArchive(Base):
    """Trend points older than the archive age (default a year), moved out of insights_trends."""

    __tablename__ = "insights_trends_archive"

    team_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    period: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    samples: Mapped[int] = mapped_column(BigInteger)
    archived_at: Mapped[datetime] = created_at_column()


class LearningPathRow(Base):
    __tablename__ = "learning_paths"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(64))
    weight: Mapped[float] = mapped_column(Double)
    evidence: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("ix_learning_paths_team_id_rank", "team_id", "rank"),
        UniqueConstraint("team_id", "rank"),
    )


class RoiReport(Base):
    __tablename__ = "roi_reports"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(BigInteger, index=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (UniqueConstraint("team_id", "period_start", "period_end"),)


class _CacheTable:
    """Layer 2 of the insights cache when no Redis is configured.

    ``cache_key`` carries the team's version, so a stale entry is never read; expired rows are
    deleted by the service's cache sweep.
    """

    cache_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    cached_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CachedMetrics(_CacheTable, Base):
    """Team metrics, ROI and whole reports."""

    __tablename__ = "cached_metrics"


class CachedPaths(_CacheTable, Base):
    __tablename__ = "cached_paths"


class CachedTrends(_CacheTable, Base):
    __tablename__ = "cached_trends"


# ---------------------------------------------------------------- control service


class GateState(Base):
    """The kill switch and the version that every gate change increments (one row).

    ``reason``, ``updated_by`` and ``kill_switch_changed_at`` describe the kill switch;
    ``updated_at`` is the time of the latest change of any gate (the version's time).
    """

    __tablename__ = "gate_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    kill_switch_engaged: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, server_default="")
    updated_by: Mapped[str] = mapped_column(String(200), server_default="")
    updated_at: Mapped[datetime] = created_at_column()
    kill_switch_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)


class FeatureGateRow(Base):
    __tablename__ = "feature_gates"

    feature: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, server_default="")
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = created_at_column()


class GateOverride(Base):
    """A per-repository switch that wins over the global gate."""

    __tablename__ = "gate_overrides"

    feature: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    repository_url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, server_default="")
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = created_at_column()


class AuditEvent(Base):
    """One control-plane mutation: who, what, before, after, why, and the request id it came
    with (its answer for retries is kept in ``idempotency_records``, as every service's)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str] = mapped_column(String(2048))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = created_at_column()
    request_id: Mapped[str | None] = mapped_column(String(200))
    feature: Mapped[int | None] = mapped_column(SmallInteger)
    repository_url: Mapped[str] = mapped_column(String(2048), server_default="")

    __table_args__ = (Index("ix_audit_events_created_at", "created_at"),)


class RolloutPhaseRow(Base):
    __tablename__ = "rollout_phases"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    phase: Mapped[int] = mapped_column(SmallInteger)
    percentage: Mapped[int] = mapped_column(SmallInteger)
    salt: Mapped[str] = mapped_column(String(100))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, server_default="")
    forced: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    success_metrics: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    issues_found: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    started_at: Mapped[datetime] = created_at_column()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Once-exposed repositories (rollout_exposures) stay in while this phase is current.
    sticky_exposure: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    __table_args__ = (
        CheckConstraint("phase BETWEEN 0 AND 4", name="phase_range"),
        CheckConstraint("percentage BETWEEN 0 AND 100", name="percentage_range"),
    )


class RolloutExposure(Base):
    """Every repository that was ever in the rollout, and since when."""

    __tablename__ = "rollout_exposures"

    repository_url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    first_phase: Mapped[int] = mapped_column(SmallInteger)
    first_exposed_at: Mapped[datetime] = created_at_column()


class AlertRuleRow(Base):
    __tablename__ = "alert_rules"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    signal: Mapped[str] = mapped_column(String(200))
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Double)
    for_seconds: Mapped[int] = mapped_column(Integer)
    severity: Mapped[int] = mapped_column(SmallInteger)
    channels: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    repeat_seconds: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    description: Mapped[str] = mapped_column(Text, server_default="")
    updated_at: Mapped[datetime] = created_at_column()
    keep_firing_seconds: Mapped[int] = mapped_column(Integer, server_default="0")
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    annotations: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # A critical safeguard that fires refuses AdvanceRollout (services/control/usecases/alerts).
    safeguard: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    __table_args__ = (
        CheckConstraint("comparison IN ('<', '<=', '>', '>=')", name="comparison_valid"),
    )


class AlertEvent(Base):
    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    rule_name: Mapped[str] = mapped_column(ForeignKey("alert_rules.name", ondelete="CASCADE"))
    state: Mapped[int] = mapped_column(SmallInteger)
    severity: Mapped[int] = mapped_column(SmallInteger)
    # None when the signal had no data at the last evaluation.
    value: Mapped[float | None] = mapped_column(Double)
    active_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notifications: Mapped[int] = mapped_column(Integer, server_default="0")
    # When a firing alert's condition last stopped holding (keep_firing_for counts from it).
    cleared_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    silenced: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    __table_args__ = (
        Index("ix_alert_events_rule_name_state", "rule_name", "state"),
        # At most one pending or firing alert per rule, whichever replica evaluated.
        Index(
            "ux_alert_events_active_rule",
            "rule_name",
            unique=True,
            postgresql_where=text("state IN (1, 2)"),
        ),
    )


class AlertSilence(Base):
    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    rule_names: Mapped[list[str]] = mapped_column(ARRAY(String(200)))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, server_default="")
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Label equality matchers (alertname, severity and the rule's labels); all must hold.
    matchers: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class AlertNotification(Base):
    """The transactional outbox of alert notifications: written in the evaluation's transaction,
    delivered after it commits by whichever replica claims the row (``claimed_until`` lease;
    ``claim_token`` names the claim, and only its holder records attempts or settles the row)."""

    __tablename__ = "alert_notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # None for SendTestNotification.
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_events.id", ondelete="CASCADE"), index=True
    )
    rule_name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # 0 pending, 1 delivered, 2 failed (services/control/domain/alert_delivery.py)
    status: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = created_at_column()
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_alert_notifications_pending", "id", postgresql_where=text("status = 0")),
    )


class AlertNotificationAttempt(Base):
    """Every delivery attempt of a notification and its outcome."""

    __tablename__ = "alert_notification_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("alert_notifications.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = created_at_column()
    # "delivered", "retry" (5xx, timeout, connection refused), "failed" (permanent)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, server_default="")
    duration_seconds: Mapped[float] = mapped_column(Double)


class ReplicaHeartbeat(Base):
    """The latest state of every replica of every service (one row each, upserted).

    Written by every replica itself (``shared.heartbeat``) every few seconds and at once when it
    applies a new gate version; read by the control service. A replica is live while its
    ``heartbeat_at`` is recent and ``stopped_at`` is unset. Counters are cumulative since start.
    """

    __tablename__ = "replica_heartbeats"

    replica_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    service: Mapped[str] = mapped_column(String(32))
    applied_gate_version: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = created_at_column()
    host: Mapped[str] = mapped_column(String(255), server_default="")
    pid: Mapped[int] = mapped_column(Integer, server_default="0")
    gates_stale: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    gates_refreshed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hard_kill: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rpc_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    error_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    latency_p50_ms: Mapped[float | None] = mapped_column(Double)
    latency_p95_ms: Mapped[float | None] = mapped_column(Double)
    latency_p99_ms: Mapped[float | None] = mapped_column(Double)
    pool_in_use: Mapped[int] = mapped_column(Integer, server_default="0")
    pool_capacity: Mapped[int] = mapped_column(Integer, server_default="0")
    rss_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # The container's memory limit (cgroup); None when there is none.
    memory_limit_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # The service's own health metrics (backlog, last learning update, cache hit rate ...).
    signals: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (Index("ix_replica_heartbeats_service", "service"),)


class ReplicaSample(Base):
    """What one replica measured over one sample window (append-only, pruned by age).

    The time series that rollout criteria and alert signals aggregate over all replicas:
    ``rpc_count`` / ``error_count`` are RPCs and server-side errors (client mistakes excluded) in
    the window; ``latency_buckets`` counts data-path unary RPCs (ingest and reader roles) by
    ``shared.telemetry.DURATION_BUCKETS`` upper bounds, plus one overflow bucket, so windows and
    replicas merge by adding. Gauges (pool, RSS) are the values at the end of the window.
    """

    __tablename__ = "replica_samples"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    replica_id: Mapped[str] = mapped_column(String(200))
    service: Mapped[str] = mapped_column(String(32))
    recorded_at: Mapped[datetime] = created_at_column()
    window_seconds: Mapped[float] = mapped_column(Double)
    rpc_count: Mapped[int] = mapped_column(BigInteger)
    error_count: Mapped[int] = mapped_column(BigInteger)
    latency_buckets: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    pool_in_use: Mapped[int] = mapped_column(Integer)
    pool_capacity: Mapped[int] = mapped_column(Integer)
    rss_bytes: Mapped[int] = mapped_column(BigInteger)
    memory_limit_bytes: Mapped[int | None] = mapped_column(BigInteger)
    applied_gate_version: Mapped[int] = mapped_column(BigInteger)
    signals: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (
        Index("ix_replica_samples_recorded_at", "recorded_at"),
        Index("ix_replica_samples_service_recorded_at", "service", "recorded_at"),
    )
