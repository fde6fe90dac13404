"""The SQL of the insights fold: set-based statements that keep the rollups current.

Every statement runs inside one fold transaction (usecases.fold_rollups) and reads the rows
written at or after ``:watermark``, a transaction-id horizon (shared.log_horizon explains why
that is exactly once). Folding is idempotent, because rows above the new watermark that are
already visible are read again next time:

* a finding enters ``insight_finding_states`` once (ON CONFLICT DO NOTHING), with the outcome
  and first decisive action of every event already committed for it;
* an event changes a state only when it beats the state's winner by the outcome rule's key
  ``(decisive, occurred_at, id)`` (shared.outcome) or is an earlier decisive action; applying it
  twice changes nothing.

Each change of a state is written to ``insight_delta`` as −1 for what the finding counted as
before and +1 for what it counts as now; the deltas are summed into the rollups at the end.
Therefore the rollups after any sequence of folds equal a rebuild from the whole log.
"""

from __future__ import annotations

from shared.outcome import Outcome, sql_decisive, sql_outcome_case

PENDING = int(Outcome.PENDING)
POSITIVE = int(Outcome.POSITIVE)
NEGATIVE = int(Outcome.NEGATIVE)
DISMISSED = int(Outcome.DISMISSED)


def bucket_sql(first_action: str, created: str) -> str:
    """The time-to-first-action bucket (domain.action_times.bucket_of, in SQL); NULL when the
    finding has no decisive reaction."""
    minutes = f"GREATEST(0.0, EXTRACT(EPOCH FROM ({first_action} - {created}))::float8 / 60.0)"
    return (
        f"(CASE WHEN {first_action} IS NULL THEN NULL "
        f"ELSE LEAST(255, floor(8.0 * ln(1.0 + {minutes}) / ln(2.0)))::smallint END)"
    )


def _utc_day(column: str) -> str:
    return f"(({column}) AT TIME ZONE 'UTC')::date"


CREATE_DELTAS = [
    """
    CREATE TEMP TABLE IF NOT EXISTS insight_delta (
        team_id bigint, repository_id bigint, day date, category text, severity smallint,
        rule_id text, outcome smallint, bucket smallint, d integer
    ) ON COMMIT DELETE ROWS
    """,
    """
    CREATE TEMP TABLE IF NOT EXISTS insight_review_delta (
        team_id bigint, repository_id bigint, day date, d integer
    ) ON COMMIT DELETE ROWS
    """,
    """
    CREATE TEMP TABLE IF NOT EXISTS insight_gone (
        review_id bigint, team_id bigint, repository_id bigint, review_day date
    ) ON COMMIT DELETE ROWS
    """,
]

_STATE_COLUMNS = """
    finding_id, review_id, review_day, team_id, repository_id, rule_id, category, severity, day,
    outcome, win_decisive, win_occurred_at, win_feedback_id, first_action_at, created_at
"""


def _states_from(findings: str, events_join: str) -> str:
    """SELECT of state rows for the findings of ``findings`` with the events they have."""
    return f"""
    WITH events AS (
        SELECT fb.finding_id, fb.kind, fb.occurred_at, fb.id, {sql_decisive("fb.kind")} AS decisive
        FROM suggestion_feedback fb {events_join}
    ), winners AS (
        SELECT DISTINCT ON (finding_id) finding_id, kind, occurred_at, id, decisive
        FROM events ORDER BY finding_id, decisive DESC, occurred_at DESC, id DESC
    ), first_actions AS (
        SELECT finding_id, min(occurred_at) AS first_action_at
        FROM events WHERE decisive GROUP BY finding_id
    )
    SELECT f.id, f.review_id, {_utc_day("rv.created_at")}, f.team_id, f.repository_id,
        f.rule_id, f.category, f.severity, {_utc_day("f.created_at")},
        COALESCE({sql_outcome_case("w.kind")}, {PENDING}), w.decisive, w.occurred_at, w.id,
        fa.first_action_at, f.created_at
    FROM {findings} f
    JOIN reviews rv ON rv.id = f.review_id
    LEFT JOIN winners w ON w.finding_id = f.id
    LEFT JOIN first_actions fa ON fa.finding_id = f.id
    """


