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
    ids = {value: i for i, value in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(ids.__getitem__, values), dtype=np.int64, count=len(values))


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
    first: int = -1,
) -> int:
    """The best-ranked indexed leader near any of ``places`` (-1: none), within the cap.

    ``first`` is the best-ranked leader of all (the first one found): once it is near, no
    further comparison can find a better one, so the lookup stops there.
    """
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
                        if best == first:
                            return best
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

    The lookups are done in bulk (see :class:`_Candidates`): for almost every group the
    earlier copies sharing a bucket are few, so NumPy finds its near earlier groups at once and
    the visit only asks which of them became leaders. Only a group whose buckets hold more
    earlier copies than :data:`MAX_COMPARISONS_PER_GROUP` (a crowded window) is looked up in
    the leader index one comparison at a time, exactly as the cap prescribes.
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
    places = _places(by_group, groups, file_ids, line_starts, simhashes)
    candidates = _Candidates.find(
        places,
        bands=bands,
        block_size=block_size,
        line_window=line_window,
        max_hamming=max_hamming,
    )
    if candidates is None:  # line numbers too far apart for the bulk keys: one at a time
        crowded = np.ones(places.group_ids.size, dtype=bool)
        near_start = near_stop = np.zeros(places.group_ids.size, dtype=np.int64)
        near: list[int] = []
    else:
        crowded, near_start, near_stop, near = (
            candidates.crowded,
            candidates.start,
            candidates.stop,
            candidates.near,
        )
    group_ids = places.group_ids.tolist()
    # Only groups with near earlier groups, or crowded ones, can join another; the rest lead.
    visits = np.flatnonzero(crowded | (near_stop > near_start)).tolist()
    starts, stops = near_start.tolist(), near_stop.tolist()
    crowded_list = crowded.tolist()
    leader_of: dict[int, int] = {}

    def first_leader(visited: int) -> int:
        """Of the near earlier groups (best first), the first that did not join another."""
        for other in near[starts[visited] : stops[visited]]:
            if other not in leader_of:
                return other
        return -1

    if not crowded.any():  # the usual request: no leader index to keep
        for count, visited in enumerate(visits):
            if count % 512 == 511:
                cancel.check()
            best = first_leader(visited)
            if best >= 0:
                leader_of[group_ids[visited]] = best
        return leader_of

    ranks = rank.tolist()
    place_group = places.group.tolist()
    place_file = places.file.tolist()
    place_line = places.line.tolist()
    place_hash = places.hash.tolist()
    group_start = places.group_start.tolist()
    index: LeaderIndex = {}
    indexed = 0  # groups visited before this one are in the index if they lead
    for count, visited in enumerate(visits):
        if count % 512 == 511:
            cancel.check()
        group = group_ids[visited]
        best = -1
        if crowded_list[visited]:
            for k in range(indexed, visited):
                if group_ids[k] in leader_of:
                    continue
                for p in range(group_start[k], group_start[k + 1]):
                    entry = (place_group[p], place_line[p], place_hash[p])
                    block = place_line[p] // block_size
                    for band, (shift, mask) in enumerate(bands):
                        key = (place_file[p], band, (place_hash[p] >> shift) & mask, block)
                        index.setdefault(key, []).append(entry)
            indexed = visited
            own = range(group_start[visited], group_start[visited + 1])
            best = _best_leader(
                [(place_file[p], place_line[p], place_hash[p]) for p in own],
                index=index,
                bands=bands,
                block_size=block_size,
                ranks=ranks,
                line_window=line_window,
                max_hamming=max_hamming,
                first=group_ids[0],  # the first group visited always leads
            )
        else:
            best = first_leader(visited)
        if best >= 0:
            leader_of[group] = best
    return leader_of


@dataclass(frozen=True, eq=False)
class _Places:
    """The distinct (file, line, SimHash) places of the involved groups, at most
    :data:`MAX_POSITIONS_PER_GROUP` per group, grouped best group first (place order within a
    group: first appearance). Group k's places are ``group_start[k]:group_start[k + 1]``."""

    group: Int64Array
    file: Int64Array
    line: Int64Array
    hash: UInt64Array
    position: Int64Array
    """Index of the place's group in visiting order."""
    group_ids: Int64Array
    group_start: Int64Array


def _places(
    by_group: Int64Array,
    groups: Int64Array,
    file_ids: Int64Array,
    line_starts: Int64Array,
    simhashes: UInt64Array,
) -> _Places:
    group = groups[by_group]
    file = file_ids[by_group]
    line = line_starts[by_group]
    hash_ = simhashes[by_group]
    # First appearance of each (group, file, line, hash) in member order.
    at = np.arange(by_group.size, dtype=np.int64)
    sort = np.lexsort((at, hash_, line, file, group))
    fresh = np.ones(sort.size, dtype=bool)
    fresh[1:] = (
        (group[sort][1:] != group[sort][:-1])
        | (file[sort][1:] != file[sort][:-1])
        | (line[sort][1:] != line[sort][:-1])
        | (hash_[sort][1:] != hash_[sort][:-1])
    )
    kept = np.sort(sort[fresh])
    # Group boundaries in member order (groups are contiguous there).
    new_group = np.ones(kept.size, dtype=bool)
    new_group[1:] = group[kept][1:] != group[kept][:-1]
    starts = np.flatnonzero(new_group)
    sequence = np.cumsum(new_group) - 1
    within = np.arange(kept.size, dtype=np.int64) - starts[sequence]
    capped = within < MAX_POSITIONS_PER_GROUP
    kept, sequence = kept[capped], sequence[capped]
    counts = np.bincount(sequence, minlength=starts.size)
    group_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return _Places(
        group=group[kept],
        file=file[kept],
        line=line[kept],
        hash=hash_[kept],
        position=sequence.astype(np.int64),
        group_ids=group[kept][group_start[:-1]],
        group_start=group_start,
    )


