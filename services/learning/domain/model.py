"""The learned model of P(a developer acts on a finding): additive log-odds with shrinkage.

    logit P = intercept + Σ_terms coefficient(term, finding's key of that term)

then calibrated out of time, ``logit P' = slope · logit P + offset`` (Platt scaling fitted on
findings the model had not seen, see ``domain.model_fitting``). Every term of a finding is
reported with its contribution to the calibrated logit and the evidence behind it, and the
contributions sum to ``logit P'``: the explanation *is* the score.

A key the model never saw (a new rule, a rule new in this repository) contributes 0 — the
prior mean, i.e. its parent level decides — and adds its prior variance to the uncertainty of
the finding, so a ranking never claims to know what no evidence says. The upper bound of
P(acted on) that suppression uses is ``sigmoid(logit P' + z · sd)``, where ``sd`` is the
standard error of the logit from the per-term Laplace (Fisher information) variances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from services.learning.domain.features import (
    KEY_SEPARATOR,
    PATH_KINDS,
    SEVERITY_LEVELS,
    TERMS,
    FindingFeatures,
    FloatArray,
    IntArray,
    ObjectArray,
    Term,
    confidence_bin,
)

DOCUMENT_FORMAT = 1

BASE_SLOT = "base"
"""The intercept and the calibration offset: the log-odds of a finding with no known level."""
SLOTS: tuple[str, ...] = (
    BASE_SLOT,
    *(t.value for t in TERMS if t is not Term.PATH),
    *(f"{Term.PATH.value}:{kind.value}" for kind in PATH_KINDS),
)
"""Columns of ``Prediction.contributions``: the base, one per term, one per path kind."""


@dataclass(frozen=True, eq=False)
class TermTable:
    """The fitted levels of one term: coefficient, its variance and the evidence behind it."""

    keys: tuple[str, ...]
    coefficient: FloatArray
    variance: FloatArray
    acted_on: IntArray
    outcomes: IntArray
    prior_variance: float = math.nan
    """How far this term's levels spread (estimated from them): the uncertainty of a level the
    model never saw. NaN: the model's default."""
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (
            len(self.keys)
            == len(self.coefficient)
            == len(self.variance)
            == len(self.acted_on)
            == len(self.outcomes)
        ):
            raise ValueError("every column of a TermTable must have the same length")
        object.__setattr__(self, "index", {key: i for i, key in enumerate(self.keys)})

    @classmethod
    def empty(cls) -> TermTable:
        return cls((), np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))

    def columns(self, keys: Sequence[str]) -> IntArray:
        """Column of each key, -1 for a key the model never saw."""
        get = self.index.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of the model's logit, fitted out of time: ``slope · logit + offset``.

    ``ece`` is the expected calibration error (10 bins) of the calibrated probabilities on the
    out-of-time findings (cross-fitted: each half scored by a map fitted on the other half), and
    ``raw_ece`` that of the uncalibrated ones. ``samples`` is how many findings that was; 0
    means there were too few to calibrate, and the map is the identity.
    """

    slope: float = 1.0
    offset: float = 0.0
    samples: int = 0
    ece: float = math.nan
    raw_ece: float = math.nan


@dataclass(frozen=True)
class Validation:
    """How the model did on findings first seen after the data it was fitted on."""

    samples: int
    auc: float
    log_loss: float
    ece: float
    half_life_days: float | None
    prior_variance: float


@dataclass(frozen=True)
class ModelSummary:
    """What an operator reads about a fitted model."""

    version: str
    fitted_at: datetime
    samples: int
    acted_on: int
    half_life_days: float | None
    prior_variance: float
    calibration: Calibration
    validation: Validation | None


@dataclass(frozen=True, eq=False)
class Prediction:
    """P(acted on) of n findings with its uncertainty and its explanation.

    ``logit`` is calibrated; ``sd`` is its standard error (calibrated scale). ``contributions``
    is n × len(SLOTS), each row summing to ``logit``; ``columns`` the matching term column
    (-1: the level was never seen, or the slot does not apply), for the evidence counts.
    """

    logit: FloatArray
    sd: FloatArray
    contributions: FloatArray
    columns: IntArray

    @property
    def probability(self) -> FloatArray:
        return sigmoid(self.logit)

    def upper(self, z: float) -> FloatArray:
        """One-sided upper confidence bound of P(acted on)."""
        return sigmoid(self.logit + z * self.sd)

    def take(self, index: npt.NDArray[np.intp]) -> Prediction:
        return Prediction(
            self.logit[index], self.sd[index], self.contributions[index], self.columns[index]
        )


def sigmoid(x: FloatArray) -> FloatArray:
    # tanh form: no overflow warnings for large |x| (the tests turn warnings into errors).
    result: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))
    return result


def logit(p: FloatArray, epsilon: float = 1e-9) -> FloatArray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), epsilon, 1.0 - epsilon)
    result: FloatArray = np.log(clipped) - np.log1p(-clipped)
    return result


def unique_keys(values: ObjectArray | IntArray) -> tuple[list[Any], IntArray]:
    """The sorted distinct values and each value's position among them (``np.unique``'s
    answer). Strings are told apart by hashing and only the few distinct ones sorted: NumPy
    would sort all of them with Python comparisons, most of a ranking's prediction time."""
    if values.dtype != object:
        unique, inverse = np.unique(values, return_inverse=True)
        return unique.tolist(), inverse.astype(np.int64).reshape(-1)
    items = values.reshape(-1).tolist()
    distinct = sorted(set(items))
    position = {value: i for i, value in enumerate(distinct)}
    return distinct, np.fromiter(map(position.__getitem__, items), dtype=np.int64, count=len(items))


