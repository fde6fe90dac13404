"""The learning fold's SQL, in one place: set-based statements that turn the feedback log into
counts, and the repository that runs them.

Every statement runs inside the fold's transaction (see
``services.learning.usecases.fold_feedback``) and reads the rows written at or after
``:watermark``, the transaction-id horizon where the previous fold stopped. The new watermark is
the current snapshot's xmin: every transaction below it has finished, so no row can later appear
below the watermark (a bigserial watermark would miss rows whose transactions commit out of
order).

Rows above the new watermark that are already visible are folded now too, and seen again next
time: that is harmless, because folding is idempotent. A finding enters the counts once (ON
CONFLICT DO NOTHING), and its outcome is its greatest event by ``(decisive, occurred_at, id)``
(shared.outcome), so applying an event twice changes nothing. It also keeps learning fresh while a
long-running write transaction elsewhere in the cluster holds the horizon back. The fold and a
full recompute therefore give identical counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.learning.domain.recount import RawEvent, RawFinding
from services.learning.domain.scopes import SEVERITY_NAMES, Dimension, ScopeType
from shared.db.models import Feedback, Finding, FindingDeletion, FindingOutcome, LearningMetric
from shared.outcome import FeedbackKind, Outcome, sql_decisive, sql_outcome_case

_DISMISSED = int(FeedbackKind.DISMISSED)
PENDING = int(Outcome.PENDING)
POSITIVE = int(Outcome.POSITIVE)
NEGATIVE = int(Outcome.NEGATIVE)
DISMISSED = int(Outcome.DISMISSED)

_SEVERITY_KEY = (
    "(CASE fd.severity "
    + " ".join(f"WHEN {i + 1} THEN '{name}'" for i, name in enumerate(SEVERITY_NAMES))
    + " END)"
)
# Every finding counts in 3 scopes x 4 dimensions; these LATERAL lists expand it.
_SCOPES_OF = (
    f"(VALUES ({ScopeType.GLOBAL:d}, 0::bigint), ({ScopeType.TEAM:d}, fd.team_id), "
    f"({ScopeType.REPOSITORY:d}, fd.repository_id))"
)
_DIMENSIONS_OF = (
    f"(VALUES ({Dimension.ALL:d}, '*'), ({Dimension.CATEGORY:d}, fd.category), "
    f"({Dimension.SEVERITY:d}, {_SEVERITY_KEY}), ({Dimension.RULE:d}, fd.rule_id))"
)

# The snapshot's horizon (every transaction below xmin has finished), its xmax (every
# transaction at or above it had not started) and the transactions in progress between them:
# a row of a transaction below xmax and not in progress was visible to the fold, and folded.
SNAPSHOT = """
SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint,
    ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x)
FROM pg_current_snapshot() AS s
"""

LOCK_STATE = "SELECT watermark FROM fold_state WHERE stream = 'feedback' FOR UPDATE"
READ_STATE = "SELECT watermark FROM fold_state WHERE stream = 'feedback'"

CREATE_DELTA = """
CREATE TEMP TABLE IF NOT EXISTS fold_delta (
    team_id bigint, repository_id bigint, category text, severity smallint, rule_id text,
    d_shown integer, d_positive integer, d_negative integer, d_dismissed integer
) ON COMMIT DELETE ROWS
"""

# New findings enter with the outcome of every event already committed for them: an event can
# commit before its finding is folded (a transaction with a lower id that commits later).
FOLD_NEW_FINDINGS = f"""
WITH new_findings AS (
    SELECT * FROM findings WHERE tx_id >= :watermark
), winners AS (
    SELECT DISTINCT ON (fb.finding_id)
        fb.finding_id, fb.kind, fb.occurred_at, fb.id, {sql_decisive("fb.kind")} AS decisive
    FROM suggestion_feedback fb JOIN new_findings nf ON nf.id = fb.finding_id
    ORDER BY fb.finding_id, {sql_decisive("fb.kind")} DESC, fb.occurred_at DESC, fb.id DESC
), inserted AS (
    INSERT INTO finding_outcomes (
        finding_id, team_id, repository_id, pull_request, rule_id, category, severity,
        confidence, fingerprint, pattern_key, outcome, win_decisive, win_occurred_at,
        win_feedback_id, created_at, updated_at)
    SELECT nf.id, nf.team_id, nf.repository_id, nf.pull_request, nf.rule_id, nf.category,
        nf.severity, nf.confidence, nf.fingerprint, nf.pattern_key,
        COALESCE({sql_outcome_case("w.kind")}, {PENDING}), w.decisive, w.occurred_at, w.id,
        nf.created_at, now()
    FROM new_findings nf LEFT JOIN winners w ON w.finding_id = nf.id
    ON CONFLICT (finding_id) DO NOTHING
    RETURNING team_id, repository_id, category, severity, rule_id, outcome
)
INSERT INTO fold_delta
SELECT team_id, repository_id, category, severity, rule_id, 1,
    (outcome = {POSITIVE})::int, (outcome = {NEGATIVE})::int, (outcome = {DISMISSED})::int
