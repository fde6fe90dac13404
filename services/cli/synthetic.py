"""Synthetic review histories with known ground truth, for the demo, tests and benchmarks.

The generative story: every rule has a true *usefulness* (how often developers act on its
findings). Each finding has a latent probability ``p`` of being acted on, scattered around its
rule's usefulness, and the outcome is Bernoulli(p). The bot's raw confidence is informative but
miscalibrated: it is overconfident (``sigmoid(0.5·z + 1)``), carries a per-rule bias unrelated
to usefulness, and its ``z`` contains only 35% of the rule's effect. So the confidence orders
findings within a rule reasonably well but orders rules badly, and a learner that tracks
per-rule acceptance can beat raw-confidence ordering.

Pull requests get 1-3 pushes (one review each). Findings nobody fixed recur on the next push
with the same rule, path, message template and code (sometimes re-indented), shifted lines and a
new ``client_finding_id`` sharing the prefix before ``@``, so their fingerprints match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

CATEGORIES = (
    "security",
    "performance",
    "correctness",
    "style",
    "maintainability",
    "documentation",
)
FEEDBACK_KINDS = (
    "applied",
    "fixed",
    "rejected",
    "false_positive",
    "dismissed",
    "helpful",
    "not_helpful",
)
POSITIVE_KINDS = frozenset({"applied", "fixed", "helpful"})
"""Kinds meaning the finding was useful; see :mod:`shared.outcome` for the full outcome rule."""

CLIENT_ID_SEPARATOR = "@"
"""``client_finding_id`` is ``<prefix>@<push>``; the prefix is shared by a finding's recurrences."""


@dataclass(frozen=True, slots=True)
class SyntheticRule:
    """A rule of the synthetic bot; ``usefulness`` is the true P(positive) of an average finding."""

    rule_id: str
    category: str
    severity: int
    usefulness: float


@dataclass(frozen=True, slots=True)
class SyntheticFinding:
    """One finding as the bot reports it, plus its latent ``true_useful_probability``."""

    client_finding_id: str
    rule_id: str
    category: str
    severity: int
    confidence: float
    file_path: str
    line_start: int
    line_end: int
    title: str
    message: str
    code_context: str
    true_useful_probability: float


@dataclass(frozen=True, slots=True)
class SyntheticReview:
    """One push of a pull request and the findings the bot posted on it."""

    repository_url: str
    team: str
    pull_request: int
    head_commit: str
    created_at: datetime
    findings: tuple[SyntheticFinding, ...]


@dataclass(frozen=True, slots=True)
class SyntheticFeedback:
    """A developer reaction to ``reviews[review_index].findings[finding_index]``."""

    review_index: int
    finding_index: int
    event_id: str
    kind: str
    actor_id: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class SyntheticHistory:
    """Rules, reviews in ``created_at`` order, and feedback in ``occurred_at`` order."""

    rules: tuple[SyntheticRule, ...]
    reviews: tuple[SyntheticReview, ...]
    feedback: tuple[SyntheticFeedback, ...]


@dataclass(frozen=True, slots=True)
class Regime:
    """How the synthetic world differs from the default one (see REGIMES for the named ones).

    The defaults reproduce the default history exactly; every knob adds one difficulty that real
    review histories have.
    """

    name: str = "default"
    base_rate: float | None = None
    """Shift every rule's log-odds so that about this share of findings is acted on."""
    informative: bool = True
    """False: every finding has the same P(acted on); nothing predicts usefulness."""
    confidence_levels: int = 0
    """Above 0, the bot reports only this many distinct confidence values (terciles for 3)."""
    confidence_signal: float = 1.0
    """How much of the bot's belief reaches its confidence; 0 makes it pure noise."""
    inverted_categories: tuple[str, ...] = ()
    """Categories whose low-confidence findings are the more useful ones."""
    repository_spread: float = 0.0
    """Standard deviation of a rule's log-odds shift per repository: a rule fixed in one
    repository is ignored in another."""
    drift: float = 0.0
    """Standard deviation of a rule's log-odds change over the whole history."""
    single_repository_team: bool = False
    """Adds a team with exactly one repository."""
    tenants: int = 1
    """Unrelated organisations in one database: each has its own teams and its own usefulness
    of every rule (the bot, and its rule ids, are the same)."""
    rule_concentration: float = 1.5
    """Dirichlet concentration of how often each rule fires: small means a few rules fire a
    lot and many rules have only a few findings."""
    rules: int | None = None
    """Overrides ``generate_history(rules=...)``."""
    test_file_share: float = 0.0
    """Share of files that are tests ...
    """
    test_file_effect: float = 0.0
    """... and the log-odds change of findings in them (developers ignore bots in tests)."""


