"""Sequence trackers, driven by hand-written cases and by hypothesis with arbitrary interleavings."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from tickpipe.processors.integrity.trackers import (
    DUPLICATE, GAP, HEALED, OUT_OF_ORDER, ContiguousTracker, MonotonicTracker)

BIG = 10**18


def run(tracker, values, times=None):
    released, findings = [], []
    for i, v in enumerate(values):
        step = tracker.offer(v, v, times[i] if times else i)
        released += step.released
        findings += step.findings
    return released, findings


def kinds(findings):
    return [(f.kind, f.first, f.last) for f in findings]


def test_in_order_stream_is_released_untouched():
    released, findings = run(ContiguousTracker(), [5, 6, 7, 8])
    assert released == [5, 6, 7, 8] and findings == []


def test_swapped_neighbours_are_reordered_and_reported_once():
    released, findings = run(ContiguousTracker(window_ns=BIG), [1, 3, 2, 4])
    assert released == [1, 2, 3, 4]
    assert kinds(findings) == [(OUT_OF_ORDER, 2, 2)] and findings[0].lateness == 1


def test_gap_is_alerted_only_when_the_window_closes_and_healed_later():
    t = ContiguousTracker(window_items=2, window_ns=BIG)
    released, findings = run(t, [1, 2, 4, 5])
    assert released == [1, 2] and findings == []          # still inside the window
    step = t.offer(6, 6, 5)                                # the window (2 held) overflows
    assert kinds(step.findings) == [(GAP, 3, 3)] and step.released == [4, 5, 6]
    step = t.offer(3, 3, 6)
    assert kinds(step.findings) == [(HEALED, 3, 3)] and step.released == [3]
    assert kinds(t.offer(3, 3, 7).findings) == [(DUPLICATE, 3, 3)]


def test_time_window_closes_a_gap_on_tick():
    t = ContiguousTracker(window_items=100, window_ns=1000)
    run(t, [1, 3], times=[0, 10])
    assert t.tick(500).findings == []
    step = t.tick(1010)
    assert kinds(step.findings) == [(GAP, 2, 2)] and step.released == [3]


def test_duplicates_held_or_released_are_not_released_twice():
    released, findings = run(ContiguousTracker(window_ns=BIG), [1, 3, 3, 2, 2, 1])
    assert released == [1, 2, 3]
    assert [f.kind for f in findings].count(DUPLICATE) == 3


def test_unknown_start_accepts_values_below_the_first_one_seen():
    released, findings = run(ContiguousTracker(window_ns=BIG), [11, 10, 12, 10])
    assert released == [11, 10, 12]
    assert kinds(findings) == [(OUT_OF_ORDER, 10, 10), (DUPLICATE, 10, 10)]


def test_monotonic_tracker_late_values_and_duplicates():
    t = MonotonicTracker(strict=True)
    released, findings = run(t, [10, 20, 15, 20, 30])
    assert released == [10, 20, 15, 30]
    assert kinds(findings) == [(OUT_OF_ORDER, 15, 15), (DUPLICATE, 20, 20)]
    assert findings[0].lateness == 5


def test_monotonic_tracker_with_content_fingerprints_allows_equal_times():
    t = MonotonicTracker()
    assert t.offer(100, "a", fingerprint=1).findings == []
    assert t.offer(100, "b", fingerprint=2).findings == []      # same time, other content: fine
    assert [f.kind for f in t.offer(100, "a", fingerprint=1).findings] == [DUPLICATE]


@st.composite
def faulted_stream(draw):
    """0..n-1 with drops, adjacent swaps (bounded displacement) and repeats, like the emulators inject."""
    n = draw(st.integers(5, 120))
    values = list(range(n))
    dropped = set(draw(st.sets(st.integers(1, n - 2), max_size=n // 5)))
    kept = [v for v in values if v not in dropped]
    for i in draw(st.lists(st.integers(0, max(0, len(kept) - 2)), max_size=n // 5)):
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
    out = []
    dups = draw(st.sets(st.integers(0, len(kept) - 1), max_size=n // 5))
    for i, v in enumerate(kept):
        out.append(v)
        if i in dups:
            out.append(v)
    return out, dropped


@settings(max_examples=300, deadline=None)
@given(faulted_stream())
def test_contiguous_tracker_scores_injected_faults_exactly(case):
    stream, dropped = case
    tracker = ContiguousTracker(window_items=10_000, window_ns=BIG, start=0)
    released, findings = run(tracker, stream)
    closing = tracker.close()
    released += closing.released
    findings += closing.findings
    assert released == sorted(set(stream))                                    # each once, in order
    gap_values = {v for f in findings if f.kind == GAP for v in range(f.first, f.last + 1)}
    interior = {d for d in dropped if d < max(stream)}
    assert gap_values == interior
    assert sum(1 for f in findings if f.kind == DUPLICATE) == len(stream) - len(set(stream))
    assert not any(f.kind == HEALED for f in findings)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=150), st.integers(0, 8))
def test_any_interleaving_releases_each_value_exactly_once(stream, window):
    tracker = ContiguousTracker(window_items=window, window_ns=BIG)
    released, findings = run(tracker, stream)
    released += tracker.close().released
    assert sorted(released) == sorted(set(stream))
    assert len(released) == len(released) == len(set(stream))


@settings(max_examples=200, deadline=None)
@given(faulted_stream(), st.integers(0, 200))
def test_snapshot_and_restore_mid_stream_changes_nothing(case, cut):
    stream, _ = case
    cut = min(cut, len(stream))
    whole = ContiguousTracker(window_items=5, window_ns=BIG)
    a_rel, a_find = run(whole, stream)
    first = ContiguousTracker(window_items=5, window_ns=BIG)
    b_rel, b_find = run(first, stream[:cut])
    second = ContiguousTracker.restore(first.snapshot(), window_items=5, window_ns=BIG)
    second.arrivals = first.arrivals
    for i, v in enumerate(stream[cut:], start=cut):
        step = second.offer(v, v, i)
        b_rel += step.released
        b_find += step.findings
    assert a_rel == b_rel and kinds(a_find) == kinds(b_find)


def test_monotonic_tracker_remembers_only_the_last_fingerprints_also_after_a_restore():
    t = MonotonicTracker(recent_size=3)
    for fp in (1, 2, 3, 4):
        assert t.offer(100, "x", fingerprint=fp).findings == []
    assert t.snapshot()["recent"] == [2, 3, 4]
    assert t.offer(100, "x", fingerprint=1).findings == []          # forgotten: not a duplicate
    assert [f.kind for f in t.offer(100, "x", fingerprint=4).findings] == [DUPLICATE]
    again = MonotonicTracker.restore(t.snapshot(), recent_size=3)
    assert [f.kind for f in again.offer(100, "x", fingerprint=3).findings] == [DUPLICATE]
    assert again.offer(100, "x", fingerprint=2).findings == []      # dropped when 1 came back
    assert again.snapshot() == {"last": 100, "recent": [4, 1, 2]}
    assert [f.kind for f in again.offer(100, "x", fingerprint=1).findings] == [DUPLICATE]
    assert again.offer(100, "x", fingerprint=3).findings == []      # dropped when 2 came back
