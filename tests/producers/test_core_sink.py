"""The Kafka sink against the real broker: producer settings, headers, frames Kafka refuses."""

from __future__ import annotations

import asyncio

from tickpipe.envelope import CT_TEXT, KIND_FRAME, KIND_LOSS, decode_marker
from tickpipe.producers.recorder import Recorder
from tickpipe.producers.sink import KafkaSink
from tickpipe.topics import raw_topic

from tests.producers.core_support import declare_echo_topics, fast_settings, read_raw, wait_for


def _sink(kafka, **settings) -> tuple[Recorder, KafkaSink]:
    recorder = Recorder("echo", "echo-s")
    sink = KafkaSink(kafka, fast_settings(**settings), "echo", raw_topic("echo", kafka.topic_prefix), recorder.new_loss)
    recorder.attach(sink)
    recorder.new_session()
    return recorder, sink


async def test_a_frame_too_large_for_kafka_is_dropped_with_a_loss_marker_and_the_rest_flows(kafka_settings):
    await declare_echo_topics(kafka_settings)
    recorder, sink = _sink(kafka_settings, max_request_bytes=2048)
    await sink.start()
    try:
        recorder.frame("small-1", CT_TEXT)
        big = recorder.frame("x" * 10_000, CT_TEXT)
        for i in range(2, 6):
            recorder.frame(f"small-{i}", CT_TEXT)
        await wait_for(lambda: sink.buffer.total_count == 0, what="everything settled")
    finally:
        assert await sink.close() == 0
    records = await read_raw(kafka_settings, "echo", lambda rs: any(r.kind == KIND_LOSS for r in rs) and len(rs) >= 6)
    frames = [r.payload for r in records if r.kind == KIND_FRAME]
    assert frames == [b"small-1", b"small-2", b"small-3", b"small-4", b"small-5"]
    (loss,) = [decode_marker(r.payload) for r in records if r.kind == KIND_LOSS]
    assert loss["reason"] == "too_large" and loss["ranges"] == [[big.seq, big.seq]] and loss["dropped_bytes"] == 10_000


async def test_records_carry_the_envelope_and_the_connection_id_as_key(kafka_settings):
    await declare_echo_topics(kafka_settings)
    recorder, sink = _sink(kafka_settings, compression="gzip")
    await sink.start()
    try:
        sent = [recorder.frame(f'{{"i":{i}}}', "application/json") for i in range(50)]
        recorder.frame(b"\x00\xffbinary", "application/msgpack")
        await asyncio.sleep(0)
    finally:
        assert await sink.close() == 0
    records = await read_raw(kafka_settings, "echo", lambda rs: len(rs) >= 51)
    assert [r.seq for r in records] == [r.seq for r in sent] + [51]
    assert records[-1].payload == b"\x00\xffbinary" and records[-1].content_type == "application/msgpack"
    assert all(r.conn == "echo-s" and r.session == recorder.session and r.provider == "echo" for r in records)
    assert sink.delivered == 51