def _pair_keys(
    first: ObjectArray | IntArray, second: ObjectArray | IntArray
) -> tuple[list[str], IntArray]:
    """``"first␟second"`` keys, built once per distinct pair rather than once per finding."""
    a, ia = unique_keys(first)
    b, ib = unique_keys(second)
    combined, inverse = np.unique(ia * max(len(b), 1) + ib, return_inverse=True)
    width = max(len(b), 1)
    keys = [f"{a[c // width]}{KEY_SEPARATOR}{b[c % width]}" for c in combined.tolist()]
    return keys, inverse.astype(np.int64).reshape(-1)


def term_keys(
    features: FindingFeatures, edges: FloatArray
) -> dict[Term, tuple[list[str], IntArray]]:
    """Each term's distinct keys among the findings, and which one each finding has."""
    bins = confidence_bin(features.confidence, edges)
    severity = np.clip(features.severity, 1, len(SEVERITY_LEVELS)) - 1
    severity_names, severity_inverse = unique_keys(severity)
    keys: dict[Term, tuple[list[str], IntArray]] = {
        Term.CATEGORY: unique_keys(features.category),
        Term.RULE: unique_keys(features.rule_id),
        Term.TEAM: _stringified(unique_keys(features.team_id)),
        Term.REPOSITORY: _stringified(unique_keys(features.repository_id)),
        Term.TEAM_RULE: _pair_keys(features.team_id, features.rule_id),
        Term.REPOSITORY_RULE: _pair_keys(features.repository_id, features.rule_id),
        Term.SEVERITY: ([SEVERITY_LEVELS[s] for s in severity_names], severity_inverse),
        Term.CONFIDENCE: _stringified(unique_keys(bins)),
        Term.CATEGORY_CONFIDENCE: _pair_keys(features.category, bins),
    }
    return keys


def _stringified(keys: tuple[list[Any], IntArray]) -> tuple[list[str], IntArray]:
    return [str(k) for k in keys[0]], keys[1]


