"""End offsets read from the log: what a table recovery must read up to (``processors/end_offsets.py``)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tickpipe.admin import admin_client
from tickpipe.kafka import client_kwargs
from tickpipe.processors.end_offsets import true_end_offsets
from tickpipe.topics import TopicSpec, create_missing


async def test_end_offsets_cover_every_record_of_the_last_batch(kafka_settings):
    topic = f"{kafka_settings.topic_prefix}changelog"
    async with admin_client(kafka_settings) as admin:
        await create_missing(admin, [TopicSpec(topic, 2, 60_000, purpose="test")])
    kwargs = client_kwargs(kafka_settings)
    producer = AIOKafkaProducer(**kwargs, linger_ms=50)
    await producer.start()
    try:
        for size in (3, 4):  # two record batches on partition 0; the last holds offsets 3..6
            for i in range(size):
                await producer.send(topic, b"state %d" % i, key=b"conn", partition=0)
            await producer.flush()
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = AIOKafkaConsumer(**kwargs)
    await consumer.start()
    try:
        reported = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()

    ends = await true_end_offsets(kwargs, reported)

    assert ends == {tps[0]: 7, tps[1]: 0}
    assert reported[tps[0]] <= 7, "the broker reported an end past the log"
