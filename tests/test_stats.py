"""Latency histograms: bucket bounds, percentiles, and the call tree's inlined copy."""

from __future__ import annotations

import random

from skbpath.tracer.model.calltree import CallTree
from skbpath.tracer.model.pairing import Call, pair_all
from skbpath.tracer.model.stats import Histogram, bucket_of, bucket_value

from tests.synth import Spec, demo_table, events_for


def test_buckets_are_exact_below_16_and_within_5_percent_above() -> None:
    for ns in range(16):
        assert bucket_value(bucket_of(ns)) == ns
    rng = random.Random(7)
    for _ in range(5000):
        ns = rng.randrange(16, 10**10)
        assert abs(bucket_value(bucket_of(ns)) - ns) <= ns * 0.045
    # Buckets are ordered like the values they hold.
    values = sorted(rng.randrange(0, 10**9) for _ in range(2000))
    assert [bucket_of(v) for v in values] == sorted(bucket_of(v) for v in values)


def test_percentiles_and_exact_fields() -> None:
    h = Histogram()
    for ns in range(1, 1001):
        h.add(ns * 1000)
    assert (h.count, h.min, h.max, h.total) == (1000, 1000, 1_000_000, 500_500_000)
    assert h.mean == 500_500.0
    for q, want in ((50, 500_000), (90, 900_000), (99, 990_000)):
        assert abs(h.percentile(q) - want) <= want * 0.045
    # Never outside the exact extremes; within a bucket's width of them.
    assert 1000 <= h.percentile(0) <= 1000 * 1.045
    assert 1_000_000 * 0.955 <= h.percentile(100) <= 1_000_000
    assert Histogram().percentile(50) == 0


def test_merge_equals_adding_everything() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for i, ns in enumerate(random.Random(3).choices(range(1, 10**7), k=500)):
        (a if i % 2 else b).add(ns)
        both.add(ns)
    a.merge(b)
    assert (a.buckets, a.count, a.total, a.min, a.max) == (
        both.buckets, both.count, both.total, both.min, both.max)


def test_call_tree_histograms_match_histogram_add() -> None:
    # CallTree.add_root inlines Histogram.add for speed: both must agree.
    table = demo_table()
    rng = random.Random(11)
    streams = []
    t = 0
    for _ in range(300):
        spec = Spec("__sys_sendto", 0, rng.randrange(1, 5_000_000),
                    [Spec("tcp_sendmsg", 0, rng.randrange(1, 40))])
        events, t = events_for(table, spec, t + 10)
        streams.append(events)
    tree = CallTree(table)
    expect: dict[int, Histogram] = {}

    def add(call: Call) -> None:
        for c in call.walk():
            assert c.inclusive is not None
            expect.setdefault(c.func, Histogram()).add(c.inclusive)

    for events in streams:
        pair_all(table, events, tree.add_root)
        pair_all(table, events, add)
    assert set(expect) == set(tree.by_func)
    for fid, h in expect.items():
        got = tree.by_func[fid]
        assert (got.buckets, got.count, got.total, got.min, got.max) == (
            h.buckets, h.count, h.total, h.min, h.max), table.name_of(fid)
    assert tree.roots[0].hist.count == 300
