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

from services.learning.domain.cancellation import NEVER_CANCELLED, CancelToken
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


def hamming_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> Int64Array:
    """Element-wise number of differing bits between two (broadcastable) uint64 arrays."""
    xor = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(xor).astype(np.int64)


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


MAX_COMPARISONS_PER_GROUP = 256
"""Candidate representatives checked for one group of exact copies, at most. Only a crafted
request (thousands of different texts sharing a SimHash band in one line window) reaches it;
then a few near duplicates stay separate, but one request can never cost quadratic time."""
MAX_POSITIONS_PER_GROUP = 64
"""Distinct (file, line, text) places of one group of exact copies that are looked up."""


def _bands(max_hamming: int) -> list[tuple[int, int]]:
    """(shift, mask) of ``max_hamming + 1`` bit bands covering the 64 bits.

    Pigeonhole: two hashes at most ``max_hamming`` bits apart differ in at most that many bands,
    so they agree exactly on at least one band. Bucketing by band value therefore finds every
    near pair without comparing all pairs (locality-sensitive hashing).
    """
    count = min(max_hamming + 1, 64)
    edges = [64 * b // count for b in range(count + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(edges)]


Place = tuple[int, int, int]
"""(file id, line, SimHash) of one copy."""
LeaderIndex = dict[tuple[int, int, int, int], list[tuple[int, int, int]]]
"""(file id, band, band value, line block) -> [(leader, line, SimHash)], best leader first."""


def _best_leader(
    places: Sequence[Place],
    *,
    index: LeaderIndex,
    bands: Sequence[tuple[int, int]],
    block_size: int,
    ranks: Sequence[int],
    line_window: int,
    max_hamming: int,
) -> int:
    """The best-ranked indexed leader near any of ``places`` (-1: none), within the cap."""
    best = -1
    comparisons = 0
    for file_id, line, hash_ in places:
        block = line // block_size
        for band, (shift, mask) in enumerate(bands):
            value = (hash_ >> shift) & mask
            for nearby in (block - 1, block, block + 1):
                for leader, other_line, other_hash in index.get((file_id, band, value, nearby), ()):
                    if (
                        abs(line - other_line) <= line_window
                        and (hash_ ^ other_hash).bit_count() <= max_hamming
                        and (best < 0 or ranks[leader] < ranks[best])
                    ):
                        best = leader
                    comparisons += 1
                    if comparisons >= MAX_COMPARISONS_PER_GROUP:
                        return best
    return best


def _near_leaders(
    *,
    groups: Int64Array,
    rank: Int64Array,
    file_ids: Int64Array,
    line_starts: Int64Array,
    simhashes: UInt64Array,
    line_window: int,
    max_hamming: int,
    cancel: CancelToken,
) -> dict[int, int]:
    """Greedy leader clustering of exact groups (``groups[i]`` is finding i's exact leader).

    Groups are visited best first. A group joins the best-ranked earlier *leader* that has a
    copy in the same file within ``line_window`` lines and ``max_hamming`` bits of one of its
    own copies; otherwise it becomes a leader. Leaders are indexed by (file, band, band value,
    line block), so each lookup touches only findings that could match, and the work grows
    with the number of findings, not with the number of pairs in a crowded window. Returns
    {group: leader} for the groups that joined another.
    """
    # Only groups with another group's copy in the window can be near anything: find them with
    # one sort (a cross-group pair in the window implies an adjacent one in (file, line) order).
    order = np.lexsort((line_starts, file_ids))
    same_file = file_ids[order][1:] == file_ids[order][:-1]
    close = (line_starts[order][1:] - line_starts[order][:-1]) <= line_window
    different = groups[order][1:] != groups[order][:-1]
    adjacent = np.flatnonzero(same_file & close & different)
    if adjacent.size == 0:
        return {}
    involved = np.unique(groups[order[np.concatenate([adjacent, adjacent + 1])]])
    members = np.flatnonzero(np.isin(groups, involved))
    # Places of each involved group, best group first.
    by_group = members[np.lexsort((members, rank[groups[members]]))]
    bands = _bands(max_hamming)
    block_size = line_window + 1
    member_groups = groups[by_group].tolist()
    member_files = file_ids[by_group].tolist()
    member_lines = line_starts[by_group].tolist()
    member_hashes = [int(h) for h in simhashes[by_group].tolist()]
    ranks = rank.tolist()

    index: LeaderIndex = {}
    leader_of: dict[int, int] = {}
    start = 0
    visited = 0
    while start < len(by_group):
        group = member_groups[start]
        stop = start
        while stop < len(by_group) and member_groups[stop] == group:
            stop += 1
        copies = zip(
            member_files[start:stop],
            member_lines[start:stop],
            member_hashes[start:stop],
            strict=True,
        )
        places = list(dict.fromkeys(copies))[:MAX_POSITIONS_PER_GROUP]
        start = stop
        visited += 1
        if visited % 512 == 0:
            cancel.check()
        best = _best_leader(
            places,
            index=index,
            bands=bands,
            block_size=block_size,
            ranks=ranks,
            line_window=line_window,
            max_hamming=max_hamming,
        )
        if best >= 0:
            leader_of[group] = best
            continue
        for file_id, line, hash_ in places:
            entry = (group, line, hash_)
            block = line // block_size
            for band, (shift, mask) in enumerate(bands):
                index.setdefault((file_id, band, (hash_ >> shift) & mask, block), []).append(entry)
    return leader_of


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
    cancel: CancelToken = NEVER_CANCELLED,
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

    leader_of = _near_leaders(
        groups=exact_leader,
        rank=rank,
        file_ids=_codes(file_paths),
        line_starts=lines,
        simhashes=hashes,
        line_window=line_window,
        max_hamming=max_hamming,
        cancel=cancel,
    )
    leader = exact_leader.copy()
    if leader_of:
        near_leader = index.copy()
        grouped = np.fromiter(leader_of.keys(), dtype=np.int64, count=len(leader_of))
        near_leader[grouped] = np.fromiter(leader_of.values(), dtype=np.int64, count=len(leader_of))
        # Copies follow their exact leader into its near group, pointing at the final leader.
        leader = near_leader[exact_leader]

    is_member = leader != index
    duplicate_of[is_member] = leader[is_member]
    same_fp = fp_ids[leader] == fp_ids
    kind[is_member & same_fp] = KIND_EXACT
    kind[is_member & ~same_fp] = KIND_NEAR
    return DuplicateGroups(duplicate_of=duplicate_of, kind=kind)
