"""Duplicate detection within one ranking request: exact fingerprints and near-duplicate text.

Exact duplicates share a fingerprint (see :mod:`shared.fingerprint`). Near duplicates are
findings in the same file, a few lines apart, whose messages have 64-bit SimHashes within a
small Hamming distance: two rules (or two runs of one rule) reporting the same problem.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.fingerprint import normalize_message

UInt64Array = npt.NDArray[np.uint64]
Int64Array = npt.NDArray[np.int64]

KIND_EXACT = "exact"
KIND_NEAR = "near"

# Placeholders count as tokens so that "<str> is unused" and "<num> is unused" still differ.
_TOKEN = re.compile(r"<(?:str|hex|num)>|\w+")


def _shingle_hashes(normalized: str) -> list[int]:
    tokens = _TOKEN.findall(normalized)
    # Word pairs capture order ("a calls b" vs "b calls a"); a one-word text has no pairs.
    shingles = tokens if len(tokens) < 2 else [f"{a} {b}" for a, b in itertools.pairwise(tokens)]
    return [
        int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest())
        for s in shingles
    ]


def simhash64(texts: Sequence[str]) -> UInt64Array:
    """64-bit SimHash of each text's normalised word 2-shingles (single words when too short).

    Every shingle votes +1/-1 on each bit of its blake2b hash; a bit is set when the vote is
    positive. Similar texts share most shingles, so their hashes differ in few bits. An empty
    text hashes to 0. Texts that normalise alike (same template, other literals) are hashed once.
    """
    distinct: dict[str, int] = {}
    slots = np.fromiter(
        (distinct.setdefault(normalize_message(text), len(distinct)) for text in texts),
        dtype=np.int64,
        count=len(texts),
    )
    per_text = [_shingle_hashes(normalized) for normalized in distinct]
    counts = np.fromiter((len(h) for h in per_text), dtype=np.int64, count=len(per_text))
    hashes = np.zeros(len(per_text), dtype=np.uint64)
    total = int(counts.sum())
    if total:
        flat = np.fromiter(
            (value for shingle_hashes in per_text for value in shingle_hashes),
            dtype=np.uint64,
            count=total,
        )
        # An explicit little-endian view makes the bit layout, and so the hashes, portable.
        bits = np.unpackbits(flat.astype("<u8").view(np.uint8).reshape(total, 8), axis=1)
        votes = bits.astype(np.int32) * 2 - 1
        nonempty = counts > 0
        starts = (np.cumsum(counts) - counts)[nonempty]
        # reduceat misbehaves on empty segments, hence only non-empty texts get a segment.
        tally = np.add.reduceat(votes, starts, axis=0)
        packed = np.packbits((tally > 0).astype(np.uint8), axis=1)
        hashes[nonempty] = packed.view("<u8").reshape(-1).astype(np.uint64)
    result: UInt64Array = hashes[slots]
    return result


def _popcount(values: UInt64Array) -> npt.NDArray[np.integer]:
    if hasattr(np, "bitwise_count"):
        counted: npt.NDArray[np.integer] = np.bitwise_count(values)
        return counted
    as_bytes = values.astype("<u8").view(np.uint8).reshape(*values.shape, 8)
    summed: npt.NDArray[np.integer] = np.unpackbits(as_bytes, axis=-1).sum(axis=-1)
    return summed


def hamming_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> Int64Array:
    """Element-wise number of differing bits between two (broadcastable) uint64 arrays."""
    xor = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return _popcount(xor).astype(np.int64)


@dataclass(frozen=True, eq=False)
class DuplicateGroups:
    """Result of :func:`find_duplicates`, one entry per finding.

    ``duplicate_of`` is -1 for a finding that is shown as itself (a representative or a
    singleton), else the index of its group's representative; representatives never point
    anywhere, so there are no chains. ``kind`` is "" for -1 entries, "exact" when the finding
    has the representative's fingerprint and "near" otherwise. (``eq=False``: element-wise array
    comparison has no single truth value.)
    """

    duplicate_of: Int64Array
    kind: npt.NDArray[np.object_]


def _codes(values: Sequence[str]) -> Int64Array:
    """Dense integer ids of equal strings, in order of first appearance."""
    ids: dict[str, int] = {}
    return np.fromiter(
        (ids.setdefault(v, len(ids)) for v in values), dtype=np.int64, count=len(values)
    )


def _near_pairs(
    *,
    file_ids: Int64Array,
    line_starts: Int64Array,
    simhashes: UInt64Array,
    line_window: int,
    max_hamming: int,
) -> tuple[Int64Array, Int64Array]:
    """All pairs (i, j) in one file within ``line_window`` lines and ``max_hamming`` bits.

    Findings are sorted by (file, line); then pairs k positions apart are compared for
    k = 1, 2, ... Once a position's partner k steps ahead is out of the window, every partner
    further ahead is too, so only positions still in the window are carried to the next k.
    The work is proportional to the number of in-window pairs, not n².
    """
    n = file_ids.shape[0]
    order = np.lexsort((np.arange(n), line_starts, file_ids))
    files = file_ids[order]
    lines = line_starts[order]
    hashes = simhashes[order]
    firsts: list[Int64Array] = []
    seconds: list[Int64Array] = []
    active = np.arange(max(n - 1, 0), dtype=np.int64)
    step = 1
    while active.size:
        partner = active + step
        in_window = (files[partner] == files[active]) & (
            lines[partner] - lines[active] <= line_window
        )
        active = active[in_window]
        partner = partner[in_window]
        close = hamming_distance(hashes[active], hashes[partner]) <= max_hamming
        firsts.append(order[active[close]])
        seconds.append(order[partner[close]])
        step += 1
        active = active[active + step < n]
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(firsts), np.concatenate(seconds)


def _sort_key(priority: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # NaN must not win a group, so it ranks below every real priority.
    return np.where(np.isnan(priority), -np.inf, priority)


def find_duplicates(
    *,
    fingerprints: Sequence[str],
    file_paths: Sequence[str],
    line_starts: npt.ArrayLike,
    simhashes: npt.ArrayLike,
    priority: npt.ArrayLike,
    line_window: int = 10,
    max_hamming: int = 6,
) -> DuplicateGroups:
    """Group exact and near duplicates; each group is represented by its best member.

    Exact duplicates share a fingerprint anywhere in the request. Near duplicates share a file
    path, start at most ``line_window`` lines apart and have message SimHashes at most
    ``max_hamming`` bits apart. The representative is the member with the highest priority
    (ties: lowest index; NaN ranks last).

    Near groups are formed greedily in priority order (leader clustering) rather than as
    connected components: a finding joins a group only if it is a near duplicate of the
    representative itself (or an exact copy of such a finding), so a run of similar findings
    every few lines does not chain into one group spanning the whole file.
    """
    n = len(fingerprints)
    lines = np.asarray(line_starts, dtype=np.int64)
    hashes = np.asarray(simhashes, dtype=np.uint64)
    prio = _sort_key(np.asarray(priority, dtype=np.float64))
    if not (len(file_paths) == lines.shape[0] == hashes.shape[0] == prio.shape[0] == n):
        raise ValueError("all inputs of find_duplicates must have the same length")
    if line_window < 0 or max_hamming < 0:
        raise ValueError("line_window and max_hamming must be non-negative")

    duplicate_of = np.full(n, -1, dtype=np.int64)
    kind = np.full(n, "", dtype=object)
    if n == 0:
        return DuplicateGroups(duplicate_of=duplicate_of, kind=kind)

    index = np.arange(n, dtype=np.int64)
    # Rank 0 is the best finding; every "who wins" question below compares ranks.
    by_priority = np.lexsort((index, -prio))
    rank = np.empty(n, dtype=np.int64)
    rank[by_priority] = index

    # Exact: the best-ranked member of each fingerprint leads its copies.
    fp_ids = _codes(fingerprints)
    best_of_fp = np.full(int(fp_ids.max()) + 1, n, dtype=np.int64)
    np.minimum.at(best_of_fp, fp_ids, rank)
    exact_leader = by_priority[best_of_fp[fp_ids]]

    first, second = _near_pairs(
        file_ids=_codes(file_paths),
        line_starts=lines,
        simhashes=hashes,
        line_window=line_window,
        max_hamming=max_hamming,
    )
    # Near pairs connect exact groups (through any of their copies), never a group to itself.
    first = exact_leader[first]
    second = exact_leader[second]
    keep = first != second
    first, second = first[keep], second[keep]

    leader = exact_leader.copy()
    if first.size:
        # Greedy leader clustering over the few findings that have near neighbours. This is the
        # one Python loop here; it visits only findings with near pairs, and each pair twice.
        nodes = np.concatenate([first, second])
        neighbours = np.concatenate([second, first])
        by_node = np.lexsort((rank[neighbours], rank[nodes]))
        nodes, neighbours = nodes[by_node], neighbours[by_node]
        heads = np.flatnonzero(np.r_[True, nodes[1:] != nodes[:-1]])
        bounds = np.r_[heads, nodes.size].tolist()
        group_of: dict[int, int] = {}
        neighbour_list = neighbours.tolist()
        for position, node in enumerate(nodes[heads].tolist()):
            if node in group_of:
                continue
            group_of[node] = node
            for other in neighbour_list[bounds[position] : bounds[position + 1]]:
                if other not in group_of:
                    group_of[other] = node
        grouped = np.fromiter(group_of.keys(), dtype=np.int64, count=len(group_of))
        head_of_group = np.fromiter(group_of.values(), dtype=np.int64, count=len(group_of))
        near_leader = index.copy()
        near_leader[grouped] = head_of_group
        # Copies follow their exact leader into its near group, pointing at the final leader.
        leader = near_leader[exact_leader]

    is_member = leader != index
    duplicate_of[is_member] = leader[is_member]
    same_fp = fp_ids[leader] == fp_ids
    kind[is_member & same_fp] = KIND_EXACT
    kind[is_member & ~same_fp] = KIND_NEAR
    return DuplicateGroups(duplicate_of=duplicate_of, kind=kind)
