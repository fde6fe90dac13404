"""What the model sees of a finding, and the outcome log it is fitted on.

A finding is described by its scopes (team, repository), its rule and category, its severity,
the bot's raw confidence (binned, so that the model may learn a non-monotone effect per
category) and what kind of file it is in (tests, generated code, vendored code: bots are often
ignored there). The model's terms are the levels of :class:`Term`; see ``domain.model``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]


class Term(StrEnum):
    """The additive terms of the log-odds model, each a one-hot level.

    Nested levels shrink toward their parents: a rule's effect is an adjustment of its
    category's, a rule in a team an adjustment of the rule's everywhere, a rule in a repository
    an adjustment of the rule in its team. L2 regularisation pulls every adjustment toward 0,
    that is toward the parent, the more strongly the less evidence a level has.
    """

    CATEGORY = "category"
    RULE = "rule"
    TEAM = "team"
    REPOSITORY = "repository"
    TEAM_RULE = "team_rule"
    REPOSITORY_RULE = "repository_rule"
    SEVERITY = "severity"
    CONFIDENCE = "confidence"
    CATEGORY_CONFIDENCE = "category_confidence"
    PATH = "path"


TERMS: tuple[Term, ...] = tuple(Term)
KEY_SEPARATOR = "\x1f"
"""Joins the parts of a two-part key (team and rule, category and bin)."""


class PathKind(StrEnum):
    TEST = "test"
    GENERATED = "generated"
    VENDORED = "vendored"


PATH_KINDS: tuple[PathKind, ...] = tuple(PathKind)

_PATH_PATTERNS = {
    PathKind.TEST: re.compile(
        r"(^|/)(tests?|spec|specs|__tests__|testing|testdata|fixtures?)/"
        r"|(^|/)test_[^/]*$|_tests?\.[a-z0-9]+$|(Test|Tests|IT)\.[A-Za-z0-9]+$"
        r"|\.(spec|test)\.[a-z0-9]+$",
    ),
    PathKind.GENERATED: re.compile(
        r"(^|/)(gen|generated|build|dist|target|out)/|_pb2(_grpc)?\.pyi?$|\.pb\.(go|cc|h)$"
        r"|\.generated\.|\.g\.dart$|\.min\.(js|css)$|_generated\.[a-z0-9]+$",
    ),
    PathKind.VENDORED: re.compile(
        r"(^|/)(vendor|vendored|third[_-]party|node_modules|external|extern|deps)/"
    ),
}


@lru_cache(maxsize=65_536)
def path_kinds(file_path: str) -> int:
    """Bit i set when the path is of kind ``PATH_KINDS[i]``."""
    return sum(
        1 << i for i, kind in enumerate(PATH_KINDS) if _PATH_PATTERNS[kind].search(file_path)
    )


SEVERITY_LEVELS = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True, eq=False)
class FindingFeatures:
    """The model's view of n findings, as parallel columns (``eq=False``: arrays)."""

    team_id: IntArray
    repository_id: IntArray
    rule_id: ObjectArray
    category: ObjectArray
    severity: IntArray
    confidence: FloatArray
    path_kinds: IntArray

    def __post_init__(self) -> None:
        sizes = {len(getattr(self, name)) for name in self.__dataclass_fields__}
        if len(sizes) > 1:
            raise ValueError("every column of FindingFeatures must have the same length")

    @property
    def size(self) -> int:
        return len(self.severity)

    def take(self, index: npt.NDArray[np.intp] | BoolArray) -> FindingFeatures:
        return FindingFeatures(
            team_id=self.team_id[index],
            repository_id=self.repository_id[index],
            rule_id=self.rule_id[index],
            category=self.category[index],
            severity=self.severity[index],
            confidence=self.confidence[index],
            path_kinds=self.path_kinds[index],
        )

    @classmethod
    def build(
        cls,
        *,
        team_id: npt.ArrayLike,
        repository_id: npt.ArrayLike,
        rule_id: list[str] | ObjectArray,
        category: list[str] | ObjectArray,
        severity: npt.ArrayLike,
        confidence: npt.ArrayLike,
        file_path: list[str] | ObjectArray,
    ) -> FindingFeatures:
        paths = list(file_path)
        return cls(
            team_id=np.asarray(team_id, dtype=np.int64),
            repository_id=np.asarray(repository_id, dtype=np.int64),
            rule_id=_objects(rule_id),
            category=_objects(category),
            severity=np.asarray(severity, dtype=np.int64),
            confidence=np.asarray(confidence, dtype=np.float64),
            path_kinds=np.fromiter(
                (path_kinds(p) for p in paths), dtype=np.int64, count=len(paths)
            ),
        )


def _objects(values: list[str] | ObjectArray) -> ObjectArray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


@dataclass(frozen=True, eq=False)
class OutcomeLog:
    """Findings somebody reacted to, when they were first seen, and whether they were acted on.

    ``seen_at`` is POSIX seconds; ``review_id`` groups findings posted together (precision@k is
    measured per review). ``useful`` is True for a positive outcome (applied, fixed, helpful).
    """

    features: FindingFeatures
    seen_at: FloatArray
    review_id: IntArray
    useful: BoolArray

    def __post_init__(self) -> None:
        n = self.features.size
        if not (len(self.seen_at) == len(self.review_id) == len(self.useful) == n):
            raise ValueError("every column of OutcomeLog must have the same length")

    @property
    def size(self) -> int:
        return self.features.size

    def take(self, index: npt.NDArray[np.intp] | BoolArray) -> OutcomeLog:
        return OutcomeLog(
            features=self.features.take(index),
            seen_at=self.seen_at[index],
            review_id=self.review_id[index],
            useful=self.useful[index],
        )


def confidence_edges(confidence: FloatArray, *, bins: int) -> FloatArray:
    """Bin edges for raw confidence: one bin per value when a bot has only a few distinct
    values (many report three), otherwise quantile bins, so each bin holds data."""
    values = np.unique(confidence)
    if values.size <= bins:
        edges: FloatArray = (values[1:] + values[:-1]) / 2.0
        return edges
    quantiles = np.quantile(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(quantiles)


def confidence_bin(confidence: FloatArray, edges: FloatArray) -> IntArray:
    return np.searchsorted(edges, confidence, side="right").astype(np.int64)
