"""Pure parts of the producer core: backoff, the bounded buffer's loss accounting, control records."""

from __future__ import annotations

import random

import pytest

from tickpipe.envelope import KIND_FRAME, KIND_LOSS, KIND_SESSION_END, RawRecord, decode_marker
from tickpipe.producers.backoff import auth_retry_delay, full_jitter
from tickpipe.producers.buffer import ProduceBuffer
from tickpipe.producers.control import ControlError, parse_control, resync_request
from tickpipe.producers.recorder import Recorder


def test_full_jitter_stays_within_the_capped_exponential_ceiling_and_spreads():
    rng = random.Random(5)
    for failures in range(0, 40):
        ceiling = min(30.0, 0.5 * 2 ** failures)
        draws = [full_jitter(failures, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling and min(draws) < 0.2 * ceiling   # full jitter: the whole range is used
    assert full_jitter(10_000, 0.5, 30.0, rng) <= 30.0                     # no overflow on long outages


def test_auth_retry_delay_never_drops_below_the_slow_minimum():
    rng = random.Random(9)
    for failures in range(1, 30):
        draws = [auth_retry_delay(failures, 30.0, 600.0, rng) for _ in range(100)]
        assert all(30.0 <= d <= min(600.0, 30.0 * 2 ** (failures - 1)) for d in draws)
    assert auth_retry_delay(1, 30.0, 600.0, rng) == 30.0


class _BufferSink:
    """Puts records straight into a ProduceBuffer (no Kafka: these tests are about the accounting)."""

    def __init__(self, buffer: ProduceBuffer) -> None:
        self.buffer = buffer

    def put(self, record: RawRecord) -> None:
        self.buffer.append(record)


def _recorder_with_buffer(max_frames=5, max_bytes=1 << 20):
    rec = Recorder("echo", "c-1")
    buf = ProduceBuffer(max_frames, max_bytes, rec.new_loss)
    rec.attach(_BufferSink(buf))
    rec.new_session()
    return rec, buf


def test_buffer_drops_oldest_frames_with_exact_ranges_and_never_drops_markers():
    rec, buf = _recorder_with_buffer(max_frames=5)
    rec.marker("session_start")                       # seq 1
    for i in range(8):                                # seqs 2..9
        rec.frame(f'{{"n":{i}}}', "application/json")
    # each frame past 5 items drops the oldest frame; the first drop appends the loss marker (seq 7)
    assert buf.dropped_frames == 5
    out = buf.take(100)
    assert [(r.seq, r.kind) for r in out] == [(1, "session_start"), (7, KIND_LOSS), (8, KIND_FRAME),
                                             (9, KIND_FRAME), (10, KIND_FRAME)]
    doc = decode_marker(out[1].payload)
    assert doc["ranges"] == [[2, 6]] and doc["dropped_frames"] == 5 and doc["sessions"] == [rec.session]
    assert doc["dropped_bytes"] == sum(len(f'{{"n":{i}}}') for i in range(5))
    assert buf.total_count == 5 and len(buf) == 0


def test_buffer_loss_marker_is_final_once_taken_and_a_new_episode_opens_a_new_one():
    rec, buf = _recorder_with_buffer(max_frames=3)
    for i in range(5):
        rec.frame(str(i), "text/plain")
    first = buf.take(10)
    buf.settle(first)
    for i in range(5):
        rec.frame(str(i), "text/plain")
    second = buf.take(10)
    losses = [decode_marker(r.payload) for r in first + second if r.kind == KIND_LOSS]
    assert len(losses) == 2
    all_dropped = [s for d in losses for a, b in d["ranges"] for s in range(a, b + 1)]
    assert len(all_dropped) == len(set(all_dropped)) == buf.dropped_frames


def test_buffer_give_back_restores_order_at_the_head():
    rec, buf = _recorder_with_buffer(max_frames=100)
    for i in range(6):
        rec.frame(str(i), "text/plain")
    chunk = buf.take(4)
    rec.marker(KIND_SESSION_END, reason="closed")
    buf.give_back(chunk[1:])
    buf.settle(chunk[:1])
    rest = buf.take(100)
    assert [r.seq for r in rest] == [2, 3, 4, 5, 6, 7]
    assert buf.total_count == len(rest) and buf.total_bytes > 0


def test_byte_bound_drops_too():
    rec, buf = _recorder_with_buffer(max_frames=1000, max_bytes=4096)
    for i in range(20):
        rec.frame("x" * 1000, "text/plain")
    assert buf.total_bytes <= 4096 + 1064
    assert buf.dropped_frames >= 15


def test_control_records_parse_or_are_rejected_with_a_reason():
    target, conn = parse_control(resync_request("BTC-USD", "level2", reason="gap", conn="cb-0"))
    assert (target.instrument, target.channel, target.reason, conn) == ("BTC-USD", "level2", "gap", "cb-0")
    for bad, why in ((b"nope", "not JSON"), (b"[1]", "not a JSON object"), (b'{"action":"drop"}', "unknown action"),
                     (b'{"action":"resync"}', "needs an 'instrument'"), (b'{"action":"resync","instrument":5}', "must be a string"),
                     (None, "not JSON")):
        with pytest.raises(ControlError, match=why):
            parse_control(bad)


class _Ceiling(random.Random):
    """A generator that always draws the top of the range, to see the ceilings the loop asks for."""

    def uniform(self, a, b):
        return b


def test_loop_backoff_grows_to_the_cap_resets_after_a_stable_session_and_skips_token_refresh():
    from tickpipe.config import Secret
    from tickpipe.producers.loop import ConnectionLoop, SessionEnd
    from tickpipe.producers.settings import ProducerSettings

    from tests.producers.core_support import EchoAdapter, EchoSettings

    settings = ProducerSettings(backoff_initial_s=1.0, backoff_max_s=8.0, stable_after_s=10.0,
                                auth_retry_min_s=30.0, auth_retry_max_s=120.0)
    loop = ConnectionLoop(EchoAdapter(EchoSettings(key=Secret("unit-key-1"))), Recorder("echo", "c"), sink=None,
                          settings=settings, rng=_Ceiling())
    short = SessionEnd("closed", subscribed=True, duration_s=1.0)
    assert [loop._delay_after(short) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert loop._delay_after(SessionEnd("closed", subscribed=True, duration_s=11.0)) == 1.0
    assert loop._delay_after(SessionEnd("token_refresh")) == 0.0
    assert loop._delay_after(SessionEnd("connect_failed")) == 1.0     # token refresh reset the exponent
    loop.auth_failures = 3
    assert loop._delay_after(SessionEnd("auth_failed")) == 120.0      # min(cap, 30 * 2**2)


def test_every_provider_id_has_a_registered_adapter_for_that_provider():
    import dataclasses

    from tickpipe.producers import load
    from tickpipe.producers.base import FeedAdapter
    from tickpipe.providers import PROVIDERS

    for provider in PROVIDERS:
        cls = load(provider)
        assert issubclass(cls, FeedAdapter) and cls.provider == provider
        assert cls.settings_class is None or dataclasses.is_dataclass(cls.settings_class)
    with pytest.raises(ValueError, match="unknown provider"):
        load("nasdaq")


def test_loop_settings_precedence_builtin_then_adapter_then_file_then_environment():
    from tickpipe.producers.settings import ProducerSettings, loop_settings_for

    class Adapter:
        loop_defaults = {"stale_after_s": 30.0, "linger_ms": 50}

    plain = loop_settings_for(Adapter, env={})
    assert (plain.stale_after_s, plain.linger_ms, plain.ping_interval_s) == (30.0, 50, ProducerSettings().ping_interval_s)
    from_file = loop_settings_for(Adapter, {"producer": {"stale_after_s": 12}}, env={})
    assert (from_file.stale_after_s, from_file.linger_ms) == (12.0, 50)
    from_env = loop_settings_for(Adapter, {"producer": {"stale_after_s": 12}}, env={"TICKPIPE_PRODUCER_STALE_AFTER_S": "7"})
    assert from_env.stale_after_s == 7.0


def test_fixed_partition_is_the_one_aiokafka_s_default_partitioner_gives_the_key():
    from aiokafka.partitioner import DefaultPartitioner, murmur2

    from tickpipe.producers.sink import partition_for

    for count in (1, 2, 3, 4, 8, 12, 64):
        parts = set(range(count))  # as the producer's metadata holds them
        for conn in ["financefeast-0", "alpaca-1", "echo-s", "é-conn", ""] + [f"c-{i}" for i in range(50)]:
            key = conn.encode()
            assert partition_for(key, parts) == DefaultPartitioner()(key, list(parts), list(parts))
            assert partition_for(key, parts) == (murmur2(key) & 0x7FFFFFFF) % count


def test_sink_headers_are_exactly_the_envelope_headers():
    from tickpipe.producers.sink import EncodedText, record_headers

    text = EncodedText()
    records = [RawRecord("financefeast", "financefeast-0", "0123456789abcdef", 12, 1_700_000_000_123_456_789, b"{}"),
               RawRecord("alpaca", "alpaca-1", "s2", 2**40, 0, b"\x00", "application/msgpack", KIND_LOSS),
               RawRecord("echo", "é", "s3", 1, 5, b"x", "text/plain", KIND_SESSION_END,
                         extra_headers=(("x-extra", b"1"), ("x-null", None)))]
    for _ in range(2):  # encoded once, then from the cache
        for record in records:
            assert record_headers(record, text) == record.headers()


def test_latencies_observed_per_chunk_equal_one_observation_per_record():
    from prometheus_client import CollectorRegistry, Histogram

    from tickpipe.histograms import observe_latencies
    from tickpipe.producers.metrics import produce_latency

    registry = CollectorRegistry()
    buckets = produce_latency._upper_bounds[:-1]
    per_record = Histogram("a_seconds", "a", ["p"], buckets=buckets, registry=registry).labels("x")
    per_chunk = Histogram("b_seconds", "b", ["p"], buckets=buckets, registry=registry).labels("x")
    rng = random.Random(3)
    now = 1_700_000_000_000_000_000
    for _ in range(20):
        recv = [now - int(rng.choice((0, 1e5, 1e6, 2.5e6, 4e6, 1e7, 3e8, 2e9, 7e10, 1e11)) * rng.random())
                for _ in range(rng.randrange(1, 300))] + [now + 5_000, now - 10_000_000]  # a clock step: 0 s; a bound
        for t in recv:
            per_record.observe(max(0, now - t) / 1e9)
        observe_latencies(per_chunk, now, recv)
    samples = {m.name: [(s.name.split("_", 1)[1], s.labels, s.value) for s in m.samples] for m in registry.collect()}
    a, b = samples["a_seconds"], samples["b_seconds"]
    assert [(n, lbl) for n, lbl, _ in a] == [(n, lbl) for n, lbl, _ in b]
    for (name, labels, va), (_, _, vb) in zip(a, b):
        assert va == pytest.approx(vb, rel=1e-9), (name, labels)


def test_received_counters_reach_prometheus_within_a_fraction_of_a_second():
    import asyncio

    from prometheus_client import REGISTRY

    def counted() -> tuple[float, float]:
        return tuple(REGISTRY.get_sample_value(f"tickpipe_producer_{name}_received_total", {"provider": "echo"}) or 0.0
                     for name in ("frames", "bytes"))

    async def scenario():
        rec, _ = _recorder_with_buffer(max_frames=100)
        f0, b0 = counted()
        for _ in range(10):
            rec.frame("abc", "text/plain")
        await asyncio.sleep(0.2)
        f1, b1 = counted()
        assert (f1 - f0, b1 - b0) == (10, 30)
        rec.frame("abcd", "text/plain")
        rec.count_received()  # at a session's end: at once
        f2, b2 = counted()
        assert (f2 - f0, b2 - b0) == (11, 34)

    asyncio.run(scenario())


def test_staleness_watchdog_fires_after_stale_after_s_of_reading_but_not_during_a_read_pause():
    import asyncio
    import time
    from types import SimpleNamespace

    from tickpipe.producers.loop import ConnectionLoop
    from tickpipe.producers.session import FeedStale

    async def scenario():
        now = time.monotonic()
        loop = SimpleNamespace(settings=SimpleNamespace(stale_after_s=0.3), recorder=SimpleNamespace(last_frame_monotonic=now - 99),
                               sink=SimpleNamespace(paused=True))
        session = SimpleNamespace(reading_since=now - 99)
        watch = asyncio.ensure_future(ConnectionLoop._watch_staleness(loop, session))
        await asyncio.sleep(0.5)
        assert not watch.done()                       # paused for back-pressure: not a silent feed
        loop.sink.paused, session.reading_since = False, time.monotonic()
        await asyncio.sleep(0.15)
        loop.recorder.last_frame_monotonic = time.monotonic()  # a frame: the count starts again
        await asyncio.sleep(0.2)
        assert not watch.done()
        started = time.monotonic()
        with pytest.raises(FeedStale, match="no frame for 0.3s"):
            await asyncio.wait_for(watch, 2)
        assert 0.05 <= time.monotonic() - started <= 0.4

    asyncio.run(scenario())
