"""SQL of the gate tables: the kill switch row, global gates, per-repository overrides."""

from __future__ import annotations

from sqlalchemy import Text, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import FeatureGateRow, GateOverride, GateState
from shared.gates.model import Feature, KillSwitch, Switch
from shared.gates.store import CHANNEL, FEATURE_CODES


class GateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock(self) -> tuple[int, KillSwitch]:
        row = (
            await self._session.execute(
                select(GateState).where(GateState.id == 1).with_for_update()
            )
        ).scalar_one()
        return row.version, KillSwitch(
            row.kill_switch_engaged, row.reason, row.updated_by, row.kill_switch_changed_at
        )

    async def switch(self, feature: Feature, repository_url: str) -> Switch | None:
        code = FEATURE_CODES[feature]
        row: FeatureGateRow | GateOverride | None
        if repository_url:
            row = await self._session.get(GateOverride, (code, repository_url))
        else:
            row = await self._session.get(FeatureGateRow, code)
        if row is None:
            return None
        return Switch(row.enabled, row.reason, row.updated_by, row.updated_at)

    async def put_switch(self, feature: Feature, repository_url: str, switch: Switch) -> None:
        values = {
            "enabled": switch.enabled,
            "reason": switch.reason,
            "updated_by": switch.updated_by,
            "updated_at": func.now(),
        }
        code = FEATURE_CODES[feature]
        if repository_url:
            statement = (
                pg_insert(GateOverride)
                .values(feature=code, repository_url=repository_url, **values)
                .on_conflict_do_update(index_elements=["feature", "repository_url"], set_=values)
            )
        else:
            statement = (
                pg_insert(FeatureGateRow)
                .values(feature=code, **values)
                .on_conflict_do_update(index_elements=["feature"], set_=values)
            )
        await self._session.execute(statement)
        # Identity-map rows read before this upsert would otherwise answer the old state.
        self._session.expire_all()

    async def delete_switch(self, feature: Feature, repository_url: str) -> bool:
        code = FEATURE_CODES[feature]
        if repository_url:
            statement = delete(GateOverride).where(
                GateOverride.feature == code, GateOverride.repository_url == repository_url
            )
        else:
            statement = delete(FeatureGateRow).where(FeatureGateRow.feature == code)
        result = await self._session.execute(statement.returning(text("1")))
        return result.first() is not None

    async def set_kill_switch(self, *, engaged: bool, reason: str, actor: str) -> None:
        await self._session.execute(
            update(GateState)
            .where(GateState.id == 1)
            .values(
                kill_switch_engaged=engaged,
                reason=reason,
                updated_by=actor,
                kill_switch_changed_at=func.now(),
            )
        )

    async def bump_version(self) -> int:
        # The NOTIFY rides on the same statement (one round trip less on every change) and is
        # delivered when — and only if — the transaction commits.
        version = (
            await self._session.execute(
                update(GateState)
                .where(GateState.id == 1)
                .values(version=GateState.version + 1, updated_at=func.now())
                .returning(
                    GateState.version,
                    func.pg_notify(CHANNEL, func.cast(GateState.version, Text)),
                )
            )
        ).one()[0]
        return int(version)