# New findings enter with every event already committed for them: an event can commit before
# its finding is folded (a transaction with a lower id that commits later). A review counts
# when its first finding enters; the NOT EXISTS sees the table as it was before this statement.
FOLD_NEW_FINDINGS = f"""
WITH new_findings AS MATERIALIZED (
    SELECT * FROM findings WHERE tx_id >= :watermark
), inserted AS (
    INSERT INTO insight_finding_states ({_STATE_COLUMNS})
    {_states_from("new_findings", "JOIN new_findings nf ON nf.id = fb.finding_id")}
    ON CONFLICT (finding_id) DO NOTHING
    RETURNING *
), new_reviews AS (
    INSERT INTO insight_review_delta
    SELECT DISTINCT ON (i.review_id) i.team_id, i.repository_id, i.review_day, 1
    FROM inserted i
    WHERE NOT EXISTS (SELECT 1 FROM insight_finding_states s WHERE s.review_id = i.review_id)
    ORDER BY i.review_id
)
INSERT INTO insight_delta
SELECT team_id, repository_id, day, category, severity, rule_id, outcome,
    {bucket_sql("first_action_at", "created_at")}, 1
FROM inserted
"""

# New events of findings already folded: the state changes when the event beats its winner or
# is an earlier decisive action.
FOLD_NEW_EVENTS = f"""
WITH new_events AS MATERIALIZED (
    SELECT fb.finding_id, fb.kind, fb.occurred_at, fb.id, {sql_decisive("fb.kind")} AS decisive
    FROM suggestion_feedback fb WHERE fb.tx_id >= :watermark
), new_winners AS (
    SELECT DISTINCT ON (finding_id) finding_id, kind, occurred_at, id, decisive
    FROM new_events ORDER BY finding_id, decisive DESC, occurred_at DESC, id DESC
), new_first AS (
    SELECT finding_id, min(occurred_at) AS first_action_at
    FROM new_events WHERE decisive GROUP BY finding_id
), candidates AS (
    SELECT s.finding_id, s.outcome AS old_outcome, s.first_action_at AS old_first,
        (s.win_feedback_id IS NULL
         OR (nw.decisive, nw.occurred_at, nw.id)
            > (s.win_decisive, s.win_occurred_at, s.win_feedback_id)) AS wins,
        nw.kind, nw.decisive, nw.occurred_at, nw.id,
        CASE WHEN nf.first_action_at IS NOT NULL
              AND (s.first_action_at IS NULL OR nf.first_action_at < s.first_action_at)
             THEN nf.first_action_at ELSE s.first_action_at END AS new_first
    FROM new_winners nw
    JOIN insight_finding_states s ON s.finding_id = nw.finding_id
    LEFT JOIN new_first nf ON nf.finding_id = nw.finding_id
), changed AS (
    SELECT * FROM candidates WHERE wins OR new_first IS DISTINCT FROM old_first
), updated AS (
    UPDATE insight_finding_states s SET
        outcome = CASE WHEN c.wins THEN {sql_outcome_case("c.kind")} ELSE s.outcome END,
        win_decisive = CASE WHEN c.wins THEN c.decisive ELSE s.win_decisive END,
        win_occurred_at = CASE WHEN c.wins THEN c.occurred_at ELSE s.win_occurred_at END,
        win_feedback_id = CASE WHEN c.wins THEN c.id ELSE s.win_feedback_id END,
        first_action_at = c.new_first
    FROM changed c WHERE s.finding_id = c.finding_id
    RETURNING s.team_id, s.repository_id, s.day, s.category, s.severity, s.rule_id,
        s.created_at, c.old_outcome, s.outcome AS new_outcome, c.old_first,
        s.first_action_at AS new_first
)
INSERT INTO insight_delta
SELECT team_id, repository_id, day, category, severity, rule_id, old_outcome,
    {bucket_sql("old_first", "created_at")}, -1
FROM updated
UNION ALL
SELECT team_id, repository_id, day, category, severity, rule_id, new_outcome,
    {bucket_sql("new_first", "created_at")}, 1
FROM updated
"""

