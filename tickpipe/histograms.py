"""Histogram helpers shared by the producers and the processor."""

from __future__ import annotations

from bisect import bisect_right


def observe_latencies(histogram, now_ns: int, recv_ns: list[int]) -> None:
    """``histogram.observe(max(0, now_ns - t) / 1e9)`` for every ``t`` in ``recv_ns``, in one update per
    bucket (a produced chunk is acknowledged at one instant): the same buckets, count and sum."""
    try:
        buckets, total, bounds = histogram._buckets, histogram._sum, histogram._upper_bounds
    except AttributeError:  # another prometheus_client layout: one observation at a time
        for t in recv_ns:
            histogram.observe(max(0, now_ns - t) / 1e9)
        return
    latencies = sorted(max(0, now_ns - t) / 1e9 for t in recv_ns)
    total.inc(sum(latencies))
    below = 0
    for bucket, bound in zip(buckets, bounds):
        upto = bisect_right(latencies, bound, below)  # observations <= bound, as observe() files them
        if upto > below:
            bucket.inc(upto - below)
            below = upto
        if below == len(latencies):
            break
