"""Tests for services.learning.domain.dedup: SimHash, Hamming distance and duplicate grouping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.learning.domain.cancellation import Cancelled, CancelToken
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


def _brute_force(
    fingerprints: list[str],
    files: list[str],
    lines: list[int],
    hashes: list[int],
    priority: list[float],
    line_window: int,
    max_hamming: int,
) -> list[int]:
    """The grouping rule, spelled out pair by pair: what find_duplicates must equal."""
    n = len(fingerprints)
    order = sorted(range(n), key=lambda i: (-priority[i], i))
    exact: dict[str, int] = {}
    for i in order:
        exact.setdefault(fingerprints[i], i)
    copies: dict[int, list[int]] = {}
    for i in range(n):
        copies.setdefault(exact[fingerprints[i]], []).append(i)
    leaders: list[int] = []
    near_leader: dict[int, int] = {}
    for group in dict.fromkeys(exact[fingerprints[i]] for i in order):
        near = [
            leader
            for leader in leaders
            if any(
                files[a] == files[b]
                and abs(lines[a] - lines[b]) <= line_window
                and bin(hashes[a] ^ hashes[b]).count("1") <= max_hamming
                for a in copies[group]
                for b in copies[leader]
            )
        ]
        if near:
            near_leader[group] = near[0]  # leaders are listed best first
        else:
            leaders.append(group)
    result = []
    for i in range(n):
        final = near_leader.get(exact[fingerprints[i]], exact[fingerprints[i]])
        result.append(-1 if final == i else final)
    return result


@pytest.mark.parametrize("seed", range(6))
def test_grouping_equals_the_pairwise_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    base = rng.integers(0, 2**63, 6, dtype=np.uint64)
    # Texts near one of a few base hashes (a few flipped bits), so near pairs are common.
    flips = rng.integers(0, 64, (n, 3))
    hashes = [
        int(base[rng.integers(0, 6)]) ^ sum(1 << int(b) for b in row[: rng.integers(0, 4)])
        for row in flips
    ]
    case = {
        "fingerprints": [f"fp{i}" for i in rng.integers(0, 220, n)],
        "files": [f"f{i}.py" for i in rng.integers(0, 4, n)],
        "lines": rng.integers(1, 120, n).tolist(),
        "hashes": hashes,
        "priority": rng.random(n).round(2).tolist(),
    }
    window, limit = int(rng.integers(0, 12)), int(rng.integers(0, 8))
    duplicate_of, _ = _groups(**case, line_window=window, max_hamming=limit)
    assert duplicate_of == _brute_force(**case, line_window=window, max_hamming=limit)


def test_one_crowded_window_is_grouped_in_near_linear_time() -> None:
    # The probe's request: 10,000 findings in one file on lines 10-12 whose messages normalise
    # alike. Pairwise comparison would be 50 million pairs; the bucketed grouping visits each
    # finding a bounded number of times, so this finishes at once (speed itself is measured by
    # the benchmark). All of them collapse into the best one.
    n = 10_000
    result = find_duplicates(
        fingerprints=[f"fp{i}" for i in range(n)],
        file_paths=["src/app.py"] * n,
        line_starts=10 + np.arange(n) % 3,
        simhashes=simhash64([f"msg {i}" for i in range(n)]),
        priority=np.linspace(1.0, 0.0, n),
    )
    assert result.duplicate_of[0] == -1
    assert np.all(result.duplicate_of[1:] == 0)


def test_a_cancelled_grouping_stops() -> None:
    token = CancelToken()
    token.cancel()
    n = 5000
    with pytest.raises(Cancelled):
        find_duplicates(
            fingerprints=[f"fp{i}" for i in range(n)],
            file_paths=["a.py"] * n,
            line_starts=np.zeros(n, dtype=np.int64),
            simhashes=np.zeros(n, dtype=np.uint64),
            priority=np.zeros(n),
            cancel=token,
        )