# Findings the feedback service deleted leave orphan states: take them out of the rollups.
FOLD_DELETED_FINDINGS = [
    f"""
    WITH gone AS (
        DELETE FROM insight_finding_states s
        WHERE NOT EXISTS (SELECT 1 FROM findings f WHERE f.id = s.finding_id)
        RETURNING s.*
    ), gone_reviews AS (
        INSERT INTO insight_gone
        SELECT DISTINCT review_id, team_id, repository_id, review_day FROM gone
    )
    INSERT INTO insight_delta
    SELECT team_id, repository_id, day, category, severity, rule_id, outcome,
        {bucket_sql("first_action_at", "created_at")}, -1
    FROM gone
    """,
    # A separate statement, so that it sees the states without the deleted ones.
    """
    INSERT INTO insight_review_delta
    SELECT g.team_id, g.repository_id, g.review_day, -1 FROM insight_gone g
    WHERE NOT EXISTS (SELECT 1 FROM insight_finding_states s WHERE s.review_id = g.review_id)
    """,
]

LATEST_DELETION = "SELECT coalesce(max(id), 0) FROM finding_deletions"

# The deltas, summed per rollup key; rows whose count reaches zero are removed, so that the
# rollups hold exactly the rows a rebuild would.
APPLY_DELTAS = [
    """
    INSERT INTO insight_rollups AS r
        (repository_id, day, category, severity, rule_id, outcome, team_id, findings)
    SELECT repository_id, day, category, severity, rule_id, outcome, team_id, sum(d)
    FROM insight_delta
    GROUP BY repository_id, day, category, severity, rule_id, outcome, team_id
    HAVING sum(d) <> 0
    ON CONFLICT (repository_id, day, category, severity, rule_id, outcome)
    DO UPDATE SET findings = r.findings + EXCLUDED.findings
    """,
    """
    DELETE FROM insight_rollups r USING (
        SELECT DISTINCT repository_id, day, category, severity, rule_id, outcome
        FROM insight_delta
    ) d
    WHERE r.repository_id = d.repository_id AND r.day = d.day AND r.category = d.category
      AND r.severity = d.severity AND r.rule_id = d.rule_id AND r.outcome = d.outcome
      AND r.findings = 0
    """,
    """
    INSERT INTO insight_action_times AS a
        (repository_id, day, category, bucket, team_id, findings)
    SELECT repository_id, day, category, bucket, team_id, sum(d)
    FROM insight_delta WHERE bucket IS NOT NULL
    GROUP BY repository_id, day, category, bucket, team_id
    HAVING sum(d) <> 0
    ON CONFLICT (repository_id, day, category, bucket)
    DO UPDATE SET findings = a.findings + EXCLUDED.findings
    """,
    """
    DELETE FROM insight_action_times a USING (
        SELECT DISTINCT repository_id, day, category, bucket FROM insight_delta
        WHERE bucket IS NOT NULL
    ) d
    WHERE a.repository_id = d.repository_id AND a.day = d.day AND a.category = d.category
      AND a.bucket = d.bucket AND a.findings = 0
    """,
    """
    INSERT INTO insight_global_rollups AS g (day, category, outcome, findings)
    SELECT day, category, outcome, sum(d) FROM insight_delta
    GROUP BY day, category, outcome
    HAVING sum(d) <> 0
    ON CONFLICT (day, category, outcome) DO UPDATE SET findings = g.findings + EXCLUDED.findings
    """,
    """
    DELETE FROM insight_global_rollups g USING (
        SELECT DISTINCT day, category, outcome FROM insight_delta
    ) d
    WHERE g.day = d.day AND g.category = d.category AND g.outcome = d.outcome
      AND g.findings = 0
    """,
    """
    INSERT INTO insight_review_rollups AS v (repository_id, day, team_id, reviews)
    SELECT repository_id, day, team_id, sum(d) FROM insight_review_delta
    GROUP BY repository_id, day, team_id
    HAVING sum(d) <> 0
    ON CONFLICT (repository_id, day) DO UPDATE SET reviews = v.reviews + EXCLUDED.reviews
    """,
    """
    DELETE FROM insight_review_rollups v USING (
        SELECT DISTINCT repository_id, day FROM insight_review_delta
    ) d
    WHERE v.repository_id = d.repository_id AND v.day = d.day AND v.reviews = 0
    """,
]

