"""`BatchHistogram`: observed a batch at a time, exposed exactly as prometheus-client's
`Histogram` exposes the same observations."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from duroot_stream.metrics import LATENCY_BUCKETS, BatchHistogram


def test_a_batch_histogram_exposes_what_a_histogram_does() -> None:
    rng = random.Random(7)
    # On and around every bound (a bucket holds values <= its bound), and beyond the last.
    values = list(LATENCY_BUCKETS) + [b * 1.0001 for b in LATENCY_BUCKETS]
    values += [0.0, 11.0, 1e9] + [rng.expovariate(20) for _ in range(2000)]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("x_seconds", "Some latency.", buckets=LATENCY_BUCKETS, registry=theirs)
    batched = BatchHistogram("x_seconds", "Some latency.", LATENCY_BUCKETS, ours)
    for value in values:
        histogram.observe(value)
    batched.observe_many(values[:1000])
    batched.observe_many([])
    batched.observe_many(values[1000:])

    def samples(registry: CollectorRegistry) -> list[str]:
        # prometheus-client's `_created` is a family of its own (optional; not ours).
        lines = generate_latest(registry).decode().splitlines()
        return [line for line in lines if "x_seconds_created" not in line]

    # The same lines, but the sum's last digit (added in another order).
    ours_lines, their_lines = samples(ours), samples(theirs)
    assert [line for line in ours_lines if "_sum" not in line] == [
        line for line in their_lines if "_sum" not in line
    ]
    assert ours.get_sample_value("x_seconds_sum") == pytest.approx(
        theirs.get_sample_value("x_seconds_sum"), rel=1e-12
    )
    assert ours.get_sample_value("x_seconds_count") == len(values)
    assert ours.get_sample_value("x_seconds_bucket", {"le": "0.001"}) == sum(
        1 for v in values if v <= 0.001
    )
