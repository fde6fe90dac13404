"""Time from a finding to its first decisive reaction, kept as a histogram of 1/8-octave buckets.

A median over any window is then a sum of small histograms instead of a sort of raw rows.
Bucket ``b`` holds minutes in ``[2^(b/8) - 1, 2^((b+1)/8) - 1)``: a bucket is 9% wide relative to
its bounds, so the median read from the histogram (interpolated inside the bucket of the middle
value) is within 9% of that middle value. The SQL that assigns buckets (storage.rollup_sql)
uses the same formula.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

BUCKETS_PER_OCTAVE = 8
MAX_BUCKET = 255  # 2^(256/8) minutes is eight thousand years: nothing lands beyond it


def bucket_of(minutes: float) -> int:
    """The bucket a delay falls into (negative delays, from clock skew, count as zero)."""
    return min(MAX_BUCKET, math.floor(BUCKETS_PER_OCTAVE * math.log2(1.0 + max(0.0, minutes))))


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The minutes a bucket covers, lower bound included."""
    return (
        2.0 ** (bucket / BUCKETS_PER_OCTAVE) - 1.0,
        2.0 ** ((bucket + 1) / BUCKETS_PER_OCTAVE) - 1.0,
    )


def median_minutes(histogram: Mapping[int, int]) -> float:
    """The median delay, interpolated linearly inside the bucket that holds the middle rank.

    0 for an empty histogram.
    """
    total = sum(count for count in histogram.values() if count > 0)
    if total == 0:
        return 0.0
    middle = total / 2.0
    seen = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        if count <= 0:
            continue
        if seen + count >= middle:
            lower, upper = bucket_bounds(bucket)
            return lower + (upper - lower) * (middle - seen) / count
        seen += count
    raise AssertionError("unreachable: the middle rank lies within the total")
