"""SQL of the feedback service. Works inside the caller's transaction and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.feedback.domain import FeedbackDraft, StagedEvent
from shared.db.models import (
    Feedback,
    Finding,
    FindingDeletion,
    FoldState,
    Repository,
    Review,
    Team,
)
from shared.finding_input import FindingDraft
from shared.fingerprint import pattern_key
from shared.outcome import FeedbackKind, Outcome, outcome_of


@dataclass(frozen=True)
class RepositoryRef:
    repository_id: int
    team_id: int
    team: str


@dataclass(frozen=True)
class FindingView:
    finding: Finding
    repository_url: str
    team: str
    head_commit: str
    outcome: Outcome
    feedback_count: int


@dataclass(frozen=True)
class FeedbackRow:
    feedback_id: int
    event_id: str
    finding_id: int
    kind: int
    actor_id: str
    comment: str
    occurred_at: datetime
    recorded_at: datetime
    repository_url: str


@dataclass(frozen=True)
class StoredEvent:
    feedback_id: int
    draft: FeedbackDraft
    recorded_at: datetime


# A batch is copied into this connection-local table (COPY is the cheapest way in), then one
# statement stores it from there. ON COMMIT DELETE ROWS empties it at the end of every
# transaction, committed or not, so a pooled connection carries nothing over to its next batch.
# Connection-local means session pooling: behind a transaction-pooling proxy (PgBouncer in
# transaction mode) the COPY and the statement could land on different server connections.
STAGING_TABLE = "feedback_batch_staging"
_STAGING_COLUMNS = (
    "position",
    "event_id",
    "finding_id",
    "kind",
    "actor_id",
    "comment",
    "occurred_us",
)
_CREATE_STAGING = text(
    f"""
    CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} (
        position integer NOT NULL,
        event_id text NOT NULL,
        finding_id bigint NOT NULL,
        kind smallint NOT NULL,
        actor_id text NOT NULL,
        comment text NOT NULL,
        occurred_us bigint NOT NULL
    ) ON COMMIT DELETE ROWS
    """
)


class StagedStatus:
    """What the set-based statement says of each staged event (its ``status`` column)."""

    STORED = 0
    DUPLICATE = 1
    CONFLICT = 2
    NOT_FOUND = 3
    UNSETTLED = 4
    """Its finding exists and its event id was not stored, yet nothing was inserted: a concurrent
    batch stored the event id after this statement's snapshot. Looked up again by the caller."""


# One statement stores the staged batch and says what happened to each event. The first event
# of each event id whose finding exists is inserted (in the batch's order); every other event is
# compared with what its event id holds now — inserted by this statement or stored before it —
# to tell a duplicate (same content) from a conflict; an event whose id holds nothing and whose
# finding does not exist is not found. The repository id is the finding's (denormalised).
# The look-ups are LATERAL with LIMIT 1 (which keeps the planner from flattening them into
# joins) so that they are index probes whatever it guesses of the never-analysed staging table:
# a hash join would scan the whole feedback log and every finding for each batch.
_STAGED = """
    staged AS (
        SELECT s.position, s.event_id, s.finding_id, s.kind, s.actor_id, s.comment,
               timestamptz 'epoch' + s.occurred_us * interval '1 microsecond' AS occurred_at,
               f.repository_id
        FROM {source}
        LEFT JOIN LATERAL (
            SELECT repository_id FROM findings WHERE findings.id = s.finding_id LIMIT 1
        ) f ON true
    )"""
_INSERT = """
    inserted AS (
        INSERT INTO suggestion_feedback
            (event_id, finding_id, repository_id, kind, actor_id, comment, occurred_at)
        SELECT event_id, finding_id, repository_id, kind, actor_id, comment, occurred_at
        FROM {rows}
        ORDER BY position
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id, event_id, recorded_at
    )"""