REGIMES: dict[str, Regime] = {
    regime.name: regime
    for regime in (
        Regime(),
        Regime(name="coarse_confidence", confidence_levels=3, confidence_signal=0.15),
        Regime(name="repository_specific", repository_spread=1.6),
        Regime(name="inverted_confidence", inverted_categories=("style", "documentation")),
        Regime(name="single_repository_team", single_repository_team=True, repository_spread=1.0),
        Regime(name="sparse_rules", rules=300, rule_concentration=0.3),
        Regime(name="rare_useful", base_rate=0.15),
        Regime(name="mostly_useful", base_rate=0.8),
        Regime(name="drift", drift=2.5),
        Regime(name="tenants", tenants=3),
        Regime(name="uninformative", informative=False, base_rate=0.2, confidence_levels=3),
        Regime(
            name="realistic",
            base_rate=0.2,
            confidence_levels=3,
            confidence_signal=0.15,
            repository_spread=1.0,
            drift=1.0,
            single_repository_team=True,
            rules=120,
            rule_concentration=0.5,
            test_file_share=0.15,
            test_file_effect=-1.0,
        ),
    )
}
"""The regimes real review histories show, one difficulty each, and one with all of them."""


# (title, message template) per category; {name} and {num} are filled per finding, so the
# messages of one rule differ in literals only and normalise to the same pattern.
_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "security": (
        ("SQL injection", "Possible SQL injection: '{name}' is concatenated into a query"),
        ("Hard-coded secret", "Hard-coded credential assigned to '{name}'"),
        ("Command injection", "Untrusted input '{name}' reaches a shell command"),
        ("Weak hash", "Weak hash function used to protect '{name}'"),
        ("Path traversal", "Path traversal: '{name}' is joined into a file path unchecked"),
        ("Unsafe deserialization", "Insecure deserialization of '{name}' from the network"),
        ("TLS verification off", "TLS certificate verification is disabled when calling '{name}'"),
    ),
    "performance": (
        ("Query in loop", "Database query inside a loop over '{name}' ({num} iterations seen)"),
        ("Needless copy", "'{name}' is copied on every call to the handler"),
        ("Quadratic lookup", "Membership test on list '{name}' makes this loop quadratic"),
        ("Regex recompiled", "Regular expression recompiled on each call of '{name}'"),
        ("Unbounded cache", "Cache '{name}' can grow without bound ({num} entries observed)"),
    ),
    "correctness": (
        ("Possible None", "'{name}' may be None when it is dereferenced"),
        ("Off by one", "Off-by-one: the loop over '{name}' stops at index {num}"),
        ("Mutable default", "Mutable default argument '{name}' is shared between calls"),
        ("Swallowed exception", "Exception raised by '{name}' is silently swallowed"),
        ("Self comparison", "Comparison of '{name}' with itself is always true"),
    ),
    "style": (
        ("Long line", "Line is {num} characters long, more than the configured limit"),
        ("Naming", "Name '{name}' does not follow the snake_case convention"),
        ("Unused import", "Imported module '{name}' is never used"),
        ("Trailing whitespace", "Trailing whitespace after the definition of '{name}'"),
    ),
    "maintainability": (
        ("Complex function", "Function '{name}' is too complex (cyclomatic complexity {num})"),
        ("Duplicated code", "This block duplicates {num} lines found near '{name}'"),
        ("Magic number", "Magic number {num} used in the computation of '{name}'"),
        ("Too many parameters", "Function '{name}' takes {num} parameters"),
    ),
    "documentation": (
        ("Missing docstring", "Public function '{name}' has no docstring"),
        ("Undocumented parameter", "The docstring of '{name}' does not describe all parameters"),
        ("Bare TODO", "TODO comment without an issue reference in '{name}'"),
        ("Stale comment", "The comment above '{name}' no longer matches the code"),
    ),
}
# Extra rules of a category reuse a template with a qualifier, so no two rules share a message.
_QUALIFIERS = ("", " in strict mode", " in legacy modules", " per extended checks", " (beta check)")
_RULE_PREFIX = {
    "security": "SEC",
    "performance": "PERF",
    "correctness": "BUG",
    "style": "STY",
    "maintainability": "MNT",
    "documentation": "DOC",
}
_SEVERITIES: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "security": ((3, 4, 5), (0.3, 0.4, 0.3)),
    "performance": ((2, 3, 4), (0.3, 0.5, 0.2)),
    "correctness": ((2, 3, 4, 5), (0.2, 0.4, 0.3, 0.1)),
    "style": ((1, 2), (0.7, 0.3)),
    "maintainability": ((1, 2, 3), (0.3, 0.5, 0.2)),
    "documentation": ((1, 2), (0.8, 0.2)),
}
_TEAM_NAMES = ("payments", "search", "platform", "mobile", "data", "identity", "growth", "infra")
_REPO_NAMES = ("api", "web", "worker", "sdk", "gateway", "billing", "indexer", "console")
_DIRECTORIES = ("src/api", "src/core", "src/db", "src/auth", "src/jobs", "lib", "app/services")
_MODULES = (
    "handlers",
    "models",
    "views",
    "client",
    "service",
    "schema",
    "tasks",
    "routes",
    "storage",
    "crypto",
    "billing",
    "search",
    "report",
    "session",
    "config",
    "cache",
)
_NAMES = (
    "user_id",
    "payload",
    "config",
    "items",
    "token",
    "session",
    "path",
    "request",
    "result",
    "buffer",
    "records",
    "handler",
    "cursor",
    "options",
    "response",
    "query",
    "account",
    "order",
    "event",
    "retries",
)
_FUNCTIONS = ("load", "parse", "fetch", "render", "validate", "save", "compute", "send", "build")
_CODE_TEMPLATES = (
    "{name} = {fn}({arg}, {num})\nif not {name}:\n    return None",
    "for {name} in {fn}({arg}):\n    total += {num}",
    "if {name} == {arg}:\n    {fn}({name}, limit={num})",
    "return {fn}({name}, {arg})[{num}]",
    "query = 'SELECT * FROM t WHERE id = ' + {name}\ncursor.execute(query, {num})",
    "def {fn}({name}, {arg}={num}):\n    return {name}",
)
_FILES_PER_REPOSITORY = 40
_DEVELOPERS_PER_TEAM = 6

