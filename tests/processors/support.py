"""Helpers of the processor tests that talk to the real broker."""

from __future__ import annotations

from tickpipe.admin import declare_topics
from tickpipe.kafka import client_kwargs
from tickpipe.topics import TopicSettings

SMALL_TOPICS = TopicSettings(raw_partitions=2, tick_partitions=2)


async def produce(kafka_settings, topic: str, records: list[tuple[bytes | None, bytes, list | None]]) -> None:
    """Declare the catalogue (small partition counts), then produce each (key, value, headers), acked."""
    from aiokafka import AIOKafkaProducer

    await declare_topics(kafka_settings, SMALL_TOPICS)
    producer = AIOKafkaProducer(**client_kwargs(kafka_settings), acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()
