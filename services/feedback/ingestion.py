"""Use cases of the feedback service: record findings, record feedback, read, delete.

One transaction per call. Ingestion only validates and appends: a bad item is reported, never
half-stored, and a transient database failure retries the whole transaction (it is idempotent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying

from services.feedback.coalescer import Coalescer
from services.feedback.domain import (
    BatchOutcome,
    FeedbackBatch,
    FeedbackDraft,
    ItemResult,
    ItemStatus,
    RecordedFinding,
    RecordedReview,
    ReviewDraft,
    validate_feedback,
    validate_feedback_batch,
    validate_review,
)
from services.feedback.instruments import FeedbackInstruments
from services.feedback.notifier import ChangeNotifier
from services.feedback.repository import (
    FeedbackRepository,
    FeedbackRow,
    FindingView,
    StagedStatus,
    stored_by_one_statement,
)
from shared.db.failures import write_retries
from shared.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Violations
from shared.finding_input import Limits, check_text
from shared.fingerprint import finding_fingerprint
from shared.idempotency import IdempotentRequest, RequestLedger, request_digest


def _retrying() -> AsyncRetrying:
    # Integrity errors here are races a rerun resolves: a finding deleted between the existence
    # check and the insert, or two first sightings of the same repository.
    return write_retries(also=lambda exc: isinstance(exc, sa_exc.IntegrityError))


class FeedbackIngestion:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        statements: async_sessionmaker[AsyncSession],
        limits: Limits,
        instruments: FeedbackInstruments,
        notifier: ChangeNotifier | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._statements = statements
        self._limits = limits
        self._instruments = instruments
        self._notifier = notifier
        self._clock = clock
        # Two flushes at a time: one can fill while the other commits, and flushes stay large.
        self._single_events: Coalescer[FeedbackDraft, ItemResult] = Coalescer(
            self._store_coalesced, max_items=limits.max_events_per_batch, max_concurrent_flushes=2
        )

    @property
    def limits(self) -> Limits:
        return self._limits

    # ---------------------------------------------------------------------------- findings

    async def record_findings(self, draft: ReviewDraft, *, caller: str) -> RecordedReview:
        """Records a review's findings; ``caller`` (the token identity) scopes its request_id."""
        violations = Violations()
        validate_review(draft, self._limits, violations)
        violations.raise_if_any()
        fingerprints = [
            finding_fingerprint(
                rule_id=f.rule_id,
                file_path=f.file_path,
                message=f.message,
                code_context=f.code_context,
            )
            for f in draft.findings
        ]
        request = (
            IdempotentRequest(
                service="feedback",
                method="RecordFindings",
                caller=caller,
                request_id=draft.request_id,
                digest=request_digest(replace(draft, request_id=None)),
            )
            if draft.request_id is not None
            else None
        )
        async for attempt in _retrying():
            with attempt:
                recorded = await self._record_findings_once(draft, fingerprints, request)
        if not recorded.replayed:
            self._changed(findings=sum(not f.already_recorded for f in recorded.findings))
        return recorded

    async def _record_findings_once(
        self,
        draft: ReviewDraft,
        fingerprints: Sequence[str],
        request: IdempotentRequest | None,
    ) -> RecordedReview:
        async with self._sessions.begin() as session:
            repo = FeedbackRepository(session)
            ledger = RequestLedger(session)
            if request is not None:
                first = await ledger.claim(request)
                if first is not None:
                    return _replayed(first)
            ref = await repo.find_repository(draft.repository_url)
            if ref is None:
                if draft.team is None:
                    raise InvalidArgument(
                        [FieldViolation("team", "is required the first time a repository is seen")]
                    )
                ref = await repo.ensure_repository(draft.repository_url, draft.team)
            elif draft.team is not None and draft.team != ref.team:
                raise FailedPrecondition(
                    f"repository {draft.repository_url} belongs to team {ref.team!r}, "
                    f"not {draft.team!r}",
                    reason="REPOSITORY_TEAM_MISMATCH",
                    metadata={"team": ref.team},
                )
            review_id = await repo.insert_review(
                repository_id=ref.repository_id,
                pull_request=draft.pull_request,
                head_commit=draft.head_commit,
                request_id=draft.request_id,
            )
            client_ids = [f.client_finding_id for f in draft.findings if f.client_finding_id]
            existing = await repo.existing_client_findings(ref.repository_id, client_ids)
            new = [
                (finding, fingerprint)
                for finding, fingerprint in zip(draft.findings, fingerprints, strict=True)
                if finding.client_finding_id not in existing
            ]
            new_ids = iter(
                await repo.insert_findings(
                    review_id=review_id,
                    repository=ref,
                    pull_request=draft.pull_request,
                    findings=new,
                )
            )
            recorded: list[RecordedFinding] = []
            for finding, fingerprint in zip(draft.findings, fingerprints, strict=True):
                if finding.client_finding_id in existing:
                    finding_id, stored_fingerprint = existing[finding.client_finding_id]
                    recorded.append(
                        RecordedFinding(
                            finding_id, finding.client_finding_id, stored_fingerprint, True
                        )
                    )
                else:
                    recorded.append(
                        RecordedFinding(
                            next(new_ids), finding.client_finding_id, fingerprint, False
                        )
                    )
            result = RecordedReview(review_id=review_id, findings=tuple(recorded), replayed=False)
            if request is not None:
                await ledger.answer(request, json.dumps(asdict(result)).encode())
            return result

    # ---------------------------------------------------------------------------- feedback

    async def record_feedback(
        self, batch: FeedbackBatch, *, field: str = "events", first_index: int = 0
    ) -> BatchOutcome:
        """Stores every valid event of a batch; each event gets its own result.

        ``first_index`` numbers the events of a chunk of a longer stream, so that results and
        field paths (``events[1234].actor_id``) name positions in the whole stream.
        """
        started = time.perf_counter()
        invalid = validate_feedback_batch(
            batch,
            lambda position: f"{field}[{first_index + position}]",
            self._limits,
            now=self._clock(),
        )
        async for attempt in _retrying():
            with attempt:
                outcome = await self._store(batch, invalid, first_index=first_index)
        self._instruments.record(batch.kinds, outcome.statuses)
        self._instruments.ingestion_duration.record(
            time.perf_counter() - started, {"method": "batch"}
        )
        self._changed(events=outcome.count(ItemStatus.STORED))
        return outcome

    async def record_event(self, draft: FeedbackDraft, violations: Violations) -> ItemResult:
        """One event (RecordFeedback): validated here, stored together with concurrent calls."""
        validate_feedback(draft, "event", self._limits, violations, now=self._clock())
        if violations:
            result = ItemResult(
                index=0,
                event_id=draft.event_id,
                status=ItemStatus.INVALID,
                message=_joined(tuple((v.field, v.description) for v in violations.items)),
                violations=tuple((v.field, v.description) for v in violations.items),
            )
            self._instruments.record([int(draft.kind)], [result.status])
            return result
        return await self._single_events.submit(draft)

    async def _store_coalesced(self, drafts: Sequence[FeedbackDraft]) -> list[ItemResult]:
        started = time.perf_counter()
        batch = FeedbackBatch()
        for draft in drafts:
            batch.append(draft)
        async for attempt in _retrying():
            with attempt:
                outcome = await self._store(batch, {}, first_index=0)
        self._instruments.record(batch.kinds, outcome.statuses)
        self._instruments.ingestion_duration.record(
            time.perf_counter() - started, {"method": "single"}
        )
        self._changed(events=outcome.count(ItemStatus.STORED))
        return [outcome.item(position) for position in range(len(drafts))]

    async def _store(
        self,
        batch: FeedbackBatch,
        invalid: dict[int, tuple[tuple[str, str], ...]],
        *,
        first_index: int,
    ) -> BatchOutcome:
        """One transaction: the valid events in (COPY, or arrays when few), stored, answered."""
        count = len(batch)
        outcome = BatchOutcome(
            first_index=first_index,
            event_ids=batch.event_ids,
            statuses=[ItemStatus.INVALID] * count,
            feedback_ids=[0] * count,
            recorded_ats=[None] * count,
            errors={position: (_joined(found), found) for position, found in invalid.items()},
        )
        events = (
            [event for event in batch.events if event[0] not in invalid]
            if invalid
            else batch.events
        )
        if not events:
            return outcome
        # A small batch (most often a group commit of unary calls) is stored by one statement,
        # which is a transaction of its own: without BEGIN and COMMIT it costs one round trip
        # instead of three. A larger one needs the transaction its staging table lives in.
        sessions = self._statements if stored_by_one_statement(len(events)) else self._sessions
        async with sessions.begin() as session:
            repo = FeedbackRepository(session)
            statuses, ids, times = await repo.store_batch(events)
            unsettled = [
                event[0]
                for event, status in zip(events, statuses, strict=True)
                if status == StagedStatus.UNSETTLED
            ]
            earlier = (
                await repo.stored_events([batch.events[position][1] for position in unsettled])
                if unsettled
                else {}
            )
        if not invalid and statuses.count(StagedStatus.STORED) == count:
            # The common case, a batch of new events: the answer is the database's as it is.
            outcome.statuses = [ItemStatus.STORED] * count
            outcome.feedback_ids = ids  # type: ignore[assignment]
            outcome.recorded_ats = times
            return outcome
        for event, status, feedback_id, recorded_at in zip(
            events, statuses, ids, times, strict=True
        ):
            position = event[0]
            if status == StagedStatus.UNSETTLED:
                # The event id was taken by a transaction that committed after this statement's
                # snapshot: the row read since then tells a resend from a conflict.
                stored = earlier.get(event[1])
                if stored is None:
                    item_status = ItemStatus.NOT_FOUND
                elif stored.draft.same_content(batch.draft(position)):
                    item_status = ItemStatus.DUPLICATE
                    feedback_id, recorded_at = stored.feedback_id, stored.recorded_at
                else:
                    item_status = ItemStatus.CONFLICT
            else:
                item_status = _STATUSES[status]
            outcome.statuses[position] = item_status
            if item_status in (ItemStatus.STORED, ItemStatus.DUPLICATE):
                outcome.feedback_ids[position] = feedback_id or 0
                outcome.recorded_ats[position] = recorded_at
            else:
                outcome.errors[position] = _error(item_status, event[1], event[2])
        return outcome

    # ---------------------------------------------------------------------------- reads

    async def get_finding(self, finding_id: int) -> FindingView:
        if finding_id <= 0:
            raise InvalidArgument([FieldViolation("finding_id", "must be a positive finding id")])
        async with self._sessions.begin() as session:
            view = await FeedbackRepository(session).finding_view(finding_id)
        if view is None:
            raise NotFound(f"finding {finding_id} does not exist", reason="FINDING_NOT_FOUND")
        return view

    async def list_feedback(
        self,
        *,
        finding_id: int | None,
        repository_url: str | None,
        before_id: int | None,
        page_size: int,
    ) -> list[FeedbackRow]:
        async with self._sessions.begin() as session:
            repo = FeedbackRepository(session)
            repository_id: int | None = None
            if repository_url is not None:
                repository_id = await repo.repository_id(repository_url)
                if repository_id is None:
                    raise NotFound(
                        f"repository {repository_url} is unknown", reason="REPOSITORY_NOT_FOUND"
                    )
            elif finding_id is not None and not await repo.finding_exists(finding_id):
                raise NotFound(f"finding {finding_id} does not exist", reason="FINDING_NOT_FOUND")
            return await repo.list_feedback(
                finding_id=finding_id,
                repository_id=repository_id,
                before_id=before_id,
                limit=page_size,
            )

    # ---------------------------------------------------------------------------- delete

    async def delete_finding(self, finding_id: int, *, actor: str, reason: str) -> int:
        violations = Violations()
        if finding_id <= 0:
            violations.add("finding_id", "must be a positive finding id")
        if not reason.strip():
            violations.add("reason", "is required: deletions are audited")
        check_text(violations, "reason", reason, max_chars=self._limits.max_text_chars)
        violations.raise_if_any()
        async with self._sessions.begin() as session:
            repo = FeedbackRepository(session)
            view = await repo.lock_finding(finding_id)
            if view is None:
                raise NotFound(f"finding {finding_id} does not exist", reason="FINDING_NOT_FOUND")
            await repo.delete_finding(
                view, actor=actor, reason=reason.strip(), snapshot=_snapshot(view)
            )
        self._changed(deleted_findings=1)
        return view.feedback_count

    async def backlog(self) -> int:
        async with self._sessions.begin() as session:
            return await FeedbackRepository(session).backlog()

    def _changed(self, **counts: int) -> None:
        if self._notifier is not None:
            self._notifier.changed(**counts)


