"""RPC counts, server-side errors and latency of one process, in windows that merge by adding.

The telemetry interceptor feeds every finished RPC in; the heartbeat writer takes a window every
few seconds and stores it (``replica_samples``), so rollout criteria and alert signals are
computed over all replicas from what the database recorded — never from one process's memory.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.telemetry import DURATION_BUCKETS

CLIENT_CODES = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "UNIMPLEMENTED",
        "CANCELLED",
    }
)
"""Outcomes that are not the server's fault (as in the operations guide's error-ratio query)."""

BUCKET_COUNT = len(DURATION_BUCKETS) + 1
"""One count per upper bound of ``DURATION_BUCKETS``, plus one for slower calls."""


@dataclass
class RpcWindow:
    rpc_count: int = 0
    error_count: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * BUCKET_COUNT)

    def quantile_ms(self, q: float) -> float | None:
        if not any(self.latency_buckets):
            return None
        return quantile_seconds(self.latency_buckets, q) * 1000


class RpcStats:
    """Accumulates finished RPCs; cheap enough for every call (a bisect and three adds)."""

    def __init__(self) -> None:
        self._window = RpcWindow()
        self._slow_methods: frozenset[str] = frozenset()
        self.total_rpcs = 0
        self.total_errors = 0

    def exclude_from_latency(self, methods: Sequence[str]) -> None:
        """Operator RPCs (tuning, jobs, gate changes) are slow on purpose: not API latency."""
        self._slow_methods = frozenset(methods)

    def observe(self, method: str, code: str, seconds: float, *, streaming: bool) -> None:
        if method.startswith("/grpc."):
            return  # health checks and reflection are not traffic
        window = self._window
        window.rpc_count += 1
        self.total_rpcs += 1
        if code not in CLIENT_CODES:
            window.error_count += 1
            self.total_errors += 1
        if not streaming and method not in self._slow_methods:
            window.latency_buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1

    def take(self) -> RpcWindow:
        """The window since the previous call; a new one starts."""
        window, self._window = self._window, RpcWindow()
        return window


def merge_buckets(rows: Sequence[Sequence[int]]) -> list[int]:
    merged = [0] * BUCKET_COUNT
    for row in rows:
        for i, count in enumerate(row[:BUCKET_COUNT]):
            merged[i] += int(count)
    return merged


def quantile_seconds(buckets: Sequence[int], q: float) -> float:
    """The q-quantile of bucketed durations, interpolated within its bucket (as Prometheus'
    ``histogram_quantile``); the overflow bucket answers its lower bound. NaN when empty."""
    total = sum(buckets)
    if total == 0:
        return math.nan
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(DURATION_BUCKETS):
                return DURATION_BUCKETS[-1]
            lower = DURATION_BUCKETS[i - 1] if i > 0 else 0.0
            upper = DURATION_BUCKETS[i]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return DURATION_BUCKETS[-1]
