"""Reading the gate snapshot from PostgreSQL: the tables the control service writes.

One REPEATABLE READ transaction reads the version and every gate, so a snapshot is never a mix
of two versions. Nothing here writes; only the control service changes gates.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.models import FeatureGateRow, GateOverride, GateState, RolloutPhaseRow
from shared.gates.model import (
    Feature,
    GateSnapshot,
    KillSwitch,
    Rollout,
    Switch,
)

CHANNEL = "reviewlearn_gates"
"""PostgreSQL NOTIFY and Redis PUBLISH channel; the payload is the new version."""

FEATURE_CODES: dict[Feature, int] = {
    Feature.LEARNING: 1,
    Feature.RANKING: 2,
    Feature.SUPPRESSION: 3,
    Feature.DEDUPLICATION: 4,
    Feature.EXPLORATION: 5,
    Feature.CALIBRATION: 6,
    Feature.PATTERNS: 7,
    Feature.INSIGHTS: 8,
    Feature.BATCH_JOBS: 9,
}
"""Stored feature codes: the numbers of ``reviewlearn.common.v1.Feature``."""
FEATURE_OF_CODE = {code: feature for feature, code in FEATURE_CODES.items()}


def bucket_sql(url_column: str, salt_parameter: str = ":salt") -> str:
    """``shared.gates.model.rollout_bucket`` in SQL: first 60 bits of SHA-256(salt ':' url)."""
    return (
        "(('x' || substr(encode(sha256(convert_to("
        f"{salt_parameter} || ':' || {url_column}, 'UTF8')), 'hex'), 1, 15))::bit(60)::bigint"
        " % 10000)"
    )


async def current_version(connection: AsyncConnection) -> int:
    return int((await connection.execute(select(GateState.version))).scalar_one())


async def load_snapshot(engine: AsyncEngine) -> GateSnapshot:
    async with engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            return await read_snapshot(connection)


async def read_snapshot(connection: AsyncConnection) -> GateSnapshot:
    """The snapshot as the connection's transaction sees it."""
    state = (await connection.execute(select(GateState))).one()
    gates = {
        FEATURE_OF_CODE[row.feature]: Switch(
            row.enabled, row.reason, row.updated_by, row.updated_at
        )
        for row in await connection.execute(select(FeatureGateRow))
        if row.feature in FEATURE_OF_CODE
    }
    overrides = {
        (FEATURE_OF_CODE[row.feature], row.repository_url): Switch(
            row.enabled, row.reason, row.updated_by, row.updated_at
        )
        for row in await connection.execute(select(GateOverride))
        if row.feature in FEATURE_OF_CODE
    }
    return GateSnapshot(
        version=state.version,
        kill_switch=KillSwitch(
            state.kill_switch_engaged, state.reason, state.updated_by, state.kill_switch_changed_at
        ),
        global_gates=gates,
        overrides=overrides,
        rollout=await _read_rollout(connection),
    )


async def _read_rollout(connection: AsyncConnection) -> Rollout:
    phase = (
        await connection.execute(
            select(RolloutPhaseRow).order_by(RolloutPhaseRow.id.desc()).limit(1)
        )
    ).first()
    if phase is None:
        return Rollout()
    sticky: frozenset[str] = frozenset()
    percentage = phase.percentage
    if phase.sticky_exposure and percentage < 100:
        rows = await connection.execute(
            text(
                "SELECT repository_url FROM rollout_exposures "
                f"WHERE {bucket_sql('repository_url')} >= :limit"
            ),
            {"salt": phase.salt, "limit": percentage * 100},
        )
        sticky = frozenset(str(row[0]) for row in rows)
    return Rollout(
        in_force=True,
        phase=phase.phase,
        percentage=percentage,
        salt=phase.salt,
        sticky_exposure=phase.sticky_exposure,
        sticky_repositories=sticky,
    )