def _replayed(first: bytes) -> RecordedReview:
    data = json.loads(first)
    return RecordedReview(
        review_id=data["review_id"],
        findings=tuple(RecordedFinding(**f) for f in data["findings"]),
        replayed=True,
    )


_STATUSES = {
    StagedStatus.STORED: ItemStatus.STORED,
    StagedStatus.DUPLICATE: ItemStatus.DUPLICATE,
    StagedStatus.CONFLICT: ItemStatus.CONFLICT,
    StagedStatus.NOT_FOUND: ItemStatus.NOT_FOUND,
}


def _joined(violations: tuple[tuple[str, str], ...]) -> str:
    return "; ".join(f"{field}: {description}" for field, description in violations)


def _error(status: str, event_id: str, finding_id: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The message and field violations of an event that was not stored."""
    if status == ItemStatus.NOT_FOUND:
        return f"finding {finding_id} does not exist", (("finding_id", f"no finding {finding_id}"),)
    return (
        f"event_id {event_id!r} was already recorded with different content; "
        "use a new event_id for a new event",
        (),
    )


def _snapshot(view: FindingView) -> dict[str, Any]:
    finding = view.finding
    return {
        "finding_id": finding.id,
        "repository_url": view.repository_url,
        "team": view.team,
        "pull_request": finding.pull_request,
        "rule_id": finding.rule_id,
        "category": finding.category,
        "severity": finding.severity,
        "confidence": finding.confidence,
        "file_path": finding.file_path,
        "line_start": finding.line_start,
        "message": finding.message,
        "fingerprint": finding.fingerprint,
        "outcome": view.outcome.name.lower(),
        "feedback_count": view.feedback_count,
        "created_at": finding.created_at.isoformat(),
    }
