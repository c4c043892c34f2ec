"""The Kafka sink against the real broker: producer settings, headers, frames Kafka refuses."""

from __future__ import annotations

import asyncio

import pytest

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


async def test_each_connection_lands_in_the_partition_aiokafka_s_default_partitioner_picks(kafka_settings):
    """The sink computes a connection's partition once; it must be where ``send(key=conn)`` puts it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from tickpipe.kafka import client_kwargs

    await declare_echo_topics(kafka_settings)
    topic = raw_topic("echo", kafka_settings.topic_prefix)
    conns = [f"echo-{i}" for i in range(12)]
    plain = AIOKafkaProducer(**client_kwargs(kafka_settings))
    await plain.start()
    try:  # where aiokafka itself puts each key (the records carry no headers: skipped below)
        expected = {c: (await (await plain.send(topic, b"probe", key=c.encode()))).partition for c in conns}
    finally:
        await plain.stop()
    assert len(set(expected.values())) > 1, "the keys should spread over the partitions"
    first, sink = _sink(kafka_settings, chunk_records=7)
    recorders = [first] + [Recorder("echo", c) for c in conns]
    for rec in recorders[1:]:
        rec.attach(sink)
        rec.new_session()
    await sink.start()
    try:
        for i in range(5):
            for rec in recorders[1:]:
                rec.frame(f"{rec.conn}:{i}", CT_TEXT)
        await wait_for(lambda: sink.buffer.total_count == 0, what="everything settled")
    finally:
        assert await sink.close() == 0
    consumer = AIOKafkaConsumer(topic, **client_kwargs(kafka_settings), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    seen: dict[str, list[tuple[int, bytes]]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while sum(map(len, seen.values())) < 5 * len(conns) and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                for m in batch:
                    if m.headers:
                        seen.setdefault(m.key.decode(), []).append((m.partition, m.value))
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(conns)
    for conn, got in seen.items():
        assert {p for p, _ in got} == {expected[conn]}, conn
        assert [v for _, v in got] == [f"{conn}:{i}".encode() for i in range(5)]  # in order


async def test_frames_too_big_to_share_a_batch_go_alone_and_keep_their_place(kafka_settings):
    await declare_echo_topics(kafka_settings)
    recorder, sink = _sink(kafka_settings, batch_size=4096, chunk_records=50)
    await sink.start()
    try:
        sent = [recorder.frame(("b" * 3000 if i % 7 == 3 else "s") + str(i), CT_TEXT) for i in range(60)]
        await wait_for(lambda: sink.buffer.total_count == 0, what="everything settled")
    finally:
        assert await sink.close() == 0
    records = await read_raw(kafka_settings, "echo", lambda rs: len(rs) >= 60)
    assert [r.payload for r in records] == [r.payload for r in sent]
    assert [r.seq for r in records] == list(range(1, 61))


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none", "gzip"])
async def test_every_compression_setting_reads_back(kafka_settings, compression):
    await declare_echo_topics(kafka_settings)
    recorder, sink = _sink(kafka_settings, compression=compression)
    await sink.start()
    try:
        sent = [recorder.frame(f'{{"type":"price","i":{i}}}', "application/json") for i in range(300)]
    finally:
        assert await sink.close() == 0
    records = await read_raw(kafka_settings, "echo", lambda rs: len(rs) >= 300)
    assert [(r.seq, r.payload, r.headers()) for r in records] == [(r.seq, r.payload, r.headers()) for r in sent]
