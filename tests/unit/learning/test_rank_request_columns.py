"""The request's inline findings as columns: converted and validated as finding by finding.

``inline_findings_from_pb`` reads every FindingInput in one pass; ``validate_request`` checks the
columns in bulk and runs the per-finding checks only when a column may break a rule. Both must
be invisible: the same drafts as ``shared.convert.finding_from_pb`` and the same violations, in
the same order, as ``validate_finding`` on each finding.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from reviewlearn.common.v1 import common_pb2

from services.learning.convert import inline_findings_from_pb
from services.learning.usecases.rank_suggestions import (
    InlineFindings,
    RankOptions,
    RankRequest,
    validate_request,
)
from shared.convert import finding_from_pb
from shared.errors import InvalidArgument, Violations
from shared.finding_input import FindingDraft, Limits, validate_finding

LIMITS = Limits(max_id_chars=20, max_path_chars=30, max_title_chars=10, max_text_chars=40)


def _input(i: int, **overrides: object) -> common_pb2.FindingInput:
    values: dict[str, object] = {
        "client_finding_id": f"c{i}" if i % 3 else "",
        "rule_id": f" rule{i} " if i % 2 else f"rule{i}",
        "category": "style",
        "severity": 1 + i % 5,
        "confidence": (i % 11) / 10,
        "file_path": f"src/f{i}.py  ",
        "line_start": i,
        "line_end": 0 if i % 4 else i + 3,
        "title": "t",
        "message": f"message {i} ü",
        "suggested_fix": "fix" if i % 2 else "",
        "code_context": f"x = {i}",
    }
    values.update(overrides)
    return common_pb2.FindingInput(**values)  # type: ignore[arg-type]


def test_columns_hold_what_finding_from_pb_makes_of_each_input() -> None:
    inputs = [_input(i) for i in range(40)]
    columns = inline_findings_from_pb(inputs)
    assert len(columns) == 40
    assert [columns[i] for i in range(40)] == [finding_from_pb(f) for f in inputs]
    assert list(columns[3:6]) == [finding_from_pb(f) for f in inputs[3:6]]
    assert len(inline_findings_from_pb([])) == 0
    rebuilt = InlineFindings.of([columns[i] for i in range(40)])
    assert [rebuilt[i] for i in range(40)] == [columns[i] for i in range(40)]


BREAKS: list[dict[str, object]] = [
    {"client_finding_id": "x" * 21},
    {"client_finding_id": "a\x00b"},
    {"rule_id": "   "},
    {"rule_id": "r" * 21},
    {"category": ""},
    {"category": "Style"},
    {"category": " style"},
    {"category": "c" * 65},
    {"severity": 0},
    {"severity": 6},
    {"confidence": math.nan},
    {"confidence": -0.1},
    {"confidence": math.inf},
    {"file_path": ""},
    {"file_path": "p" * 31},
    {"line_start": -1},
    {"line_start": 5, "line_end": 4},
    {"title": "t" * 11},
    {"title": "\x00"},
    {"message": ""},
    {"message": "m" * 41},
    {"suggested_fix": "f" * 41},
    {"code_context": "c" * 41},
    {"code_context": "x\x00"},
]


def _one_by_one(request: RankRequest) -> list[tuple[str, str]]:
    violations = Violations()
    for i, draft in enumerate(request.inline):
        validate_finding(draft, f"findings[{i}]", LIMITS, violations)
    return [(v.field, v.description) for v in violations.items]


@pytest.mark.parametrize("broken", BREAKS, ids=lambda b: ",".join(map(str, b)))
def test_a_broken_field_gives_the_per_finding_violations(broken: dict[str, object]) -> None:
    drafts = [finding_from_pb(_input(i)) for i in range(6)]
    drafts[4] = dataclasses.replace(drafts[4], **broken)  # type: ignore[arg-type]
    for inline in (tuple(drafts), InlineFindings.of(drafts)):
        request = RankRequest(
            repository_url="https://x/known",
            pull_request=1,
            finding_ids=(),
            inline=inline,
            options=RankOptions(),
        )
        expected = _one_by_one(request)
        assert expected
        with pytest.raises(InvalidArgument) as raised:
            validate_request(request, limits=LIMITS, max_findings=100)
        assert [(v.field, v.description) for v in raised.value.violations] == expected


def test_valid_columns_pass() -> None:
    drafts: list[FindingDraft] = [finding_from_pb(_input(i)) for i in range(30)]
    request = RankRequest(
        repository_url="https://x/known",
        pull_request=1,
        finding_ids=(),
        inline=InlineFindings.of(drafts),
        options=RankOptions(),
    )
    assert _one_by_one(request) == []
    validate_request(request, limits=LIMITS, max_findings=100)