FROM inserted
"""

# New events of findings already folded: the finding moves between counts when the new event
# beats its current winner.
FOLD_NEW_EVENTS = f"""
WITH new_winners AS (
    SELECT DISTINCT ON (fb.finding_id)
        fb.finding_id, fb.kind, fb.occurred_at, fb.id, {sql_decisive("fb.kind")} AS decisive
    FROM suggestion_feedback fb
    WHERE fb.tx_id >= :watermark
    ORDER BY fb.finding_id, {sql_decisive("fb.kind")} DESC, fb.occurred_at DESC, fb.id DESC
), changed AS (
    SELECT o.finding_id, o.outcome AS old_outcome, {sql_outcome_case("nw.kind")} AS new_outcome,
        nw.decisive, nw.occurred_at, nw.id
    FROM new_winners nw JOIN finding_outcomes o ON o.finding_id = nw.finding_id
    WHERE o.win_feedback_id IS NULL
       OR (nw.decisive, nw.occurred_at, nw.id)
          > (o.win_decisive, o.win_occurred_at, o.win_feedback_id)
), updated AS (
    UPDATE finding_outcomes o
    SET outcome = c.new_outcome, win_decisive = c.decisive, win_occurred_at = c.occurred_at,
        win_feedback_id = c.id, updated_at = now()
    FROM changed c WHERE o.finding_id = c.finding_id
    RETURNING o.team_id, o.repository_id, o.category, o.severity, o.rule_id,
        c.old_outcome, c.new_outcome
)
INSERT INTO fold_delta
SELECT team_id, repository_id, category, severity, rule_id, 0,
    (new_outcome = {POSITIVE})::int - (old_outcome = {POSITIVE})::int,
    (new_outcome = {NEGATIVE})::int - (old_outcome = {NEGATIVE})::int,
    (new_outcome = {DISMISSED})::int - (old_outcome = {DISMISSED})::int
FROM updated WHERE old_outcome <> new_outcome
"""

# Findings deleted by the feedback service leave orphans here; take them out of the counts.
FOLD_DELETED_FINDINGS = f"""
WITH gone AS (
    DELETE FROM finding_outcomes o
    WHERE NOT EXISTS (SELECT 1 FROM findings f WHERE f.id = o.finding_id)
    RETURNING team_id, repository_id, category, severity, rule_id, outcome
)
INSERT INTO fold_delta
SELECT team_id, repository_id, category, severity, rule_id, -1,
    -(outcome = {POSITIVE})::int, -(outcome = {NEGATIVE})::int, -(outcome = {DISMISSED})::int
FROM gone
"""

# Every finding counts in 3 scopes (global, its team, its repository) x 4 dimensions
# (everything, its category, its severity, its rule). The deltas are summed per distinct
# (team, repository, category, severity, rule) first, so the 12-way expansion runs over a few
# thousand groups rather than over every changed finding.
APPLY_DELTA = f"""
INSERT INTO learning_metrics AS lm
    (scope_type, scope_id, dimension, key, shown, positive, negative, dismissed, updated_at)
SELECT s.scope_type, s.scope_id, d.dimension, d.key,
    sum(fd.d_shown), sum(fd.d_positive), sum(fd.d_negative), sum(fd.d_dismissed), now()
FROM (
    SELECT team_id, repository_id, category, severity, rule_id, sum(d_shown) AS d_shown,
        sum(d_positive) AS d_positive, sum(d_negative) AS d_negative,
        sum(d_dismissed) AS d_dismissed
    FROM fold_delta
    GROUP BY team_id, repository_id, category, severity, rule_id
) fd
CROSS JOIN LATERAL {_SCOPES_OF}
    AS s(scope_type, scope_id)
CROSS JOIN LATERAL {_DIMENSIONS_OF}
    AS d(dimension, key)