@dataclass(frozen=True, eq=False)
class LogOddsModel:
    """A fitted model; immutable, so the ranker can share it across threads."""

    version: str
    fitted_at: datetime
    intercept: float
    intercept_variance: float
    prior_variance: float
    confidence_edges: FloatArray
    terms: Mapping[Term, TermTable]
    calibration: Calibration
    samples: int
    acted_on: int
    half_life_days: float | None = None
    validation: Validation | None = None

    @property
    def base_rate(self) -> float:
        """Share of the fitted outcomes that were acted on."""
        return self.acted_on / self.samples if self.samples else math.nan

    def summary(self) -> ModelSummary:
        return ModelSummary(
            version=self.version,
            fitted_at=self.fitted_at,
            samples=self.samples,
            acted_on=self.acted_on,
            half_life_days=self.half_life_days,
            prior_variance=self.prior_variance,
            calibration=self.calibration,
            validation=self.validation,
        )

    def table(self, term: Term) -> TermTable:
        return self.terms.get(term) or TermTable.empty()

    def predict(self, features: FindingFeatures, *, calibrated: bool = True) -> Prediction:
        """Calibrated logit, its standard error and its per-term contributions (with
        ``calibrated=False``, the fitted model's own log-odds, before the out-of-time fit)."""
        n = features.size
        slots = len(SLOTS)
        raw = np.zeros((n, slots))
        variance = np.zeros((n, slots))
        columns = np.full((n, slots), -1, dtype=np.int64)
        raw[:, 0] = self.intercept
        variance[:, 0] = self.intercept_variance
        for slot, (term, (keys, inverse)) in enumerate(
            term_keys(features, self.confidence_edges).items(), start=1
        ):
            table = self.table(term)
            found = table.columns(keys)
            column = found[inverse]
            seen = column >= 0
            columns[:, slot] = column
            raw[seen, slot] = table.coefficient[column[seen]]
            variance[:, slot] = self._prior_of(table)
            variance[seen, slot] = table.variance[column[seen]]
        path = self.table(Term.PATH)
        first_path = len(SLOTS) - len(PATH_KINDS)
        for i, kind in enumerate(PATH_KINDS):
            has = (features.path_kinds >> i) & 1 == 1
            path_column = path.index.get(kind.value, -1)
            slot = first_path + i
            if path_column >= 0:
                columns[has, slot] = path_column
                raw[has, slot] = path.coefficient[path_column]
                variance[has, slot] = path.variance[path_column]
            else:
                variance[has, slot] = self._prior_of(path)
        slope, offset = (
            (self.calibration.slope, self.calibration.offset) if calibrated else (1.0, 0.0)
        )
        contributions = raw * slope
        contributions[:, 0] += offset
        sd = np.sqrt(variance.sum(axis=1)) * abs(slope)
        return Prediction(contributions.sum(axis=1), sd, contributions, columns)

    def _prior_of(self, table: TermTable) -> float:
        return self.prior_variance if math.isnan(table.prior_variance) else table.prior_variance

    def confidence_range(self, confidence: float) -> str:
        """The bin a raw confidence falls in, as people read it ("0.40-0.60")."""
        edges = self.confidence_edges
        position = int(np.searchsorted(edges, confidence, side="right"))
        low = 0.0 if position == 0 else float(edges[position - 1])
        high = 1.0 if position == len(edges) else float(edges[position])
        return f"{low:.2f}-{high:.2f}"

    def term_label(
        self,
        slot: int,
        *,
        category: str,
        rule_id: str,
        severity: int,
        confidence: float,
    ) -> str:
        """The level a finding has in a slot, named for people (the scopes are the request's)."""
        name = SLOTS[slot]
        if name in (Term.RULE, Term.TEAM_RULE, Term.REPOSITORY_RULE):
            return rule_id
        if name == Term.CATEGORY:
            return category
        if name == Term.SEVERITY:
            return SEVERITY_LEVELS[min(max(severity, 1), len(SEVERITY_LEVELS)) - 1]
        if name == Term.CONFIDENCE:
            return self.confidence_range(confidence)
        if name == Term.CATEGORY_CONFIDENCE:
            return f"{category} at {self.confidence_range(confidence)}"
        return ""

    def evidence(self, slot: int, column: int) -> tuple[int, int]:
        """(acted on, outcomes) behind a contribution; the model's totals for the base."""
        if slot == 0:
            return self.acted_on, self.samples
        if column < 0:
            return 0, 0
        term = Term(SLOTS[slot].split(":")[0])
        table = self.table(term)
        return int(table.acted_on[column]), int(table.outcomes[column])

    # ------------------------------------------------------------------ persistence

    def to_document(self) -> dict[str, Any]:
        """JSON-safe form (what ``learned_models.document`` stores)."""
        validation = None
        if self.validation is not None:
            v = self.validation
            validation = {
                "samples": v.samples,
                "auc": _finite_or_none(v.auc),
                "log_loss": _finite_or_none(v.log_loss),
                "ece": _finite_or_none(v.ece),
                "half_life_days": v.half_life_days,
                "prior_variance": v.prior_variance,
            }
        c = self.calibration
        return {
            "format": DOCUMENT_FORMAT,
            "version": self.version,
            "fitted_at": self.fitted_at.isoformat(),
            "intercept": self.intercept,
            "intercept_variance": self.intercept_variance,
            "prior_variance": self.prior_variance,
            "confidence_edges": [float(e) for e in self.confidence_edges],
            "samples": self.samples,
            "acted_on": self.acted_on,
            "half_life_days": self.half_life_days,
            "calibration": {
                "slope": c.slope,
                "offset": c.offset,
                "samples": c.samples,
                "ece": _finite_or_none(c.ece),
                "raw_ece": _finite_or_none(c.raw_ece),
            },
            "validation": validation,
            "terms": {
                term.value: {
                    "keys": list(table.keys),
                    "coefficient": table.coefficient.tolist(),
                    "variance": table.variance.tolist(),
                    "acted_on": table.acted_on.tolist(),
                    "outcomes": table.outcomes.tolist(),
                    "prior_variance": _finite_or_none(table.prior_variance),
                }
                for term, table in self.terms.items()
            },
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> LogOddsModel:
        if document.get("format") != DOCUMENT_FORMAT:
            raise ValueError(f"unknown model document format {document.get('format')!r}")
        c = document["calibration"]
        v = document.get("validation")
        return cls(
            version=str(document["version"]),
            fitted_at=datetime.fromisoformat(document["fitted_at"]),
            intercept=float(document["intercept"]),
            intercept_variance=float(document["intercept_variance"]),
            prior_variance=float(document["prior_variance"]),
            confidence_edges=np.asarray(document["confidence_edges"], dtype=np.float64),
            samples=int(document["samples"]),
            acted_on=int(document["acted_on"]),
            half_life_days=document.get("half_life_days"),
            calibration=Calibration(
                slope=float(c["slope"]),
                offset=float(c["offset"]),
                samples=int(c["samples"]),
                ece=_nan_if_none(c.get("ece")),
                raw_ece=_nan_if_none(c.get("raw_ece")),
            ),
            validation=None
            if v is None
            else Validation(
                samples=int(v["samples"]),
                auc=_nan_if_none(v.get("auc")),
                log_loss=_nan_if_none(v.get("log_loss")),
                ece=_nan_if_none(v.get("ece")),
                half_life_days=v.get("half_life_days"),
                prior_variance=float(v["prior_variance"]),
            ),
            terms={
                Term(name): TermTable(
                    keys=tuple(t["keys"]),
                    coefficient=np.asarray(t["coefficient"], dtype=np.float64),
                    variance=np.asarray(t["variance"], dtype=np.float64),
                    acted_on=np.asarray(t["acted_on"], dtype=np.int64),
                    outcomes=np.asarray(t["outcomes"], dtype=np.int64),
                    prior_variance=_nan_if_none(t.get("prior_variance")),
                )
                for name, t in document["terms"].items()
            },
        )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _nan_if_none(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def uninformed_model(*, version: str, fitted_at: datetime, prior_variance: float) -> LogOddsModel:
    """The model before any outcome: P = 1/2 with the prior's uncertainty on every term, so
    nothing is ever hidden on its account."""
    return LogOddsModel(
        version=version,
        fitted_at=fitted_at,
        intercept=0.0,
        intercept_variance=prior_variance,
        prior_variance=prior_variance,
        confidence_edges=np.zeros(0),
        terms={},
        calibration=Calibration(),
        samples=0,
        acted_on=0,
    )
