"""A Kafka outage: back-pressure first, then drop-oldest with exact loss accounting, a loss marker once Kafka is back.

The broker here is a second embedded broker on a fixed port, stopped and started again for
real. It is memory-only, so what it held before the stop is read before stopping it, and the
topics are declared again after the restart.
"""

from __future__ import annotations

import asyncio
import uuid

from tickpipe.broker import EmbeddedBroker, free_port
from tickpipe.envelope import KIND_FRAME, KIND_LOSS, decode_marker
from tickpipe.kafka import KafkaSettings
from tickpipe.producers import metrics

from tests.producers.core_support import FeedServer, declare_echo_topics, echo_producer, read_raw, running, wait_for


async def test_broker_outage_pauses_reading_then_drops_oldest_with_exact_accounting(tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port=port, log_file=tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"o{uuid.uuid4().hex[:6]}.")
    dropped_before = metrics.frames_dropped.labels("echo")._value.get()
    try:
        await declare_echo_topics(kafka)
        async with FeedServer(rate=250, ping_interval=0.2, ping_timeout=0.6) as feed:   # the feed pings us, strictly
            producer = echo_producer(kafka, feed, conn_id="echo-out", buffer_max_frames=60, pause_at_fill=0.5,
                                     resume_at_fill=0.2, max_pause_s=1.0, chunk_records=20, request_timeout_ms=1500,
                                     ping_interval_s=0.3, ping_timeout_s=5.0, stale_after_s=10.0, flush_timeout_s=15.0)
            sink = producer.sink
            async with running(producer):
                await wait_for(lambda: producer.ready()[0] and sink.delivered > 50, what="frames delivered")
                feed.streaming.clear()                                     # a quiet moment to read what Kafka holds
                await wait_for(lambda: sink.buffer.total_count == 0, what="buffer empty")
                before = await read_raw(kafka, "echo", lambda rs: len(rs) >= sink.delivered)
                await asyncio.to_thread(broker.stop, 0.5)
                feed.streaming.set()
                await wait_for(lambda: sink.pauses >= 1, what="reads paused (back-pressure)")
                await wait_for(lambda: sink.buffer.dropped_frames >= 100, timeout=15, what="oldest frames dropped")
                await asyncio.to_thread(broker.start)                     # same port, empty memory
                await declare_echo_topics(kafka)
                await wait_for(lambda: metrics.loss_markers.labels("echo")._value.get() >= 1 and sink.buffer.fill() < 0.2,
                               timeout=20, what="loss marker written after Kafka came back")
                assert len(feed.connections) == 1       # the connection lived through it: its pings were answered
            last_seq = producer.recorder.seq
            dropped_total = sink.buffer.dropped_frames
        after = await read_raw(kafka, "echo", lambda rs: any(r.seq == last_seq for r in rs))
    finally:
        await asyncio.to_thread(broker.stop, 0.5)

    delivered = {r.seq for r in before} | {r.seq for r in after}
    losses = [decode_marker(r.payload) for r in after if r.kind == KIND_LOSS]
    assert losses, "no loss marker reached Kafka"
    dropped = [s for doc in losses for a, b in doc["ranges"] for s in range(a, b + 1)]
    assert len(dropped) == len(set(dropped)) == sum(d["dropped_frames"] for d in losses) == dropped_total
    assert not set(dropped) & delivered                                   # dropped means never delivered
    assert delivered | set(dropped) == set(range(1, last_seq + 1))       # every tp-seq accounted for, exactly
    assert metrics.frames_dropped.labels("echo")._value.get() - dropped_before == dropped_total
    frames_after = [r for r in after if r.kind == KIND_FRAME]
    assert frames_after and all(r.payload.startswith(b'[{"T":"t"') for r in frames_after)


async def test_shutdown_while_kafka_is_down_reports_what_it_could_not_flush(tmp_path, caplog):
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"d{uuid.uuid4().hex[:6]}.")
    try:
        await declare_echo_topics(kafka)
        async with FeedServer(rate=100) as feed:
            producer = echo_producer(kafka, feed, conn_id="echo-down", request_timeout_ms=1000, flush_timeout_s=1.5)
            stop = asyncio.Event()
            task = asyncio.ensure_future(producer.run(stop))
            await wait_for(lambda: producer.ready()[0] and producer.sink.delivered > 5, what="running")
            await asyncio.to_thread(broker.stop, 0.5)
            await wait_for(lambda: producer.sink.buffer.total_count > 20, what="records waiting for Kafka")
            stop.set()
            code = await asyncio.wait_for(task, 15)
    finally:
        await asyncio.to_thread(broker.stop, 0.5)
    assert code == 1                                   # not "everything flushed": the exit code says so
    lines = [r for r in caplog.records if r.getMessage() == "shutdown: records accepted but not delivered to Kafka"]
    assert lines and lines[0].undelivered == producer.sink.buffer.total_count > 20