GROUP BY s.scope_type, s.scope_id, d.dimension, d.key
ON CONFLICT (scope_type, scope_id, dimension, key) DO UPDATE SET
    shown = lm.shown + EXCLUDED.shown,
    positive = lm.positive + EXCLUDED.positive,
    negative = lm.negative + EXCLUDED.negative,
    dismissed = lm.dismissed + EXCLUDED.dismissed,
    updated_at = now()
"""

DELTA_SIZE = "SELECT count(*), coalesce(sum(abs(d_shown)), 0) FROM fold_delta"

ADVANCE = """
UPDATE fold_state SET watermark = :horizon, updated_at = now(),
    seen_through = :seen_through, in_progress = :in_progress,
    findings_folded = findings_folded + :findings, events_folded = events_folded + :events
WHERE stream = 'feedback'
"""

COUNT_NEW_EVENTS = """
SELECT count(*) FROM suggestion_feedback WHERE tx_id >= :watermark
"""

# A full recompute derives every finding's outcome from the whole log into a scratch table,
# reconciles finding_outcomes with it (usually nothing differs, so almost nothing is written),
# and rebuilds the counts with one grouped query.
RECOMPUTE_OUTCOMES = f"""
CREATE TEMP TABLE recomputed ON COMMIT DROP AS
WITH winners AS (
    SELECT DISTINCT ON (fb.finding_id)
        fb.finding_id, fb.kind, fb.occurred_at, fb.id, {sql_decisive("fb.kind")} AS decisive
    FROM suggestion_feedback fb
    ORDER BY fb.finding_id, {sql_decisive("fb.kind")} DESC, fb.occurred_at DESC, fb.id DESC
)
SELECT f.id AS finding_id, f.team_id, f.repository_id, f.pull_request, f.rule_id, f.category,
    f.severity, f.confidence, f.fingerprint, f.pattern_key,
    COALESCE({sql_outcome_case("w.kind")}, {PENDING}) AS outcome, w.decisive AS win_decisive,
    w.occurred_at AS win_occurred_at, w.id AS win_feedback_id, f.created_at
FROM findings f LEFT JOIN winners w ON w.finding_id = f.id
"""

RECONCILE_OUTCOMES = [
    """
    DELETE FROM finding_outcomes o
    WHERE NOT EXISTS (SELECT 1 FROM recomputed r WHERE r.finding_id = o.finding_id)
    """,
    """
    UPDATE finding_outcomes o
    SET outcome = r.outcome, win_decisive = r.win_decisive, win_occurred_at = r.win_occurred_at,
        win_feedback_id = r.win_feedback_id, updated_at = now()
    FROM recomputed r
    WHERE o.finding_id = r.finding_id
      AND (o.outcome, o.win_feedback_id) IS DISTINCT FROM (r.outcome, r.win_feedback_id)
    """,
    """
    INSERT INTO finding_outcomes (
        finding_id, team_id, repository_id, pull_request, rule_id, category, severity,
        confidence, fingerprint, pattern_key, outcome, win_decisive, win_occurred_at,
        win_feedback_id, created_at, updated_at)
    SELECT r.finding_id, r.team_id, r.repository_id, r.pull_request, r.rule_id, r.category,
        r.severity, r.confidence, r.fingerprint, r.pattern_key, r.outcome, r.win_decisive,
        r.win_occurred_at, r.win_feedback_id, r.created_at, now()
    FROM recomputed r
    WHERE NOT EXISTS (SELECT 1 FROM finding_outcomes o WHERE o.finding_id = r.finding_id)
    """,
]

REBUILD_METRICS = [
    "DELETE FROM learning_metrics",
    f"""
    INSERT INTO learning_metrics
        (scope_type, scope_id, dimension, key, shown, positive, negative, dismissed, updated_at)
    SELECT s.scope_type, s.scope_id, d.dimension, d.key,
        sum(fd.d_shown), sum(fd.d_positive), sum(fd.d_negative), sum(fd.d_dismissed), now()
    FROM (
        SELECT team_id, repository_id, category, severity, rule_id, count(*) AS d_shown,
            count(*) FILTER (WHERE outcome = {POSITIVE}) AS d_positive,
            count(*) FILTER (WHERE outcome = {NEGATIVE}) AS d_negative,
            count(*) FILTER (WHERE outcome = {DISMISSED}) AS d_dismissed
        FROM finding_outcomes
        GROUP BY team_id, repository_id, category, severity, rule_id
    ) fd
    CROSS JOIN LATERAL {_SCOPES_OF}
        AS s(scope_type, scope_id)
    CROSS JOIN LATERAL {_DIMENSIONS_OF}
        AS d(dimension, key)
    GROUP BY s.scope_type, s.scope_id, d.dimension, d.key
    """,
]


# A seeded sample of repositories: the same seed picks the same ones (md5 of seed and id is
# stable), another seed others; reading every id is cheap next to recounting every finding.
SAMPLE_REPOSITORIES = """
SELECT id FROM repositories ORDER BY md5(:seed || ':' || id::text), id LIMIT :size
"""

# The repository-scope counts of some repositories, recounted from the log: each finding's
# outcome is its greatest event (as in RECOMPUTE_OUTCOMES), counted in the 4 dimensions.
RECOUNT_REPOSITORIES = f"""
WITH sampled AS (
    SELECT id, repository_id, category, severity, rule_id
    FROM findings WHERE repository_id = ANY(:repositories)
), winners AS (
    SELECT DISTINCT ON (fb.finding_id) fb.finding_id, fb.kind
    FROM suggestion_feedback fb JOIN sampled s ON s.id = fb.finding_id
    ORDER BY fb.finding_id, {sql_decisive("fb.kind")} DESC, fb.occurred_at DESC, fb.id DESC
), fd AS (
    SELECT s.*, COALESCE({sql_outcome_case("w.kind")}, {PENDING}) AS outcome
    FROM sampled s LEFT JOIN winners w ON w.finding_id = s.id
)
SELECT {ScopeType.REPOSITORY:d}, fd.repository_id, d.dimension, d.key, count(*),
    count(*) FILTER (WHERE outcome = {POSITIVE}), count(*) FILTER (WHERE outcome = {NEGATIVE}),
    count(*) FILTER (WHERE outcome = {DISMISSED})
