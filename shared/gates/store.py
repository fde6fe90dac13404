"""Reading the gate snapshot from PostgreSQL: the tables the control service writes.

The whole snapshot — version, kill switch, global gates, overrides, the current rollout phase
and its sticky repositories — is one statement: one round trip (propagation time is mostly
this read), and one statement sees one database snapshot, so it is never a mix of two versions.
It runs outside a transaction block (autocommit): no BEGIN/COMMIT round trips, nothing held.
Nothing here writes; only the control service changes gates.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.gates.model import Feature, GateSnapshot, KillSwitch, Rollout, Switch

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


_VERSION = text("SELECT version FROM gate_state WHERE id = 1")

_SNAPSHOT = text(
    f"""
    WITH latest AS (
        SELECT phase, percentage, salt, sticky_exposure
        FROM rollout_phases ORDER BY id DESC LIMIT 1
    )
    SELECT
        (SELECT json_build_object(
            'version', version, 'engaged', kill_switch_engaged, 'reason', reason,
            'by', updated_by, 'at', kill_switch_changed_at)
         FROM gate_state WHERE id = 1),
        (SELECT coalesce(json_agg(json_build_object(
            'feature', feature, 'enabled', enabled, 'reason', reason,
            'by', updated_by, 'at', updated_at)), '[]'::json)
         FROM feature_gates),
        (SELECT coalesce(json_agg(json_build_object(
            'feature', feature, 'url', repository_url, 'enabled', enabled, 'reason', reason,
            'by', updated_by, 'at', updated_at)), '[]'::json)
         FROM gate_overrides),
        (SELECT row_to_json(latest) FROM latest),
        (SELECT coalesce(json_agg(e.repository_url), '[]'::json)
         FROM rollout_exposures e, latest
         WHERE latest.sticky_exposure AND latest.percentage < 100
           AND {bucket_sql("e.repository_url", "latest.salt")} >= latest.percentage * 100)
    """
)


async def stored_version(engine: AsyncEngine) -> int:
    """The version in the database (one indexed single-row read)."""
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        return int((await connection.execute(_VERSION)).scalar_one())


async def load_snapshot(engine: AsyncEngine) -> GateSnapshot:
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        row = (await connection.execute(_SNAPSHOT)).one()
    return snapshot_of(*(_json(value) for value in row))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _switch(item: dict[str, Any]) -> Switch:
    return Switch(bool(item["enabled"]), item["reason"], item["by"], _time(item["at"]))


def snapshot_of(
    state: dict[str, Any],
    gates: list[dict[str, Any]],
    overrides: list[dict[str, Any]],
    phase: dict[str, Any] | None,
    sticky: list[str],
) -> GateSnapshot:
    rollout = Rollout()
    if phase is not None:
        rollout = Rollout(
            in_force=True,
            phase=int(phase["phase"]),
            percentage=int(phase["percentage"]),
            salt=str(phase["salt"]),
            sticky_exposure=bool(phase["sticky_exposure"]),
            sticky_repositories=frozenset(sticky),
        )
    return GateSnapshot(
        version=int(state["version"]),
        kill_switch=KillSwitch(
            bool(state["engaged"]), state["reason"], state["by"], _time(state["at"])
        ),
        global_gates={
            FEATURE_OF_CODE[item["feature"]]: _switch(item)
            for item in gates
            if item["feature"] in FEATURE_OF_CODE
        },
        overrides={
            (FEATURE_OF_CODE[item["feature"]], item["url"]): _switch(item)
            for item in overrides
            if item["feature"] in FEATURE_OF_CODE
        },
        rollout=rollout,
    )
