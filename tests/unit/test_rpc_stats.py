"""RPC windows: counts, server-side errors only, and bucketed quantiles like Prometheus'."""

from __future__ import annotations

import math
import random

import numpy as np

from shared.heartbeat.stats import RpcStats, merge_buckets, quantile_seconds
from shared.telemetry import DURATION_BUCKETS


def test_client_mistakes_are_not_server_errors_and_health_is_not_traffic() -> None:
    stats = RpcStats()
    stats.exclude_from_latency(["/pkg.S/Tune"])
    stats.observe("/pkg.S/Rank", "OK", 0.01, streaming=False)
    stats.observe("/pkg.S/Rank", "INVALID_ARGUMENT", 0.001, streaming=False)
    stats.observe("/pkg.S/Rank", "UNAVAILABLE", 0.2, streaming=False)
    stats.observe("/pkg.S/Rank", "INTERNAL", 0.2, streaming=False)
    stats.observe("/pkg.S/Tune", "OK", 9.0, streaming=False)
    stats.observe("/pkg.S/Watch", "CANCELLED", 600.0, streaming=True)
    stats.observe("/grpc.health.v1.Health/Check", "OK", 0.0001, streaming=False)
    window = stats.take()
    assert (window.rpc_count, window.error_count) == (6, 2)
    assert sum(window.latency_buckets) == 4  # no operator RPC, no stream, no health check
    assert stats.take().rpc_count == 0
    assert (stats.total_rpcs, stats.total_errors) == (6, 2)


def test_bucketed_quantiles_land_in_the_bucket_of_the_true_quantile() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(math.log(0.02), 1.0) for _ in range(20_000)]
    halves = [RpcStats(), RpcStats()]
    for i, value in enumerate(values):
        halves[i % 2].observe("/pkg.S/M", "OK", value, streaming=False)
    buckets = merge_buckets([h.take().latency_buckets for h in halves])
    for q in (0.5, 0.95, 0.99):
        true = float(np.quantile(values, q))
        estimate = quantile_seconds(buckets, q)
        upper = next((b for b in DURATION_BUCKETS if b >= true), DURATION_BUCKETS[-1])
        lower = max((b for b in DURATION_BUCKETS if b < true), default=0.0)
        assert lower <= estimate <= upper, (q, true, estimate)
    assert math.isnan(quantile_seconds([0] * len(buckets), 0.5))
