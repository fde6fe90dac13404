"""Tests for services.learning.domain.dedup: SimHash, Hamming distance and duplicate grouping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.learning.domain.dedup import find_duplicates, hamming_distance, simhash64

LONG = (
    "Possible SQL injection: the value of the request parameter is concatenated into the query "
    "string before the statement is executed against the primary database"
)


def test_simhash_is_uint64_and_deterministic() -> None:
    texts = [LONG, "Function parse has no docstring", "", "x"]
    first = simhash64(texts)
    assert first.dtype == np.uint64
    assert first.shape == (4,)
    assert np.array_equal(first, simhash64(list(reversed(texts)))[::-1])
    assert first[2] == 0  # nothing to vote with
    assert simhash64([]).shape == (0,)


def test_simhash_ignores_literals_and_case() -> None:
    hashes = simhash64(
        ["Variable 'a' is unused at line 3", "VARIABLE 'other' is unused at line 99"]
    )
    assert hashes[0] == hashes[1]


def test_near_identical_texts_are_close_and_unrelated_texts_far() -> None:
    near = LONG.replace("primary", "replica")
    unrelated = [
        "Function parse has no docstring",
        "Cache 'sessions' can grow without bound when many users log in at the same time",
        "Line is too long",
    ]
    hashes = simhash64([LONG, near, *unrelated])
    close = int(hamming_distance(hashes[:1], hashes[1:2])[0])
    far = hamming_distance(np.repeat(hashes[:1], 3), hashes[2:])
    assert close <= 8
    assert np.all(far >= 20)


def test_hamming_distance_counts_differing_bits() -> None:
    a = np.array([0, 5, 2**64 - 1], dtype=np.uint64)
    b = np.array([0, 3, 0], dtype=np.uint64)
    assert hamming_distance(a, b).tolist() == [0, 2, 64]
    assert hamming_distance(a, np.uint64(0)).tolist() == [0, 2, 64]  # broadcasts


def test_hamming_distance_without_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, 200, dtype=np.uint64)
    expected = [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True)]
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert hamming_distance(a, b).tolist() == expected


def _groups(
    *,
    fingerprints: list[str],
    files: list[str],
    lines: list[int],
    hashes: list[int],
    priority: list[float],
    line_window: int = 10,
    max_hamming: int = 6,
) -> tuple[list[int], list[str]]:
    result = find_duplicates(
        fingerprints=fingerprints,
        file_paths=files,
        line_starts=np.array(lines),
        simhashes=np.array(hashes, dtype=np.uint64),
        priority=np.array(priority),
        line_window=line_window,
        max_hamming=max_hamming,
    )
    assert result.duplicate_of.dtype == np.int64
    return result.duplicate_of.tolist(), result.kind.tolist()


FAR = 0xFFFF_FFFF_0000_0000  # 32 bits away from 0


def test_exact_duplicates_point_at_the_highest_priority_copy() -> None:
    duplicate_of, kind = _groups(
        fingerprints=["a", "b", "a", "a"],
        files=["x.py", "y.py", "z.py", "x.py"],  # unreachable as near duplicates
        lines=[1, 500, 900, 400],
        hashes=[0, FAR, 0, 0],
        priority=[0.2, 0.9, 0.7, 0.5],
    )
    assert duplicate_of == [2, -1, -1, 2]
    assert kind == ["exact", "", "", "exact"]


def test_priority_ties_go_to_the_lowest_index_and_nan_ranks_last() -> None:
    duplicate_of, _ = _groups(
        fingerprints=["a", "a", "a"],
        files=["x.py"] * 3,
        lines=[1, 100, 200],
        hashes=[0, 0, 0],
        priority=[float("nan"), 0.5, 0.5],
    )
    assert duplicate_of == [1, -1, 1]


def test_near_duplicates_need_same_file_window_and_similar_text() -> None:
    duplicate_of, kind = _groups(
        fingerprints=["a", "b", "c", "d", "e"],
        files=["x.py", "x.py", "y.py", "x.py", "x.py"],
        lines=[10, 14, 12, 21, 16],
        hashes=[0b1111, 0, 0, 0, FAR],
        priority=[0.9, 0.5, 0.8, 0.4, 0.3],
    )
    # 1: 4 bits and 4 lines from 0. 2: other file. 3: 11 lines from 0, out of the window (and
    # 7 lines from 1, which is not the representative). 4: text too different.
    assert duplicate_of == [-1, 0, -1, -1, -1]
    assert kind == ["", "near", "", "", ""]


def test_line_window_and_hamming_limit_are_inclusive() -> None:
    duplicate_of, _ = _groups(
        fingerprints=["a", "b"],
        files=["x.py"] * 2,
        lines=[10, 20],
        hashes=[0, 0b111111],
        priority=[1.0, 0.5],
    )
    assert duplicate_of == [-1, 0]
    duplicate_of, _ = _groups(
        fingerprints=["a", "b"],
        files=["x.py"] * 2,
        lines=[10, 21],
        hashes=[0, 0],
        priority=[1.0, 0.5],
    )
    assert duplicate_of == [-1, -1]


def test_groups_do_not_chain_beyond_the_representative() -> None:
    # 0 and 2 are both near 1 but 16 lines from each other.
    chain: dict[str, Any] = {
        "fingerprints": ["a", "b", "c"],
        "files": ["x.py"] * 3,
        "lines": [10, 18, 26],
        "hashes": [0, 0, 0],
    }
    duplicate_of, _ = _groups(**chain, priority=[0.1, 0.9, 0.2])
    assert duplicate_of == [1, -1, 1]
    duplicate_of, _ = _groups(**chain, priority=[0.9, 0.5, 0.2])
    assert duplicate_of == [-1, 0, -1]


def test_exact_copies_follow_their_group_to_the_final_representative() -> None:
    duplicate_of, kind = _groups(
        fingerprints=["a", "b", "b"],
        files=["x.py"] * 3,
        lines=[10, 12, 300],
        hashes=[0, 1, 1],
        priority=[0.9, 0.5, 0.3],
    )
    # 2 is an exact copy of 1 far away; 1 collapses into 0, so 2 points at 0 directly.
    assert duplicate_of == [-1, 0, 0]
    assert kind == ["", "near", "near"]


def test_every_member_points_at_a_representative() -> None:
    rng = np.random.default_rng(11)
    n = 2000
    result = find_duplicates(
        fingerprints=[f"fp{i}" for i in rng.integers(0, 1500, n)],
        file_paths=[f"f{i}.py" for i in rng.integers(0, 30, n)],
        line_starts=rng.integers(1, 400, n),
        simhashes=rng.integers(0, 4, n).astype(np.uint64),
        priority=rng.random(n),
    )
    members = np.flatnonzero(result.duplicate_of >= 0)
    assert members.size > 0
    assert np.all(result.duplicate_of[result.duplicate_of[members]] == -1)
    assert set(result.kind[members].tolist()) == {"exact", "near"}


def test_empty_input_and_length_mismatch() -> None:
    empty = find_duplicates(
        fingerprints=[],
        file_paths=[],
        line_starts=np.zeros(0, dtype=np.int64),
        simhashes=np.zeros(0, dtype=np.uint64),
        priority=np.zeros(0),
    )
    assert empty.duplicate_of.shape == (0,)
    with pytest.raises(ValueError, match="same length"):
        find_duplicates(
            fingerprints=["a"],
            file_paths=["x", "y"],
            line_starts=np.zeros(1, dtype=np.int64),
            simhashes=np.zeros(1, dtype=np.uint64),
            priority=np.zeros(1),
        )


def test_ten_thousand_findings_in_few_files_group_consistently() -> None:
    # Dense files (speed is measured by `make bench`, never asserted here).
    rng = np.random.default_rng(5)
    n = 10_000
    kwargs: dict[str, Any] = {
        "fingerprints": [f"fp{i}" for i in rng.integers(0, 9000, n)],
        "file_paths": [f"f{i}.py" for i in rng.integers(0, 20, n)],
        "line_starts": rng.integers(1, 3000, n),
        "simhashes": rng.integers(0, 8, n).astype(np.uint64),
        "priority": rng.random(n),
    }
    groups = find_duplicates(**kwargs)
    representatives = groups.duplicate_of[groups.duplicate_of >= 0]
    assert (groups.duplicate_of[representatives] == -1).all()  # no chains
