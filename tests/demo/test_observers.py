"""The demo's pure helpers: percentiles, rates, Prometheus text, journal tails, the view."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from tickpipe.demo.journals import JournalTail, count_faults
from tickpipe.demo.scrape import parse_metrics
from tickpipe.demo.stats import Rate, Reservoir, percentile
from tickpipe.demo.view import ProviderRow, Snapshot, log_line, render_table


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))          # 1..100, shuffled order must not matter
    assert percentile(values[::-1], 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_reservoir_keeps_a_bounded_sample_and_the_true_max():
    r = Reservoir(size=100, seed=3)
    for v in range(10_000):
        r.add(float(v))
    assert len(r.values) == 100 and r.max == 9999.0 and r.seen == 10_000
    assert 2000 < r.summary()["p50"] < 8000     # a uniform sample of 0..9999


def test_rate_is_per_second_between_readings():
    rate = Rate()
    assert rate.update(10, now=100.0) == 0.0
    assert rate.update(40, now=102.0) == 15.0
    assert rate.update(40, now=103.0) == 0.0


def test_metrics_text_of_a_real_registry_parses_to_sums_by_label():
    registry = CollectorRegistry()
    frames = Counter("tickpipe_producer_frames_received_total", "x", ["provider"], registry=registry)
    reconnects = Counter("tickpipe_producer_reconnects_total", "x", ["provider", "reason"], registry=registry)
    ready = Gauge("tickpipe_producer_ready", "x", ["provider"], registry=registry)
    frames.labels("alpaca").inc(41)
    reconnects.labels("alpaca", "closed").inc(2)
    reconnects.labels("alpaca", "shutdown").inc()
    ready.labels("alpaca").set(1)
    samples = parse_metrics(generate_latest(registry).decode())
    assert samples.total("tickpipe_producer_frames_received_total") == 41
    assert samples.total("tickpipe_producer_frames_received_total", provider="coinbase") == 0
    assert samples.by_label("tickpipe_producer_reconnects_total", "reason") == {"closed": 2, "shutdown": 1}
    assert samples.total("tickpipe_producer_ready") == 1


def test_malformed_metrics_text_does_not_raise():
    samples = parse_metrics('ok_total 3\nbroken{label="unterminated 1\n')
    assert samples.total("broken") == 0


def test_journal_tail_reads_complete_lines_only_and_skips_garbage(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"event":"fault","conn":1,"fault":"drop","ts_ns":5}\n{"event":"fa')
    tail = JournalTail(path)
    assert [line["fault"] for line in tail.read()] == ["drop"]
    with open(path, "ab") as fh:
        fh.write(b'ult","conn":1,"fault":"reorder","ts_ns":9}\nnot json\n[1]\n')
    assert [line["fault"] for line in tail.read()] == ["reorder"]
    assert tail.bad_lines == 2
    assert tail.faults() == {"drop": 1, "reorder": 1}
    assert [line["ts_ns"] for line in tail.upto(5)] == [5]
    assert JournalTail(tmp_path / "missing").read() == []


def test_a_disconnect_journaled_as_fault_and_event_counts_once():
    lines = [{"event": "fault", "conn": 3, "fault": "disconnect"}, {"event": "disconnect", "conn": 3, "reason": "fault"},
             {"event": "disconnect", "conn": 4, "reason": "client closed"}]
    assert count_faults(lines) == {"disconnect": 1}


def test_the_view_shows_every_provider_and_logs_json():
    snap = Snapshot(12.0, "running", "127.0.0.1:1", [ProviderRow("alpaca", "up", 20.0, 30.0, 1,
                                                                  {"GAP": 2, "DUPLICATE": 1, "FEED_REPEAT": 2},
                                                                  {"GAP": 2, "DUPLICATE": 3}, 400.0, 900.0,
                                                                  scored=("GAP", "DUPLICATE"))],
                    {"trade": 30.0}, 0, 1, 2, {"schwab": "no normalizer"})
    text = render_table(snap)
    assert "alpaca" in text and "2/2" in text and "1+2/3" in text and "0/-" in text
    assert "skipped schwab: no normalizer" in text
    doc = json.loads(log_line(snap))
    assert doc["providers"]["alpaca"]["detected"]["GAP"] == 2 and doc["ticks_per_s"] == {"trade": 30.0}


def test_an_emulator_journal_is_readable_while_it_is_written(tmp_path, monkeypatch):
    """The live view follows journals that are still open: they are flushed at least every second."""
    from tickpipe.emulators.journal import Journal

    path = tmp_path / "live.journal"
    journal = Journal(str(path))
    tail = JournalTail(path)
    journal.write("sent", 1, ids={"seq": 0})
    assert tail.read() == []                                   # still in the write buffer
    monkeypatch.setattr(Journal, "FLUSH_EVERY_NS", 0)          # as if a second had passed
    journal.write("fault", 1, fault="drop", ids=[{"seq": 1}])
    assert [line["event"] for line in tail.read()] == ["sent", "fault"]
    journal.close()
