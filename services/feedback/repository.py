"""SQL of the feedback service. Works inside the caller's transaction and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import BigInteger, DateTime, SmallInteger, Text

from services.feedback.domain import FeedbackDraft
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


# One statement stores a whole batch. The join skips events whose finding does not exist (the
# caller reports them as NOT_FOUND) and takes the repository id for the denormalised column;
# ON CONFLICT skips event ids already stored (the caller tells duplicates from conflicts).
_INSERT_FEEDBACK = text(
    """
    INSERT INTO suggestion_feedback
        (event_id, finding_id, repository_id, kind, actor_id, comment, occurred_at)
    SELECT e.event_id, e.finding_id, f.repository_id, e.kind, e.actor_id, e.comment, e.occurred_at
    FROM unnest(:event_ids, :finding_ids, :kinds, :actor_ids, :comments, :occurred_ats)
        WITH ORDINALITY AS e(event_id, finding_id, kind, actor_id, comment, occurred_at, position)
    JOIN findings f ON f.id = e.finding_id
    ORDER BY e.position
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id, event_id, recorded_at
    """
).bindparams(
    bindparam("event_ids", type_=ARRAY(Text)),
    bindparam("finding_ids", type_=ARRAY(BigInteger)),
    bindparam("kinds", type_=ARRAY(SmallInteger)),
    bindparam("actor_ids", type_=ARRAY(Text)),
    bindparam("comments", type_=ARRAY(Text)),
    bindparam("occurred_ats", type_=ARRAY(DateTime(timezone=True))),
)


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

    async def insert_feedback(
        self, drafts: Sequence[FeedbackDraft]
    ) -> dict[str, tuple[int, datetime]]:
        """Stores new events; returns event_id → (feedback id, record time) of rows new now."""
        if not drafts:
            return {}
        result = await self._session.execute(
            _INSERT_FEEDBACK,
            {
                "event_ids": [d.event_id for d in drafts],
                "finding_ids": [d.finding_id for d in drafts],
                "kinds": [int(d.kind) for d in drafts],
                "actor_ids": [d.actor_id for d in drafts],
                "comments": [d.comment for d in drafts],
                "occurred_ats": [d.occurred_at for d in drafts],
            },
        )
        return {str(event_id): (int(fid), recorded_at) for fid, event_id, recorded_at in result}

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
