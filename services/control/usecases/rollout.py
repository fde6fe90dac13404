"""Use cases of the rollout: read it, judge the criteria, advance, roll back, membership.

Moves lock the gate state row like every gate change: the rollout is part of the gate snapshot,
so a move bumps the version and every replica applies it the same way (NOTIFY, poll).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.control.domain.changes import Action, RolloutAdvance, RolloutRollback
from services.control.domain.rollout import (
    Criterion,
    Measurements,
    PhaseRecord,
    check_rollback,
    failing,
    judge,
    next_phase,
    refuse_advance,
    what_if,
)
from services.control.usecases.alerts import refuse_while_safeguards_fire
from services.control.usecases.gates import (
    AfterCommit,
    AuditEntry,
    AuditRepository,
    GateRepository,
    RequestRepository,
    first_answer,
    keyed,
    remember,
)
from shared.gates.model import PHASE_PERCENTAGES, Membership, Rollout, rollout_bucket


class RolloutRepository(Protocol):
    async def history(self) -> list[PhaseRecord]: ...
    async def current(self) -> PhaseRecord | None: ...
    async def close_current(
        self, *, issues_found: Sequence[str], exit_metrics: Sequence[dict[str, object]]
    ) -> None: ...
    async def start(self, record: PhaseRecord) -> PhaseRecord: ...
    async def ever_exposed(self, repository_url: str) -> bool: ...
    async def counts(self, rollout: Rollout) -> tuple[int, int, int]: ...
    async def members(self, rollout: Rollout, *, after: str | None, limit: int) -> list[str]: ...


class SignalRepository(Protocol):
    async def measurements(
        self, *, since: datetime, integrity_jobs: Sequence[str]
    ) -> Measurements: ...


class SafeguardRepository(Protocol):
    async def firing_safeguards(self) -> list[str]: ...


class RolloutUnit(Protocol):
    @property
    def gates(self) -> GateRepository: ...
    @property
    def audit(self) -> AuditRepository: ...
    @property
    def requests(self) -> RequestRepository: ...
    @property
    def rollout(self) -> RolloutRepository: ...
    @property
    def signals(self) -> SignalRepository: ...
    @property
    def alerts(self) -> SafeguardRepository: ...


Transactions = Callable[[], AbstractAsyncContextManager[RolloutUnit]]


@dataclass(frozen=True)
class RolloutPolicy:
    salt: str
    """Hashed with each URL into its bucket; fixed for the installation so buckets stay put."""
    window: timedelta
    """The longest window the criteria look back over (a phase that ran longer: its last days)."""
    shadow_window: timedelta
    """The window before any rollout (the shadow phase has no start time)."""
    integrity_jobs: tuple[str, ...]


def rollout_of(record: PhaseRecord | None, salt: str) -> Rollout:
    if record is None:
        return Rollout(salt=salt)
    return Rollout(
        in_force=True,
        phase=record.phase,
        percentage=record.percentage,
        salt=record.salt,
        sticky_exposure=record.sticky_exposure,
    )


@dataclass(frozen=True)
class RolloutOverview:
    current: PhaseRecord | None
    history: list[PhaseRecord]
    in_rollout: int
    total: int
    ever_exposed: int
    salt: str


@dataclass(frozen=True)
class AdvanceResult:
    current: PhaseRecord
    criteria: list[Criterion]
    replayed: bool = False


@dataclass(frozen=True)
class MembershipView:
    in_rollout: bool
    bucket: int
    phase: int
    ever_exposed: bool
    reason: Membership


def _record_json(record: PhaseRecord) -> dict[str, Any]:
    return {
        "phase": record.phase,
        "percentage": record.percentage,
        "salt": record.salt,
        "started_at": record.started_at.isoformat(),
        "started_by": record.started_by,
        "reason": record.reason,
        "forced": record.forced,
        "sticky_exposure": record.sticky_exposure,
    }


def _record_from_json(data: dict[str, Any]) -> PhaseRecord:
    return PhaseRecord(
        phase=int(data["phase"]),
        percentage=int(data["percentage"]),
        salt=str(data["salt"]),
        started_at=datetime.fromisoformat(str(data["started_at"])),
        started_by=str(data["started_by"]),
        reason=str(data["reason"]),
        forced=bool(data["forced"]),
        sticky_exposure=bool(data["sticky_exposure"]),
    )


class RolloutService:
    def __init__(
        self,
        *,
        transactions: Transactions,
        after_commit: AfterCommit,
        policy: RolloutPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._transactions = transactions
        self._after_commit = after_commit
        self._policy = policy
        self._clock = clock

    # ------------------------------------------------------------------ reads

    async def overview(self) -> RolloutOverview:
        async with self._transactions() as unit:
            history = await unit.rollout.history()
            current = history[-1] if history else None
            counts = await unit.rollout.counts(rollout_of(current, self._policy.salt))
        return RolloutOverview(current, history, *counts, salt=self._salt(current))

    async def criteria(self, phase: int | None) -> tuple[int, list[Criterion]]:
        async with self._transactions() as unit:
            current = await unit.rollout.current()
            judged = current.phase if current is not None else 0
            if phase is not None:
                judged = phase
            return judged, await self._judge(unit, judged, current)

    async def membership(
        self, repository_url: str, *, phase: int | None, percentage: int | None
    ) -> MembershipView:
        async with self._transactions() as unit:
            current = await unit.rollout.current()
            rollout = rollout_of(current, self._policy.salt)
            ever = await unit.rollout.ever_exposed(repository_url)
        asked = what_if(rollout, phase=phase, percentage=percentage)
        if asked.sticky_exposure and ever:
            asked = replace(asked, sticky_repositories=frozenset({repository_url}))
        reason, bucket = asked.membership(repository_url)
        if bucket < 0:
            bucket = rollout_bucket(asked.salt, repository_url)
        return MembershipView(
            in_rollout=reason is not Membership.NOT_IN_ROLLOUT,
            bucket=bucket,
            phase=asked.phase,
            ever_exposed=ever,
            reason=reason,
        )

    async def members(
        self, *, phase: int | None, percentage: int | None, after: str | None, limit: int
    ) -> list[str]:
        async with self._transactions() as unit:
            current = await unit.rollout.current()
            rollout = what_if(
                rollout_of(current, self._policy.salt), phase=phase, percentage=percentage
            )
            return await unit.rollout.members(rollout, after=after, limit=limit)

    # ------------------------------------------------------------------ moves

    async def advance(self, move: RolloutAdvance, *, actor: str) -> AdvanceResult:
        content = {"force": move.force, "reason": move.reason, "issues": list(move.issues_found)}
        key = keyed(Action.ADVANCE_ROLLOUT, actor, move.request_id, content)
        async with self._transactions() as unit:
            await unit.gates.lock()
            stored = await first_answer(unit.requests, key)
            if stored is not None:
                return AdvanceResult(
                    _record_from_json(stored["current"]),
                    [Criterion.from_json(c) for c in stored["criteria"]],
                    replayed=True,
                )
            refuse_while_safeguards_fire(await unit.alerts.firing_safeguards())
            current = await unit.rollout.current()
            rollout = rollout_of(current, self._policy.salt)
            target = next_phase(rollout)
            criteria = await self._judge(unit, rollout.phase, current)
            forced = bool(failing(criteria))
            if forced and not move.force:
                raise refuse_advance(rollout.phase, criteria)
            measured = [c.as_json() for c in criteria]
            if current is not None:
                await unit.rollout.close_current(
                    issues_found=move.issues_found, exit_metrics=measured
                )
            started = await unit.rollout.start(
                PhaseRecord(
                    phase=target,
                    percentage=PHASE_PERCENTAGES[target],
                    salt=self._salt(current),
                    started_at=self._clock(),
                    started_by=actor,
                    reason=move.reason,
                    forced=forced,
                    sticky_exposure=rollout.sticky_exposure,
                    success_metrics={"entry": measured},
                )
            )
            version = await unit.gates.bump_version()
            response = {"current": _record_json(started), "criteria": measured, "version": version}
            await remember(unit.requests, key, response)
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.ADVANCE_ROLLOUT,
                    target="rollout",
                    before={"phase": rollout.phase, "percentage": rollout.percentage},
                    after={
                        "phase": started.phase,
                        "percentage": started.percentage,
                        "forced": forced,
                        "failing": [c.name for c in failing(criteria)],
                    },
                    reason=move.reason,
                    request_id=move.request_id,
                )
            )
        await self._after_commit(version)
        return AdvanceResult(started, criteria)

    async def rollback(self, move: RolloutRollback, *, actor: str) -> PhaseRecord:
        content = {
            "to_phase": move.to_phase,
            "sticky": move.sticky_exposure,
            "reason": move.reason,
            "issues": list(move.issues_found),
        }
        key = keyed(Action.ROLLBACK_ROLLOUT, actor, move.request_id, content)
        async with self._transactions() as unit:
            await unit.gates.lock()
            stored = await first_answer(unit.requests, key)
            if stored is not None:
                return _record_from_json(stored["current"])
            current = await unit.rollout.current()
            rollout = rollout_of(current, self._policy.salt)
            check_rollback(rollout, move.to_phase)
            criteria = [c.as_json() for c in await self._judge(unit, rollout.phase, current)]
            await unit.rollout.close_current(issues_found=move.issues_found, exit_metrics=criteria)
            started = await unit.rollout.start(
                PhaseRecord(
                    phase=move.to_phase,
                    percentage=PHASE_PERCENTAGES[move.to_phase],
                    salt=self._salt(current),
                    started_at=self._clock(),
                    started_by=actor,
                    reason=move.reason,
                    sticky_exposure=move.sticky_exposure,
                )
            )
            version = await unit.gates.bump_version()
            await remember(
                unit.requests, key, {"current": _record_json(started), "version": version}
            )
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.ROLLBACK_ROLLOUT,
                    target="rollout",
                    before={"phase": rollout.phase, "percentage": rollout.percentage},
                    after={
                        "phase": started.phase,
                        "percentage": started.percentage,
                        "sticky_exposure": started.sticky_exposure,
                    },
                    reason=move.reason,
                    request_id=move.request_id,
                )
            )
        await self._after_commit(version)
        return started

    # ------------------------------------------------------------------ internals

    def _salt(self, current: PhaseRecord | None) -> str:
        return current.salt if current is not None else self._policy.salt

    async def _judge(
        self, unit: RolloutUnit, phase: int, current: PhaseRecord | None
    ) -> list[Criterion]:
        now = self._clock()
        since = now - self._policy.shadow_window
        if current is not None and current.phase == phase:
            since = max(current.started_at, now - self._policy.window)
        measurements = await unit.signals.measurements(
            since=since, integrity_jobs=self._policy.integrity_jobs
        )
        return judge(phase, measurements)