# Every team whose numbers moved gets a new version: cache keys carry it.
BUMP_CHANGED_TEAMS = """
INSERT INTO insight_team_versions AS v (team_id, version, updated_at)
SELECT team_id, 1, now() FROM (
    SELECT team_id FROM insight_delta UNION SELECT team_id FROM insight_review_delta
) changed
ON CONFLICT (team_id) DO UPDATE SET version = v.version + 1, updated_at = now()
RETURNING team_id, version
"""

BUMP_TEAMS = """
INSERT INTO insight_team_versions AS v (team_id, version, updated_at)
SELECT unnest(CAST(:team_ids AS bigint[])), 1, now()
ON CONFLICT (team_id) DO UPDATE SET version = v.version + 1, updated_at = now()
RETURNING team_id, version
"""

ADVANCE_COUNTERS = """
UPDATE insight_fold_state
SET findings_folded = findings_folded + :findings, events_folded = events_folded + :changes,
    deletions_seen = :deletions_seen, updated_at = now()
WHERE stream = :stream
"""

# A rebuild derives every state from the whole log and every rollup from the states, in one
# transaction: readers see the old rollups or the new ones, never a half.
REBUILD = [
    "DELETE FROM insight_finding_states",
    f"INSERT INTO insight_finding_states ({_STATE_COLUMNS}) " + _states_from("findings", ""),
    "DELETE FROM insight_rollups",
    """
    INSERT INTO insight_rollups
        (repository_id, day, category, severity, rule_id, outcome, team_id, findings)
    SELECT repository_id, day, category, severity, rule_id, outcome, team_id, count(*)
    FROM insight_finding_states
    GROUP BY repository_id, day, category, severity, rule_id, outcome, team_id
    """,
    "DELETE FROM insight_action_times",
    f"""
    INSERT INTO insight_action_times (repository_id, day, category, bucket, team_id, findings)
    SELECT repository_id, day, category, bucket, team_id, count(*) FROM (
        SELECT repository_id, day, category, team_id,
            {bucket_sql("first_action_at", "created_at")} AS bucket
        FROM insight_finding_states WHERE first_action_at IS NOT NULL
    ) timed
    GROUP BY repository_id, day, category, bucket, team_id
    """,
    "DELETE FROM insight_global_rollups",
    """
    INSERT INTO insight_global_rollups (day, category, outcome, findings)
    SELECT day, category, outcome, count(*) FROM insight_finding_states
    GROUP BY day, category, outcome
    """,
    "DELETE FROM insight_review_rollups",
    """
    INSERT INTO insight_review_rollups (repository_id, day, team_id, reviews)
    SELECT repository_id, review_day, team_id, count(DISTINCT review_id)
    FROM insight_finding_states
    GROUP BY repository_id, review_day, team_id
    """,
]

ALL_TEAMS = "SELECT id FROM teams"

# What the rollups hold, for comparing a fold with a rebuild.
SNAPSHOTS = {
    "insight_rollups": (
        "SELECT repository_id, day, category, severity, rule_id, outcome, team_id, findings "
        "FROM insight_rollups"
    ),
    "insight_action_times": (
        "SELECT repository_id, day, category, bucket, team_id, findings FROM insight_action_times"
    ),
    "insight_global_rollups": "SELECT day, category, outcome, findings FROM insight_global_rollups",
    "insight_review_rollups": (
        "SELECT repository_id, day, team_id, reviews FROM insight_review_rollups"
    ),
}