@dataclass(frozen=True, eq=False)
class _Candidates:
    """Near earlier groups of every visited group, found with array operations.

    ``near[start[k]:stop[k]]`` are the groups visited before group k (best first, no repeats)
    that have a place near one of k's places. ``crowded[k]`` marks a group whose buckets hold
    more than :data:`MAX_COMPARISONS_PER_GROUP` earlier places: the leader index holds a
    subset of them, so the capped lookup could stop early, and it must run as written.
    """

    crowded: npt.NDArray[np.bool_]
    start: Int64Array
    stop: Int64Array
    near: list[int]

    @staticmethod
    def find(
        places: _Places,
        *,
        bands: Sequence[tuple[int, int]],
        block_size: int,
        line_window: int,
        max_hamming: int,
    ) -> _Candidates | None:
        count = places.group.size
        groups_visited = places.group_ids.size
        blocks = places.line // block_size
        low, high = int(blocks.min()) - 1, int(blocks.max()) + 1
        span = high - low + 1
        files = int(places.file.max()) + 1
        value_range = max(mask for _, mask in bands) + 1
        if files * value_range * span * len(bands) * (count + 1) >= 2**62:
            return None
        hashes = places.hash
        place = np.arange(count, dtype=np.int64)
        # One integer per bucket (band, file, band value, line block); buckets of one band and
        # file with neighbouring blocks have neighbouring keys.
        keys = np.empty((len(bands), count), dtype=np.int64)
        for band, (shift, mask) in enumerate(bands):
            values = ((hashes >> np.uint64(shift)) & np.uint64(mask)).astype(np.int64)
            keys[band] = ((band * files + places.file) * value_range + values) * span + (
                blocks - low
            )
        flat_keys = keys.reshape(-1)
        sort = np.argsort(flat_keys, kind="stable")
        sorted_keys = flat_keys[sort]
        sorted_place = np.tile(place, len(bands))[sort]
        # Each (place, band) looks at blocks -1, 0 and +1 of its bucket: one range of keys,
        # from the start of the bucket before (when there is one) to the end of the one after.
        fresh = np.ones(sorted_keys.size, dtype=bool)
        fresh[1:] = sorted_keys[1:] != sorted_keys[:-1]
        bucket_start = np.flatnonzero(fresh)
        bucket_key = sorted_keys[bucket_start]
        bucket_stop = np.append(bucket_start[1:], sorted_keys.size)
        bucket = np.cumsum(fresh) - 1  # of each sorted entry
        below = np.maximum(bucket - 1, 0)
        above = np.minimum(bucket + 1, bucket_key.size - 1)
        lo_sorted = np.where(
            bucket_key[below] == sorted_keys - 1, bucket_start[below], bucket_start[bucket]
        )
        hi_sorted = np.where(
            bucket_key[above] == sorted_keys + 1, bucket_stop[above], bucket_stop[bucket]
        )
        lo = np.empty_like(lo_sorted)
        hi = np.empty_like(hi_sorted)
        lo[sort], hi[sort] = lo_sorted, hi_sorted
        # Back in (band, place) order; lookups go place by place.
        lookup_place = np.tile(place, len(bands))
        # The range holds every place the capped lookup could compare with (the group's
        # earlier places in these buckets) and more (the place itself, later ones): a group
        # whose ranges stay within the cap can never reach it.
        sizes = hi - lo
        group_of_lookup = places.position[lookup_place]
        per_group = np.bincount(group_of_lookup, weights=sizes - 1, minlength=groups_visited)
        crowded = per_group > MAX_COMPARISONS_PER_GROUP
        # Every (place, other place) pair sharing a bucket range, for the groups not crowded.
        take = (sizes > 1) & ~crowded[group_of_lookup]
        lo, sizes, asking = lo[take], sizes[take], lookup_place[take]
        total = int(sizes.sum())
        offsets = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes) + np.arange(total)
        other = sorted_place[offsets]
        asking = np.repeat(asking, sizes)
        earlier = other < places.group_start[:-1][places.position[asking]]
        asking, other = asking[earlier], other[earlier]
        near = (np.abs(places.line[asking] - places.line[other]) <= line_window) & (
            np.bitwise_count(hashes[asking] ^ hashes[other]) <= max_hamming
        )
        pairs_group = places.position[asking[near]]
        pairs_other = places.position[other[near]]
        # One entry per (group, near earlier group), best earlier group first.
        pair_keys = np.unique(pairs_group * groups_visited + pairs_other)
        pairs_group, pairs_other = pair_keys // groups_visited, pair_keys % groups_visited
        start = np.searchsorted(pairs_group, np.arange(groups_visited), side="left")
        stop = np.searchsorted(pairs_group, np.arange(groups_visited), side="right")
        return _Candidates(
            crowded=crowded,
            start=start.astype(np.int64),
            stop=stop.astype(np.int64),
            near=places.group_ids[pairs_other].tolist(),
        )


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