FROM fd CROSS JOIN LATERAL {_DIMENSIONS_OF} AS d(dimension, key)
GROUP BY fd.repository_id, d.dimension, d.key
"""


@dataclass(frozen=True)
class Snapshot:
    """What one fold could see (see SNAPSHOT)."""

    horizon: int
    seen_through: int
    in_progress: tuple[int, ...]


@dataclass(frozen=True)
class FoldCounts:
    watermark: int
    horizon: int
    findings: int
    events: int
    changes: int


_METRIC_COLUMNS = (
    LearningMetric.scope_type,
    LearningMetric.scope_id,
    LearningMetric.dimension,
    LearningMetric.key,
    LearningMetric.shown,
    LearningMetric.positive,
    LearningMetric.negative,
    LearningMetric.dismissed,
)


MetricCounts = dict[tuple[int, int, int, str], tuple[int, int, int, int]]
"""(shown, positive, negative, dismissed) by (scope type, scope id, dimension, key)."""


def _nonzero(rows: Iterable[Any]) -> MetricCounts:
    return {
        (int(a), int(b), int(c), str(d)): (int(e), int(f), int(g), int(h))
        for a, b, c, d, e, f, g, h in rows
        if (e, f, g, h) != (0, 0, 0, 0)
    }


class FoldRepository:
    """The fold's statements; the caller holds the fold_state row lock for the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_watermark(self) -> int:
        """The watermark, locked for this transaction: folders take turns."""
        return int((await self._session.execute(text(LOCK_STATE))).scalar_one())

    async def watermark(self) -> int:
        """The watermark, without locking it (for a check that must not block the fold)."""
        return int((await self._session.execute(text(READ_STATE))).scalar_one())

    async def snapshot(self) -> Snapshot:
        row = (await self._session.execute(text(SNAPSHOT))).one()
        return Snapshot(int(row[0]), int(row[1]), tuple(int(x) for x in row[2]))

    async def fold(
        self, *, watermark: int, snapshot: Snapshot, deletions: bool, advance: bool = True
    ) -> FoldCounts:
        """Folds what is new since ``watermark``; ``advance`` moves the watermark (a check that
        is rolled back leaves it alone)."""
        horizon = max(snapshot.horizon, watermark)
        params = {"watermark": watermark, "horizon": horizon}
        await self._session.execute(text(CREATE_DELTA))
        found = cast(
            CursorResult[Any],
            await self._session.execute(text(FOLD_NEW_FINDINGS), params),
        )
        findings = found.rowcount or 0
        events = 0
        if watermark > 0:  # a recompute (watermark 0) already took every event with its finding
            events = int((await self._session.execute(text(COUNT_NEW_EVENTS), params)).scalar_one())
            if events:
                await self._session.execute(text(FOLD_NEW_EVENTS), params)
        if deletions:
            await self._session.execute(text(FOLD_DELETED_FINDINGS))
        changes = int((await self._session.execute(text(DELTA_SIZE))).first()[0])  # type: ignore[index]
        if changes:
            await self._session.execute(text(APPLY_DELTA))
        # An idle poll writes nothing, unless what it saw moved (the backlog depends on it).
        if advance and (changes or horizon != watermark or snapshot.seen_through > horizon):
            await self._session.execute(
                text(ADVANCE),
                {
                    "horizon": horizon,
                    "seen_through": snapshot.seen_through,
                    "in_progress": list(snapshot.in_progress),
                    "findings": findings,
                    "events": events,
                },
            )
        return FoldCounts(watermark, horizon, findings, events, changes)

    async def orphaned_outcomes(self) -> int:
        """Outcomes still counted for findings that no longer exist (deleted by hand, say)."""
        found = await self._session.execute(
            select(func.count())
            .select_from(FindingOutcome)
            .where(~select(Finding.id).where(Finding.id == FindingOutcome.finding_id).exists())
        )
        return int(found.scalar_one())

    async def latest_deletion(self) -> int:
        """The id of the newest entry in the feedback service's deletion log (0: none)."""
        found = await self._session.execute(select(func.coalesce(func.max(FindingDeletion.id), 0)))
        return int(found.scalar_one())

    async def metric_counts(self, *, repositories: Sequence[int] | None = None) -> MetricCounts:
        """Every non-zero count, keyed by (scope type, scope id, dimension, key); or only the
        repository-scope counts of ``repositories``."""
        query = select(*_METRIC_COLUMNS)
        if repositories is not None:
            query = query.where(
                LearningMetric.scope_type == int(ScopeType.REPOSITORY),
                LearningMetric.scope_id.in_(list(repositories)),
            )
        return _nonzero(await self._session.execute(query))

    async def sample_repositories(self, *, size: int, seed: str) -> list[int]:
        """Up to ``size`` repository ids, the same ones for the same seed (SAMPLE_REPOSITORIES)."""
        found = await self._session.execute(text(SAMPLE_REPOSITORIES), {"seed": seed, "size": size})
        return [int(row[0]) for row in found]

    async def recount_repositories(self, repositories: Sequence[int]) -> MetricCounts:
        """The repository-scope counts of ``repositories`` recounted from the log, as
        ``metric_counts`` keys them."""
        return _nonzero(
            await self._session.execute(
                text(RECOUNT_REPOSITORIES), {"repositories": list(repositories)}
            )
        )

    async def raw_log(self) -> tuple[list[RawFinding], list[RawEvent]]:
        """Every finding and feedback event as stored, for the brute-force recount."""
        findings = [
            RawFinding(int(a), int(b), int(c), str(d), int(e), str(f))
            for a, b, c, d, e, f in await self._session.execute(
                select(
                    Finding.id,
                    Finding.team_id,
                    Finding.repository_id,
                    Finding.category,
                    Finding.severity,
                    Finding.rule_id,
                )
            )
        ]
        events: list[RawEvent] = [
            (int(a), int(b), c, int(d))
            for a, b, c, d in await self._session.execute(
                select(Feedback.finding_id, Feedback.kind, Feedback.occurred_at, Feedback.id)
            )
        ]
        return findings, events

    async def recompute(self, *, snapshot: Snapshot, advance: bool = True) -> FoldCounts:
        """Rebuilds outcomes and counts from the whole log; the watermark moves to the
        snapshot's horizon (when ``advance``)."""
        horizon = snapshot.horizon
        await self._session.execute(text(RECOMPUTE_OUTCOMES))
        findings = int(
            (await self._session.execute(text("SELECT count(*) FROM recomputed"))).scalar_one()
        )
        changes = 0
        for statement in RECONCILE_OUTCOMES:
            result = cast(CursorResult[Any], await self._session.execute(text(statement)))
            changes += result.rowcount or 0
        for statement in REBUILD_METRICS:
            await self._session.execute(text(statement))
        if advance:
            await self._session.execute(
                text(ADVANCE),
                {
                    "horizon": horizon,
                    "seen_through": snapshot.seen_through,
                    "in_progress": list(snapshot.in_progress),
                    "findings": 0,
                    "events": 0,
                },
            )
        return FoldCounts(0, horizon, findings, 0, changes)