# ``n`` is what this statement stored under the event's id (or NULL), ``e`` what was stored
# before; the CASE is every status but STORED, which the two statements tell apart differently.
_SAME_CONTENT = "({row}.finding_id, {row}.kind, {row}.actor_id, {row}.comment, {row}.occurred_at) "
_SAME_CONTENT += "= (s.finding_id, s.kind, s.actor_id, s.comment, s.occurred_at)"
_ANSWER = f"""
    SELECT
        array_agg(CASE
            {{stored}}
            WHEN e.id IS NOT NULL THEN
                CASE WHEN {_SAME_CONTENT.format(row="e")}
                    THEN {StagedStatus.DUPLICATE} ELSE {StagedStatus.CONFLICT} END
            WHEN s.repository_id IS NULL THEN {StagedStatus.NOT_FOUND}
            ELSE {StagedStatus.UNSETTLED}
        END ORDER BY s.position),
        array_agg(coalesce(n.id, e.id) ORDER BY s.position),
        array_agg(coalesce(n.recorded_at, e.recorded_at) ORDER BY s.position)
    FROM staged s
    LEFT JOIN {{stored_now}} n ON n.event_id = s.event_id
    LEFT JOIN LATERAL (
        SELECT id, finding_id, kind, actor_id, comment, occurred_at, recorded_at
        FROM suggestion_feedback
        WHERE suggestion_feedback.event_id = s.event_id AND n.event_id IS NULL
        LIMIT 1
    ) e ON true
    """
# Any batch: an event id may come more than once, so the first of each is chosen, and what was
# inserted is joined back to the position it came from.
_STORE_FROM = (
    "WITH"
    + _STAGED
    + """,
    chosen AS (
        SELECT DISTINCT ON (event_id) *
        FROM staged
        WHERE repository_id IS NOT NULL
        ORDER BY event_id, position
    ),"""
    + _INSERT.format(rows="chosen")
    + """,
    now_stored AS (
        SELECT c.position, c.event_id, c.finding_id, c.kind, c.actor_id, c.comment,
               c.occurred_at, i.id, i.recorded_at
        FROM chosen c
        JOIN inserted i ON i.event_id = c.event_id
    )"""
    + _ANSWER.format(
        stored=f"""WHEN n.position = s.position THEN {StagedStatus.STORED}
            WHEN n.event_id IS NOT NULL THEN
                CASE WHEN {_SAME_CONTENT.format(row="n")}
                    THEN {StagedStatus.DUPLICATE} ELSE {StagedStatus.CONFLICT} END""",
        stored_now="now_stored",
    )
)
# A batch whose event ids are all different (nearly every one): a row inserted under an
# event's id is that event, so neither the choice (a sort) nor the join back is needed.
_STORE_DISTINCT_FROM = (
    "WITH"
    + _STAGED
    + ","
    + _INSERT.format(rows="staged WHERE repository_id IS NOT NULL")
    + _ANSWER.format(
        stored=f"WHEN n.id IS NOT NULL THEN {StagedStatus.STORED}", stored_now="inserted"
    )
)
_STAGING_SOURCE = f"{STAGING_TABLE} s"
# A small batch (a group commit of unary calls) skips the staging table: the same statement
# reads the events from arrays. Being one statement, it can run in autocommit (FeedbackIngestion
# does): one round trip instead of BEGIN, CREATE, COPY, the statement and COMMIT; round trips
# are most of a small batch's time.
_ARRAYS_SOURCE = (
    "unnest($1::integer[], $2::text[], $3::bigint[], $4::smallint[], $5::text[], "
    "$6::text[], $7::bigint[]) AS s(position, event_id, finding_id, kind, actor_id, comment, "
    "occurred_us)"
)
_STATEMENTS = {
    (source, distinct): (_STORE_DISTINCT_FROM if distinct else _STORE_FROM).format(source=source)
    for source in (_STAGING_SOURCE, _ARRAYS_SOURCE)
    for distinct in (False, True)
}
ARRAYS_AT_MOST = 64
"""Batches up to this size are stored from arrays; larger ones through COPY."""


def stored_by_one_statement(count: int) -> bool:
    """Whether ``store_batch`` stores this many events with one statement (from arrays), which
    needs no transaction around it; more go through the staging table, which does."""
    return count <= ARRAYS_AT_MOST


def distinct_event_ids(events: Sequence[StagedEvent]) -> bool:
    """Whether no event id comes twice among ``events`` (then the cheaper statement serves)."""
    return len({event[1] for event in events}) == len(events)


class FeedbackRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # ------------------------------------------------------------ teams, repositories, reviews

    async def find_repository(self, url: str) -> RepositoryRef | None:
        row = (
            await self._session.execute(
                select(Repository.id, Repository.team_id, Team.name)
                .join(Team, Team.id == Repository.team_id)
                .where(Repository.url == url)
            )
        ).first()
        return RepositoryRef(row[0], row[1], row[2]) if row else None

    async def ensure_repository(self, url: str, team: str) -> RepositoryRef:
        """Creates the team and the repository on first sight; concurrent callers agree."""
        await self._session.execute(
            pg_insert(Team).values(name=team).on_conflict_do_nothing(index_elements=[Team.name])
        )
        team_id = (
            await self._session.execute(select(Team.id).where(Team.name == team))
        ).scalar_one()
        await self._session.execute(
            pg_insert(Repository)
            .values(url=url, team_id=team_id)
            .on_conflict_do_nothing(index_elements=[Repository.url])
        )
        found = await self.find_repository(url)
        assert found is not None
        return found

    async def insert_review(
        self, *, repository_id: int, pull_request: int, head_commit: str, request_id: str | None
    ) -> int:
        statement = (
            pg_insert(Review)
            .values(
                repository_id=repository_id,
                pull_request=pull_request,
                head_commit=head_commit,
                request_id=request_id,
            )
            .returning(Review.id)
        )
        return int((await self._session.execute(statement)).scalar_one())

    # ------------------------------------------------------------------------------ findings

    async def existing_client_findings(
        self, repository_id: int, client_ids: Sequence[str]
    ) -> dict[str, tuple[int, str]]:
        """client_finding_id → (finding id, fingerprint) for ids already recorded."""
        if not client_ids:
            return {}
        rows = await self._session.execute(
            select(Finding.client_finding_id, Finding.id, Finding.fingerprint).where(
                Finding.repository_id == repository_id,
                Finding.client_finding_id.in_(list(client_ids)),
            )
        )
        return {str(client): (finding_id, fp) for client, finding_id, fp in rows}

    async def insert_findings(
        self,
        *,
        review_id: int,
        repository: RepositoryRef,
        pull_request: int,
        findings: Sequence[tuple[FindingDraft, str]],
    ) -> list[int]:
        """Inserts (finding, fingerprint) pairs; returns their ids in the same order."""
        if not findings:
            return []
        rows: list[dict[str, Any]] = [
            {
                "review_id": review_id,
                "repository_id": repository.repository_id,
                "team_id": repository.team_id,
                "pull_request": pull_request,
                "client_finding_id": draft.client_finding_id,
                "rule_id": draft.rule_id,
                "category": draft.category,
                "severity": draft.severity,
                "confidence": draft.confidence,
                "file_path": draft.file_path,
                "line_start": draft.line_start,
                "line_end": draft.line_end,
                "title": draft.title,
                "message": draft.message,
                "suggested_fix": draft.suggested_fix,
                "code_context": draft.code_context,
                "fingerprint": fingerprint,
                "pattern_key": pattern_key(rule_id=draft.rule_id, message=draft.message),
            }
            for draft, fingerprint in findings
        ]
        result = await self._session.execute(
            insert(Finding).returning(Finding.id, sort_by_parameter_order=True), rows
        )
        return [int(finding_id) for finding_id in result.scalars()]

    async def finding_view(self, finding_id: int) -> FindingView | None:
        row = (
            await self._session.execute(
                select(Finding, Repository.url, Team.name, Review.head_commit)
                .join(Repository, Repository.id == Finding.repository_id)
                .join(Team, Team.id == Finding.team_id)
                .join(Review, Review.id == Finding.review_id)
                .where(Finding.id == finding_id)
            )
        ).first()
        if row is None:
            return None
        finding, url, team, head_commit = row
        events = (
            await self._session.execute(
                select(Feedback.kind, Feedback.occurred_at, Feedback.id).where(
                    Feedback.finding_id == finding_id
                )
            )
        ).all()
        return FindingView(
            finding=finding,
            repository_url=url,
            team=team,
            head_commit=head_commit,
            outcome=outcome_of((kind, at, fid) for kind, at, fid in events),
            feedback_count=len(events),
        )

    async def lock_finding(self, finding_id: int) -> FindingView | None:
        await self._session.execute(
            select(Finding.id).where(Finding.id == finding_id).with_for_update()
        )
        return await self.finding_view(finding_id)

    async def delete_finding(
        self, view: FindingView, *, actor: str, reason: str, snapshot: dict[str, Any]
    ) -> None:
        """Deletes the finding (its feedback cascades) and keeps an audit record of it."""
        self._session.add(
            FindingDeletion(
                finding_id=view.finding.id,
                actor=actor,
                reason=reason,
                snapshot=snapshot,
                deleted_feedback_count=view.feedback_count,
            )
        )
        await self._session.flush()
        await self._session.delete(view.finding)
        await self._session.flush()

    # ------------------------------------------------------------------------------ feedback

    async def store_batch(
        self, events: Sequence[StagedEvent]
    ) -> tuple[list[int], list[int | None], list[datetime | None]]:
        """COPYs the events into the staging table and stores them with one statement.

        Returns, in the order of the events' positions: each one's StagedStatus, the feedback
        id its event id holds (stored now or before) and that row's record time.
        """
        connection = await self._session.connection()
        distinct = distinct_event_ids(events)
        if stored_by_one_statement(len(events)):
            # Through SQLAlchemy, not the driver: a connection found dead here must invalidate
            # the pool, so that the retry gets a live one (test_database_outages).
            result = await connection.exec_driver_sql(
                _STATEMENTS[_ARRAYS_SOURCE, distinct], tuple(zip(*events, strict=True))
            )
            row: Any = result.one()
            return list(row[0]), list(row[1]), list(row[2])
        # The first statement also opens the transaction, which the COPY (on the driver's own
        # connection, beneath SQLAlchemy) must run inside; being SQLAlchemy's, it also finds a
        # dead connection the way the retries need.
        await self._session.execute(_CREATE_STAGING)
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        if not driver.is_in_transaction():
            # In autocommit the staged rows would be gone before the statement reads them.
            raise RuntimeError("a COPY batch must be stored inside a transaction")
        await driver.copy_records_to_table(STAGING_TABLE, records=events, columns=_STAGING_COLUMNS)
        # Straight on the driver too: three arrays decode in C, where SQLAlchemy would build
        # and process a row object per event.
        statuses, feedback_ids, recorded_ats = await driver.fetchrow(
            _STATEMENTS[_STAGING_SOURCE, distinct]
        )
        return list(statuses), list(feedback_ids), list(recorded_ats)

    async def stored_events(self, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
        if not event_ids:
            return {}
        rows = await self._session.execute(
            select(
                Feedback.id,
                Feedback.event_id,
                Feedback.finding_id,
                Feedback.kind,
                Feedback.actor_id,
                Feedback.comment,
                Feedback.occurred_at,
                Feedback.recorded_at,
            ).where(Feedback.event_id.in_(list(set(event_ids))))
        )
        return {
            event_id: StoredEvent(
                feedback_id=feedback_id,
                draft=FeedbackDraft(
                    event_id=event_id,
                    finding_id=finding_id,
                    kind=FeedbackKind(kind),
                    actor_id=actor_id,
                    comment=comment,
                    occurred_at=occurred_at,
                ),
                recorded_at=recorded_at,
            )
            for (
                feedback_id,
                event_id,
                finding_id,
                kind,
                actor_id,
                comment,
                occurred_at,
                recorded_at,
            ) in rows
        }

    async def repository_id(self, url: str) -> int | None:
        return (
            await self._session.execute(select(Repository.id).where(Repository.url == url))
        ).scalar_one_or_none()

    async def finding_exists(self, finding_id: int) -> bool:
        found = await self._session.execute(select(Finding.id).where(Finding.id == finding_id))
        return found.first() is not None

    async def list_feedback(
        self,
        *,
        finding_id: int | None,
        repository_id: int | None,
        before_id: int | None,
        limit: int,
    ) -> list[FeedbackRow]:
        """Newest first (by recording order), keyset-paginated on the feedback id."""
        query = (
            select(
                Feedback.id,
                Feedback.event_id,
                Feedback.finding_id,
                Feedback.kind,
                Feedback.actor_id,
                Feedback.comment,
                Feedback.occurred_at,
                Feedback.recorded_at,
                Repository.url,
            )
            .join(Repository, Repository.id == Feedback.repository_id)
            .order_by(Feedback.id.desc())
            .limit(limit)
        )
        if finding_id is not None:
            query = query.where(Feedback.finding_id == finding_id)
        if repository_id is not None:
            query = query.where(Feedback.repository_id == repository_id)
        if before_id is not None:
            query = query.where(Feedback.id < before_id)
        return [FeedbackRow(*row) for row in await self._session.execute(query)]

    # ------------------------------------------------------------------- notification, backlog

    async def backlog(self) -> int:
        """Feedback events recorded but not yet folded by the learning service."""
        watermark = (
            select(FoldState.watermark).where(FoldState.stream == "feedback").scalar_subquery()
        )
        count = await self._session.execute(
            select(func.count())
            .select_from(Feedback)
            .where(Feedback.tx_id >= func.coalesce(watermark, 0))
        )
        return int(count.scalar_one())
