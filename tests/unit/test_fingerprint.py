"""Tests for shared.fingerprint: normalisation, fingerprints and pattern keys."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.fingerprint import (
    finding_fingerprint,
    finding_fingerprints,
    normalize_code,
    normalize_message,
    pattern_key,
)

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
FIXED_FINGERPRINT = "a533b95663247c3d9ada0bb9b8164e80"
FIXED_PATTERN_KEY = "540cf0c676a88c06"

# Characters that interact with the masking rules, so that examples hit the corner cases.
_TRICKY = st.text(alphabet=st.sampled_from(list("\"'`\\<>xX0123456789abcdefABCDEF_-. \n\t")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Variable "userName" is unused', "variable <str> is unused"),
        ("Don't call 'eval' here", "don't call <str> here"),
        ("Use `foo()` instead", "use <str> instead"),
        ("took 42ms after 3 retries, ratio 0.75", "took <num>ms after <num> retries, ratio <num>"),
        ("commit a1b2c3d4e5 and mask 0xFF", "commit <hex> and mask <hex>"),
        ("request 123e4567-e89b-12d3-a456-426614174000 failed", "request <hex> failed"),
        ("Facade added to int64 and utf8 handling", "facade added to int64 and utf8 handling"),
        ("  Mixed\n\tWHITESPACE   here ", "mixed whitespace here"),
        ("line 1234567 only digits", "line <num> only digits"),
    ],
)
def test_normalize_message_masks_volatile_parts(text: str, expected: str) -> None:
    assert normalize_message(text) == expected


@settings(max_examples=300, database=None, deadline=None)
@given(st.one_of(st.text(), _TRICKY))
def test_normalize_message_is_idempotent(text: str) -> None:
    once = normalize_message(text)
    assert normalize_message(once) == once


@settings(max_examples=100, database=None, deadline=None)
@given(st.text())
def test_normalize_message_has_no_outer_or_repeated_whitespace(text: str) -> None:
    normalized = normalize_message(text)
    assert normalized == normalized.strip()
    assert "  " not in normalized
    assert normalized == normalized.lower()


def test_normalize_code_ignores_indentation_and_line_breaks() -> None:
    code = "def f(x):\n    return x + 1\n"
    reindented = "\tdef f(x):\n\t\t  return x  +  1"
    assert normalize_code(code) == normalize_code(reindented) == "def f(x): return x + 1"
    assert normalize_code("return x + 1") != normalize_code("return x + 2")


def _fingerprint(**overrides: str) -> str:
    fields = {
        "rule_id": "SEC001",
        "file_path": "src/db/query.py",
        "message": "Possible SQL injection in 'build_query' at line 42",
        "code_context": "    cursor.execute('SELECT * FROM t WHERE id=' + user_id)\n",
    }
    fields.update(overrides)
    return finding_fingerprint(**fields)


def test_fingerprint_is_32_hex_chars_and_deterministic() -> None:
    assert HEX32.fullmatch(_fingerprint())
    assert _fingerprint() == _fingerprint()
    # Fixed values: stored findings are keyed by these, so a change to the normalisation or the
    # encoding must fail here rather than silently re-key every stored finding.
    assert _fingerprint() == FIXED_FINGERPRINT
    assert pattern_key(rule_id="SEC001", message="Possible SQL injection at line 42") == (
        FIXED_PATTERN_KEY
    )


def test_fingerprint_survives_line_shifts_and_reindentation() -> None:
    # The next push: the message names another line and the code moved into a block.
    shifted = _fingerprint(
        message="Possible SQL injection in 'build_query' at line 57",
        code_context="        cursor.execute('SELECT * FROM t WHERE id=' + user_id)",
    )
    assert shifted == _fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"rule_id": "SEC002"},
        {"file_path": "src/db/other.py"},
        {"message": "Possible command injection in 'build_query' at line 42"},
        {"code_context": "cursor.execute(query, (user_id,))"},
    ],
)
def test_fingerprint_changes_with_identity_fields(change: dict[str, str]) -> None:
    assert _fingerprint(**change) != _fingerprint()


def test_fingerprint_fields_cannot_bleed_into_each_other() -> None:
    base = {"message": "m", "code_context": "c"}
    assert finding_fingerprint(rule_id="ab", file_path="c", **base) != finding_fingerprint(
        rule_id="a", file_path="bc", **base
    )


def test_pattern_key_groups_messages_of_one_template() -> None:
    key = pattern_key(rule_id="STY001", message="Line is 120 characters long")
    assert HEX16.fullmatch(key)
    assert key == pattern_key(rule_id="STY001", message="line is 97 characters  long")
    assert key != pattern_key(rule_id="STY002", message="Line is 120 characters long")
    assert key != pattern_key(rule_id="STY001", message="Line has trailing whitespace")


def test_fingerprints_of_columns_are_each_findings_fingerprint() -> None:
    rows = [
        ("R1", "a.py", "Variable 'x' is unused", "x = 1"),
        ("R1", "a.py", "Variable 'y' is unused", "x  =  1"),
        ("R2", "b.py", "line 42 is too long", ""),
        ("R1", "a.py", "Variable 'x' is unused", "x = 1"),
    ]
    rules, paths, messages, codes = (list(column) for column in zip(*rows, strict=True))
    assert finding_fingerprints(rules, paths, messages, codes) == [
        finding_fingerprint(rule_id=r, file_path=p, message=m, code_context=c)
        for r, p, m, c in rows
    ]
    assert finding_fingerprints([], [], [], []) == []
