"""The reads of RankSuggestions: the repository, registered findings, earlier dismissals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import BigInteger, Text

from shared.db.models import Finding, FindingOutcome, Repository
from shared.outcome import Outcome


@dataclass(frozen=True)
class FindingRecord:
    """A registered finding as the ranker needs it."""

    finding_id: int
    repository_id: int
    client_finding_id: str | None
    rule_id: str
    category: str
    severity: int
    confidence: float
    file_path: str
    line_start: int
    message: str
    fingerprint: str


class RankingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def repository(self, url: str) -> tuple[int, int] | None:
        """(repository id, team id) of a repository URL."""
        row = (
            await self._session.execute(
                select(Repository.id, Repository.team_id).where(Repository.url == url)
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else None

    async def findings(self, finding_ids: Sequence[int]) -> dict[int, FindingRecord]:
        if not finding_ids:
            return {}
        rows = await self._session.execute(
            select(
                Finding.id,
                Finding.repository_id,
                Finding.client_finding_id,
                Finding.rule_id,
                Finding.category,
                Finding.severity,
                Finding.confidence,
                Finding.file_path,
                Finding.line_start,
                Finding.message,
                Finding.fingerprint,
            ).where(
                Finding.id
                == func.any(bindparam("ids", value=list(finding_ids), type_=ARRAY(BigInteger)))
            )
        )
        return {int(row[0]): FindingRecord(*row) for row in rows}

    async def dismissed_fingerprints(
        self, *, repository_id: int, pull_request: int, fingerprints: Sequence[str]
    ) -> set[str]:
        """Fingerprints dismissed or rejected earlier on this pull request."""
        if not fingerprints:
            return set()
        rows = await self._session.execute(
            select(FindingOutcome.fingerprint)
            .where(
                FindingOutcome.repository_id == repository_id,
                FindingOutcome.pull_request == pull_request,
                FindingOutcome.outcome.in_([int(Outcome.NEGATIVE), int(Outcome.DISMISSED)]),
                FindingOutcome.fingerprint
                == func.any(bindparam("fps", value=list(set(fingerprints)), type_=ARRAY(Text))),
            )
            .distinct()
        )
        return {str(fp) for (fp,) in rows}
