"""A generated feedback log written straight into the feedback tables, and the brute force that
recomputes what the insights rollups must hold from those raw rows.

The rows are what the feedback service stores (``tx_id`` takes its default, so the insights fold
picks them up as if the service had written them); writing them with SQL lets a test commit them
in many transactions, in an order it chooses, between folds.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.insights.domain.action_times import bucket_of
from shared.outcome import FeedbackKind, is_decisive, outcome_of

CATEGORIES = ("security", "performance", "style", "correctness")
RULES = {category: [f"{category[:3]}/rule-{i}" for i in range(4)] for category in CATEGORIES}
# Kinds drawn per event: ~45% positive, ~30% negative, ~25% dismissed.
KINDS = [1, 1, 2, 6, 2, 3, 4, 7, 5, 5]


@dataclass
class GeneratedLog:
    teams: dict[str, int] = field(default_factory=dict)
    repositories: dict[str, tuple[int, int]] = field(default_factory=dict)
    """url → (id, team id)."""
    findings: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[tuple[int, int, int, datetime]] = field(default_factory=list)
    """(id, repository id, team id, created_at)."""


def generate(
    *,
    seed: int,
    teams: int = 3,
    repositories_per_team: int = 2,
    reviews: int = 120,
    days: int = 120,
    now: datetime | None = None,
    bias: dict[str, float] | None = None,
) -> GeneratedLog:
    """Reviews spread over ``days`` days before ``now``; 1–6 findings each, 0–3 events each.

    ``bias`` maps a team name to a drift of its positive share per day (to make trends).
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    log = GeneratedLog()
    for t in range(teams):
        team = f"team-{t}"
        log.teams[team] = t + 1
        for r in range(repositories_per_team):
            url = f"https://git.example.com/{team}/repo-{r}"
            log.repositories[url] = (len(log.repositories) + 1, t + 1)
    urls = list(log.repositories)
    for review_id in range(1, reviews + 1):
        url = rng.choice(urls)
        repository_id, team_id = log.repositories[url]
        created = now - timedelta(days=rng.uniform(0, days))
        log.reviews.append((review_id, repository_id, team_id, created))
        for _ in range(rng.randint(1, 6)):
            finding_id = len(log.findings) + 1
            category = rng.choice(CATEGORIES)
            log.findings.append(
                {
                    "id": finding_id,
                    "review_id": review_id,
                    "repository_id": repository_id,
                    "team_id": team_id,
                    "pull_request": review_id,
                    "client_finding_id": f"f{finding_id}",
                    "rule_id": rng.choice(RULES[category]),
                    "category": category,
                    "severity": rng.randint(1, 5),
                    "created_at": created,
                }
            )
            team_name = f"team-{team_id - 1}"
            drift = (bias or {}).get(team_name, 0.0) * (days - (now - created).days)
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                if rng.random() < 0.45 + drift:
                    kind = rng.choice([1, 2, 6])
                else:
                    kind = rng.choice([3, 4, 7, 5, 5])
                log.events.append(
                    {
                        "id": len(log.events) + 1,
                        "event_id": f"e{len(log.events) + 1}",
                        "finding_id": finding_id,
                        "repository_id": repository_id,
                        "kind": kind,
                        "occurred_at": created + timedelta(minutes=rng.expovariate(1 / 240)),
                    }
                )
    return log


async def write_scaffold(connection: AsyncConnection, log: GeneratedLog) -> None:
    """Teams, repositories and reviews (not read by the fold by tx_id)."""
    for name, team_id in log.teams.items():
        await connection.execute(
            text("INSERT INTO teams (id, name) VALUES (:id, :name)"), {"id": team_id, "name": name}
        )
    for url, (repository_id, team_id) in log.repositories.items():
        await connection.execute(
            text("INSERT INTO repositories (id, url, team_id) VALUES (:id, :url, :team)"),
            {"id": repository_id, "url": url, "team": team_id},
        )
    for review_id, repository_id, _, created in log.reviews:
        await connection.execute(
            text(
                "INSERT INTO reviews (id, repository_id, pull_request, head_commit, created_at) "
                "VALUES (:id, :repo, :pr, 'abc', :created)"
            ),
            {"id": review_id, "repo": repository_id, "pr": review_id, "created": created},
        )