# Outcome kinds and their shares, for one-event reactions.
_POSITIVE_CHOICES = (("applied", 0.45), ("fixed", 0.35), ("helpful", 0.20))
_NEGATIVE_CHOICES = (
    ("dismissed", 0.30),
    ("rejected", 0.30),
    ("false_positive", 0.25),
    ("not_helpful", 0.15),
)
_FIXING_KINDS = frozenset({"applied", "fixed"})
_TWO_EVENT_SHARE = 0.08
_RECUR_PROBABILITY = 0.7
_REINDENT_PROBABILITY = 0.3
_NEAR_ECHO_PROBABILITY = 0.04
_EXACT_ECHO_PROBABILITY = 0.02

# The bot's confidence model (see the module docstring).
_CONFIDENCE_SLOPE = 0.5
_CONFIDENCE_OFFSET = 1.0
_RULE_EFFECT_KNOWN = 0.35
_RULE_BIAS_SD = 0.5
_FINDING_SPREAD_SD = 0.7
_CONFIDENCE_NOISE_SD = 0.25

_HOUR = 3600.0
_DAY = 24 * _HOUR


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * x))
    return result


def _logit(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = np.log(p) - np.log1p(-p)
    return result


def _pick(choices: tuple[tuple[str, float], ...], u: float) -> str:
    """The choice whose cumulative share first exceeds ``u`` in [0, 1)."""
    cumulative = 0.0
    for kind, share in choices:
        cumulative += share
        if u < cumulative:
            return kind
    return choices[-1][0]


def _make_rules(
    rng: np.random.Generator, count: int
) -> tuple[tuple[SyntheticRule, ...], list[tuple[str, str]]]:
    """Rules with widely spread usefulness, and each rule's (title, message template)."""
    # Tiers by a shuffled round robin, so every rule set of 4+ has noisy and clearly good rules.
    tiers = rng.permutation(np.arange(count) % 4)
    usefulness = np.where(
        tiers == 0,
        rng.uniform(0.10, 0.25, count),
        np.where(tiers == 1, rng.uniform(0.85, 0.97, count), rng.uniform(0.30, 0.80, count)),
    )
    severity_draws = rng.random(count)
    rules: list[SyntheticRule] = []
    templates: list[tuple[str, str]] = []
    per_category = dict.fromkeys(CATEGORIES, 0)
    for index in range(count):
        category = CATEGORIES[index % len(CATEGORIES)]
        ordinal = per_category[category]
        per_category[category] += 1
        levels, shares = _SEVERITIES[category]
        level = int(np.searchsorted(np.cumsum(shares), severity_draws[index], side="right"))
        severity = levels[min(level, len(levels) - 1)]
        if category == "security" and ordinal == 0:
            severity = 5  # at least one critical security rule exercises the never-drop rule
        category_templates = _TEMPLATES[category]
        title, message = category_templates[ordinal % len(category_templates)]
        qualifier = _QUALIFIERS[(ordinal // len(category_templates)) % len(_QUALIFIERS)]
        if ordinal >= len(category_templates) * len(_QUALIFIERS):
            qualifier += f" (profile {chr(ord('a') + ordinal % 26)})"
        rules.append(
            SyntheticRule(
                rule_id=f"{_RULE_PREFIX[category]}{index:03d}",
                category=category,
                severity=severity,
                usefulness=round(float(usefulness[index]), 4),
            )
        )
        templates.append((title + qualifier, message + qualifier))
    return tuple(rules), templates


def _reindent(code: str) -> str:
    """The same code indented one level deeper; normalize_code cannot tell the difference."""
    return "\n".join("    " + line for line in code.split("\n"))


@dataclass
class _Logical:
    """A finding across the pushes of one pull request (mutable while generating)."""

    pool: int
    """Index of the random draws that made this finding."""
    latent: int
    """Index of the draws holding its p and confidence; an echo shares its original's."""
    ordinal: int
    rule: int
    file_path: str
    line_start: int
    line_end: int
    title: str
    message: str
    code_context: str
    fixed: bool = False


def _coarse(confidence: npt.NDArray[np.float64], levels: int) -> npt.NDArray[np.float64]:
    """The bot's confidence as one of ``levels`` values, by quantile of the continuous one."""
    cuts = np.quantile(confidence, np.linspace(0.0, 1.0, levels + 1)[1:-1])
    values = np.linspace(0.3, 0.7, levels) if levels > 1 else np.array([0.5])
    coarse: npt.NDArray[np.float64] = values[np.searchsorted(cuts, confidence, side="right")]
    return coarse


def _confidence(value: float, category: str, inverted: frozenset[str]) -> float:
    return round(1.0 - value, 4) if category in inverted else value


class _Truth:
    """The latent P(acted on) of every finding under a regime, assigned when it is created."""

    def __init__(
        self,
        *,
        regime: Regime,
        extra: np.random.Generator,
        rules: int,
        repositories: int,
        repository_tenant: list[int],
        rule_usefulness: npt.NDArray[np.float64],
        rule_logit: npt.NDArray[np.float64],
        deviation: npt.NDArray[np.float64],
        span: float,
    ) -> None:
        self._regime = regime
        self._span = span
        self._tenant_of = repository_tenant
        # Every tenant after the first has its own usefulness of every rule.
        tenants = [_logit(rule_usefulness)]
        for _ in range(1, max(regime.tenants, 1)):
            tenants.append(_logit(np.clip(_tier_usefulness(extra, rules), 0.02, 0.98)))
        self._tenant_logit = tenants
        self._repository_effect = extra.normal(0.0, 1.0, (repositories, rules)) * (
            regime.repository_spread
        )
        self._drift = extra.normal(0.0, 1.0, rules) * regime.drift
        self._deviation = deviation.tolist()
        self._shift = 0.0
        if regime.base_rate is not None and regime.informative and rule_logit.size:
            self._shift = _shift_for(rule_logit + deviation, regime.base_rate)
        self._p: dict[int, float] = {}

    def assign(
        self, slot: int, *, rule: int, repository: int, when: float, test_file: bool
    ) -> None:
        regime = self._regime
        if not regime.informative:
            self._p[slot] = regime.base_rate if regime.base_rate is not None else 0.5
            return
        tenant = self._tenant_of[repository]
        logit = (
            float(self._tenant_logit[tenant][rule])
            + self._deviation[slot]
            + self._shift
            + float(self._repository_effect[repository, rule])
            + float(self._drift[rule]) * (when / self._span - 0.5)
            + (regime.test_file_effect if test_file else 0.0)
        )
        self._p[slot] = float(_sigmoid(np.asarray(logit)))

    def p(self, slot: int) -> float:
        return self._p[slot]


def _tier_usefulness(rng: np.random.Generator, count: int) -> npt.NDArray[np.float64]:
    tiers = rng.permutation(np.arange(count) % 4)
    usefulness: npt.NDArray[np.float64] = np.where(
        tiers == 0,
        rng.uniform(0.10, 0.25, count),
        np.where(tiers == 1, rng.uniform(0.85, 0.97, count), rng.uniform(0.30, 0.80, count)),
    )
    return usefulness


def _shift_for(logits: npt.NDArray[np.float64], target: float) -> float:
    """The log-odds shift that makes the mean of sigmoid(logits + shift) equal ``target``."""
    low, high = -12.0, 12.0
    for _ in range(60):
        middle = (low + high) / 2.0
        if float(_sigmoid(logits + middle).mean()) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def generate_history(
    *,
    seed: int,
    teams: int = 3,
    repositories_per_team: int = 3,
    rules: int = 40,
    reviews: int = 300,
    findings_per_review: int = 10,
    weeks: int = 12,
    end: datetime | None = None,
    feedback_rate: float = 0.9,
    regime: Regime = Regime(),
) -> SyntheticHistory:
    """A deterministic synthetic history: ``reviews`` pushes of ``findings_per_review`` findings.

    The same arguments (including ``end``; it defaults to today's midnight UTC so that a day's
    runs agree) give the same history. Review times spread over the ``weeks`` before ``end``;
    feedback on a push comes before the next push (or ``end``). ``feedback_rate`` is the share
    of findings that get a reaction when they first appear; a reaction is one event, or two
    for a few findings (e.g. dismissed, later applied) so that outcome changes are exercised.
    A finding that was applied or fixed does not recur on the next push. A few findings come
    with an echo a few lines below: the same message with other code (a near duplicate) or
    the very same code (an exact duplicate). ``regime`` adds the difficulties of real histories
    (see :class:`Regime`); its random draws come from a stream of their own, so the default
    regime gives exactly the default history.
    """
    rules = regime.rules or rules
    if teams < 1 or repositories_per_team < 1 or rules < 1 or weeks < 1:
        raise ValueError("teams, repositories_per_team, rules and weeks must be >= 1")
    if reviews < 0 or findings_per_review < 1:
        raise ValueError("reviews must be >= 0 and findings_per_review >= 1")
    if not 0.0 <= feedback_rate <= 1.0:
        raise ValueError("feedback_rate must lie in [0, 1]")
    if end is None:
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elif end.tzinfo is None:
        raise ValueError("end must be timezone-aware")

    rng = np.random.default_rng(seed)
    rule_set, rule_templates = _make_rules(rng, rules)
    rule_usefulness = np.array([rule.usefulness for rule in rule_set])
    rule_bias = rng.normal(0.0, _RULE_BIAS_SD, rules)
    # Some rules fire far more often than others, as in real bots.
    rule_weights = rng.dirichlet(np.full(rules, regime.rule_concentration))
    extra = np.random.default_rng([seed, 8])  # the regime's own draws

    team_names = [
        _TEAM_NAMES[t % len(_TEAM_NAMES)] + (f"-{t // len(_TEAM_NAMES)}" if t >= 8 else "")
        for t in range(teams)
    ]
    team_sizes = [repositories_per_team] * teams
    if regime.single_repository_team:
        team_names.append("solo")
        team_sizes.append(1)
    repositories: list[tuple[str, str, str]] = []  # (team, url, slug)
    repository_tenant: list[int] = []
    for t, team in enumerate(team_names):
        tenant = t % max(regime.tenants, 1)
        host = "git.example.com" if tenant == 0 else f"git.org{tenant}.example"
        for r in range(team_sizes[t]):
            name = _REPO_NAMES[r % len(_REPO_NAMES)] + (
                f"-{r // len(_REPO_NAMES)}" if r >= len(_REPO_NAMES) else ""
            )
            repositories.append((team, f"https://{host}/{team}/{name}", f"t{t}r{r}"))
            repository_tenant.append(tenant)
    paths = [
        f"{_DIRECTORIES[int(d)]}/{_MODULES[int(m)]}.py"
        for d, m in zip(
            rng.integers(0, len(_DIRECTORIES), _FILES_PER_REPOSITORY * len(repositories)),
            rng.integers(0, len(_MODULES), _FILES_PER_REPOSITORY * len(repositories)),
            strict=True,
        )
    ]

    # Pushes per pull request, cut so that they add up to exactly `reviews`.
    push_counts = rng.choice(np.array([1, 2, 3]), size=max(reviews, 1), p=[0.45, 0.35, 0.20])
    totals = np.cumsum(push_counts)
    pr_count = int(np.searchsorted(totals, reviews)) + 1 if reviews else 0
    push_counts = push_counts[:pr_count].copy()
    if pr_count:
        push_counts[-1] -= int(totals[pr_count - 1]) - reviews

    span = weeks * 7 * _DAY
    gaps = np.minimum(rng.exponential(_DAY, (pr_count, 3)) + 600.0, span / 8)
    gaps[:, 0] = 0.0
    offsets = np.cumsum(gaps, axis=1)
    pr_last = offsets[np.arange(pr_count), push_counts - 1]
    pr_start = rng.random(pr_count) * (span - 60.0 - pr_last)
    pr_repository = rng.integers(0, len(repositories), pr_count)

    # Everything a new finding needs, drawn up front (as lists: scalar indexing into NumPy
    # arrays costs far more than into lists) for the largest possible number of them.
    pool = reviews * findings_per_review
    rule_draws = rng.choice(rules, size=pool, p=rule_weights)
    f_rule: list[int] = rule_draws.tolist()
    f_file: list[int] = rng.integers(0, _FILES_PER_REPOSITORY, pool).tolist()
    f_line: list[int] = rng.integers(1, 900, pool).tolist()
    f_span: list[int] = rng.integers(0, 8, pool).tolist()
    f_name: list[int] = rng.integers(0, len(_NAMES), pool).tolist()
    f_arg: list[int] = rng.integers(0, len(_NAMES), pool).tolist()
    f_fn: list[int] = rng.integers(0, len(_FUNCTIONS), pool).tolist()
    f_code: list[int] = rng.integers(0, len(_CODE_TEMPLATES), pool).tolist()
    f_num: list[int] = rng.integers(2, 5000, pool).tolist()
    f_echo: list[float] = rng.random(pool).tolist()
    f_echo_shift: list[int] = rng.integers(1, 4, pool).tolist()
    f_feedback: list[float] = rng.random(pool).tolist()
    f_outcome: list[float] = rng.random(pool).tolist()
    f_kind: list[float] = rng.random(pool).tolist()
    f_two: list[float] = rng.random(pool).tolist()
    f_first_kind: list[float] = rng.random(pool).tolist()
    f_delay_first: list[float] = rng.exponential(6 * _HOUR, pool).tolist()
    f_delay_second: list[float] = rng.exponential(12 * _HOUR, pool).tolist()
    f_actor: list[int] = rng.integers(0, _DEVELOPERS_PER_TEAM, pool).tolist()
    deviation = rng.normal(0.0, _FINDING_SPREAD_SD, pool)
    noise = rng.normal(0.0, _CONFIDENCE_NOISE_SD, pool)
    i_recur: list[float] = rng.random(pool).tolist()
    i_shift: list[int] = rng.integers(-6, 30, pool).tolist()
    i_reindent: list[float] = rng.random(pool).tolist()

    rule_logit = _logit(rule_usefulness)[rule_draws]
    belief = _RULE_EFFECT_KNOWN * rule_logit + deviation + rule_bias[rule_draws]
    if regime.confidence_signal != 1.0:
        belief = regime.confidence_signal * belief + (
            1.0 - regime.confidence_signal
        ) * extra.normal(0.0, float(np.std(belief)) or 1.0, pool)
    confidence = np.clip(
        _sigmoid(_CONFIDENCE_SLOPE * belief + _CONFIDENCE_OFFSET + noise), 0.01, 0.99
    )
    if regime.confidence_levels > 0 and pool:
        confidence = _coarse(confidence, regime.confidence_levels)
    confidence_list: list[float] = np.round(confidence, 4).tolist()
    truth = _Truth(
        regime=regime,
        extra=extra,
        rules=rules,
        repositories=len(repositories),
        repository_tenant=repository_tenant,
        rule_usefulness=rule_usefulness,
        rule_logit=rule_logit,
        deviation=deviation,
        span=span,
    )
    test_files = extra.random(_FILES_PER_REPOSITORY * len(repositories)) < regime.test_file_share
    paths = [
        ("tests/test_" + path.rsplit("/", 1)[-1]) if is_test else path
        for path, is_test in zip(paths, test_files.tolist(), strict=True)
    ]
    inverted = frozenset(regime.inverted_categories)

    rule_ids = [rule.rule_id for rule in rule_set]
    rule_categories = [rule.category for rule in rule_set]
    rule_severities = [rule.severity for rule in rule_set]
    end_ts = end.timestamp()
    start_ts = end_ts - span
    # Reviews and events are collected with float timestamps, converted to datetimes at the end.
    raw_reviews: list[tuple[float, str, str, int, str, tuple[SyntheticFinding, ...]]] = []
    raw_events: list[tuple[float, int, int, int, str, str]] = []
    next_pool = 0
    instance = 0
    pr_numbers = dict.fromkeys(range(len(repositories)), 100)

    for pr in np.argsort(pr_start, kind="stable").tolist():
        repository_index = int(pr_repository[pr])
        team, url, slug = repositories[repository_index]
        pr_numbers[repository_index] += 1
        number = pr_numbers[repository_index]
        pushes = int(push_counts[pr])
        times = (start_ts + pr_start[pr] + offsets[pr, :pushes]).tolist()
        previous: list[_Logical] = []
        ordinal = 0
        for push in range(pushes):
            created = times[push]
            window_end = times[push + 1] if push + 1 < pushes else end_ts
            current: list[_Logical] = []
            for logical in previous:
                if len(current) == findings_per_review:
                    break
                # One draw slot per finding instance; instances never exceed the pool size.
                draw = instance + len(current)
                if logical.fixed or i_recur[draw] >= _RECUR_PROBABILITY:
                    continue
                shift = i_shift[draw]
                logical.line_start = max(1, logical.line_start + shift)
                logical.line_end = max(logical.line_start, logical.line_end + shift)
                if i_reindent[draw] < _REINDENT_PROBABILITY:
                    logical.code_context = _reindent(logical.code_context)
                current.append(logical)
            while len(current) < findings_per_review:
                k = next_pool
                next_pool += 1
                echo_of = current[-1] if current else None
                if (
                    echo_of is not None
                    and f_echo[k] < _NEAR_ECHO_PROBABILITY + _EXACT_ECHO_PROBABILITY
                ):
                    exact = f_echo[k] < _EXACT_ECHO_PROBABILITY
                    line = echo_of.line_start + f_echo_shift[k]
                    code = (
                        echo_of.code_context
                        if exact
                        else _CODE_TEMPLATES[f_code[k]].format(
                            name=_NAMES[f_name[k]],
                            arg=_NAMES[f_arg[k]],
                            fn=_FUNCTIONS[f_fn[k]],
                            num=f_num[k],
                        )
                    )
                    logical = _Logical(
                        pool=k,
                        latent=echo_of.latent,
                        ordinal=ordinal,
                        rule=echo_of.rule,
                        file_path=echo_of.file_path,
                        line_start=line,
                        line_end=line + echo_of.line_end - echo_of.line_start,
                        title=echo_of.title,
                        message=echo_of.message,
                        code_context=code,
                    )
                else:
                    rule = f_rule[k]
                    truth.assign(
                        k,
                        rule=rule,
                        repository=repository_index,
                        when=created - start_ts,
                        test_file=test_files[repository_index * _FILES_PER_REPOSITORY + f_file[k]],
                    )
                    title, template = rule_templates[rule]
                    name = _NAMES[f_name[k]]
                    line = f_line[k]
                    logical = _Logical(
                        pool=k,
                        latent=k,
                        ordinal=ordinal,
                        rule=rule,
                        file_path=paths[repository_index * _FILES_PER_REPOSITORY + f_file[k]],
                        line_start=line,
                        line_end=line + f_span[k],
                        title=title,
                        message=template.format(name=name, num=f_num[k] % 120 + 3),
                        code_context=_CODE_TEMPLATES[f_code[k]].format(
                            name=name,
                            arg=_NAMES[f_arg[k]],
                            fn=_FUNCTIONS[f_fn[k]],
                            num=f_num[k],
                        ),
                    )
                ordinal += 1
                current.append(logical)
                if f_feedback[k] < feedback_rate:
                    # Reactions land between this push and the next one.
                    review_slot = len(raw_reviews)
                    finding_slot = len(current) - 1
                    window = window_end - created
                    first_at = created + min(f_delay_first[k], 0.5 * window)
                    actor = f"{team}-dev{f_actor[k]}"
                    positive = f_outcome[k] < truth.p(logical.latent)
                    final = _pick(_POSITIVE_CHOICES if positive else _NEGATIVE_CHOICES, f_kind[k])
                    if f_two[k] < _TWO_EVENT_SHARE:
                        if positive:
                            final = "fixed" if final == "fixed" else "applied"
                            first = "dismissed" if f_first_kind[k] < 0.6 else "not_helpful"
                        else:
                            final = "false_positive" if final == "false_positive" else "rejected"
                            first = "dismissed"
                        second_at = first_at + min(f_delay_second[k], 0.5 * (window_end - first_at))
                        raw_events.append((first_at, review_slot, finding_slot, k, first, actor))
                        raw_events.append((second_at, review_slot, finding_slot, k, final, actor))
                    else:
                        raw_events.append((first_at, review_slot, finding_slot, k, final, actor))
                    logical.fixed = final in _FIXING_KINDS
            findings = tuple(
                SyntheticFinding(
                    client_finding_id=(
                        f"syn{seed}-{slug}-pr{number}-{logical.ordinal:04d}"
                        f"{CLIENT_ID_SEPARATOR}{push + 1}"
                    ),
                    rule_id=rule_ids[logical.rule],
                    category=rule_categories[logical.rule],
                    severity=rule_severities[logical.rule],
                    confidence=_confidence(
                        confidence_list[logical.latent], rule_categories[logical.rule], inverted
                    ),
                    file_path=logical.file_path,
                    line_start=logical.line_start,
                    line_end=logical.line_end,
                    title=logical.title,
                    message=logical.message,
                    code_context=logical.code_context,
                    true_useful_probability=round(truth.p(logical.latent), 4),
                )
                for logical in current
            )
            instance += len(current)
            head = hashlib.sha1(
                f"{seed}:{url}:{number}:{push}".encode(), usedforsecurity=False
            ).hexdigest()
            raw_reviews.append((created, url, team, number, head, findings))
            previous = current

    review_order = sorted(range(len(raw_reviews)), key=lambda i: (raw_reviews[i][0], i))
    new_index = {old: new for new, old in enumerate(review_order)}
    raw_events.sort(key=lambda e: (e[0], new_index[e[1]], e[2], e[3]))
    review_times = _datetimes([raw_reviews[i][0] for i in review_order])
    event_times = _datetimes([event[0] for event in raw_events])
    reviews_out = tuple(
        SyntheticReview(
            repository_url=url,
            team=team,
            pull_request=number,
            head_commit=head,
            created_at=created_at,
            findings=findings,
        )
        for (_, url, team, number, head, findings), created_at in zip(
            (raw_reviews[i] for i in review_order), review_times, strict=True
        )
    )
    feedback = tuple(
        SyntheticFeedback(
            review_index=new_index[review_slot],
            finding_index=finding_slot,
            event_id=f"syn-{seed}-{i}",
            kind=kind,
            actor_id=actor,
            occurred_at=occurred_at,
        )
        for i, ((_, review_slot, finding_slot, _, kind, actor), occurred_at) in enumerate(
            zip(raw_events, event_times, strict=True)
        )
    )
    return SyntheticHistory(rules=rule_set, reviews=reviews_out, feedback=feedback)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _datetimes(timestamps: list[float]) -> list[datetime]:
    """UTC datetimes of POSIX timestamps, in whole microseconds (exact through PostgreSQL)."""
    micros: list[int] = (
        np.rint(np.asarray(timestamps, dtype=np.float64) * 1e6).astype(np.int64).tolist()
    )
    return [_EPOCH + timedelta(microseconds=us) for us in micros]


def split_holdout(
    history: SyntheticHistory, *, holdout_fraction: float, seed: int
) -> tuple[SyntheticHistory, SyntheticHistory]:
    """Split into (train, holdout) by pull request, so that all pushes of a PR stay together.

    About ``holdout_fraction`` of the pull requests (chosen with ``default_rng(seed)``) go to
    the holdout. Both parts keep the rules, the review order and the feedback order; feedback
    indices are renumbered to the part's reviews.
    """
    if not 0.0 <= holdout_fraction <= 1.0:
        raise ValueError("holdout_fraction must lie in [0, 1]")
    keys = list(dict.fromkeys((r.repository_url, r.pull_request) for r in history.reviews))
    chosen = np.random.default_rng(seed).permutation(len(keys))[
        : round(holdout_fraction * len(keys))
    ]
    holdout_keys = {keys[i] for i in chosen.tolist()}
    in_holdout = [(r.repository_url, r.pull_request) in holdout_keys for r in history.reviews]

    def part(take: bool) -> SyntheticHistory:
        indices = [i for i, flag in enumerate(in_holdout) if flag is take]
        renumber = {old: new for new, old in enumerate(indices)}
        feedback = tuple(
            SyntheticFeedback(
                review_index=renumber[event.review_index],
                finding_index=event.finding_index,
                event_id=event.event_id,
                kind=event.kind,
                actor_id=event.actor_id,
                occurred_at=event.occurred_at,
            )
            for event in history.feedback
            if event.review_index in renumber
        )
        return SyntheticHistory(
            rules=history.rules,
            reviews=tuple(history.reviews[i] for i in indices),
            feedback=feedback,
        )

    return part(False), part(True)