async def write_findings(connection: AsyncConnection, findings: list[dict[str, Any]]) -> None:
    if not findings:
        return
    await connection.execute(
        text(
            "INSERT INTO findings (id, review_id, repository_id, team_id, pull_request, "
            "client_finding_id, rule_id, category, severity, confidence, file_path, line_start, "
            "line_end, title, message, fingerprint, pattern_key, created_at) VALUES "
            "(:id, :review_id, :repository_id, :team_id, :pull_request, :client_finding_id, "
            ":rule_id, :category, :severity, 0.5, 'a.py', 1, 1, 't', 'm', 'fp', 'pk', :created_at)"
        ),
        findings,
    )


async def write_events(connection: AsyncConnection, events: list[dict[str, Any]]) -> None:
    if not events:
        return
    await connection.execute(
        text(
            "INSERT INTO suggestion_feedback (id, event_id, finding_id, repository_id, kind, "
            "actor_id, occurred_at) VALUES "
            "(:id, :event_id, :finding_id, :repository_id, :kind, 'dev', :occurred_at)"
        ),
        events,
    )


async def advance_sequences(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        for table in ("teams", "repositories", "reviews", "findings", "suggestion_feedback"):
            await connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
            )


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@dataclass
class Expected:
    rollups: Counter[tuple[Any, ...]]
    action_times: Counter[tuple[Any, ...]]
    reviews: Counter[tuple[Any, ...]]
    global_rollups: Counter[tuple[Any, ...]]
    first_action_minutes: dict[int, float]
    outcomes: dict[int, int]


async def brute_force(connection: AsyncConnection) -> Expected:
    """Everything the rollups must hold, recomputed in Python from the raw rows as stored."""
    findings = (
        await connection.execute(
            text(
                "SELECT f.id, f.review_id, f.team_id, f.repository_id, f.rule_id, f.category, "
                "f.severity, f.created_at, r.created_at FROM findings f "
                "JOIN reviews r ON r.id = f.review_id"
            )
        )
    ).all()
    events: dict[int, list[tuple[int, datetime, int]]] = {}
    for finding_id, kind, occurred_at, event_id in await connection.execute(
        text("SELECT finding_id, kind, occurred_at, id FROM suggestion_feedback")
    ):
        events.setdefault(finding_id, []).append((kind, occurred_at, event_id))
    expected = Expected(Counter(), Counter(), Counter(), Counter(), {}, {})
    reviews: set[tuple[Any, ...]] = set()
    for fid, review_id, team_id, repo_id, rule, category, severity, created, review_at in findings:
        own = events.get(fid, [])
        outcome = int(outcome_of(own))
        expected.outcomes[fid] = outcome
        day = utc_day(created)
        expected.rollups[(repo_id, day, category, severity, rule, outcome, team_id)] += 1
        expected.global_rollups[(day, category, outcome)] += 1
        reviews.add((repo_id, utc_day(review_at), team_id, review_id))
        decisive = [at for kind, at, _ in own if is_decisive(FeedbackKind(kind))]
        if decisive:
            minutes = (min(decisive) - created).total_seconds() / 60.0
            expected.first_action_minutes[fid] = max(0.0, minutes)
            bucket = bucket_of(minutes)
            expected.action_times[(repo_id, day, category, bucket, team_id)] += 1
    for review in reviews:
        expected.reviews[review[:3]] += 1
    return expected


def as_counter(rows: set[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """Rollup rows (key..., count) as a Counter of key → count."""
    return Counter({row[:-1]: row[-1] for row in rows})
